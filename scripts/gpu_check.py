"""CUDA correctness checks for reslab's models, run on a lent GPU by scripts/gpu_check.sh.

    python scripts/gpu_check.py [--device cuda]

1. Every family trains one bf16-autocast, channels_last step (finite gradients) and its
   ``optimize_for_inference`` path agrees with the eager model.
2. The layout-keeping autograd Functions (``ZeroPadShortcut``, ``GlobalAvgPool``) give
   autograd's gradients on this device, in both layouts and in fp32/bf16, and return them
   in the input's layout.
3. Whole nets: gradients with those Functions equal the plain ops' gradients, and no op of
   a bf16 channels_last backward pass receives both memory layouts.
4. ``--checks sync`` (issue 21): Fashion-MNIST resident on the GPU, augmented there, and
   reslab's training step run 20 steps with no host synchronisation (CUDA sync debug mode).
5. ``--checks decode`` (issue 21): JPEG batches decoded on the device match the CPU
   workers' batches, and a corrupt file is skipped by name.

Runs on CPU too (``--device cpu``), which is how the script itself is checked before a
GPU is spent on it. Exits non-zero on the first failed check.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

import reslab
from reslab.export import optimize_for_inference
from reslab.models import GlobalAvgPool, ZeroPadShortcut, layers, mixed_layout_ops

FAMILIES = ["resnet50", "resnet50d", "resnext50_32x4d", "resnet20", "preact_resnet20", "wrn16_4"]
LAYOUT_NETS = ["resnet20", "preact_resnet20", "wrn16_2", "resnet18", "resnet50"]


def _input(model, batch: int, device) -> torch.Tensor:
    size = model.default_cfg["input_size"]
    return torch.randn(batch, *size, device=device).contiguous(memory_format=torch.channels_last)


def check_families(device, amp_dtype) -> None:
    for name in FAMILIES:
        torch.manual_seed(0)
        m = reslab.create_model(name).to(device).to(memory_format=torch.channels_last)
        x = _input(m, 8, device)
        with torch.autocast(device.type, dtype=amp_dtype):
            loss = m(x).float().logsumexp(1).mean()
        loss.backward()
        bad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not bad, f"{name}: missing or non-finite gradients in {bad[:3]}"
        m.eval()
        fast = optimize_for_inference(m, x[:2], precision="auto", validate=True, log=None)
        with torch.no_grad():
            ref, got = m(x), fast(x)
        agree = (ref.argmax(1) == got.argmax(1)).float().mean().item()
        diff = (ref - got).abs().max().item()
        print(f"{name:18s} fwd/bwd ok  optimized: {fast.info.describe()}  max|diff| {diff:.3g}  top1 agree {agree:.2f}")


def check_layers(device) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(3, 16, 9, 9, device=device, dtype=dtype).contiguous(memory_format=layout)
            # the shortcut: slice + pad, against autograd's own backward
            a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
            y = ZeroPadShortcut(2, 32)(a)
            g = torch.randn(y.shape, device=device, dtype=dtype)
            y.backward(g)
            F.pad(b[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)).backward(g)
            assert y.is_contiguous(memory_format=layout), "shortcut output changed layout"
            assert torch.equal(a.grad, b.grad), f"shortcut gradient differs ({dtype}, {layout})"
            assert a.grad.is_contiguous(memory_format=layout), "shortcut gradient changed layout"
            # the pool: mean over H, W
            a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
            y = GlobalAvgPool()(a)
            g = torch.randn(y.shape, device=device, dtype=dtype)
            y.backward(g)
            F.adaptive_avg_pool2d(b, 1).backward(g)
            tol = dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
            torch.testing.assert_close(a.grad, b.grad, **tol)
            assert a.grad.is_contiguous(memory_format=layout), "pool gradient changed layout"
    print(f"layout-keeping Functions: gradients equal autograd's on {device} (fp32, bf16; both layouts)")


def _grads(model, x) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x).float().logsumexp(1).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def check_nets(device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    for name in LAYOUT_NETS:
        torch.manual_seed(0)
        m = reslab.create_model(name, num_classes=10).to(device).to(memory_format=torch.channels_last).train()
        x = _input(m, 4, device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            ours = _grads(m, x)
        keep = layers._needs_grad_fn
        layers._needs_grad_fn = lambda t: False  # the plain slice/pad and adaptive pool
        try:
            plain = _grads(m, x)
        finally:
            layers._needs_grad_fn = keep
        worst = max(((ours[k] - plain[k]).abs().max() / plain[k].abs().max().clamp_min(1e-12)).item() for k in ours)
        assert worst < 1e-4, f"{name}: gradients differ from the plain ops' by {worst:.3g} (relative)"
        mixed = mixed_layout_ops(m, x, torch.bfloat16)
        assert not mixed, f"{name}: backward ops on mixed layouts: {sorted(set(mixed))[:5]}"
        print(f"{name:18s} grads match plain ops (worst rel {worst:.2g}); bf16 cl backward: no mixed layouts")


def check_no_sync(device, data: str = "fashion-mnist", batch: int = 512, steps: int = 20,
                  model: str = "wrn16_2", out: str | None = None) -> dict:
    """Issue 21: the in-memory loader (dataset resident on the GPU, augmentation there) and
    reslab's ``TrainStep`` run ``steps`` steps without one host synchronisation: CUDA's sync
    debug mode turns any blocking copy or ``.item()`` into an error. Also reports the
    images/s of that lean loop (loader + step), eager and, on CUDA, under CUDA graphs.
    On CPU the same code runs (no sync mode), which checks the script itself."""
    import json
    import time

    from reslab.config.schema import OptimConfig
    from reslab.data import load_dataset, make_loader
    from reslab.device import resolve_precision
    from reslab.engine.cuda_graphs import compile_model
    from reslab.engine.optim import build_optimizer
    from reslab.engine.step import RunningStats, TrainStep

    bundle = load_dataset(data, val_fraction=0.0, log=None)
    loader = make_loader(bundle.train, batch_size=batch, train=True, preprocess=bundle.preprocess, device=device)
    prec = resolve_precision(device, "auto")
    result = {"device": str(device), "data": data, "batch": batch, "model": model, "precision": prec.describe()}
    for mode in ["eager"] + (["reduce-overhead"] if device.type == "cuda" else []):
        torch.manual_seed(0)
        m = reslab.create_model(model, num_classes=len(bundle.classes), in_chans=bundle.preprocess["input_size"][0])
        m = m.to(device).to(memory_format=torch.channels_last if prec.channels_last else torch.contiguous_format)
        opt = build_optimizer(OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True), m)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _s: 1.0)
        run = m if mode == "eager" else compile_model(m, mode, device, print)
        step = TrainStep(run, m, opt, sched, precision=prec, num_classes=len(bundle.classes), label_smoothing=0.1)
        stats = RunningStats(device)
        batches = iter(loader)
        for b in range(3):  # warm-up: allocator, cuDNN autotuning, graph recording
            x, y = next(batches)
            step(x, y, 0, b, True, stats)
        sync = device.type == "cuda"
        if sync:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        t = time.perf_counter()
        try:
            for b in range(3, 3 + steps):
                x, y = next(batches)
                step(x, y, 0, b, True, stats)
            error = None
        except RuntimeError as e:  # the first synchronising call, with its traceback
            error = f"{type(e).__name__}: {e}"
        finally:
            if sync:
                torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize()
        secs = time.perf_counter() - t
        read = stats.read()
        result[mode] = {"host_syncs_error": error, "images_per_s": round(steps * batch / secs),
                        "loss": read["loss"], "acc": read["acc"]}  # fmt: skip
        print(f"no-sync check ({mode}): {'FAILED: ' + error if error else 'no host sync in'} {steps} steps; "
              f"{result[mode]['images_per_s']} images/s (loader + step, batch {batch})")
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    # the goal is the plain (eager) step; a sync inside torch.compile's CUDA graphs is reported only
    assert result["eager"]["host_syncs_error"] is None, result["eager"]["host_syncs_error"]
    return result


def check_decode(device) -> None:
    """Issue 21, goal 3: JPEG batches decoded on ``device`` (nvJPEG on CUDA) give the CPU
    workers' evaluation batches up to decoder rounding, and a corrupt file is skipped by
    name without failing its batch."""
    import tempfile
    from pathlib import Path

    from reslab.data import load_dataset, make_loader
    from reslab.data.synthetic import make_image_folder

    root = Path(tempfile.mkdtemp(prefix="reslab-decode-"))
    make_image_folder(root / "d", ["a", "b"], per_class=8, size=(120, 90), fmt="jpg")
    bundle = load_dataset(root / "d", image_size=64, in_memory=False, log=None, min_per_class=1, val_fraction=0.0)
    Path(bundle.train.paths[3]).write_bytes(b"\xff\xd8\xff" + b"broken" * 20)
    kw = dict(batch_size=16, train=False, preprocess=bundle.preprocess, workers=0)
    on_dev = make_loader(bundle.train, device=device, decode="auto" if device.type == "cuda" else "device", **kw)
    on_cpu = make_loader(bundle.train, device="cpu", decode="workers", **kw)
    assert on_dev.decode == "device", f"decode=auto chose {on_dev.decode} on {device}"
    (xd, yd), = list(on_dev)
    (xc, yc), = list(on_cpu)
    assert torch.equal(yd.cpu(), yc) and len(yd) == 15, (len(yd), len(yc))
    diff = (xd.cpu() - xc).abs()
    assert diff.mean() < 0.05, f"decoded on {device}: mean |diff| {diff.mean():.3g} (normalised units)"
    assert [p for p, _ in on_dev.skipped] == [bundle.train.paths[3]], on_dev.skipped
    print(f"JPEG batches decoded on {device}: mean |diff| {diff.mean():.3g}, max {diff.max():.3g} "
          "(normalised units) against the CPU workers; the corrupt file was skipped by name")


def pick_lr(work: str, dest: str, lrs: list[str]) -> float:
    """The sweep's best learning rate: the highest test accuracy among ``work/lr<lr>/headline.json``
    (runs that did not finish are listed with null); writes the table to ``dest``."""
    import json
    from pathlib import Path

    rows = []
    for lr in lrs:
        f = Path(work) / f"lr{lr}" / "headline.json"
        run = json.loads(f.read_text())["runs"][0] if f.exists() else {}
        rows.append({"lr": float(lr), "test_acc": run.get("test_acc"), "train_seconds": run.get("train_seconds")})
    done = [r for r in rows if r["test_acc"] is not None]
    best = max(done, key=lambda r: r["test_acc"])["lr"] if done else float(lrs[0])
    Path(dest).write_text(json.dumps({"rows": rows, "best_lr": best}, indent=2))
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--checks", nargs="+", default=["layers", "nets", "families"],
                   choices=["layers", "nets", "families", "sync", "decode"], help="which checks, in order")
    p.add_argument("--data", default="fashion-mnist", help="sync check: the dataset (digits for a CPU smoke)")
    p.add_argument("--batch", type=int, default=512, help="sync check: batch size")
    p.add_argument("--steps", type=int, default=20, help="sync check: timed steps")
    p.add_argument("--out", default=None, help="sync check: write its result as JSON here")
    p.add_argument("--pick-lr", nargs="+", metavar="ARG", help="WORK DEST LR...: print the sweep's best lr")
    args = p.parse_args(argv)
    if args.pick_lr:
        print(pick_lr(args.pick_lr[0], args.pick_lr[1], args.pick_lr[2:]))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        print("torch", torch.__version__, torch.cuda.get_device_name(device))
    for name in args.checks:
        if name == "layers":
            check_layers(device)
        elif name == "nets":
            check_nets(device)
        elif name == "families":
            check_families(device, torch.bfloat16)
        elif name == "decode":
            check_decode(device)
        else:
            check_no_sync(device, args.data, args.batch, args.steps, out=args.out)
    print("gpu_check.py: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
