"""What mixed memory layouts cost a channels_last backward pass on CPU, and what reslab's
layout-keeping option-A shortcut and pooling (``ZeroPadShortcut``, ``GlobalAvgPool`` in
``reslab/models/layers.py``) save.

1. Per op: ReLU's backward (``threshold_backward``) and an add on a bf16 (128, 16, 28, 28)
   tensor (resnet20's first stage at batch 128), with both operands channels_last against
   one contiguous and one channels_last operand (what autograd's slice/pad backward hands
   the residual stream).
2. Per training step: reslab's resnet20 in bf16 autocast + channels_last, as built, against
   the same model with plain ops whose backward autograd provides: each ``ZeroPadShortcut``
   swapped for ``pad(x[:, :, ::2, ::2])`` and the pooling for ``nn.AdaptiveAvgPool2d(1)``.
   Interleaved rounds on the same batch; the ratio is the median over rounds of each
   round's ratio.

    python benchmarks/bench_layouts.py            # ~2 minutes on 2 cores
    python benchmarks/bench_layouts.py --quick    # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reslab import cpu_memory, create_model
from reslab.engine.precision import set_cpu_threads
from reslab.models.layers import ZeroPadShortcut

from common import PlainPadShortcut, write_json  # benchmarks/common.py

CL = torch.channels_last
PLAIN = "plain ops (slice+pad, AdaptiveAvgPool2d)"
RESLAB = "reslab (ZeroPadShortcut, GlobalAvgPool)"


def _time_op(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def per_op(reps: int) -> dict:
    shape = (128, 16, 28, 28)
    out = torch.randn(shape).relu_().bfloat16().contiguous(memory_format=CL)  # a saved ReLU output
    grad_cl = torch.randn(shape).bfloat16().contiguous(memory_format=CL)
    grad_contig = grad_cl.contiguous()
    cases = {
        "threshold_backward": (lambda g: torch.ops.aten.threshold_backward(g, out, 0)),
        "add": (lambda g: torch.add(g, out)),
    }
    result = {}
    for name, fn in cases.items():
        same = _time_op(lambda: fn(grad_cl), reps)
        mixed = _time_op(lambda: fn(grad_contig), reps)
        result[name] = {"same_layout_us": round(same * 1e6, 1), "mixed_layout_us": round(mixed * 1e6, 1),
                        "slowdown": round(mixed / same, 2)}  # fmt: skip
    return result


def _model(plain_ops: bool) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1)
    if plain_ops:
        for block in model.modules():
            if isinstance(getattr(block, "downsample", None), ZeroPadShortcut):
                block.downsample = PlainPadShortcut(block.downsample.stride, block.downsample.out_channels)
        model.avgpool = nn.AdaptiveAvgPool2d(1)
    return model.to(memory_format=CL).train()


def per_step(steps: int, rounds: int) -> dict:
    x = torch.randn(128, 1, 28, 28).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (128,))
    contenders = {}
    for name, plain in ((PLAIN, True), (RESLAB, False)):
        model = _model(plain)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)

        def run(model=model, opt=opt, n=steps):
            for _ in range(n):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        run(n=3)
        contenders[name] = run
    rates: dict[str, list[float]] = {n: [] for n in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            t = time.perf_counter()
            run()
            rates[name].append(steps * len(x) / (time.perf_counter() - t))
    a, b = RESLAB, PLAIN
    return {
        "images_per_s": {n: round(statistics.median(v), 1) for n, v in rates.items()},
        "ratio": round(statistics.median(p / q for p, q in zip(rates[a], rates[b])), 3),
        "rounds": {n: [round(r, 1) for r in v] for n, v in rates.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "layouts.json"))
    args = p.parse_args(argv)
    threads = set_cpu_threads(args.threads)
    ops = per_op(5 if args.quick else 50)
    for name, r in ops.items():
        print(f"{name:20} same layout {r['same_layout_us']:8.1f} us   mixed {r['mixed_layout_us']:8.1f} us   "
              f"{r['slowdown']:.1f}x slower")  # fmt: skip
    step = per_step(2, 2) if args.quick else per_step(6, 25)
    for name, v in step["images_per_s"].items():
        print(f"resnet20 bf16+cl step, {name:42} {v:8.1f} img/s")
    print(f"reslab / plain ops = {step['ratio']:.3f}x (median of per-round ratios)")
    if args.quick:
        return 0
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": threads,
              "torch": torch.__version__, "cpu_memory": cpu_memory.describe(), "per_op": ops, "step": step}  # fmt: skip
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
