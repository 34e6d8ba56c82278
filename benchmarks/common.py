"""Shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def parse_args(doc: str, result: str, argv=None) -> argparse.Namespace:
    """The options every comparison script takes: ``--quick`` (smoke run, writes nothing),
    ``--threads`` and ``--out`` (default ``benchmarks/results/<result>``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes; prints, writes nothing")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / result))
    return p.parse_args(argv)


def write_json(out: str | Path, record: dict) -> None:
    """Writes ``record`` as indented JSON to ``out`` (folders made) and says where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


def write_record(args: argparse.Namespace, threads: int, **fields) -> None:
    """Writes the run's figures to ``args.out`` with what they were measured under: date,
    threads, torch version and reslab's CPU memory setting. A ``--quick`` run writes nothing."""
    if args.quick:
        return
    from reslab import cpu_memory

    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": threads,
              "torch": torch.__version__, "cpu_memory": cpu_memory.describe(), **fields}  # fmt: skip
    write_json(args.out, record)


class PlainPadShortcut(nn.Module):
    """The option-A shortcut as PyTorch users write it, ``pad(x[:, :, ::s, ::s])`` over the
    channels: autograd's own backward returns a contiguous gradient (reslab's
    ``ZeroPadShortcut`` keeps the input's layout)."""

    def __init__(self, stride: int, out_channels: int):
        super().__init__()
        self.stride, self.out_channels = stride, out_channels

    def forward(self, x):
        pad = self.out_channels - x.shape[1]
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, pad // 2, pad - pad // 2))


def call_times(fn: Callable[[], object], reps: int, warmup: int = 3) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def median_time(fn: Callable[[], object], reps: int) -> float:
    """Median seconds of ``reps`` calls of ``fn``, after 3 untimed ones."""
    return statistics.median(call_times(fn, reps))


def bf16_steps(model: nn.Module, opt: torch.optim.Optimizer, x, y, n: int) -> None:
    """``n`` training steps of ``model`` on one batch under bf16 autocast (CPU)."""
    for _ in range(n):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def interleaved_training(models: dict[str, nn.Module], x, y, steps: int, rounds: int,
                         enter: dict[str, Callable[[], None]] | None = None) -> dict:  # fmt: skip
    """bf16 autocast training steps of each model in interleaved rounds on one batch.

    ``enter[name]``, if given, runs before each of that model's rounds (e.g. to switch a
    kernel on or off). Returns images/s per model (median round), the median over rounds of
    the first model's rate over the second's, and every round.
    """
    enter = enter or {}
    contenders = {}
    for name, model in models.items():
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True)

        def run(model=model, opt=opt, n=steps, name=name):
            enter.get(name, lambda: None)()
            bf16_steps(model, opt, x, y, n)

        run(n=3)
        contenders[name] = run
    rates: dict[str, list[float]] = {n: [] for n in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            t = time.perf_counter()
            run()
            rates[name].append(steps * len(x) / (time.perf_counter() - t))
    a, b = list(models)
    return {
        "images_per_s": {n: round(statistics.median(v), 1) for n, v in rates.items()},
        "ratio": round(statistics.median(p / q for p, q in zip(rates[a], rates[b])), 3),
        "rounds": {n: [round(r, 1) for r in v] for n, v in rates.items()},
    }
