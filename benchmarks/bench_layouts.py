"""What memory layout means for a channels_last training step on CPU, and what reslab's
layers built for it (``reslab/models/layers.py``) save: the layout-keeping option-A shortcut
and pooling (``ZeroPadShortcut``, ``GlobalAvgPool``), and 1x1 convolutions that train as
matrix products (``Conv1x1``).

1. Per op: ReLU's backward (``threshold_backward``) and an add on a bf16 (128, 16, 28, 28)
   tensor (resnet20's first stage at batch 128), with both operands channels_last against
   one contiguous and one channels_last operand (what autograd's slice/pad backward hands
   the residual stream).
2. Per training step: reslab's resnet20 in bf16 autocast + channels_last, as built, against
   the same model with plain ops whose backward autograd provides: each ``ZeroPadShortcut``
   swapped for ``pad(x[:, :, ::2, ::2])`` and the pooling for ``nn.AdaptiveAvgPool2d(1)``.
   Interleaved rounds on the same batch; the ratio is the median over rounds of each
   round's ratio.
3. The 1x1 convolutions of resnet50 (bf16, batch 32, channels_last): forward plus backward
   (gradients of input and weight) as oneDNN convolutions against ``Conv1x1``'s matrix
   products, summed over the distinct stride-1 shapes; then a whole resnet50 step of
   reslab's model against the same model with every ``Conv1x1`` swapped for ``nn.Conv2d``.

    python benchmarks/bench_layouts.py            # ~5 minutes on 2 cores
    python benchmarks/bench_layouts.py --quick    # smoke run, writes nothing
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from common import (  # benchmarks/common.py
    PlainPadShortcut,
    interleaved_training,
    median_time,
    parse_args,
    write_record,
)
from torch import nn

from reslab import create_model
from reslab.device import set_cpu_threads
from reslab.models.layers import Conv1x1, ZeroPadShortcut

CL = torch.channels_last
PLAIN = "plain ops (slice+pad, AdaptiveAvgPool2d)"
RESLAB = "reslab (ZeroPadShortcut, GlobalAvgPool)"


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
        same = median_time(lambda: fn(grad_cl), reps)
        mixed = median_time(lambda: fn(grad_contig), reps)
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
    return interleaved_training({RESLAB: _model(False), PLAIN: _model(True)}, x, y, steps, rounds)


def conv1x1_ops(reps: int, batch: int = 32) -> dict:
    """Forward + backward of resnet50's distinct stride-1 1x1 convolutions, both ways."""
    model = create_model("resnet50")
    shapes, size = set(), {}

    def note(mod, inp, _out):
        size[mod] = inp[0].shape

    hooks = [m.register_forward_hook(note) for m in model.modules() if isinstance(m, Conv1x1)]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    for mod, shape in size.items():
        if mod.stride == (1, 1):
            shapes.add((mod.in_channels, mod.out_channels, shape[2], shape[3]))
    totals = {"conv2d_ms": 0.0, "conv1x1_ms": 0.0}
    for cin, cout, h, w in sorted(shapes):
        x = torch.randn(batch, cin, h, w).bfloat16().contiguous(memory_format=CL).requires_grad_()
        conv = Conv1x1(cin, cout).bfloat16().to(memory_format=CL)
        g = torch.randn(batch, cout, h, w).bfloat16().contiguous(memory_format=CL)
        for key, fn in (("conv2d_ms", lambda: F.conv2d(x, conv.weight)), ("conv1x1_ms", lambda: conv(x))):
            totals[key] += 1e3 * median_time(lambda fn=fn: torch.autograd.grad(fn(), (x, conv.weight), g), reps)
    totals = {k: round(v, 1) for k, v in totals.items()}
    totals["shapes"] = len(shapes)
    totals["ratio"] = round(totals["conv2d_ms"] / totals["conv1x1_ms"], 3)
    return totals


def resnet50_step(steps: int, rounds: int, batch: int = 32, size: int = 224) -> dict:
    torch.manual_seed(0)
    ours = create_model("resnet50")
    plain = create_model("resnet50")
    plain.load_state_dict(ours.state_dict())
    for parent in list(plain.modules()):
        for name, child in parent.named_children():
            if isinstance(child, Conv1x1):
                conv = nn.Conv2d(child.in_channels, child.out_channels, 1, child.stride, bias=False)
                conv.weight = child.weight
                setattr(parent, name, conv)
    models = {"reslab (Conv1x1)": ours.to(memory_format=CL).train(), "nn.Conv2d": plain.to(memory_format=CL).train()}
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=CL)
    y = torch.randint(0, 1000, (batch,))
    return interleaved_training(models, x, y, steps, rounds)


def main(argv=None) -> int:
    args = parse_args(__doc__, "layouts.json", argv)
    threads = set_cpu_threads(args.threads)
    ops = per_op(5 if args.quick else 50)
    for name, r in ops.items():
        print(f"{name:20} same layout {r['same_layout_us']:8.1f} us   mixed {r['mixed_layout_us']:8.1f} us   "
              f"{r['slowdown']:.1f}x slower")  # fmt: skip
    step = per_step(2, 2) if args.quick else per_step(6, 25)
    for name, v in step["images_per_s"].items():
        print(f"resnet20 bf16+cl step, {name:42} {v:8.1f} img/s")
    print(f"reslab / plain ops = {step['ratio']:.3f}x (median of per-round ratios)")
    ops1 = conv1x1_ops(3 if args.quick else 20)
    print(f"resnet50 1x1 convolutions ({ops1['shapes']} shapes), forward + backward: nn.Conv2d "
          f"{ops1['conv2d_ms']} ms, Conv1x1 {ops1['conv1x1_ms']} ms, {ops1['ratio']:.2f}x")  # fmt: skip
    step50 = resnet50_step(1, 2, batch=4, size=64) if args.quick else resnet50_step(2, 12)
    for name, v in step50["images_per_s"].items():
        print(f"resnet50 bf16+cl step, {name:20} {v:8.1f} img/s")
    print(f"Conv1x1 / nn.Conv2d = {step50['ratio']:.3f}x (median of per-round ratios)")
    write_record(args, threads, per_op=ops, step=step, conv1x1_ops=ops1, resnet50_step=step50)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
