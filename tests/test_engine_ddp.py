"""DDP through torchrun: two CPU processes (gloo) give the metrics and weights of one process
with the same global batch.

GroupNorm makes the comparison exact up to float summation order: with BatchNorm each
process would normalise over its own half of the batch (SyncBatchNorm has no CPU kernel).
The validation split has an odd size, so the sharded loader pads it and the engine must
count every image exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from reslab.config import load_config
from reslab.engine import fit
from reslab.files import load_checkpoint

ARGS = {
    "data.source": "digits", "data.batch_size": 64, "data.limit_train": 512, "data.augment": "none",
    "data.check": False, "model.name": "resnet20", "model.norm_layer": "groupnorm", "precision": "fp32",
    "epochs": 2, "seed": 1, "threads": 1, "deterministic": True, "eval_test": False,
    "optim.lr": 0.05, "schedule.warmup_epochs": 0.5,
}  # fmt: skip


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    single = fit(load_config(None, {**ARGS, "out": str(tmp_path / "single")}))
    assert single.history[0]["val_acc"] is not None

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "reslab", "train", "--out", str(tmp_path / "ddp"), "--device", "cpu",
           *[f"{k}={v}" for k, v in ARGS.items()]]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes (gloo)" in proc.stdout
    assert proc.stdout.count("done: best val acc") == 1  # only rank 0 prints

    rows = [json.loads(s) for s in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(single.history) == 2
    for a, b in zip(single.history, rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=1e-9)  # same images, same predictions
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert b["val_acc"] == pytest.approx(a["val_acc"], abs=1e-9)
    w1 = load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"]
    w2 = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")["model"]
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2
