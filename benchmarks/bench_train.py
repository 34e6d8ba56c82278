"""Training images/s: reslab's training loop (its default path) against a plain PyTorch
loop over the same architecture, side by side in one process on the same synthetic batches.

Contenders, per case:
  * ``peer fp32``: the textbook loop (model(x), cross_entropy, zero_grad, backward,
    SGD step) in fp32, contiguous memory: what most tutorials run.
  * ``peer bf16+cl``: the same loop, best configured by hand: bf16 autocast +
    channels_last model and inputs.
  * ``reslab``: ``Trainer._train_epoch`` (the exact code ``reslab train`` runs per epoch:
    the step, running totals on the device, schedule, progress bookkeeping) with the
    precision ``resolve_precision("auto")`` picks and the optimizer ``build_optimizer`` makes.
  * ``reslab compile`` (``--compile``): the same with ``compile: true``.

Cases: resnet20 at 28 px (1 channel, batch 128) and resnet50 at 224 px (3 channels, batch
32). The peers run torchvision's models: ``torchvision.models.resnet50``, and, as torchvision
has no CIFAR-style resnet20, resnet20 assembled from ``torchvision.models.resnet.BasicBlock``
with the option-A shortcut PyTorch users write for it (slice, then zero-pad the channels):
the same architecture and parameter count as reslab's resnet20.

Timing: contenders run in interleaved rounds (A B C A B C ...) so a noisy neighbour slows
all of them alike; each round times ``--steps`` steps after warm-up. images/s is the median
round; a ratio is the median over rounds of that round's ratio. Prints a table with ratios and writes benchmarks/results/train.json.

    python benchmarks/bench_train.py            # full run (~10 minutes on 2 cores)
    python benchmarks/bench_train.py --quick    # smoke run (writes nothing)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import PlainPadShortcut, write_json  # benchmarks/common.py
from torch import nn

from reslab import cpu_memory, create_model
from reslab.config import load_config
from reslab.device import cpu_bf16_support, resolve_device, resolve_precision, set_cpu_threads
from reslab.engine.distributed import DistInfo
from reslab.engine.loggers import Loggers
from reslab.engine.optim import build_optimizer
from reslab.engine.schedule import build_schedule
from reslab.engine.signals import StopSignals
from reslab.engine.step import TrainStep
from reslab.engine.trainer import Trainer
from reslab.models import fused

CASES = {
    "resnet20@28": dict(name="resnet20", size=28, chans=1, batch=128, classes=10, tv=None),
    "resnet50@224": dict(name="resnet50", size=224, chans=3, batch=32, classes=1000, tv="resnet50"),
}


def torchvision_resnet20(num_classes: int, in_chans: int) -> nn.Module:
    """resnet20 (He et al. 2015, CIFAR layout, option-A shortcuts) from torchvision's blocks."""
    from torchvision.models.resnet import BasicBlock

    layers: list[nn.Module] = [nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True)]
    cin = 16
    for planes, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            s = stride if i == 0 else 1
            down = PlainPadShortcut(s, planes) if cin != planes else None
            layers.append(BasicBlock(cin, planes, s, downsample=down))
            cin = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


class SyntheticLoader:
    """The loader protocol the trainer uses (set_epoch, iter_from, len) over fixed batches."""

    def __init__(self, batches):
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def iter_from(self, start: int):
        return iter(self.batches[start:])


def _batches(case, steps: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(case["batch"], case["chans"], case["size"], case["size"], generator=g)
    y = torch.randint(0, case["classes"], (case["batch"],), generator=g)
    # the same tensors every step (the loader is not what is measured here)
    return [(x.to(device), y.to(device))] * steps


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PeerLoop:
    """The plain PyTorch training loop, fp32 or bf16 autocast + channels_last."""

    def __init__(self, case, device, fast: bool):
        torch.manual_seed(0)
        if case["tv"]:
            import torchvision

            model = getattr(torchvision.models, case["tv"])(num_classes=case["classes"])
        else:
            model = torchvision_resnet20(case["classes"], case["chans"])
            ours = create_model(case["name"], num_classes=case["classes"], in_chans=case["chans"])
            n_peer, n_ours = (sum(p.numel() for p in m.parameters()) for m in (model, ours))
            assert n_peer == n_ours, f"peer resnet20 has {n_peer} parameters, reslab's {n_ours}"
        self.model = model.to(device).train()
        self.fast, self.device = fast, device
        if fast:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.dtype = torch.bfloat16 if (device.type == "cpu" or torch.cuda.is_bf16_supported()) else torch.float16

    def run(self, batches) -> None:
        for x, y in batches:
            if self.fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.fast):
                loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        _sync(self.device)


class ReslabLoop:
    """reslab's per-epoch training code on the same batches."""

    def __init__(self, case, device, compile_: bool, batches):
        cfg = load_config(None, {"data": {"source": "synthetic", "batch_size": case["batch"]},
                                 "model": {"name": case["name"]}, "compile": compile_,
                                 "optim": {"lr": 0.01}, "schedule": {"name": "constant"},
                                 "log_every": 50})  # fmt: skip
        torch.manual_seed(0)
        model = create_model(case["name"], num_classes=case["classes"], in_chans=case["chans"]).to(device)
        self.precision = resolve_precision(device, "auto")
        fused.enable_for(self.precision, log=print)  # as reslab train does
        if self.precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        train_model = torch.compile(model) if compile_ else model
        opt = build_optimizer(cfg.optim, model)
        sched = build_schedule(opt, cfg.schedule, 10**9, 10**6)
        scaler = torch.amp.GradScaler(device.type) if self.precision.needs_scaler else None
        step = TrainStep(train_model, model, opt, sched, precision=self.precision, num_classes=case["classes"],
                         scaler=scaler)  # fmt: skip
        self.loader = SyntheticLoader(batches)
        self.trainer = Trainer(cfg, model=model, train_model=train_model, step=step, train_loader=self.loader,
                               val_loader=None, test_loader=None, precision=self.precision, dist=DistInfo(),
                               run_dir=Path("."), log=lambda m: None, loggers=Loggers([]), callbacks=[],
                               meta={"classes": [], "preprocess": {}})  # fmt: skip
        self.signals = StopSignals()
        self.device = device

    def run(self, batches) -> None:
        self.loader.batches = batches
        self.trainer.batches = len(batches)
        self.trainer._train_epoch(0, 0, self.signals)
        _sync(self.device)


def bench_case(key: str, case: dict, device, steps: int, rounds: int, warmup: int, with_compile: bool) -> dict:
    batches = _batches(case, steps, device)
    contenders = {
        "peer fp32": PeerLoop(case, device, fast=False),
        "peer bf16+cl": PeerLoop(case, device, fast=True),
        "reslab": ReslabLoop(case, device, False, batches),
    }
    if with_compile:
        contenders["reslab compile"] = ReslabLoop(case, device, True, batches)
    warmup_s = {}
    for name, c in contenders.items():
        t0 = time.perf_counter()
        c.run(batches[:warmup])
        warmup_s[name] = round(time.perf_counter() - t0, 1)  # compile time included
        print(f"  {key}: warm-up {name} {warmup_s[name]} s", flush=True)
    rates: dict[str, list[float]] = {n: [] for n in contenders}
    for r in range(rounds):
        for name, c in contenders.items():
            t0 = time.perf_counter()
            c.run(batches)
            rates[name].append(steps * case["batch"] / (time.perf_counter() - t0))
    med = {n: statistics.median(v) for n, v in rates.items()}

    def ratio(a: str, b: str) -> float:
        # contenders of one round ran back to back, so a round's ratio cancels slow drifts
        # of the machine's speed; the median over rounds drops the odd disturbed round
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b])), 3)

    result = {
        "case": key,
        "batch": case["batch"],
        "peer_architecture": f"torchvision.models.{case['tv']}" if case["tv"] else
        f"{case['name']} from torchvision.models.resnet.BasicBlock + option-A shortcut",
        "reslab_precision": contenders["reslab"].precision.describe(),
        "images_per_s": {n: round(v, 1) for n, v in med.items()},
        "warmup_s": warmup_s,
        "rounds": {n: [round(x, 1) for x in v] for n, v in rates.items()},
        "ratio_vs_peer_fp32": ratio("reslab", "peer fp32"),
        "ratio_vs_peer_bf16_cl": ratio("reslab", "peer bf16+cl"),
    }
    if with_compile:
        result["ratio_compile_vs_peer_fp32"] = ratio("reslab compile", "peer fp32")
        result["ratio_compile_vs_peer_bf16_cl"] = ratio("reslab compile", "peer bf16+cl")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few steps, resnet20 only: checks the script runs")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--compile", action="store_true", help="also time compile: true (minutes of compiling)")
    p.add_argument("--steps", type=int, help="steps per timed round (default 6; 1 for resnet50 on CPU)")
    p.add_argument("--rounds", type=int, help="timed rounds per contender (default 25; 16 for resnet50 on CPU)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    threads = set_cpu_threads(args.threads)
    native, why = cpu_bf16_support()
    machine = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_bf16": native, "cpu_bf16_reason": why, "threads": threads, "device": str(device),
        "torch": torch.__version__, "python": sys.version.split()[0], "cpu_memory": cpu_memory.describe(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }  # fmt: skip
    print(f"machine: {machine}")
    results = []
    cases = ["resnet20@28"] if args.quick else args.cases
    for key in cases:
        case = CASES[key]
        big = case["size"] > 100 and device.type == "cpu"
        steps, rounds, warmup = (3, 2, 2) if args.quick else ((1, 16, 2) if big else (6, 25, 5))
        steps, rounds = args.steps or steps, args.rounds or rounds
        results.append(bench_case(key, case, device, steps, rounds, warmup, args.compile))
    print()
    header = f"{'case':14} {'contender':16} {'img/s':>9}"
    print(header + "\n" + "-" * len(header))
    for r in results:
        for name, v in r["images_per_s"].items():
            print(f"{r['case']:14} {name:16} {v:9.1f}")
        print(f"{r['case']:14} reslab / peer fp32     = {r['ratio_vs_peer_fp32']:.2f}x (goal >= 2.5x on CPU)")
        print(f"{r['case']:14} reslab / peer bf16+cl  = {r['ratio_vs_peer_bf16_cl']:.2f}x (goal >= 1.1x on CPU)")
        if "ratio_compile_vs_peer_fp32" in r:
            print(f"{r['case']:14} compile / peer fp32    = {r['ratio_compile_vs_peer_fp32']:.2f}x")
            print(f"{r['case']:14} compile / peer bf16+cl = {r['ratio_compile_vs_peer_bf16_cl']:.2f}x")
    if not args.quick:  # a smoke run never overwrites the recorded figures
        write_json(args.out, {"machine": machine, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
