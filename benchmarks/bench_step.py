"""Where the time of a bf16 training step goes on this CPU, and how fast each convolution runs.

Two measurements per model, both bf16 autocast + channels_last with reslab's fused
BatchNorm + ReLU kernel where the CPU allows it (as ``reslab train`` runs):

1. **The step by kind of work.** ``torch.profiler`` over a few training steps (forward,
   backward, foreach SGD); each op's own CPU time ("self") is put in one bucket:
   convolution forward, convolution backward, matrix products (1x1 convolutions and the
   classifier), BatchNorm + ReLU (+ residual add), the optimizer, other element-wise ops
   (adds, copies, pooling, loss), and the framework's own work (autograd, views, allocation).
2. **Each distinct k x k convolution** (k > 1) of the model, run on its own: the forward,
   the input gradient and the weight gradient (``aten::convolution_backward`` with one
   output asked for), in interleaved rounds, median; with the rate each reaches
   (2 x MACs / time). The first convolution's input gradient is not computed in training,
   so it is not timed. 1x1 convolutions train as matrix products (``Conv1x1``) and are
   in bucket 1's matrix products.

    python benchmarks/bench_step.py            # about a minute on 2 cores
    python benchmarks/bench_step.py --quick    # smoke run, writes nothing
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import torch
import torch.nn.functional as F
from common import bf16_steps, call_times, parse_args, write_record  # benchmarks/common.py
from torch import nn
from torch.profiler import ProfilerActivity, profile

from reslab import create_model
from reslab.device import set_cpu_threads
from reslab.models import fused

CL = torch.channels_last
# label: (model, in_chans, batch, image size)
CASES = {
    "wrn16_2, 28 px, batch 128 (configs/fmnist_fast.yaml)": ("wrn16_2", 1, 128, 28),
    "resnet20, 28 px, batch 128": ("resnet20", 1, 128, 28),
    "resnet50, 224 px, batch 32": ("resnet50", 3, 32, 224),
}
# Profiler op names (self time) -> bucket; the first matching prefix wins.
BUCKETS = (
    ("convolution backward", ("aten::convolution_backward",)),
    ("convolution forward", ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution")),
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")),
    ("BatchNorm + ReLU (+ add)", ("_BNAct", "aten::native_batch_norm", "aten::batch_norm",
                                  "aten::_batch_norm", "aten::relu", "aten::threshold_backward",
                                  "aten::clamp_min")),  # fmt: skip
    ("optimizer", ("aten::_foreach", "Optimizer.", "aten::lerp_")),
    ("adds, copies, pooling, loss", ("aten::add", "aten::mul", "aten::copy_", "aten::fill_", "aten::zero_",
                            "aten::max_pool", "aten::avg_pool", "aten::mean", "aten::sum",
                            "aten::_log_softmax", "aten::nll_loss", "aten::to", "aten::_to_copy")),  # fmt: skip
)


def bucket_of(op: str) -> str:
    for name, prefixes in BUCKETS:
        if op.startswith(prefixes):
            return name
    return "autograd, views, allocation"


def step_breakdown(model: nn.Module, opt, x, y, steps: int) -> dict:
    """Profiles ``steps`` training steps; milliseconds per step in each bucket."""
    bf16_steps(model, opt, x, y, 3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        bf16_steps(model, opt, x, y, steps)
        wall = (time.perf_counter() - t) / steps
    ms: Counter = Counter()
    for ev in prof.key_averages():
        ms[bucket_of(ev.key)] += ev.self_cpu_time_total / 1e3 / steps
    total = sum(ms.values())
    return {
        "step_ms": round(1e3 * wall, 1),
        "buckets_ms": {k: round(v, 2) for k, v in ms.most_common()},
        "buckets_share": {k: round(v / total, 3) for k, v in ms.most_common()},
    }


def conv_shapes(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """The distinct k x k (k > 1) convolutions one forward pass runs, with their count."""
    seen: Counter = Counter()
    first = []

    def hook(mod: nn.Conv2d, inputs, _out):
        key = (tuple(inputs[0].shape), tuple(mod.weight.shape), mod.stride, mod.padding, mod.groups)
        seen[key] += 1
        first.append(key)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]  # fmt: skip
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    for h in handles:
        h.remove()
    return [
        {"input": list(k[0]), "weight": list(k[1]), "stride": k[2][0], "padding": k[3][0],
         "groups": k[4], "count": n, "first_layer": k == first[0]}  # fmt: skip
        for k, n in seen.items()
    ]


def time_conv(shape: dict, reps: int, rounds: int) -> dict:
    """Forward, input-gradient and weight-gradient milliseconds of one convolution (bf16,
    channels_last; interleaved rounds, median) and the rate each reaches."""
    s, p, g = shape["stride"], shape["padding"], shape["groups"]
    xin = torch.randn(shape["input"], dtype=torch.bfloat16).contiguous(memory_format=CL)
    w = torch.randn(shape["weight"], dtype=torch.bfloat16).contiguous(memory_format=CL)
    out = F.conv2d(xin, w, stride=s, padding=p, groups=g)
    grad = torch.randn_like(out).contiguous(memory_format=CL)

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            grad, xin, w, None, [s, s], [p, p], [1, 1], False, [0, 0], g, mask)

    parts = {"forward": lambda: F.conv2d(xin, w, stride=s, padding=p, groups=g),
             "input_grad": backward([True, False, False]),
             "weight_grad": backward([False, True, False])}  # fmt: skip
    if shape["first_layer"]:
        del parts["input_grad"]  # the network's input needs no gradient
    times: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(rounds):
        for k, fn in parts.items():
            times[k].append(statistics.median(call_times(fn, reps, warmup=1)))
    n, _, ho, wo = out.shape
    macs = n * ho * wo * w.shape[0] * w[0].numel()
    row = {}
    for k, v in times.items():
        sec = statistics.median(v)
        row[f"{k}_ms"] = round(1e3 * sec, 3)
        row[f"{k}_tflops"] = round(2 * macs / sec / 1e12, 2)
    return row


def main(argv=None) -> int:
    args = parse_args(__doc__, "step.json", argv)
    threads = set_cpu_threads(args.threads)
    print(fused.enable(log=print)[1])
    cases = {"resnet20, 16 px, batch 8 (quick)": ("resnet20", 1, 8, 16)} if args.quick else CASES
    result = {}
    for label, (name, chans, batch, size) in cases.items():
        heavy = size > 64
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=chans).to(memory_format=CL).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                              weight_decay=5e-4, foreach=True)  # fmt: skip
        x = torch.randn(batch, chans, size, size).contiguous(memory_format=CL)
        y = torch.randint(0, 10, (batch,))
        steps = 2 if args.quick else (4 if heavy else 20)
        breakdown = step_breakdown(model, opt, x, y, steps)
        reps, rounds = (1, 1) if args.quick else ((3, 5) if heavy else (10, 5))
        convs = [{**c, **time_conv(c, reps, rounds)} for c in conv_shapes(model, x)]
        totals = {k: round(sum(c.get(f"{k}_ms", 0.0) * c["count"] for c in convs), 2)
                  for k in ("forward", "input_grad", "weight_grad")}  # fmt: skip
        result[label] = {**breakdown, "convolutions": convs, "convolutions_ms_per_step": totals}
        print(f"{label}: {breakdown['step_ms']} ms per step (profiled)")
        for k, v in breakdown["buckets_ms"].items():
            print(f"  {k:26s} {v:8.2f} ms  {100 * breakdown['buckets_share'][k]:5.1f}%")
        print("  k x k convolutions on their own (ms; TFLOP/s): forward / input grad / weight grad")
        for c in convs:
            cells = " / ".join(f"{c[f'{k}_ms']:.2f} ({c[f'{k}_tflops']:.2f})" if f"{k}_ms" in c else "-"
                               for k in ("forward", "input_grad", "weight_grad"))  # fmt: skip
            shape = f"{c['input'][1]}->{c['weight'][0]} at {c['input'][2]} px, stride {c['stride']}"
            print(f"    {shape:32s} x{c['count']}: {cells}")
        print(f"  summed over the step's convolutions: {totals}")
    write_record(args, threads, cases=result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
