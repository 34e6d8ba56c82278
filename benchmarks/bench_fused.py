"""What reslab's fused BatchNorm (+ residual add) + ReLU CPU kernel saves
(``reslab/models/fused.py``, ``reslab/models/csrc/bn_act.cpp``), against ATen's three ops.

1. Per op: BN + add + ReLU and BN + ReLU, forward and backward, on bf16 channels_last
   activations of resnet50 (batch 32) and resnet20 (batch 128).
2. Per training step (bf16 autocast + channels_last): the same reslab model with the
   kernel and with ATen's ops, in interleaved rounds on one batch; the ratio is the median
   over rounds of each round's ratio. resnet20 and wrn16_2 at 28 px (batch 128), resnet50
   at 224 px (batch 32).

    python benchmarks/bench_fused.py            # ~2-3 minutes on 2 cores
    python benchmarks/bench_fused.py --quick    # smoke run, writes nothing
"""

from __future__ import annotations

import torch
from common import (  # benchmarks/common.py
    interleaved_training,
    median_time,
    parse_args,
    write_record,
)
from torch import nn

from reslab import create_model
from reslab.device import set_cpu_threads
from reslab.models import fused

CL = torch.channels_last
SHAPES = {  # name: (N, C, H, W)
    "resnet50 stage 1 output": (32, 256, 56, 56),
    "resnet50 stage 1 width": (32, 64, 56, 56),
    "resnet50 stage 4 output": (32, 2048, 7, 7),
    "resnet20 stage 1": (128, 16, 28, 28),
    "resnet20 stage 3": (128, 64, 7, 7),
}


class _Kernel:
    """Switches ``bn_act`` between the kernel and ATen's ops."""

    def __init__(self):
        self.loaded = fused._kernel

    def on(self) -> None:
        fused._kernel = self.loaded

    def off(self) -> None:
        fused._kernel = None


def per_op(kernel: _Kernel, reps: int, shapes: dict) -> dict:
    result = {}
    for name, shape in shapes.items():
        torch.manual_seed(0)
        x = torch.randn(shape).bfloat16().contiguous(memory_format=CL).requires_grad_()
        r = torch.randn(shape).bfloat16().contiguous(memory_format=CL).requires_grad_()
        dy = torch.randn(shape).bfloat16().contiguous(memory_format=CL)
        bn, relu = nn.BatchNorm2d(shape[1]), nn.ReLU()
        row = {}
        for label, residual in (("bn_add_relu", r), ("bn_relu", None)):
            inputs = (x, bn.weight, bn.bias) + (() if residual is None else (residual,))

            def run(residual=residual, inputs=inputs):
                torch.autograd.grad(fused.bn_act(bn, relu, x, residual), inputs, dy)

            kernel.on()
            ours = median_time(run, reps)
            kernel.off()
            aten = median_time(run, reps)
            row[label] = {"aten_ms": round(1e3 * aten, 2), "fused_ms": round(1e3 * ours, 2),
                          "ratio": round(aten / ours, 2)}  # fmt: skip
        result[name] = {"shape": list(shape), **row}
    kernel.on()
    return result


def per_step(kernel: _Kernel, cases: list, steps: int, rounds: int) -> dict:
    result = {}
    for name, batch, size, chans in cases:
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=chans).to(memory_format=CL).train()
        models = {"fused kernel": model, "ATen ops": create_model(name, num_classes=10, in_chans=chans)}
        models["ATen ops"].load_state_dict(model.state_dict())
        models["ATen ops"].to(memory_format=CL).train()
        x = torch.randn(batch, chans, size, size).contiguous(memory_format=CL)
        y = torch.randint(0, 10, (batch,))
        step = interleaved_training(models, x, y, steps, rounds,
                                    enter={"fused kernel": kernel.on, "ATen ops": kernel.off})  # fmt: skip
        kernel.on()
        result[f"{name}@{size} batch {batch}"] = step
    return result


def main(argv=None) -> int:
    args = parse_args(__doc__, "fused.json", argv)
    threads = set_cpu_threads(args.threads)
    ok, why = fused.enable(log=print)
    print(why)
    if not ok:
        return 1
    kernel = _Kernel()
    if args.quick:
        shapes = {"small": (4, 32, 8, 8)}
        cases = [("resnet20", 16, 28, 1)]
        ops, steps = per_op(kernel, 3, shapes), per_step(kernel, cases, 1, 2)
    else:
        cases = [("resnet20", 128, 28, 1), ("wrn16_2", 128, 28, 1), ("resnet50", 32, 224, 3)]
        ops = per_op(kernel, 20, SHAPES)
        steps = {}
        for case in cases:  # resnet50 steps are ~60x longer: one step per round
            steps.update(per_step(kernel, [case], 1 if case[0] == "resnet50" else 6, 12 if case[0] == "resnet50" else 20))
    for name, row in ops.items():
        print(f"{name:26} {str(tuple(row['shape'])):18} " + "   ".join(
            f"{k}: ATen {v['aten_ms']} ms, fused {v['fused_ms']} ms ({v['ratio']:.2f}x)"
            for k, v in row.items() if k != "shape"))  # fmt: skip
    for name, step in steps.items():
        rates = ", ".join(f"{k} {v} img/s" for k, v in step["images_per_s"].items())
        print(f"{name:26} training step: {rates}; fused / ATen = {step['ratio']:.3f}x")
    write_record(args, threads, per_op=ops, per_step=steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
