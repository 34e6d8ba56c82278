"""The model behind the server: a run folder, a checkpoint or an export folder in; a fast
batched forward, Grad-CAM and a model card out.

A run or checkpoint is served through ``fast_model`` (``optimize_for_inference``: BatchNorm
folded, channels_last, bf16 where the CPU has native bf16, else fp32) and keeps its eager
fp32 model for Grad-CAM, which needs gradients. An export folder (``reslab export``) is
served by its own runtime (onnxruntime, TorchScript, ExportedProgram); it has no gradients,
so ``/explain`` is unavailable for it and says so.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import eval_transform
from ..errors import ConfigError
from ..evaluate.explain import explain_tensor, resolve_class
from ..evaluate.inference import fast_model
from ..evaluate.loading import load_run
from ..export.artifact import FORMATS, load_artifact


@dataclass
class ModelCard:
    """What the page shows about the model (``GET /card``)."""

    name: str
    source: str
    classes: list[str]
    input_size: list[int]
    mean: list[float]
    std: list[float]
    accuracy: dict[str, float] = field(default_factory=dict)  # e.g. {"val_acc": 0.97}
    runtime: str = ""  # how the forward runs (optimize_for_inference's description)
    explain: bool = True  # whether /explain works (not for export folders)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ServedModel:
    """A model ready to serve: preprocessing, a batched forward, Grad-CAM, its card.

    Build it with ``ServedModel.load(path)``.

    Attributes:
        classes: index -> class name.
        preprocess: the checkpoint's preprocessing record.
        forward: (B, C, H, W) fp32 -> (B, K) fp32 logits, the fast path.
        card: the ``ModelCard``.
        temperature: the fitted calibration temperature, if any (probabilities use it).
    """

    def __init__(self, classes, preprocess, forward: Callable, card: ModelCard,
                 eager=None, temperature: float | None = None):
        self.classes = list(classes)
        self.preprocess = dict(preprocess)
        self.forward = forward
        self.card = card
        self.temperature = temperature
        self.in_chans = int(self.preprocess["input_size"][0])
        self._transform = eval_transform(self.preprocess)
        self._eager = eager
        self._explain_lock = threading.Lock()  # Grad-CAM hooks are per module: one at a time

    @classmethod
    def load(cls, path: str | os.PathLike, precision: str = "auto", log=None) -> ServedModel:
        """Loads a run folder, a checkpoint file or an export folder.

        Args:
            path: ``runs/NAME``, ``.../best.pt`` or a folder written by ``reslab export``.
            precision: ``auto`` (bf16 where the CPU has it), ``fp32``, ``bf16`` or ``int8``.
            log: optional ``print``-like callable for what was chosen.
        """
        p = Path(path)
        if p.is_dir() and any((p / name).exists() for name in FORMATS.values()):
            return cls._from_export(p)
        return cls._from_run(p, precision, log)

    @classmethod
    def _from_export(cls, folder: Path) -> ServedModel:
        art = load_artifact(folder)
        pre = art.preprocess
        card = ModelCard(name=folder.name, source=str(folder), classes=list(art.labels),
                         input_size=list(pre["input_size"]), mean=list(pre["mean"]),
                         std=list(pre["std"]), runtime=f"{art.format} export", explain=False)
        return cls(art.labels, pre, art, card)

    @classmethod
    def _from_run(cls, path: Path, precision: str, log) -> ServedModel:
        run = load_run(path, "cpu")
        pre = run.preprocess
        gen = torch.Generator().manual_seed(0)
        example = torch.randn(4, *pre["input_size"], generator=gen)  # (4, C, H, W)
        forward, how = fast_model(run.model, example, precision, log=log)
        card = ModelCard(
            name=str((run.checkpoint.get("model_args") or {}).get("name", "model")),
            source=str(path), classes=run.classes, input_size=list(pre["input_size"]),
            mean=list(pre["mean"]), std=list(pre["std"]), accuracy=_accuracy_of(run), runtime=how,
        )
        return cls(run.classes, pre, forward, card, eager=run.model, temperature=run.temperature)

    def preprocess_image(self, img) -> torch.Tensor:
        """PIL image -> normalised (C, H, W) tensor, exactly as at evaluation time."""
        return self._transform(img)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (..., K) -> probabilities, with the calibration temperature when fitted."""
        return F.softmax(logits.double() / (self.temperature or 1.0), dim=-1)

    def top_k(self, logits: torch.Tensor, k: int) -> list[dict]:
        """``[{"label", "index", "prob"}, ...]`` for one image's logits (K,), best first."""
        probs = self.probabilities(logits.float().cpu())
        top = probs.topk(min(k, len(self.classes)))
        return [{"label": self.classes[i], "index": i, "prob": p}
                for p, i in zip(top.values.tolist(), top.indices.tolist())]

    def explain_png(self, image: torch.Tensor, target=None, layer: str | None = None,
                    size: int = 320) -> tuple[bytes, dict]:
        """Grad-CAM overlay of one preprocessed image as PNG bytes, and what it explains.

        Args:
            image: (C, H, W) normalised.
            target: a class name or index to explain instead of the predicted class.
            layer: the layer to explain (default the last stage).
            size: the longer side of the PNG in pixels.
        Raises:
            ConfigError: for an export folder (no gradients) or an unknown class / layer.
        """
        if self._eager is None:
            raise ConfigError("Grad-CAM needs the PyTorch model; this server runs an export "
                              "folder. Serve the run folder or checkpoint to use /explain.")
        cls_index = resolve_class(target, self.classes)
        with self._explain_lock:
            _base, ov, pred, prob, explained = explain_tensor(
                self._eager, image[None], self.classes, self.preprocess,
                target_class=cls_index, layer=layer, size=size)[0]
        buf = io.BytesIO()
        ov.save(buf, format="PNG")
        return buf.getvalue(), {"predicted": pred, "prob": prob, "explained": explained}


def _accuracy_of(run) -> dict[str, float]:
    """The accuracies recorded with the run: the checkpoint's metrics and summary.json's test."""
    found: dict[str, float] = {}
    metrics = run.checkpoint.get("metrics") or {}
    for key in ("val_acc", "test_acc"):
        if isinstance(metrics.get(key), (int, float)):
            found[key] = float(metrics[key])
    summary = run.run_dir / "summary.json" if run.run_dir else None
    if summary is not None and summary.exists():
        try:
            final = json.loads(summary.read_text())
        except ValueError:
            final = {}
        for key in ("test_acc", "best_val_acc", "val_acc"):
            v = (final.get("final") or final).get(key) if isinstance(final, dict) else None
            if isinstance(v, (int, float)) and key not in found:
                found[key] = float(v)
    return found
