"""Run-time choices that make a training step faster on a GPU: ``torch.compile``'s mode
(``reduce-overhead`` records the step's kernels as CUDA graphs and replays them with one
launch) and the fused optimizer kernels. Each is checked against the device it would run
on; where it cannot run, the caller gets the fallback and the reason, for the log.

Why it matters (issue 21): at Fashion-MNIST sizes an H200 waits on kernel launches and on
the host, not on arithmetic, so fewer launches per step is the speed-up that remains.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# modes that record CUDA graphs: CUDA only
_GRAPH_MODES = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def compile_mode_for(mode: str, device: torch.device) -> tuple[str, str | None]:
    """The ``torch.compile`` mode to use on ``device`` and, when it differs from the one
    asked for, why.

    Args:
        mode: one of ``COMPILE_MODES``.
        device: where the compiled model runs.
    Returns:
        ``(mode, reason)``: ``reason`` is None when ``mode`` is used as given.
    Raises:
        ConfigError: an unknown mode.
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile_mode={mode!r}: use one of {COMPILE_MODES}.")
    if mode in _GRAPH_MODES and device.type != "cuda":
        other = _GRAPH_MODES[mode]
        return other, (f"compile_mode={mode!r} records CUDA graphs, which need a CUDA device; "
                       f"on {device.type} it compiles with mode={other!r} instead")  # fmt: skip
    return mode, None


def compile_model(model: nn.Module, mode: str, device: torch.device,
                  log: Callable[[str], Any] | None = None) -> nn.Module:  # fmt: skip
    """``torch.compile(model, mode=...)`` with the mode checked by ``compile_mode_for``
    (a fallback is logged)."""
    used, reason = compile_mode_for(mode, device)
    if reason and log is not None:
        log(f"note: {reason}")
    return torch.compile(model, mode=None if used == "default" else used)


def fused_supported(device: torch.device) -> bool:
    """Whether PyTorch has fused SGD/Adam/AdamW kernels for ``device`` (CUDA; CPU since 2.4)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return device.type in _get_fused_kernels_supported_devices()


def optimizer_speed_kwargs(params: Iterable[torch.Tensor], fused: bool | None = None
                           ) -> tuple[dict[str, bool], str | None]:  # fmt: skip
    """``{"fused": True}`` or ``{"foreach": True}`` for a ``torch.optim`` constructor, and
    why fused was not used when it was asked for.

    Args:
        params: the parameters (all on one device for the fused kernels).
        fused: True: ask for the fused kernels; False: the multi-tensor (foreach) loop;
            None: fused where supported.
    Returns:
        ``(kwargs, reason)``; ``reason`` is None unless ``fused=True`` had to fall back.
    """
    params = list(params)
    devices = {p.device for p in params}
    if fused is False:
        return {"foreach": True}, None
    if len(devices) != 1:
        why = f"the parameters live on {len(devices)} devices ({sorted(map(str, devices))})"
    elif not all(p.is_floating_point() for p in params):
        why = "some parameters are not floating point"
    elif not fused_supported(next(iter(devices))):
        why = f"PyTorch {torch.__version__} has no fused optimizer kernels for {next(iter(devices)).type}"
    else:
        return {"fused": True}, None
    return {"foreach": True}, (f"fused optimizer refused: {why}; using the foreach loop" if fused else None)
