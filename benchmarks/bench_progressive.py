"""What progressive resizing (``data.progressive_resize``) saves: the training step's cost
per image at each image size, against the full size, and what a ramp of sizes costs.

One model, bf16 autocast + channels_last (+ reslab's fused kernel where the CPU allows it),
steps at each size in interleaved rounds; the cost of a size is the median over rounds of
its time per image over the full size's in the same round. A schedule's cost is the sum of
its epochs' costs over as many epochs at full size (evaluation excluded).

    python benchmarks/bench_progressive.py            # ~3 minutes on 2 cores
    python benchmarks/bench_progressive.py --quick    # smoke run, writes nothing
"""

from __future__ import annotations

import statistics
import time

import torch
from common import bf16_steps, parse_args, write_record  # benchmarks/common.py

from reslab import create_model
from reslab.data.loaders import describe_sizes, progressive_sizes
from reslab.device import set_cpu_threads
from reslab.models import fused

CL = torch.channels_last
# name: (model, in_chans, batch, full size, smaller sizes, schedules (epochs, min, start, end, step))
CASES = {
    "wrn16_2 (configs/fmnist_fast.yaml)": ("wrn16_2", 1, 128, 28, (16, 20, 24), [(12, 16, 0, 8, 4)]),
    "resnet50 (ImageNet-style)": ("resnet50", 3, 32, 224, (160, 192), [(40, 160, 0, 30, 32)]),
}


def step_costs(name: str, chans: int, batch: int, sizes: list[int], steps: int, rounds: int) -> dict:
    """Seconds per image of a training step at each size (median round) and each size's
    cost relative to the last (full) size, measured in interleaved rounds."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=chans).to(memory_format=CL).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True)
    batches = {s: (torch.randn(batch, chans, s, s).contiguous(memory_format=CL), torch.randint(0, 10, (batch,)))
               for s in sizes}  # fmt: skip

    def run(size: int, n: int) -> float:
        t = time.perf_counter()
        bf16_steps(model, opt, *batches[size], n)
        return (time.perf_counter() - t) / (n * batch)

    for s in sizes:
        run(s, 2)
    per_image: dict[int, list[float]] = {s: [] for s in sizes}
    for _ in range(rounds):
        for s in sizes:
            per_image[s].append(run(s, steps))
    full = sizes[-1]
    return {
        "ms_per_image": {s: round(1e3 * statistics.median(v), 3) for s, v in per_image.items()},
        "relative_cost": {s: round(statistics.median(a / b for a, b in zip(v, per_image[full])), 3)
                          for s, v in per_image.items()},  # fmt: skip
    }


def schedule_cost(relative: dict[int, float], full: int, epochs: int, min_size: int, start: int,
                  end: int, step: int) -> dict:  # fmt: skip
    sizes = progressive_sizes(full, epochs, min_size, start, end, step)
    cost = sum(relative[s] for s in sizes)
    return {"sizes": sizes, "describe": describe_sizes(sizes, full), "epochs": epochs,
            "full_size_epochs": round(cost, 2), "cost_ratio": round(cost / epochs, 3)}  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(__doc__, "progressive.json", argv)
    threads = set_cpu_threads(args.threads)
    print(fused.enable(log=print)[1])
    cases = CASES
    if args.quick:
        cases = {"resnet20 (quick)": ("resnet20", 1, 16, 28, (16,), [(4, 16, 0, 2, 4)])}
    result = {}
    for label, (name, chans, batch, full, smaller, schedules) in cases.items():
        heavy = full > 64
        steps, rounds = (1, 2) if args.quick else ((1, 7) if heavy else (6, 9))
        used = {s for e, m, a, b, k in schedules for s in progressive_sizes(full, e, m, a, b, k)}
        sizes = sorted(set(smaller) | used - {full}) + [full]
        costs = step_costs(name, chans, batch, sizes, steps, rounds)
        rel = costs["relative_cost"]
        scheds = [schedule_cost(rel, full, *s) for s in schedules]
        result[label] = {"batch": batch, **costs, "schedules": scheds}
        print(f"{label}, batch {batch}: " + ", ".join(
            f"{s} px {costs['ms_per_image'][s]} ms/image ({rel[s]:.2f}x)" for s in sizes))  # fmt: skip
        for s in scheds:
            print(f"  {s['epochs']} epochs of {s['describe']}: {s['full_size_epochs']} full-size epochs "
                  f"({s['cost_ratio']:.2f}x the time of {s['epochs']})")  # fmt: skip
    write_record(args, threads, cases=result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
