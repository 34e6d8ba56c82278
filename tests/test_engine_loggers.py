"""Each tracker is tested by its real library writing real files, read back with that
library's own reader: TensorBoard (EventAccumulator), MLflow (MlflowClient on SQLite and
file stores), Weights & Biases offline (the run's .wandb record log, decoded with wandb's
protobuf schema).
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import pytest
import torch

from reslab.config import load_config
from reslab.engine.loggers import MetricsFiles, check_trackers, make_loggers
from reslab.errors import ConfigError

ROWS = [
    {"epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "val_loss": 1.2, "val_acc": 0.55, "lr": 0.1,
     "seconds": 3.0, "images_per_s": 900.0},
    {"epoch": 2, "train_loss": 0.9, "train_acc": 0.7, "val_loss": 0.8, "val_acc": 0.75, "lr": 0.05,
     "seconds": 2.9, "images_per_s": 950.0},
]  # fmt: skip


def _log_rows(names, run_dir: Path, **tracking):
    cfg = load_config(None, {"log": names, "tracking": tracking, "optim": {"lr": 0.1}})
    loggers = make_loggers(cfg.log, run_dir, cfg)
    for row in ROWS:
        loggers.log_metrics(row, step=row["epoch"])
    loggers.close()
    return cfg


def test_tensorboard_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _log_rows("tensorboard", tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"train/loss", "val/acc", "lr"} <= set(acc.Tags()["scalars"])
    events = acc.Scalars("val/acc")
    assert [e.step for e in events] == [1, 2]
    assert [e.value for e in events] == pytest.approx([0.55, 0.75])
    assert "config/text_summary" in acc.Tags()["tensors"]


@pytest.mark.slow  # MLflow's import and SQLite schema migrations take ~20 s on 2 cores
@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_mlflow_local_stores(tmp_path, store, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = None if store == "sqlite" else f"file:{tmp_path / 'mlruns'}"
    if store == "file":
        with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE=true"):
            _log_rows("mlflow", tmp_path, mlflow_uri=uri)
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's documented opt-in
    _log_rows("mlflow", tmp_path, mlflow_uri=uri, experiment="engine-test", run_name="r1")
    uri = uri or f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("engine-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.data.params["optim.lr"] == "0.1"
    hist = client.get_metric_history(run.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [(1, 0.55), (2, 0.75)]


def _wandb_records(path: Path):
    """Decodes a .wandb file: a ':W&B' header, then LevelDB-log records (32 KiB blocks,
    each record: crc32c u32, length u16, type u8) holding protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST fragment
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def test_wandb_offline_run_holds_history(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    _log_rows("wandb", tmp_path, experiment="engine-test")
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    # wandb-core may still be flushing after finish(): wait for the run's closing record
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kinds = [r.WhichOneof("record_type") for r in _wandb_records(log)]
        if "exit" in kinds:
            break
        time.sleep(0.2)
    keys = ("epoch", "val_acc", "train_loss")
    history = []
    for rec in _wandb_records(log):
        if rec.WhichOneof("record_type") == "history":
            items = {i.key or ".".join(i.nested_key): float(i.value_json) for i in rec.history.item}
            history.append({k: items[k] for k in keys})
    assert history == [{k: r[k] for k in keys} for r in ROWS]


def test_metrics_files_rewrite_whole_history(tmp_path):
    files = MetricsFiles(tmp_path)
    files.write(ROWS[:1])
    files.write(ROWS)  # a resumed run rewrites rather than appends: no duplicate rows
    import csv
    import json

    assert [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == ROWS
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [float(r["val_acc"]) for r in rows] == [0.55, 0.75]


def test_missing_tracker_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # how Python blocks an import
    with pytest.raises(ConfigError, match=r"--log mlflow needs the mlflow package.*pip install 'reslab\[mlflow\]'"):
        check_trackers(["mlflow"])
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    from reslab.engine.loggers import TensorBoardLogger

    with pytest.raises(ConfigError, match="needs the tensorboard package"):
        TensorBoardLogger(Path("."), None)


def test_fit_writes_tensorboard_through_log_flag(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from reslab.data import load_dataset
    from reslab.engine import fit

    prev = torch.get_num_threads()
    cfg = load_config(None, {"data": {"source": "digits", "batch_size": 64, "limit_train": 128, "limit_val": 64},
                             "epochs": 2, "threads": 1, "log": "tensorboard", "out": str(tmp_path / "run")})  # fmt: skip
    fit(cfg, data=load_dataset("digits", check=False, log=None))
    assert torch.get_num_threads() == prev  # fit puts global settings back
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]
    assert [e.step for e in acc.Scalars("test/acc")] == [2]


def test_fit_logs_the_model_to_mlflow_inside_the_run_folder(tmp_path, monkeypatch):
    """The MLflow run gets model.safetensors and config.yaml as artifacts, stored under the
    run folder (not ./mlruns of the current directory)."""
    from mlflow.tracking import MlflowClient

    from reslab.data import load_dataset
    from reslab.engine import fit

    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, {"data": {"source": "digits", "batch_size": 64, "limit_train": 64, "limit_val": 32},
                             "epochs": 1, "threads": 1, "log": "mlflow", "precision": "fp32",
                             "eval_test": False, "out": str(tmp_path / "run")})  # fmt: skip
    fit(cfg, data=load_dataset("digits", check=False, log=None))
    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}")
    run = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id])[0]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "config.yaml"} <= names
    stored = list((tmp_path / "run" / "mlartifacts").rglob("model.safetensors"))
    assert len(stored) == 1 and stored[0].read_bytes() == (tmp_path / "run" / "model.safetensors").read_bytes()
    assert not (tmp_path / "mlruns").exists()
