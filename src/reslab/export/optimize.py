"""``optimize_for_inference``: the fast path from a trained model to predictions.

What it does, in order, and why each step pays on a CPU with AMX / AVX512-BF16:

1. ``eval()`` and BatchNorm folded into the convolutions (``fuse.py``): one op less per
   conv, and the form every fused kernel expects.
2. channels_last (NHWC) memory: oneDNN's native layout; NCHW costs a reorder per conv.
3. bf16 weights, cast once here rather than by autocast on every call (autocast re-casts
   each weight at each forward, which is a large share of a batch-32 ResNet-50 pass).
4. a graph compiler: ``torch.compile`` (Inductor with freezing: weights are constants,
   pre-packed for oneDNN, conv + bias + add + ReLU fused into single kernels) or
   ``torch.jit.freeze`` (oneDNN fusion in TorchScript), chosen by ``backend``.
5. ``torch.inference_mode`` around every call.

``int8`` quantizes with PyTorch 2 export quantization (``quantize.py``), calibrated on the
images you pass, and prints the accuracy drop when you also pass labelled validation data.

Whatever runs inside, the returned module takes the fp32 NCHW batch that the eager model
takes and returns fp32 logits. Paths that cannot run here fall back (int8 -> bf16 -> fp32,
compile -> eager) and say what and why.
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from ..device import cpu_bf16_support
from ..errors import ConfigError
from .fuse import fold_batchnorm
from .parity import batches_of, compare_logits
from .quantize import report_int8_accuracy

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "eager", "jit", "compile")
_DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": torch.float32,
}


@dataclass
class InferenceInfo:
    """What ``optimize_for_inference`` chose, and every fallback with its reason.

    Attributes:
        precision: number format that runs (``fp32``, ``bf16``, ``fp16`` or ``int8``).
        requested: the ``precision`` argument.
        backend: ``eager``, ``jit`` or ``compile``.
        device: ``cpu`` or ``cuda:N``.
        channels_last: NHWC memory format.
        folded: number of BatchNorms folded into convolutions.
        static_batch: for compiled graphs, the batch size they were built for (other batch
            sizes are split or zero-padded to it, so nothing recompiles); ``None`` otherwise.
        prepare_s: seconds spent preparing (folding, quantizing, compiling, warm-up).
        reasons: why the precision and backend were chosen.
        fallbacks: each path that could not be used, with why.
        parity: agreement with the eager fp32 model on the example/validation images.
        int8_accuracy: top-1 of fp32 and int8 on labelled validation data, and the drop.
    """

    precision: str
    requested: str
    backend: str
    device: str
    channels_last: bool
    folded: int = 0
    static_batch: int | None = None
    prepare_s: float = 0.0
    reasons: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    parity: dict | None = None
    int8_accuracy: dict | None = None

    def describe(self) -> str:
        layout = " + channels_last" if self.channels_last else ""
        line = (
            f"{self.device} {self.precision}{layout}, {self.backend}, "
            f"{self.folded} BatchNorms folded, ready in {self.prepare_s:.1f} s"
        )
        if self.reasons:
            line += f" ({'; '.join(self.reasons)})"
        return line

    def to_dict(self) -> dict:
        return asdict(self)


class OptimizedModel(nn.Module):
    """The optimised network behind the eager model's interface: fp32 NCHW in, fp32 logits out.

    Args:
        net: the network that runs (folded eager module, TorchScript, or compiled graph).
        dtype: the input dtype ``net`` expects.
        channels_last: convert inputs to NHWC.
        device: where ``net`` lives; inputs are moved there, logits are returned there.
        info: what was chosen and why.
        source: the original model, for its ``classes`` / ``preprocess`` / ``default_cfg``.
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor], torch.Tensor],
        dtype: torch.dtype,
        channels_last: bool,
        device: torch.device,
        info: InferenceInfo,
        source: nn.Module | None = None,
    ):
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.channels_last = channels_last
        self.device = device
        self.info = info
        for attr in (
            "classes",
            "preprocess",
            "default_cfg",
            "model_args",
            "num_classes",
            "in_chans",
        ):
            if source is not None and hasattr(source, attr):
                setattr(self, attr, getattr(source, attr))

    @property
    def description(self) -> str:
        """One line: format, layout, backend and why (``evaluate`` prints it)."""
        return self.info.describe()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.to(self.device, dtype=self.dtype, non_blocking=True).contiguous(memory_format=fmt)
        return self.net(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) fp32 -> (B, num_classes) fp32 logits."""
        with torch.inference_mode():
            size = self.info.static_batch
            if size is None or len(x) == size:
                return self._run(x)
            outs = []
            for chunk in x.split(size):
                n = len(chunk)
                if n < size:  # zero-pad to the compiled shape; padded rows are dropped
                    chunk = torch.cat([chunk, chunk.new_zeros((size - n, *chunk.shape[1:]))])
                outs.append(self._run(chunk)[:n])
            return torch.cat(outs)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("an OptimizedModel is for inference only; train the original model.")
        # Not recursive: the network inside is already in eval form, and exported int8
        # graphs refuse .train()/.eval() calls.
        self.training = False
        return self


def _compiler_available() -> tuple[bool, str]:
    for cc in ("g++", "c++", "clang++"):
        if shutil.which(cc):
            return True, cc
    return False, "no C++ compiler (g++/clang++) on PATH; torch.compile's CPU backend needs one"


# torch.compile pays back only on long runs. docs/benchmarks.md (resnet50, 224 px, batch
# 32, 2 busy cores): compiled bf16 11.1 img/s vs 9.9 folded eager bf16 (+12%), ready in
# 64 s vs 26 s; the extra 38 s are repaid after ~3,500 images, i.e. ~14,000 GMACs of work
# (images x MACs per image). Below that, ``auto`` stays eager.
COMPILE_MIN_GMACS = 15_000.0


def resolve_backend(
    backend: str, device: torch.device, precision: str, work_gmacs: float | None = None
) -> tuple[str, str]:
    """Picks the graph backend: ``eager``, ``jit`` or ``compile``.

    Args:
        backend: ``auto`` or one of the three.
        device: where the model runs.
        precision: the resolved number format; ``int8`` always needs ``compile``
            (eager int8 would run each quantize/dequantize op separately, slower than fp32).
        work_gmacs: expected total work (images x GMACs per image), if known.
    Returns:
        ``(backend, reason)``. ``auto`` compiles when the work is known to exceed
        ``COMPILE_MIN_GMACS`` and Inductor can build here (a C++ compiler for CPU, or a GPU).
        TorchScript (``jit``) is never chosen automatically: in the benchmark its frozen
        bf16 graph was no faster than the folded eager model (9.6 vs 9.9 img/s).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not one of {BACKENDS}.")
    if backend != "auto":
        return backend, f"backend={backend} requested"
    ok, cc = (True, "CUDA") if device.type == "cuda" else _compiler_available()
    if precision == "int8":
        return ("compile", f"int8 needs Inductor ({cc})") if ok else ("eager", cc)
    if work_gmacs is None or work_gmacs < COMPILE_MIN_GMACS:
        size = "unknown" if work_gmacs is None else f"{work_gmacs:.0f} GMACs"
        return (
            "eager",
            f"eager: compiling pays back only above {COMPILE_MIN_GMACS:.0f} GMACs of work ({size})",
        )
    if ok:
        return "compile", f"compile: {work_gmacs:.0f} GMACs of work repay the compile time ({cc})"
    return "eager", cc


def _resolve_precision(precision: str, device: torch.device, notes: list[str]) -> tuple[str, str]:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {PRECISIONS}.")
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        half = "bf16" if bf16 else "fp16"
        if precision == "auto":
            return half, "GPU supports bf16" if bf16 else "GPU lacks bf16; fp16"
        if precision == "int8":
            notes.append(f"int8 -> {half}: the x86 int8 quantizer runs on CPU only")
            return half, "int8 unavailable on CUDA"
        if precision == "bf16" and not bf16:
            notes.append("bf16 -> fp16: this GPU has no bf16")
            return "fp16", "GPU lacks bf16"
        return precision, f"precision={precision} requested"
    native, why = cpu_bf16_support()
    if precision == "auto":
        return ("bf16", why) if native else ("fp32", why)
    if precision == "fp16":
        notes.append("fp16 -> " + ("bf16" if native else "fp32") + ": fp16 is not fast on CPU")
        return ("bf16" if native else "fp32"), "fp16 is a GPU format"
    if precision == "bf16" and not native:
        notes.append(f"bf16 -> fp32: {why}")
        return "fp32", why
    return precision, f"precision={precision} requested; {why}"


def _build_float(
    folded: nn.Module, precision: str, backend: str, example: torch.Tensor, device: torch.device
) -> tuple[Callable, int | None]:
    """Casts, lays out and compiles the folded fp32 model. Returns (net, static_batch)."""
    dtype = _DTYPES[precision]
    net = copy.deepcopy(folded).to(device=device, dtype=dtype, memory_format=torch.channels_last)
    x = example.to(device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    if backend == "eager":
        return net, None
    if backend == "jit":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # jit.trace/freeze deprecation notices only
            traced = torch.jit.freeze(torch.jit.trace(net, x, check_trace=False))
            traced(x)  # the first calls run the fusion passes
            traced(x)
        return traced, None
    return compile_frozen(net, x), len(x)


def compile_frozen(net: Callable, example: torch.Tensor) -> Callable:
    """``torch.compile`` with Inductor freezing, compiled now on ``example``.

    Freezing treats weights as constants: Inductor folds them and pre-packs them in oneDNN's
    blocked layout once instead of on every call, and fuses conv + bias + add + ReLU.
    Compiling under ``inference_mode`` matters: ``OptimizedModel`` calls it there, and a
    graph compiled under another grad mode would be recompiled (without freezing) on the
    first real call. Static shapes (``dynamic=False``) let Inductor pick the best kernels;
    ``OptimizedModel`` pads or splits batches to the compiled size.
    """
    import torch._inductor.config as inductor_config

    compiled = torch.compile(net, dynamic=False)
    with inductor_config.patch(freezing=True), torch.inference_mode(), warnings.catch_warnings():
        # Inductor's int8 lowering copies a tensor the way it advises against; harmless.
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        compiled(example)
    return compiled


def optimize_for_inference(
    model: nn.Module,
    example_input: torch.Tensor,
    precision: str = "auto",
    *,
    validate: bool = True,
    backend: str = "auto",
    expected_images: int | None = None,
    calibration=None,
    validation=None,
    device: str | torch.device | None = None,
    max_images: int | None = 2048,
    log: Callable[[str], None] | None = logging.getLogger("reslab.export").info,
) -> OptimizedModel:
    """Returns a fast inference version of ``model`` (see the module docstring).

    Args:
        model: a reslab (or any BatchNorm CNN) model; not modified.
        example_input: fp32 (B, C, H, W) batch of the size you will run, real images if
            you have them; a compiled graph is built for B (other batch sizes are split or
            zero-padded to it).
        precision: ``auto`` (bf16 on CPUs with AMX/AVX512-BF16 and on GPUs, else fp32),
            ``fp32``, ``bf16``, ``fp16`` (GPU) or ``int8`` (CPU).
        validate: compare with the eager fp32 model on ``example_input`` and fall back to
            a wider format when the logits disagree beyond that format's tolerance.
        backend: ``auto``, ``eager``, ``jit`` or ``compile`` (see ``resolve_backend``).
        expected_images: how many images you will run; lets ``auto`` decide whether
            compiling pays back.
        calibration: real preprocessed images for int8 activation ranges: a tensor, an
            ``(images, labels)`` pair or a loader. Default: ``example_input``.
        validation: labelled images (``(images, labels)`` or a re-iterable loader of
            ``(x, y)``); with int8, top-1 of fp32 and int8 on them is measured and printed.
        device: where to run; default: the model's device.
        max_images: cap on calibration and validation images (None: all).
        log: where messages go (default: the ``reslab.export`` logger; None: silent).
    Returns:
        An ``OptimizedModel``; ``.info`` records the choices and every fallback.
    """
    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    device = _check_inputs(model, example_input, device)
    notes: list[str] = []
    chosen, why = _resolve_precision(precision, device, notes)
    reference = copy.deepcopy(model).float().eval().to(device)
    example = example_input.float().to(device)
    work = None
    if expected_images is not None:
        from ..models import count_macs

        work = expected_images * count_macs(reference, tuple(example.shape[1:])) / 1e9
    backend_name, backend_why = resolve_backend(backend, device, chosen, work)

    folded, report = fold_batchnorm(reference)
    with torch.no_grad():
        ref_logits = reference(example)

    for prec in _fallback_formats(chosen, notes):
        built = _build(folded, prec, backend_name, example, device, calibration, max_images, notes)
        if built is None:
            continue
        net, used, static_batch = built
        info = InferenceInfo(precision=prec, requested=precision, backend=used, device=str(device),
                             channels_last=prec != "int8", folded=len(report.folded),
                             static_batch=static_batch, reasons=[why, backend_why])  # fmt: skip
        opt = OptimizedModel(net, _DTYPES[prec], info.channels_last, device, info, model)
        if validate:
            parity = compare_logits(ref_logits, opt(example), prec, source="example")
            info.parity = parity.to_dict()
            if not parity.passed:
                notes.append(f"{prec} {used} rejected: {parity.describe()}")
                continue
        if prec == "int8":
            info.int8_accuracy = report_int8_accuracy(reference, opt, validation, max_images, say)
        info.fallbacks, info.prepare_s = notes, time.perf_counter() - t0
        for note in notes:
            say(f"optimize_for_inference fallback: {note}")
        say(f"optimize_for_inference: {info.describe()}")
        return opt
    raise RuntimeError("no inference path worked here: " + "; ".join(notes))


def _check_inputs(model: nn.Module, example_input, device) -> torch.device:
    """Refuses an example that is not a (B, C, H, W) tensor; the device to run on."""
    if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4:
        raise ConfigError(
            "example_input must be a float tensor (B, C, H, W); received "
            f"{type(example_input).__name__} {tuple(getattr(example_input, 'shape', ()))}."
        )
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    return torch.device(device)


def _fallback_formats(chosen: str, notes: list[str]) -> list[str]:
    """The format asked for, then the wider ones to try if it cannot run or disagrees."""
    if chosen == "int8":
        from .quantize import int8_backend

        api, why = int8_backend()
        wider = ["bf16", "fp32"] if cpu_bf16_support()[0] else ["fp32"]
        if api is None:
            notes.append(f"int8 -> {wider[0]}: {why}")
            return wider
        return ["int8", *wider]
    return {"bf16": ["bf16", "fp32"], "fp16": ["fp16", "fp32"]}.get(chosen, ["fp32"])


def _build(folded, prec, backend, example, device, calibration, max_images, notes):
    """Builds ``prec`` with ``backend``, falling back to eager; None when nothing worked."""
    chain = {"compile": ["compile", "eager"], "jit": ["jit", "eager"], "eager": ["eager"]}[backend]
    if prec == "int8":
        if backend != "compile":
            notes.append(f"int8 skipped: it needs the compile backend, and {backend} was chosen")
            return None
        chain = ["compile"]
    for bk in chain:
        try:
            if prec == "int8":
                return _build_int8(folded, example, calibration, max_images), bk, len(example)
            net, static_batch = _build_float(folded, prec, bk, example, device)
            return net, bk, static_batch
        except Exception as e:  # a path that cannot run here: say why, try the next
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            notes.append(f"{prec} {bk} failed ({type(e).__name__}: {msg})")
    return None


def _build_int8(folded, example, calibration, max_images) -> Callable:
    from .quantize import quantize_pt2e

    cal = batches_of(calibration if calibration is not None else example, max_images)
    quantized = quantize_pt2e(folded, example.cpu(), (x for x, _ in cal))
    return compile_frozen(quantized, example.cpu())


__all__ = ["InferenceInfo", "OptimizedModel", "optimize_for_inference", "resolve_backend"]
