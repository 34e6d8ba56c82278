"""``model_card.md``: what the artifact is, how well it does, and how to run it without reslab."""

from __future__ import annotations

from typing import Any

_RUN = {
    "onnx": """```python
import json, numpy as np, onnxruntime as ort
session = ort.InferenceSession("model.onnx")
labels = json.load(open("labels.json"))
logits = session.run(None, {{"input": batch}})[0]   # batch: float32 {shape}, preprocessed
print([labels[i] for i in logits.argmax(1)])
```""",
    "torchscript": """```python
import json, torch
model = torch.jit.load("model.pt").eval()
labels = json.load(open("labels.json"))
logits = model(batch)                               # batch: float32 {shape}, preprocessed
print([labels[i] for i in logits.argmax(1).tolist()])
```""",
    "exported-program": """```python
import json, torch
model = torch.export.load("model.pt2").module()
labels = json.load(open("labels.json"))
logits = model(batch)                               # batch: float32 {shape}, preprocessed
print([labels[i] for i in logits.argmax(1).tolist()])
```""",
}

_PREPROCESS = """```python
from PIL import Image; import numpy as np, json
p = json.load(open("preprocess.json"))
img = Image.open(path).convert("{mode}")
img = img.resize(...)  # shorter side -> p["resize"] (bilinear), then centre crop p["crop"]
x = (np.asarray(img, np.float32) / 255 - p["mean"]) / p["std"]   # then HWC -> CHW, add batch
```"""


def _cell(text: str) -> str:
    """Escapes the pipes of ``max |logit diff|`` so they do not split a Markdown table cell."""
    return text.replace("|", r"\|")


def _fmt_acc(metrics: dict[str, Any]) -> str:
    shown = []
    for key in ("val_acc", "test_acc", "best_metric"):
        v = metrics.get(key)
        if isinstance(v, (int, float)):
            shown.append(f"{key} {100 * v:.2f}%" if v <= 1 else f"{key} {v:g}")
    return ", ".join(shown) if shown else "not recorded in the checkpoint"


def model_card(
    *,
    name: str,
    paper: str,
    params: int,
    macs: int,
    classes: list[str],
    preprocess: dict,
    fmt: str,
    precision: str,
    model_file: str,
    metrics: dict[str, Any],
    parity_line: str,
    accuracy_line: str | None,
    opset: int | None,
) -> str:
    """Renders the model card (Markdown).

    Args:
        name, paper: architecture and where it comes from.
        params, macs: parameter count and multiply-accumulates per image.
        classes: index -> label.
        preprocess: the preprocessing record written to ``preprocess.json``.
        fmt, precision, model_file, opset: what was exported.
        metrics: the checkpoint's recorded metrics (accuracy if known).
        parity_line: the printed parity result.
        accuracy_line: top-1 of artifact vs PyTorch on labelled images, when measured.
    Returns:
        The card text.
    """
    c, h, w = preprocess["input_size"]
    shape = f"(N, {c}, {h}, {w})"
    shown = ", ".join(classes[:20]) + (
        f", ... ({len(classes)} in all)" if len(classes) > 20 else ""
    )
    lines = [
        f"# {name} ({precision}, {fmt})",
        "",
        f"Exported by reslab from a trained checkpoint. Architecture: **{name}** ({paper}).",
        "",
        "| | |",
        "|---|---|",
        f"| file | `{model_file}`" + (f" (ONNX opset {opset})" if opset else "") + " |",
        f"| number format | {precision} |",
        f"| parameters | {params:,} |",
        f"| MACs per image | {macs / 1e9:.3f} G |",
        f"| input | float32 {shape}, dynamic batch, normalised as `preprocess.json` |",
        f"| output | float32 (N, {len(classes)}) logits; softmax for probabilities |",
        f"| classes | {len(classes)}: {shown} |",
        f"| accuracy (training run) | {_fmt_acc(metrics)} |",
        f"| parity check | {_cell(parity_line)} |",
    ]
    if accuracy_line:
        lines.append(f"| accuracy of this file | {accuracy_line} |")
    lines += [
        "",
        "## Preprocessing",
        "",
        f"Resize the shorter side to {preprocess.get('resize')} px ({preprocess.get('interpolation', 'bilinear')}), "
        f"centre-crop {preprocess.get('crop')} px, scale to 0..1, subtract mean {preprocess.get('mean')} and divide "
        f"by std {preprocess.get('std')}, channels first ({'grey' if c == 1 else 'RGB'}).",
        "",
        _PREPROCESS.format(mode="L" if c == 1 else "RGB"),
        "",
        "## Run it without reslab",
        "",
        _RUN[fmt].format(shape=shape),
        "",
    ]
    if precision == "int8" and fmt == "exported-program":
        lines += [
            "The int8 program uses PyTorch's `quantized_decomposed` ops: `import "
            "torch.ao.quantization.fx._decomposed` before loading, and wrap the module in "
            "`torch.compile` for int8 speed.",
            "",
        ]
    return "\n".join(lines)
