"""The engine's parts against oracles: schedules against torch's schedulers, the no-decay
split against timm, EMA against timm's ModelEmaV2, RNG state round trips through
``torch.load(weights_only=True)``, and the atomic checkpoint write against a writer killed
mid-save.
"""

from __future__ import annotations

import errno
import io
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import reslab
from reslab.config import OptimConfig, ScheduleConfig
from reslab.engine.ema import ModelEma
from reslab.engine.optim import build_optimizer, split_decay
from reslab.engine.schedule import LRFactor, build_schedule
from reslab.engine.state import capture_rng_state, restore_rng_state
from reslab.errors import ConfigError
from reslab.files import atomic_write_bytes, load_checkpoint, save_checkpoint
from reslab.run_folder import RunFolder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _lrs(factor_cfg: ScheduleConfig, total: int, per_epoch: int = 10) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = build_schedule(opt, factor_cfg, total, per_epoch)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _torch_lrs(make, total: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = make(opt)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_onecycle_matches_torch_onecycle():
    ours = _lrs(ScheduleConfig(name="onecycle", pct_start=0.3, div_factor=20, final_div_factor=100), 137)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.4, total_steps=137, pct_start=0.3, div_factor=20, final_div_factor=100,
        cycle_momentum=False), 137)  # fmt: skip
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_cosine_matches_torch_cosine_annealing():
    ours = _lrs(ScheduleConfig(name="cosine", min_lr=0.05), 100)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=99, eta_min=0.4 * 0.05), 100)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_warmup_then_cosine_matches_torch_sequential():
    # 2 warmup epochs of 10 steps from 0.1 x lr, then cosine to 0 over the remaining 80
    ours = _lrs(ScheduleConfig(name="cosine", warmup_epochs=2, warmup_start=0.1), 100)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
        torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20),
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=79)], milestones=[20]), 100)  # fmt: skip
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_step_matches_torch_multistep():
    ours = _lrs(ScheduleConfig(name="step", milestones=[0.5, 0.75], gamma=0.2), 80)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [40, 60], gamma=0.2), 80)
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_schedule_state_survives_weights_only_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(OptimConfig(lr=0.3), model)
    sched = build_schedule(opt, ScheduleConfig(name="onecycle"), 50, 10)
    for _ in range(17):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"s": sched.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(OptimConfig(lr=0.3), model)
    sched2 = build_schedule(opt2, ScheduleConfig(name="onecycle"), 50, 10)
    opt2.load_state_dict(state["o"])
    sched2.load_state_dict(state["s"])
    for _ in range(5):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    assert isinstance(sched2.lr_lambdas[0], LRFactor)


def test_no_decay_split_matches_timm():
    from timm.optim._param_groups import param_groups_weight_decay

    model = reslab.create_model("resnet18", num_classes=7)
    ref = param_groups_weight_decay(model, weight_decay=5e-4)
    ref_no = {id(p) for g in ref if g["weight_decay"] == 0 for p in g["params"]}
    opt = build_optimizer(OptimConfig(weight_decay=5e-4), model)
    ours_no = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    ours_yes = {id(p) for g in opt.param_groups if g["weight_decay"] == 5e-4 for p in g["params"]}
    assert ours_no == ref_no and len(ours_no) > 0
    assert ours_yes | ours_no == {id(p) for p in model.parameters()}


def test_param_groups_keep_lr_scale_and_split_each_group():
    model = reslab.create_model("resnet20", num_classes=10)
    groups = [{"params": ps, "lr_scale": 0.5**i, "name": n}
              for i, (n, ps) in enumerate(reversed(model.param_groups().items()))]  # fmt: skip
    opt = build_optimizer(OptimConfig(lr=0.2, weight_decay=1e-4), model, groups)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.2 * g["lr_scale"])
        assert (g["weight_decay"] == 0) == g["name"].endswith("/no_decay")
        assert all((p.ndim <= 1) == g["name"].endswith("/no_decay") for p in g["params"])
    names = {g["name"] for g in opt.param_groups}
    assert {"head", "head/no_decay", "stem", "stem/no_decay"} <= names
    with pytest.raises(ConfigError, match="repeats"):
        split_decay([{"params": list(model.fc.parameters())}] * 2, 1e-4)


def test_ema_matches_timm_model_ema_v2():
    from timm.utils import ModelEmaV2

    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    ours, ref = ModelEma(model, decay=0.9, warmup=False), ModelEmaV2(model, decay=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 1, 12, 12)
    for _ in range(5):
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ours.update(model)
        ref.update(model)
    a, b = ours.module.state_dict(), ref.module.state_dict()
    floats = [k for k in a if a[k].is_floating_point()]
    assert len(floats) > 50
    for k in floats:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert torch.equal(a["bn1.num_batches_tracked"], model.state_dict()["bn1.num_batches_tracked"])
    # timm's decay warmup formula
    warm = ModelEma(model, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)
    warm.updates = 90
    assert warm.current_decay() == pytest.approx(91 / 100)


def test_rng_state_round_trips_through_weights_only_load():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in the legacy state
    state = capture_rng_state()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(loaded)
    again = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    assert again == expected


def test_atomic_write_survives_a_writer_killed_mid_save(tmp_path: Path):
    path = tmp_path / "last.pt"
    good = {"model": {"w": torch.arange(10.0)}, "epoch": 1}
    save_checkpoint(good, path)
    # A real process starts replacing the checkpoint with a 64 MB one and is SIGKILLed
    # once half of the new bytes are on disk.
    script = textwrap.dedent(f"""
        import io, sys, time, torch
        from reslab.files import atomic_write_bytes
        buf = io.BytesIO()
        torch.save({{"format": "reslab-checkpoint", "model": {{"w": torch.randn(16_000_000)}}, "epoch": 2}}, buf)
        data = buf.getvalue()
        def writer(f):
            f.write(data[: len(data) // 2]); f.flush()
            print("half", flush=True)
            time.sleep(60)
            f.write(data[len(data) // 2 :])
        atomic_write_bytes({str(path)!r}, writer)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "half"
    temps = list(tmp_path.glob(".last.pt.*.tmp"))
    assert temps and temps[0].stat().st_size > 30_000_000  # the half-written file is real
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], good["model"]["w"])


def test_atomic_write_on_full_disk_keeps_previous_file(tmp_path: Path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)

    def disk_full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left on device.*previous file, if any, is intact"):
        atomic_write_bytes(path, disk_full)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file is cleaned up


def test_unwritable_output_folder_is_reported_before_training(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="not writable.*--out"):
        RunFolder(blocker / "run").prepare(resume=False, overwrite=False)
    with pytest.raises(ConfigError, match="cannot resume"):
        RunFolder(tmp_path / "empty").prepare(resume=True, overwrite=False)
    run = RunFolder(tmp_path / "run").prepare(resume=False, overwrite=False)
    save_checkpoint({"model": {}}, run.last)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        run.prepare(resume=False, overwrite=False)


def test_grad_scaler_path_equals_unscaled_path():
    """The fp16 path (GradScaler: scale, unscale before clipping, step, update) must give
    the same update as the plain path; checked with the CPU GradScaler."""
    from reslab.device import resolve_precision
    from reslab.engine.step import RunningStats, TrainStep

    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 10, (8,))
    cfg = OptimConfig(name="sgd", lr=0.05)
    weights = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**12)):
        torch.manual_seed(0)
        model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
        opt = build_optimizer(cfg, model)
        step = TrainStep(model, model, opt, build_schedule(opt, ScheduleConfig(name="constant"), 10, 10),
                         precision=resolve_precision(torch.device("cpu"), "fp32"), num_classes=10,
                         clip_grad=0.5, scaler=scaler, accum_steps=2)  # fmt: skip
        stats = RunningStats(torch.device("cpu"))
        for b in range(4):
            step(x, y, 0, b, update=b % 2 == 1, stats=stats)
        weights.append(model.state_dict())
    for k, v in weights[0].items():
        torch.testing.assert_close(weights[1][k], v, rtol=1e-5, atol=1e-6)
