"""Training on real data (scikit-learn's digits): overfitting one batch, loss falling, the
run folder, the bf16 fast path against fp32, gradient accumulation against the full batch,
NaN stop, early stopping, callbacks and the recipe features together.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import reslab
from reslab.config import load_config
from reslab.data import load_dataset, make_loader
from reslab.device import resolve_precision
from reslab.engine import Callback, NonFiniteLossError, fit
from reslab.engine.optim import build_optimizer
from reslab.engine.schedule import build_schedule
from reslab.engine.step import RunningStats, TrainStep
from reslab.files import load_checkpoint
from reslab.models.checkpoint import model_from_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", check=False, log=None)


def _cfg(tmp_path: Path, name: str = "run", **over):
    base = {
        "data": {"source": "digits", "batch_size": 64, "limit_train": 640, "limit_val": 180},
        "model": {"name": "resnet20"},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.05},
        "schedule": {"name": "cosine"},
        "epochs": 3,
        "threads": 1,  # shared CI cores: one thread avoids OpenMP oversubscription
        "out": str(tmp_path / name),
    }
    return load_config(None, {**base, **over})


def test_overfit_one_batch(digits):
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    loader = make_loader(digits.train, batch_size=32, train=False, preprocess=digits.preprocess)
    x, y = next(iter(loader))
    cfg = load_config(None, {"optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0}, "schedule": {"name": "constant"}})
    opt = build_optimizer(cfg.optim, model)
    step = TrainStep(model, model, opt, build_schedule(opt, cfg.schedule, 60, 60),
                     precision=resolve_precision(torch.device("cpu"), "fp32"), num_classes=10)  # fmt: skip
    first = None
    for i in range(60):
        stats = RunningStats(torch.device("cpu"))
        step(x, y, 0, i, True, stats)
        first = first if first is not None else stats.read()["loss"]
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert first > 2.0
    assert F.cross_entropy(logits, y).item() < 0.05
    assert torch.equal(logits.argmax(1), y)


def test_loss_falls_and_run_folder_is_complete(tmp_path, digits):
    cfg = _cfg(tmp_path, epochs=4, data={"source": "digits", "batch_size": 64, "limit_train": 640})
    result = fit(cfg, data=digits)
    run = result.run_dir
    h = result.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert h[-1]["train_loss"] < 0.6 * h[0]["train_loss"]
    assert max(r["val_acc"] for r in h) > 0.85
    for name in ("config.yaml", "classes.json", "metrics.jsonl", "metrics.csv", "summary.json", "log.txt",
                 "model.safetensors", "checkpoints/last.pt", "checkpoints/best.pt"):  # fmt: skip
        assert (run / name).exists(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == json.loads(json.dumps(h))
    assert set(rows[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"}
    assert all(0 <= r["val_acc"] <= 1 for r in rows)
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc")
    assert json.loads((run / "classes.json").read_text()) == digits.classes
    assert load_config(run / "config.yaml") == cfg

    # best.pt: weights_only-loadable, the best epoch's weights; safetensors holds the same
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch and best["classes"] == digits.classes
    assert best["config"] == cfg.to_dict()
    from safetensors.torch import load_file

    st = load_file(run / "model.safetensors")
    assert st.keys() == best["model"].keys()
    assert all(torch.equal(st[k], best["model"][k]) for k in st)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "sampler", "epoch", "step", "preprocess", "model_args"} <= set(last)

    # summary test accuracy == an independent evaluation of the best weights on the test split
    model = model_from_checkpoint(run / "checkpoints" / "best.pt").eval()
    test = make_loader(digits.test, batch_size=100, train=False, preprocess=best["preprocess"])
    precision = resolve_precision(torch.device("cpu"), cfg.precision)
    correct = 0
    with torch.no_grad(), precision.autocast():
        for x, y in test:
            correct += (model(x).argmax(1) == y).sum().item()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_acc"] == pytest.approx(correct / len(digits.test), abs=1e-9)
    assert summary["best_epoch"] == result.best_epoch and summary["images_per_s"] > 0


def test_bf16_fast_path_matches_fp32_loss_curve(tmp_path, digits):
    runs = {p: fit(_cfg(tmp_path, p, precision=p, epochs=3), data=digits).history for p in ("fp32", "bf16")}
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05, abs=0.03)
    # Validation accuracy after one epoch of a barely trained net swings by 10 points under any
    # rounding change (143 images, BatchNorm statistics still moving; seen on an AMD EPYC with
    # AVX512-BF16 but no AMX): compare where training has settled, the last epoch.
    assert runs["bf16"][-1]["val_acc"] == pytest.approx(runs["fp32"][-1]["val_acc"], abs=0.06)
    assert runs["bf16"][-1]["train_loss"] < 0.6 * runs["bf16"][0]["train_loss"]


def test_gradient_accumulation_equals_the_full_batch(tmp_path, digits):
    # GroupNorm does not depend on the batch, so 2 x 32 accumulated == 64 at once (fp32)
    common = dict(precision="fp32", epochs=1, deterministic=True, eval_test=False,
                  model={"name": "resnet20", "norm_layer": "groupnorm"},
                  data={"source": "digits", "batch_size": 64, "limit_train": 256, "limit_val": 64,
                        "augment": "none"})  # fmt: skip
    full = fit(_cfg(tmp_path, "full", **common), data=digits)
    accum = fit(_cfg(tmp_path, "accum", accum_steps=2, **common), data=digits)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(accum.run_dir / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5)
    assert accum.history[0]["train_loss"] == pytest.approx(full.history[0]["train_loss"], rel=1e-5)


class Poison(Callback):
    """Fills a weight with NaN at the start of epoch ``at`` (a diverged run, for real)."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.at:
            with torch.no_grad():
                trainer.model.conv1.weight.fill_(float("nan"))


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, digits):
    cfg = _cfg(tmp_path, epochs=4, log_every=2)
    with pytest.raises(NonFiniteLossError, match=r"(?s)NaN or infinite \(epoch 2.*last good checkpoint is kept.*lower learning rate"):
        fit(cfg, data=digits, callbacks=[Poison(at=1)])
    last = load_checkpoint(Path(cfg.out) / "checkpoints" / "last.pt")
    assert last["sampler"] == {**last["sampler"], "epoch": 1, "batch": 0}
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start", trainer.epoch))

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("start", epoch))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.calls.append(("end", epoch, metrics["epoch"]))

    def state_dict(self):
        return {"n": len(self.calls)}


def test_early_stop_callbacks_and_recipe_features(tmp_path, digits):
    # A constant, vanishing lr cannot improve val accuracy: patience 1 stops after epoch 2.
    rec = Recorder()
    cfg = _cfg(tmp_path, epochs=6, optim={"name": "sgd", "lr": 1e-12}, schedule={"name": "constant"},
               early_stop={"patience": 1, "min_delta": 0.5}, ema={"enabled": True, "decay": 0.9}, label_smoothing=0.1,
               clip_grad=1.0, data={"source": "digits", "batch_size": 64, "limit_train": 320, "limit_val": 90,
                                    "mixup": 0.4, "cutmix": 1.0, "random_erasing": 0.25,
                                    "class_weights": "auto"})  # fmt: skip
    result = fit(cfg, data=digits, callbacks=[rec])
    assert len(result.history) == 2 and result.final["stopped"] == "early_stop"
    assert rec.calls == [("fit_start", 0), ("start", 0), ("end", 0, 1), ("start", 1), ("end", 1, 2)]
    last = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert last["callbacks"]["0:Recorder"] == {"n": 5}
    assert last["callbacks"]["1:EarlyStopping"]["bad_epochs"] == 1
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    # EMA is what gets evaluated and saved as best: it differs from the live weights
    ema = last["ema"]["model"]
    assert last["ema"]["updates"] == last["step"] == 10
    assert any(not torch.equal(ema[k], last["model"][k]) for k in ema if ema[k].is_floating_point())


def test_progressive_resize_trains_small_then_full(tmp_path, digits):
    seen: list[int] = []
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]) if m.training else None)
    cfg = _cfg(tmp_path, epochs=3, data={"source": "digits", "batch_size": 64, "limit_train": 256,
                                         "limit_val": 64, "image_size": 16,
                                         "progressive_resize": {"min_size": 8, "end_epoch": 2}})  # fmt: skip
    result = fit(cfg, model=model, data=load_dataset("digits", image_size=16, check=False, log=None))
    assert sorted(set(seen)) == [8, 12, 16] and seen[0] == 8 and seen[-1] == 16
    assert len(seen) == 3 * 4 and seen.count(16) == 4  # 4 steps per epoch, full size in the last
    log = (result.run_dir / "log.txt").read_text()
    assert "progressive resizing: training images of 8 px (epoch 1), 12 px (epoch 2), 16 px (epoch 3)" in log
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MB filesystem (tmpfs), so ENOSPC is the kernel's, not a simulation."""
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24M", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


class FillDisk(Callback):
    """Another program fills the disk during epoch ``at`` (after best.pt, before last.pt)."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.at:
            with open(trainer.run_dir.parent / "filler.bin", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                        f.flush()
                except OSError:
                    pass


def test_full_disk_is_reported_before_and_during_training(small_disk, digits):
    from reslab.engine import CheckpointWriteError
    from reslab.errors import ConfigError

    # before: a checkpoint of resnet110 (1.7M parameters) does not fit three times in 24 MB
    with pytest.raises(ConfigError, match="MB free on the disk"):
        fit(load_config(None, {"data": {"source": "digits"}, "model": {"name": "resnet110"},
                               "out": str(small_disk / "big")}), data=digits)  # fmt: skip
    # during: the disk fills up in epoch 2; last.pt of epoch 1 stays loadable
    cfg = load_config(None, {"data": {"source": "digits", "batch_size": 64, "limit_train": 128, "limit_val": 64},
                             "epochs": 3, "threads": 1, "out": str(small_disk / "run")})  # fmt: skip
    with pytest.raises(CheckpointWriteError, match="No space left on device.*previous checkpoint is intact.*--resume"):
        fit(cfg, data=digits, callbacks=[FillDisk(at=1)])
    last = load_checkpoint(small_disk / "run" / "checkpoints" / "last.pt")
    assert last["sampler"]["epoch"] == 1 and last["sampler"]["batch"] == 0
    assert not list((small_disk / "run" / "checkpoints").glob("*.tmp"))
