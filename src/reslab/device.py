"""Which device and number format to run on, and why (the bottom layer: no engine needed).

On CPUs with native bf16 (Intel AMX or AVX512-BF16, e.g. Sapphire Rapids) bf16 autocast
with channels_last memory runs ResNets several times faster than fp32; elsewhere bf16 is
emulated and slower, so fp32 is the right default. On CUDA, bf16 where supported (Ampere+),
else fp16 with a GradScaler.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=None)
def cpu_bf16_support() -> tuple[bool, str]:
    """Returns (native bf16 available, the CPU features that decided it)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    if not flags:
        # Not Linux: ask PyTorch's own CPU capability probe.
        cap = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else ""
        return False, f"CPU flags unavailable (capability {cap or 'unknown'})"
    if found:
        return True, "CPU has " + " and ".join(found)
    return False, "CPU lacks AMX-BF16 and AVX512-BF16 (bf16 would be emulated)"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is validated."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"device={device!r} is not a device; use auto, cpu, cuda or cuda:N.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} asked for CUDA but no CUDA GPU is visible; use --device cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are "
                          f"visible (cuda:0..cuda:{torch.cuda.device_count() - 1}).")  # fmt: skip
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r}: Apple's MPS backend is not available here (it "
                          "needs macOS on Apple silicon and a PyTorch built with MPS); use "
                          "--device cpu.")  # fmt: skip
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={device!r} is not supported by reslab (received a {dev.type} "
                          "device); use auto, cpu, cuda or cuda:N.")  # fmt: skip
    return dev


@dataclass(frozen=True)
class Precision:
    """The resolved number format: ``dtype`` is None for fp32 (no autocast)."""

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self):
        """Context manager running the forward pass in this precision."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.device.type} {self.name} + {layout} ({self.reason})"


def resolve_precision(device: torch.device, precision: str = "auto") -> Precision:
    """Chooses the number format for ``device``.

    Args:
        device: where the model runs.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
    Returns:
        A ``Precision`` whose ``reason`` says why it was chosen.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {PRECISIONS}.")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            dt = torch.bfloat16 if bf16_ok else torch.float16
            why = "GPU supports bf16" if bf16_ok else "GPU lacks bf16, using fp16 + GradScaler"
            return Precision(device, dt, True, why)
        dt = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        return Precision(device, dt, dt is not None, f"precision={precision} requested")
    native, why = cpu_bf16_support()
    if precision == "auto":
        if native:
            return Precision(device, torch.bfloat16, True, why)
        return Precision(device, None, False, why)
    if precision == "fp16":
        raise ConfigError("precision='fp16' is not supported on CPU; use auto, bf16 or fp32.")
    if precision == "bf16":
        return Precision(device, torch.bfloat16, True, f"precision=bf16 requested; {why}")
    return Precision(device, None, False, "precision=fp32 requested")


def set_cpu_threads(num_threads: int | None = None) -> int:
    """Uses every core this process may run on (respecting affinity masks and cgroups)."""
    if num_threads is None:
        env = os.environ.get("OMP_NUM_THREADS")
        if env and env.isdigit():
            num_threads = int(env)
        else:
            try:
                num_threads = len(os.sched_getaffinity(0))
            except AttributeError:
                num_threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, num_threads))
    return torch.get_num_threads()
