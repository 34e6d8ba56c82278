"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-identical to an
uninterrupted run; SIGTERM writes a checkpoint and exits 143 with resume instructions.

The runs are real ``reslab train`` subprocesses on scikit-learn's digits with every source
of randomness switched on (augmentation, mixup, stochastic depth via the global torch RNG,
EMA), so a resume that forgot any state would differ.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reslab.files import load_checkpoint

RECIPE = [
    "--data", "digits", "--model", "resnet20", "--epochs", "3", "--batch-size", "32",
    "--seed", "3", "--device", "cpu",
    "deterministic=true", "threads=1", "checkpoint_every_steps=2", "data.check=false",
    "data.limit_train=384", "data.limit_val=96", "eval_test=false",
    "data.mixup=0.2", "model.drop_path_rate=0.1", "ema=true", "label_smoothing=0.1",
    "schedule.warmup_epochs=1",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _start(args: list[str], command: tuple[str, ...] = ("train",)) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reslab", *command, *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
    )  # fmt: skip


def _wait_for_line(proc: subprocess.Popen, predicate, timeout: float = 240.0) -> tuple[str, str]:
    """Reads the child's output until a line satisfies ``predicate``; returns (line, all)."""
    seen = []
    t0 = time.monotonic()
    for line in proc.stdout:
        seen.append(line)
        if predicate(line):
            return line, "".join(seen)
        if time.monotonic() - t0 > timeout:
            break
    proc.kill()
    raise AssertionError("the expected line never came; output:\n" + "".join(seen))


def _assert_same_tensors(a, b, where: str = "") -> int:
    """torch.equal on every tensor of two nested containers; returns how many were compared."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"differs at {where}"
        return 1
    if isinstance(a, dict):
        assert set(a) == set(b), f"keys differ at {where}: {set(a) ^ set(b)}"
        return sum(_assert_same_tensors(a[k], b[k], f"{where}.{k}") for k in a)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"lengths differ at {where}"
        return sum(_assert_same_tensors(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    return 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path: Path):
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    reference = _start([*RECIPE, "--out", str(ref_dir)])

    victim = _start([*RECIPE, "--out", str(run_dir)])
    # 12 batches per epoch; checkpoints every 2 steps. Kill right after the first
    # mid-epoch checkpoint of the second epoch: epoch 2, batch 2/12.
    line, _ = _wait_for_line(victim, lambda s: s.startswith("checkpoint: epoch 2, batch 2/"))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    # the killed run may have written a later mid-epoch checkpoint before dying; any is fine
    assert ckpt["sampler"]["epoch"] >= 1 and 0 < ckpt["sampler"]["batch"] < ckpt["sampler"]["batches"]

    resumed = subprocess.run(
        [sys.executable, "-m", "reslab", "train", "--resume", str(run_dir)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out

    a = load_checkpoint(ref_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    n = _assert_same_tensors(a["model"], b["model"], "model")
    n += _assert_same_tensors(a["ema"], b["ema"], "ema")
    n += _assert_same_tensors(a["optimizer"]["state"], b["optimizer"]["state"], "optimizer")
    assert n > 100 and a["step"] == b["step"] == 36
    # the epoch rows match too (the killed epoch's running totals were checkpointed)
    for ra, rb in zip(a["metrics"]["history"], b["metrics"]["history"]):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_acc"] == rb["val_acc"]
    wa = load_checkpoint(ref_dir / "checkpoints" / "best.pt")["model"]
    wb = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    _assert_same_tensors(wa, wb, "best")


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_exits_143(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = _start([*RECIPE, "--out", str(run_dir), "--epochs", "20"])
    _wait_for_line(proc, lambda s: s.startswith("checkpoint: epoch 1, batch 4/"))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "received SIGTERM" in out and f"reslab train --resume {run_dir}" in out
    assert "Traceback" not in out
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["sampler"]["batch"] > 0 or ckpt["sampler"]["epoch"] > 0
    assert ckpt["step"] == ckpt["sampler"]["epoch"] * ckpt["sampler"]["batches"] + ckpt["sampler"]["batch"]


@pytest.mark.slow
def test_sigterm_in_a_finetune_names_the_finetune_resume_command_once(tmp_path: Path):
    run_dir = tmp_path / "ft"
    proc = _start(["--data", "digits", "--pretrained", "reslab:resnet20_fashion_mnist", "--out", str(run_dir),
                   "--epochs", "20", "--batch-size", "32", "--device", "cpu", "threads=1",
                   "checkpoint_every_steps=2", "data.check=false", "data.limit_train=384",
                   "data.limit_val=96", "eval_test=false"], command=("finetune",))  # fmt: skip
    _wait_for_line(proc, lambda s: s.startswith("checkpoint: epoch 1, batch 4/"))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert out.count("received SIGTERM") == 1 and "Traceback" not in out
    assert f"reslab finetune --resume {run_dir}" in out and "reslab train --resume" not in out


@pytest.mark.slow
def test_sigterm_in_an_experiment_exits_143_without_a_traceback(tmp_path: Path):
    # Every command that trains stops the same way: an experiment run under `timeout` (as
    # scripts/gpu_check.sh does) saves its checkpoint and says so, with no traceback.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data:\n  source: digits\n  batch_size: 32\nmodel:\n  name: resnet20\nepochs: 20\n")
    overrides = [a for a in RECIPE if "=" in a]
    out_dir = tmp_path / "exp"
    proc = _start(["headline", "--config", str(recipe), "--test-every", "100", "--out", str(out_dir),
                   "device=cpu", *overrides], command=("experiment",))  # fmt: skip
    _wait_for_line(proc, lambda s: s.startswith("checkpoint: epoch 1, batch 4/"))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert out.count("received SIGTERM") == 1 and "Traceback" not in out
    assert load_checkpoint(out_dir / "seed0" / "checkpoints" / "last.pt")["step"] > 0
