"""int8 inference through PyTorch 2 export quantization and the x86 Inductor quantizer.

The recipe (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"; PyTorch's PT2E flow):

1. fold BatchNorm into the convolutions (``fuse.py``), so each conv is one int8 op;
2. ``torch.export`` the folded network with a dynamic batch dimension;
3. ``prepare_pt2e`` with ``X86InductorQuantizer``: per-channel symmetric int8 weights,
   per-tensor uint8 activations, conv + add + ReLU annotated as one fused pattern;
4. run real images through it so the observers record each activation's range;
5. ``convert_pt2e`` and compile with Inductor (freezing on), which lowers every
   quantize -> conv -> dequantize into one oneDNN int8 convolution (AMX / VNNI).

The quantizer lives in ``torchao`` for current PyTorch (2.14 no longer ships it in
``torch.ao``) and in ``torch.ao`` for older releases; both are tried. Install it with
``pip install 'reslab[quant]'``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Iterable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .fuse import _LeafOnShapeTracer
from .parity import batches_of

# (prepare/convert module, quantizer module): torchao first, then older torch's in-tree copy.
_PT2E_LOCATIONS = (
    (
        "torchao.quantization.pt2e.quantize_pt2e",
        "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer",
    ),
    (
        "torch.ao.quantization.quantize_pt2e",
        "torch.ao.quantization.quantizer.x86_inductor_quantizer",
    ),
)


def int8_backend() -> tuple[object | None, str]:
    """Finds the PT2E quantization API.

    Returns:
        ``(api, why)``: ``api`` has ``prepare_pt2e``, ``convert_pt2e`` and ``quantizer()``,
        or is ``None`` with ``why`` saying what is missing and how to install it.
    """
    errors = []
    for flow_name, quantizer_name in _PT2E_LOCATIONS:
        try:
            with _quiet_pytree_log():
                flow = importlib.import_module(flow_name)
                xiq = importlib.import_module(quantizer_name)
        except Exception as e:  # ImportError, or a torchao built for another torch
            errors.append(
                f"{flow_name.split('.')[0]}: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            )
            continue
        return _Pt2eApi(
            flow, xiq, flow_name.split(".")[0]
        ), f"PT2E quantization from {flow_name.split('.')[0]}"
    return None, (
        "int8 needs the PT2E x86 quantizer, found in neither torchao nor torch.ao "
        f"({'; '.join(errors)}); install it with `pip install 'reslab[quant]'` (torchao)"
    )


@contextlib.contextmanager
def _quiet_pytree_log():
    """torchao registers an Enum with pytree at import; torch >= 2.14 logs a deprecation
    warning for it that says nothing to a reslab user."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Pt2eApi:
    def __init__(self, flow, xiq, origin: str):
        self.prepare_pt2e = flow.prepare_pt2e
        self.convert_pt2e = flow.convert_pt2e
        self._xiq = xiq
        self.origin = origin

    def quantizer(self):
        q = self._xiq.X86InductorQuantizer()
        q.set_global(self._xiq.get_default_x86_inductor_quantization_config())
        return q


def untie_activations(model: nn.Module) -> torch.fx.GraphModule:
    """Traces ``model`` and turns each ``nn.ReLU`` call into its own ``F.relu`` call.

    reslab's blocks (like torchvision's) call one ``self.relu`` module two or three times.
    The quantizer pairs a conv with "the" ReLU module after it, and a module used in several
    places is one partition with several outputs, which it rejects. Separate functional
    calls give one partition per use. Parameter names are unchanged.

    Args:
        model: an eval-mode model, usually already BatchNorm-folded.
    Returns:
        A ``GraphModule`` computing the same function.
    """
    graph = _LeafOnShapeTracer().trace(model)
    gm = torch.fx.GraphModule(model, graph)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.ReLU):
            with gm.graph.inserting_after(node):
                relu = gm.graph.call_function(F.relu, node.args)
            node.replace_all_uses_with(relu)
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


@torch.no_grad()
def quantize_pt2e(
    folded: nn.Module,
    example_input: torch.Tensor,
    calibration: Iterable[torch.Tensor],
    api=None,
) -> torch.fx.GraphModule:
    """Quantizes a BatchNorm-folded fp32 model to int8 (weights and activations).

    Args:
        folded: fp32 eval model, BatchNorm already folded.
        example_input: (B, C, H, W) fp32, B >= 2 (the batch dimension is exported dynamic).
        calibration: fp32 batches of real, preprocessed images for the activation ranges.
        api: from ``int8_backend()``; looked up when ``None``.
    Returns:
        The converted (not yet compiled) model: fp32 in, fp32 logits out, q/dq ops inside.
    Raises:
        RuntimeError: no PT2E quantizer available (the message says how to install one).
    """
    if api is None:
        api, why = int8_backend()
        if api is None:
            raise RuntimeError(why)
    gm = untie_activations(folded.eval())
    example = example_input if len(example_input) >= 2 else example_input.repeat(2, 1, 1, 1)
    batch = torch.export.Dim("batch", min=1)
    exported = torch.export.export(gm, (example,), dynamic_shapes=({0: batch},)).module()
    prepared = api.prepare_pt2e(exported, api.quantizer())
    n = 0
    for x in calibration:
        prepared(x.float())
        n += len(x)
    if n == 0:
        raise ValueError("int8 calibration received no images; pass real preprocessed images.")
    return api.convert_pt2e(prepared)


def _top1(fn, validation, limit: int | None) -> tuple[float, int]:
    correct = total = 0
    for x, y in batches_of(validation, limit):
        if y is None:
            raise ConfigError(
                "validation data must carry labels: pass (images, labels) or a loader of (x, y)."
            )
        pred = torch.as_tensor(fn(x)).float().cpu().argmax(1)
        correct += (pred == y.cpu()).sum().item()
        total += len(y)
    return correct / max(total, 1), total


def measure_int8_accuracy(reference: nn.Module, opt: nn.Module, validation, max_images) -> dict:
    """Top-1 of the eager fp32 model and of the int8 model on the same labelled images."""
    with torch.no_grad():
        fp32, n = _top1(lambda x: reference(x.to(opt.device)), validation, max_images)
    int8, _ = _top1(opt, validation, max_images)
    return {"fp32_top1": fp32, "int8_top1": int8, "drop_points": 100 * (fp32 - int8), "n": n}


def report_int8_accuracy(reference, opt, validation, max_images, say) -> dict | None:
    """Measures and says int8's top-1 drop on labelled ``validation`` data (None without)."""
    if validation is None:
        say("int8 accuracy drop not measured: pass validation=(images, labels) to measure it.")
        return None
    acc = measure_int8_accuracy(reference, opt, validation, max_images)
    say(
        f"int8 accuracy on {acc['n']} validation images: top-1 {100 * acc['int8_top1']:.2f}% "
        f"vs fp32 {100 * acc['fp32_top1']:.2f}% (drop {acc['drop_points']:.2f} points)"
    )
    return acc
