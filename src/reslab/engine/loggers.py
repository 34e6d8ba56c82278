"""Where metrics go: ``metrics.jsonl`` + ``metrics.csv`` always, and the trackers named in
``--log`` (TensorBoard event files, MLflow with a local SQLite/file store or a server,
Weights & Biases in offline mode). Each tracker is an optional import that fails with a
clear message, before training starts, when its package is missing.

Every logger offers ``log_params(config)``, ``log_metrics(metrics, step)`` and
``close(status)``; only rank 0 creates any.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..files import atomic_write_bytes
from ..run_folder import RunFolder

EPOCH_KEYS = (
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s",
)  # fmt: skip


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    def usable(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    return {k: float(v) for k, v in metrics.items() if usable(v)}


class MetricsFiles:
    """``metrics.jsonl`` (one JSON object per epoch) and ``metrics.csv``, rewritten from
    the whole history each epoch so a resumed run never holds duplicate or stale rows."""

    def __init__(self, run_dir: str | Path):
        folder = RunFolder(run_dir)
        self.jsonl, self.csv = folder.metrics_jsonl, folder.metrics_csv

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Writes every epoch row of ``history``."""
        lines = "".join(json.dumps(dict(row)) + "\n" for row in history)
        atomic_write_bytes(self.jsonl, lambda f: f.write(lines.encode()))
        keys = list(EPOCH_KEYS) + sorted({k for r in history for k in r} - set(EPOCH_KEYS))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in keys})
        atomic_write_bytes(self.csv, lambda f: f.write(buf.getvalue().encode()))


class TensorBoardLogger:
    """Scalars in TensorBoard event files under ``<run>/tensorboard``."""

    def __init__(self, run_dir: Path, cfg):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # tensorboard itself is the optional part
            raise ConfigError(_missing("tensorboard", e)) from e
        self.dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def log_params(self, config: Mapping[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in _flatten(config).items())
        self.writer.add_text("config", text, 0)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        for k, v in _numbers(metrics).items():
            # train_loss -> train/loss: TensorBoard groups charts by the prefix
            tag = k.replace("_", "/", 1) if k.startswith(("train_", "val_", "test_")) else k
            self.writer.add_scalar(tag, v, step)
        self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


class MLflowLogger:
    """An MLflow run through ``MlflowClient`` (no global active-run state).

    The store defaults to ``sqlite:///<run>/mlflow.db``; ``tracking.mlflow_uri`` may name
    a ``file:`` folder, another SQLite file or a tracking server.
    """

    def __init__(self, run_dir: Path, cfg):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise ConfigError(_missing("mlflow", e)) from e
        from mlflow.exceptions import MlflowException

        uri = cfg.tracking.mlflow_uri or f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(cfg.tracking.experiment)
        except MlflowException as e:
            raise ConfigError(
                f"MLflow cannot use tracking.mlflow_uri={uri!r}: {str(e).splitlines()[0]} "
                "The default (unset) is a SQLite file in the run folder; MLflow 3 accepts a "
                "file: store only with MLFLOW_ALLOW_FILE_STORE=true in the environment."
            ) from None
        name = cfg.tracking.experiment
        self.run_dir = Path(run_dir)
        # Artifacts live inside the run folder, not in ./mlruns of whatever the current directory is.
        artifacts = (self.run_dir / "mlartifacts").resolve().as_uri()
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name, artifact_location=artifacts)
        name = cfg.tracking.run_name or self.run_dir.name
        self.run_id = self.client.create_run(exp_id, run_name=name).info.run_id

    def log_params(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:500]) for k, v in _flatten(config).items()]
        for i in range(0, len(params), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in _numbers(metrics).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def close(self, status: str = "FINISHED") -> None:
        model = self.run_dir / "model.safetensors"  # the trainer writes it before closing
        if status == "FINISHED" and model.is_file():
            self.client.log_artifact(self.run_id, str(model))
            card = self.run_dir / "config.yaml"
            if card.is_file():
                self.client.log_artifact(self.run_id, str(card))
        self.client.set_terminated(self.run_id, status=status)


class WandbLogger:
    """A Weights & Biases run in offline mode under ``<run>/wandb`` (sync later with
    ``wandb sync <run>/wandb/offline-run-*``)."""

    def __init__(self, run_dir: Path, cfg):
        try:
            import wandb
        except ImportError as e:
            raise ConfigError(_missing("wandb", e)) from e
        self.dir = Path(run_dir)
        kwargs = dict(
            project=cfg.tracking.experiment, name=cfg.tracking.run_name or self.dir.name,
            dir=str(self.dir), mode="offline", config=cfg.to_dict(),
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )  # fmt: skip
        try:  # a new run even if this process already has one (wandb >= 0.19)
            self.run = wandb.init(reinit="create_new", **kwargs)
        except (TypeError, ValueError):
            self.run = wandb.init(reinit=True, **kwargs)

    def log_params(self, config: Mapping[str, Any]) -> None:
        pass  # given to wandb.init as the run config

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self.run.log(_numbers(metrics), step=step)

    def close(self, status: str = "FINISHED") -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


TRACKERS = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}


def _missing(name: str, err: Exception) -> str:
    return (f"--log {name} needs the {name} package, which could not be imported ({err}). "
            f"Install it with: pip install 'reslab[{name}]' (all three trackers: 'reslab[track]'), "
            f"or drop {name} from --log.")  # fmt: skip


def check_trackers(names: Sequence[str]) -> None:
    """Fails early, with the install command, when a tracker's package is missing."""
    import importlib.util

    modules = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
    for n in names:
        if n not in TRACKERS:
            raise ConfigError(f"log={n!r} is not one of {tuple(TRACKERS)}.")
        try:
            spec = importlib.util.find_spec(modules[n])
        except (ImportError, ValueError):  # ValueError: blocked with sys.modules[name] = None
            spec = None
        if spec is None:
            raise ConfigError(_missing(n, ModuleNotFoundError(f"No module named {modules[n]!r}")))


class Loggers:
    """Fans metrics out to every tracker; a tracker that fails mid-run is reported and
    dropped rather than ending the training run."""

    def __init__(self, trackers: Sequence[Any], log=print):
        self.trackers = list(trackers)
        self._log = log

    def _each(self, method: str, *args) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, method)(*args)
            except Exception as e:  # noqa: BLE001 - tracking must never kill training
                self._log(f"warning: {type(t).__name__}.{method} failed ({e}); it is turned off.")
                self.trackers.remove(t)

    def log_params(self, config: Mapping[str, Any]) -> None:
        self._each("log_params", config)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self._each("log_metrics", metrics, step)

    def close(self, status: str = "FINISHED") -> None:
        self._each("close", status)


def make_loggers(names: Sequence[str], run_dir: str | Path, cfg, log=print) -> Loggers:
    """Creates the trackers named in ``names`` (``tensorboard``, ``mlflow``, ``wandb``).

    Args:
        names: from ``cfg.log``.
        run_dir: the run folder (trackers write beneath it by default).
        cfg: the ``TrainConfig`` (tracking options; logged as parameters).
        log: where warnings go.
    Returns:
        A ``Loggers`` fan-out (empty when ``names`` is).
    """
    check_trackers(names)
    trackers = [TRACKERS[n](Path(run_dir), cfg) for n in names]
    out = Loggers(trackers, log)
    out.log_params(cfg.to_dict())
    return out
