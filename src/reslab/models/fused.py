"""BatchNorm (+ residual add) + ReLU as one CPU kernel, for bf16 channels_last training.

On a CPU, a ResNet's BatchNorms, ReLUs and residual adds are bound by memory bandwidth,
not arithmetic: each reads and writes the whole activation, and in a bf16 step they take
a large share of the time (the convolutions run on AMX). ``bn_act`` does the three in two
passes over the activation forward and two backward (``csrc/bn_act.cpp``; the formulas are
there), in the blocks' ``BN -> [+ shortcut] -> ReLU`` places.

It runs only where it is exact in meaning and faster: training mode, a plain
``nn.BatchNorm2d`` with running statistics and affine parameters, bf16 input in
channels_last memory on CPU, channel counts divisible by 16, a CPU with AVX512-BF16, and
the kernel built. Everywhere else (eval, export, tracing, fp32, GPUs, SyncBatchNorm, frozen
or fine-tuning BatchNorm variants) the same call runs the module's own ops. Results differ
from ATen's only in rounding: the sum is rounded to bf16 once instead of after each op.

The kernel is compiled with the machine's C++ compiler on first use (about 30 s) into
PyTorch's extension cache (``~/.cache/torch_extensions``, ``TORCH_EXTENSIONS_DIR`` moves it),
under a name derived from a hash of the source, the torch version, the compiler flags and
the Python version: two installs with the same build share one compiled file, two different
ones each keep their own, and neither rebuilds the other's (issue 16). A later load imports
the compiled file without compiling. ``reslab train`` and ``reslab finetune`` call
``enable()`` when they train in bf16 + channels_last on CPU; ``RESLAB_FUSED_BN=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .layers import _tracing

_SOURCE = Path(__file__).parent / "csrc" / "bn_act.cpp"
CFLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-fopenmp")
LDFLAGS = ("-fopenmp",)
_lock = threading.Lock()
_kernel = None  # the loaded extension once enable() succeeded
_status: tuple[bool, str] | None = None
last_load: str | None = None  # "compiled" or "cached": what the last successful enable() did
logger = logging.getLogger("reslab.models.fused")


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build_name(
    source: bytes | None = None,
    torch_version: str = torch.__version__,
    flags: tuple[str, ...] = CFLAGS + LDFLAGS,
    python: str = sys.implementation.cache_tag or sys.version,
) -> str:
    """The extension's name: ``reslab_bn_act_<hash>`` of everything that changes the binary.

    Args:
        source: the C++ source (default: ``csrc/bn_act.cpp``).
        torch_version, flags, python: the build's other inputs (defaults: this process's).
    Returns:
        A name that differs whenever any input differs, so builds never overwrite each other.
    """
    h = hashlib.sha256(source if source is not None else _SOURCE.read_bytes())
    for part in (torch_version, " ".join(flags), python):
        h.update(b"\0" + part.encode())
    return f"reslab_bn_act_{h.hexdigest()[:16]}"


def build_dir(name: str | None = None) -> Path:
    """The folder the kernel named ``name`` is compiled into: ``<root>/reslab/<name>``, with
    torch's extension root (``TORCH_EXTENSIONS_DIR``, else ``~/.cache/torch_extensions``)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "torch_extensions",
    )
    return Path(root).expanduser() / "reslab" / (name or build_name())


def _import_built(name: str, folder: Path):
    """The compiled module from ``folder``, or ``None`` when it has not been built there."""
    so = folder / f"{name}.so"
    if not so.is_file():
        return None
    spec = importlib.util.spec_from_file_location(name, so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str, folder: Path):
    """Compiles the kernel into ``folder`` with torch's JIT extension builder and loads it."""
    # Importing cpp_extension warns "No CUDA runtime is found" on CPU-only machines.
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)

    if shutil.which("ninja") is None:  # the PyPI ninja's binary sits in the venv's bin/
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=name,
        sources=[str(_SOURCE)],
        extra_cflags=list(CFLAGS),
        extra_ldflags=list(LDFLAGS),
        build_directory=str(folder),
        verbose=False,
    )


def _load(log: Callable[[str], None] | None):
    """The kernel: imported when this build exists, else compiled (and said so) first."""
    global last_load
    name = build_name()
    folder = build_dir(name)
    module = _import_built(name, folder)
    if module is not None:
        last_load = "cached"
        return module
    msg = (f"compiling reslab's fused BatchNorm+ReLU CPU kernel into {folder} (about 30 s, "
           "once for this source, torch, flags and Python)")
    (log or logger.info)(msg)
    module = _build(name, folder)
    last_load = "compiled"
    return module


def enable(log: Callable[[str], None] | None = None) -> tuple[bool, str]:
    """Loads the kernel (compiling it the first time for this build), so ``bn_act`` uses it.

    Args:
        log: receives the one-line compile message, only when it compiles.
    Returns:
        ``(enabled, why)``; never raises: without a compiler or AVX512-BF16, or when the
        compile fails (logged as one warning), the blocks keep ATen's ops.
    """
    global _kernel, _status
    with _lock:
        if _status is not None:
            return _status
        if os.environ.get("RESLAB_FUSED_BN", "1") == "0":
            _status = (False, "fused BatchNorm+ReLU off (RESLAB_FUSED_BN=0)")
        elif "avx512_bf16" not in _cpu_flags():
            _status = (False, "fused BatchNorm+ReLU needs AVX512-BF16; using ATen's ops")
        elif not any(shutil.which(cc) for cc in ("c++", "g++")):
            _status = (False, "fused BatchNorm+ReLU needs a C++ compiler (g++); using ATen's ops")
        else:
            try:
                _kernel = _load(log)
                _status = (True, "fused BatchNorm+ReLU kernel on")
            except Exception as e:  # compiler or ninja missing or failing: keep ATen's ops
                reason = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
                _status = (False, f"fused BatchNorm+ReLU kernel could not be built ({reason}); using ATen's ops")
                logger.warning(_status[1])
        return _status


def enable_for(precision, log: Callable[[str], None] | None = None) -> str | None:
    """``enable()`` when ``precision`` (``reslab.device.Precision``) is bf16 +
    channels_last on CPU, the case the kernel serves. Returns what happened, or ``None``."""
    if precision.device.type != "cpu" or precision.dtype != torch.bfloat16 or not precision.channels_last:
        return None
    return enable(log)[1]


def disable() -> None:
    """Back to ATen's ops (``enable()`` loads the kernel again)."""
    global _kernel, _status
    with _lock:
        _kernel, _status = None, None


def is_enabled() -> bool:
    return _kernel is not None


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A channels_last (N, C, H, W) tensor as the (N*H*W, C) matrix it is in memory."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _nchw(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n, c, h, w = like.shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


class _BNAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps: float):
        y, mean, invstd, var = _kernel.forward(
            _rows(x), weight, bias, None if residual is None else _rows(residual), eps
        )
        y = _nchw(y, x)
        ctx.save_for_backward(x, y, weight, mean, invstd)
        ctx.has_residual = residual is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, y, weight, mean, invstd = ctx.saved_tensors
        want_dx = ctx.needs_input_grad[0]
        want_dres = ctx.has_residual and ctx.needs_input_grad[3]
        dy = dy.contiguous(memory_format=torch.channels_last)
        dx, dres, dw, db = _kernel.backward(
            _rows(dy), _rows(x), _rows(y), weight, mean, invstd, want_dx, want_dres
        )
        return (
            _nchw(dx, x) if want_dx else None,
            dw if ctx.needs_input_grad[1] else None,
            db if ctx.needs_input_grad[2] else None,
            _nchw(dres, x) if want_dres else None,
            None,
        )


def _eligible(bn: nn.Module, act: nn.Module, x: torch.Tensor, residual: torch.Tensor | None) -> bool:
    if _kernel is None or not bn.training or type(bn) is not nn.BatchNorm2d:
        return False
    if not (bn.affine and bn.track_running_stats and type(act) is nn.ReLU):
        return False
    if _tracing() or torch.compiler.is_compiling() or not torch.is_grad_enabled():
        return False
    ok = (
        x.device.type == "cpu"
        and x.dtype == torch.bfloat16
        and x.dim() == 4
        and x.shape[1] % 16 == 0
        and x.shape[0] * x.shape[2] * x.shape[3] > 1
        and x.is_contiguous(memory_format=torch.channels_last)
        and bn.weight.dtype == torch.float32
    )
    if ok and residual is not None:
        ok = (
            residual.shape == x.shape
            and residual.dtype == x.dtype
            and residual.is_contiguous(memory_format=torch.channels_last)
        )
    return ok


def bn_act(bn: nn.Module, act: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``act(bn(x) + residual)`` (``residual`` optional), fused on CPU when it can be.

    Args:
        bn: the block's norm layer; its running statistics are updated as ATen's would be.
        act: the activation module (fused only when it is ``nn.ReLU``).
        x: (B, C, H, W) conv output.
        residual: the shortcut, same shape, or ``None``.
    """
    if not _eligible(bn, act, x, residual):
        out = bn(x)
        return act(out if residual is None else out + residual)
    y, mean, var = _BNAct.apply(x, bn.weight, bn.bias, residual, bn.eps)
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        count = x.numel() // x.shape[1]
        bn.running_mean.lerp_(mean, m)
        bn.running_var.lerp_(var * (count / max(count - 1, 1)), m)
    return y
