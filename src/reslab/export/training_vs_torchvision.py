"""The training rows of ``reslab bench``: one SGD step per call, side by side.

* ``peer fp32 eager`` and ``peer bf16+cl eager``: torchvision's model, a plain loop (the
  baselines every ratio is taken against; keep them first).
* ``reslab engine step``: reslab's own ``TrainStep`` (what ``reslab train`` runs), with the
  engine's optimizer (fused kernels where supported) and precision.
* with ``compile_``: ``peer ... fused SGD, compile`` (the best plain PyTorch loop we know:
  issue 21 measured it at 1.42x eager on an H200) and the engine step compiled, in
  ``compile_mode`` (``reduce-overhead``: CUDA graphs).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from ..config.schema import OptimConfig
from ..device import resolve_precision
from ..engine.cuda_graphs import compile_mode_for, compile_model, optimizer_speed_kwargs
from ..engine.optim import build_optimizer
from ..engine.step import RunningStats, TrainStep


def _peer_step(model: nn.Module, x, y, dtype, channels_last: bool, fused: bool | None,
               compile_: bool, device) -> tuple[Callable[[], None], str]:  # fmt: skip
    """A plain loop's step: autocast forward, cross-entropy, backward, SGD (momentum 0.9)."""
    model = copy.deepcopy(model).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    kwargs, reason = optimizer_speed_kwargs(model.parameters(), fused) if fused is not None else ({}, None)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **kwargs)
    run = torch.compile(model) if compile_ else model

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(run(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, reason or ("fused SGD" if kwargs.get("fused") else "")


def _engine_step(model: nn.Module, x, y, prec, compile_mode: str | None, fused: bool | None,
                 num_classes: int, log) -> tuple[Callable[[], None], str]:  # fmt: skip
    """reslab's ``TrainStep`` over ``model``: the step every reslab training loop runs."""
    model = copy.deepcopy(model).train()
    if prec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(OptimConfig(name="sgd", lr=0.01, momentum=0.9), model)
    notes = ["fused SGD" if opt.defaults.get("fused") else "foreach SGD"]
    if fused is not None:  # rebuild with the asked-for kernels
        kwargs, reason = optimizer_speed_kwargs(model.parameters(), fused)
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
        opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9, **kwargs)
        notes = [reason or ("fused SGD" if kwargs.get("fused") else "foreach SGD")]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _s: 1.0)
    run = model
    if compile_mode is not None:
        run = compile_model(model, compile_mode, x.device, log)
        notes.append(f"compile {compile_mode_for(compile_mode, x.device)[0]}")  # the mode it ran
    step = TrainStep(run, model, opt, sched, precision=prec, num_classes=num_classes)
    stats = RunningStats(x.device)
    state = {"i": 0}

    def call():
        state["i"] += 1
        step(x, y, 0, state["i"], True, stats)

    return call, ", ".join(notes)


def train_paths(peer: nn.Module, ours: nn.Module, x: torch.Tensor, device: torch.device, *,
                compile_: bool = False, compile_mode: str = "default", fused: bool | None = None,
                num_classes: int = 10, log: Callable[[str], Any] | None = None
                ) -> tuple[dict[str, Callable[[], None]], dict[str, str]]:  # fmt: skip
    """The training paths to time, and a note per path.

    Args:
        peer, ours: torchvision's model and reslab's with the same weights.
        x: the input batch (B, 3, S, S) on ``device``.
        compile_: add the compiled rows (the best plain loop and the compiled engine step).
        compile_mode: the engine step's ``torch.compile`` mode (``cuda_graphs.COMPILE_MODES``).
        fused: the optimizer kernels of the engine and best-loop rows (None: fused where
            supported; True: fused, or the fallback with its reason; False: foreach).
        num_classes: targets are drawn from ``range(num_classes)``.
        log: fallback notes.
    Returns:
        ``(paths, notes)``: name -> zero-argument step, name -> what the row runs.
    """
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, num_classes, (len(x),), generator=gen).to(device)
    prec = resolve_precision(device, "auto")
    half = prec.dtype or torch.bfloat16
    half_name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[half]
    layout = f"{prec.name}{'+cl' if prec.channels_last else ''}"
    paths, notes = {}, {}
    name = "peer fp32 eager"
    paths[name], notes[name] = _peer_step(peer, x, y, None, False, None, False, device)
    name = f"peer {half_name}+cl eager"
    paths[name], notes[name] = _peer_step(peer, x, y, half, True, None, False, device)
    name = f"reslab engine step, {layout}"
    paths[name], notes[name] = _engine_step(ours, x, y, prec, None, fused, num_classes, log)
    if compile_:
        name = f"peer {half_name}+cl, fused SGD, compile"
        paths[name], notes[name] = _peer_step(peer, x, y, half, True, True if fused is None else fused,
                                              True, device)  # fmt: skip
        name = f"reslab engine step, {layout}, compile {compile_mode}"
        paths[name], notes[name] = _engine_step(ours, x, y, prec, compile_mode, fused, num_classes, log)
    return paths, notes
