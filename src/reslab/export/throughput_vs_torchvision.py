"""``reslab bench``: throughput of reslab's inference paths against torchvision, side by side.

Every path runs the same weights on the same input batch in one process, and the timed
iterations are interleaved (one batch of each path per round, median over rounds), so a
machine that gets busier or quieter during the run shifts every path alike and the
ratios stay fair.

Inference paths (CPU): the peer's fp32 eager model, the peer in bf16 autocast +
channels_last, reslab's ``optimize_for_inference`` (bf16, folded, compiled) and reslab's
int8. On CUDA: fp32 eager, fp16/bf16 autocast + channels_last, and reslab's optimised
path. The peer is torchvision's model of the same name when there is one (the weights
are copied into reslab's model: the names match); CIFAR-style models have no torchvision
twin, so their peer is reslab's own eager model.
"""

from __future__ import annotations

import copy
import logging
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from .. import cpu_memory
from ..device import cpu_bf16_support, resolve_device, set_cpu_threads
from .training_vs_torchvision import train_paths


@dataclass
class BenchRow:
    """One timed path. ``vs_fp32`` / ``vs_bf16cl``: throughput ratios to the peer's paths."""

    name: str
    images_per_s: float
    gflops: float
    ms_per_batch: float
    vs_fp32: float = 0.0
    vs_bf16cl: float = 0.0
    prepare_s: float = 0.0
    note: str = ""


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or ``platform``), plus its AMX/bf16 flags."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("unknown CPU", platform.processor()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    extra = [f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni") if f in flags]
    return f"{name} ({', '.join(extra)})" if extra else name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    paths: dict[str, Callable[[], object]], iters: int, warmup: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each path; rounds interleave the paths.

    Args:
        paths: name -> zero-argument callable running one batch.
        iters: timed rounds (each runs every path once).
        warmup: untimed calls of each path first (allocator, oneDNN primitive caches).
    Returns:
        name -> median seconds.
    """
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(max(1, iters)):
        for name, fn in paths.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def peer_model(
    name: str, num_classes: int, device: torch.device
) -> tuple[nn.Module, nn.Module, str]:
    """(peer, reslab model with the peer's weights, peer description)."""
    import torchvision

    from ..models import create_model

    ours = create_model(name, num_classes=num_classes)
    builder = getattr(torchvision.models, name, None)
    if builder is not None and ours.default_cfg["family"] == "imagenet":
        peer = builder(weights=None, num_classes=num_classes)
        ours.load_state_dict(peer.state_dict(), strict=True)
        desc = f"torchvision.models.{name}"
    else:
        peer = copy.deepcopy(ours)
        desc = f"reslab {name} eager (torchvision has no {name})"
    return peer.eval().to(device), ours.eval().to(device), desc


def _inference_paths(
    peer, ours, x, device, compile_: bool, int8: bool, log, backends: tuple[str, ...] = ()
) -> tuple[dict, dict, dict]:
    from .optimize import optimize_for_inference

    half = torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        half = torch.float16
    half_name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[half]
    peer_cl = copy.deepcopy(peer).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def peer_amp():
        with torch.inference_mode(), torch.autocast(device.type, dtype=half):
            return peer_cl(x_cl)

    def peer_fp32():
        with torch.inference_mode():
            return peer(x)

    paths = {"peer fp32 eager": peer_fp32, f"peer {half_name}+cl eager": peer_amp}
    prep, notes = {}, {}
    backend = "compile" if compile_ else "eager"
    t = time.perf_counter()
    fast = optimize_for_inference(ours, x, "auto", backend=backend, validate=True, log=log)
    prep["reslab optimized"] = time.perf_counter() - t
    notes["reslab optimized"] = f"{fast.info.precision}, {fast.info.backend}"
    paths["reslab optimized"] = lambda: fast(x)
    for bk in backends:  # the same format with other backends: the numbers behind the default
        name = f"reslab optimized, {bk}"
        t = time.perf_counter()
        other = optimize_for_inference(ours, x, "auto", backend=bk, validate=True, log=log)
        prep[name] = time.perf_counter() - t
        notes[name] = f"{other.info.precision}, {other.info.backend}"
        paths[name] = lambda m=other: m(x)
    if int8 and device.type == "cpu":
        t = time.perf_counter()
        q = optimize_for_inference(
            ours, x, "int8", backend="compile", validate=False, calibration=x, log=log
        )
        prep["reslab int8"] = time.perf_counter() - t
        used = q.info.precision
        notes["reslab int8"] = f"{used}, {q.info.backend}" + (
            f" (fell back: {'; '.join(q.info.fallbacks)})" if used != "int8" else ""
        )
        paths["reslab int8"] = lambda: q(x)
    elif int8:
        log("int8: skipped on CUDA (the x86 int8 quantizer targets CPUs)")
    return paths, prep, notes


def _rows(secs: dict, batch: int, flop_per_image: float, prep: dict, notes: dict) -> list[BenchRow]:
    names = list(secs)
    rows = []
    for name in names:
        ips = batch / secs[name]
        rows.append(
            BenchRow(
                name,
                ips,
                flop_per_image * ips / 1e9,
                1000 * secs[name],
                prepare_s=prep.get(name, 0.0),
                note=notes.get(name, ""),
            )  # fmt: skip
        )
    fp32, amp = rows[0].images_per_s, rows[1].images_per_s
    for r in rows:
        r.vs_fp32, r.vs_bf16cl = r.images_per_s / fp32, r.images_per_s / amp
    return rows


def run_bench(
    model: str = "resnet50",
    batch_size: int = 32,
    image_size: int = 224,
    mode: str = "inference",
    iters: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    device: str = "auto",
    compile: bool = True,
    int8: bool = True,
    backends: tuple[str, ...] = (),
    num_classes: int = 1000,
    log: Callable[[str], None] | None = logging.getLogger("reslab.export").info,
    train_compile: bool = False,
    compile_mode: str = "default",
    fused: bool | None = None,
) -> dict:
    """Measures inference (and training) throughput of reslab's paths against the peer.

    Args:
        model: a registered name; torchvision's twin is the peer when it exists.
        batch_size, image_size: the input batch (B, 3, S, S), random normal, shared by all paths.
        mode: ``inference``, ``train`` or ``both``.
        iters: timed rounds; ``warmup``: untimed calls per path first.
        threads: CPU threads (default: every core this process may use).
        device: ``auto``, ``cpu`` or ``cuda``.
        compile: let the optimised paths use ``torch.compile`` (else eager).
        int8: include the int8 path (CPU).
        backends: extra rows for the optimised path with other backends (``eager``, ``jit``),
            to compare them with the default side by side.
        num_classes: classifier size.
        log: progress messages (default: the ``reslab.export`` logger; None: silent).
        train_compile: add the compiled training rows (the best plain loop: torchvision +
            fused SGD + torch.compile; and reslab's engine step compiled in ``compile_mode``).
        compile_mode: ``torch.compile`` mode of the compiled engine step
            (``reduce-overhead``: CUDA graphs, CUDA only).
        fused: optimizer kernels of the engine and best-loop rows (None: fused where supported).
    Returns:
        A JSON-ready dict: settings, machine, and per mode a list of rows
        (``images_per_s``, ``gflops``, ``vs_fp32``, ``vs_bf16cl``...).
    """
    from ..models import count_macs

    say = log or (lambda _m: None)
    _check_settings(mode, batch_size, image_size, iters)
    dev = resolve_device(device)
    n_threads = set_cpu_threads(threads)
    torch.manual_seed(0)  # the same random weights every run: comparable figures and checks
    peer, ours, peer_desc = peer_model(model, num_classes, dev)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(dev)
    macs = count_macs(ours, (3, image_size, image_size))
    result = {"model": model, "peer": peer_desc, "batch_size": batch_size,
              "image_size": image_size, "iters": iters, "warmup": warmup,
              **_machine(dev, n_threads), "macs_per_image": macs}  # fmt: skip
    say(
        f"bench {model} batch {batch_size} at {image_size} px on {result['device']} ({n_threads} threads); peer: {peer_desc}"
    )
    if mode in ("inference", "both"):
        paths, prep, notes = _inference_paths(peer, ours, x, dev, compile, int8, say, backends)
        secs = time_interleaved(paths, iters, warmup, dev)
        result["inference"] = [asdict(r) for r in _rows(secs, batch_size, 2 * macs, prep, notes)]
    if mode in ("train", "both"):
        # Forward + backward ~ 3x the forward FLOPs (backward computes two products per layer).
        paths, notes = train_paths(peer, ours, x, dev, compile_=train_compile, compile_mode=compile_mode,
                                   fused=fused, num_classes=num_classes, log=say)  # fmt: skip
        secs = time_interleaved(paths, iters, warmup, dev)
        result["train"] = [asdict(r) for r in _rows(secs, batch_size, 6 * macs, {}, notes)]
    try:  # peak resident memory of this process so far (the module is POSIX-only)
        import resource

        result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    except ImportError:
        pass
    return result


def _check_settings(mode: str, batch_size: int, image_size: int, iters: int) -> None:
    """Refuses settings that cannot be measured, before any model is built."""
    from ..errors import ConfigError

    if mode not in ("inference", "train", "both"):
        raise ConfigError(f"--mode {mode!r}: choose inference, train or both.")
    if batch_size < 1 or image_size < 8 or iters < 1:
        raise ConfigError(
            f"received batch_size={batch_size}, image_size={image_size}, iters={iters}; "
            "expected batch_size >= 1, image_size >= 8, iters >= 1."
        )


def _machine(dev: torch.device, n_threads: int) -> dict:
    """Where the figures were measured: device, CPU, threads, torch, allocator, bf16."""
    return {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "cpu": cpu_name(),
        "threads": n_threads,
        "torch": torch.__version__,
        "cpu_memory": cpu_memory.describe(),
        "bf16_native": cpu_bf16_support()[0] if dev.type == "cpu" else torch.cuda.is_bf16_supported(),
    }


def format_table(result: dict) -> str:
    """A plain-text table of a ``run_bench`` result."""
    amp = "bf16+cl"
    lines = [
        f"{result['model']}, batch {result['batch_size']}, {result['image_size']} px, {result['device']}, "
        f"{result['threads']} threads, torch {result['torch']}; peer: {result['peer']}",
        result.get("cpu_memory", ""),
    ]
    for mode in ("inference", "train"):
        if mode not in result:
            continue
        lines.append(f"\n{mode}:")
        lines.append(
            f"{'path':44s} {'img/s':>9s} {'GFLOP/s':>9s} {'vs fp32':>8s} {'vs ' + amp:>11s}  notes"
        )
        for r in result[mode]:
            note = r["note"] + (f"; ready in {r['prepare_s']:.0f} s" if r["prepare_s"] else "")
            lines.append(
                f"{r['name']:44s} {r['images_per_s']:9.1f} {r['gflops']:9.1f} "
                f"{r['vs_fp32']:7.2f}x {r['vs_bf16cl']:10.2f}x  {note}"
            )
    return "\n".join(lines)
