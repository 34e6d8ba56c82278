"""PNG plots drawn with matplotlib's object API (``Figure`` + Agg, never ``pyplot``), so
nothing touches global state or needs a display.

Every ``plot_*`` function returns a ``Figure``; ``save_png`` writes it and ``png_bytes``
returns it as bytes (the HTML report inlines those).
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Fonts that cover Chinese, Japanese and Korean class names, tried after DejaVu Sans.
_CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "SimHei",
    "PingFang SC",
    "Heiti SC",
    "AR PL UMing CN",
)


@functools.lru_cache(maxsize=1)
def _font_family() -> list[str]:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans"] + [f for f in _CJK_FONTS if f in installed]


def _style():
    """Per-figure style: readable sizes and a CJK fallback font when one is installed."""
    return rc_context(
        {
            "font.family": _font_family(),
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titleweight": "bold",
            "figure.dpi": 100,
        }
    )


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Writes ``fig`` as a PNG and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _style():
        fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return path


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes."""
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def plot_confusion_matrix(cm: np.ndarray, classes: list[str], normalize: bool = True) -> Figure:
    """Heat map of the confusion matrix (rows true, columns predicted).

    Args:
        cm: (C, C) counts.
        classes: class names.
        normalize: colour by the share of each true class (row), so rare classes show too.
    Returns:
        The figure; cells carry their counts when there are at most 20 classes.
    """
    cm = np.asarray(cm)
    c = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0) if normalize else cm
    side = min(max(4.0, 0.45 * c + 2.0), 16.0)
    with _style():
        fig = Figure(figsize=(side + 1.2, side))
        ax = fig.add_subplot()
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                     label="share of the true class" if normalize else "count")
        ticks = np.arange(c)
        fs = 9 if c <= 20 else max(4, int(200 / c))
        labels = classes if c <= 60 else [str(i) for i in range(c)]
        ax.set_xticks(ticks, labels, rotation=45 if c > 6 else 0, ha="right" if c > 6 else "center",
                      fontsize=fs)
        ax.set_yticks(ticks, labels, fontsize=fs)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title("Confusion matrix")
        if c <= 20:
            for i in range(c):
                for j in range(c):
                    if cm[i, j]:
                        dark = shown[i, j] > 0.55 * (shown.max() or 1)
                        ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                                fontsize=8 if c <= 12 else 6, color="white" if dark else "#1f2937")
    return fig


def plot_reliability(
    bins: list[dict],
    ece: float,
    calibrated: list[dict] | None = None,
    ece_calibrated: float | None = None,
    temperature: float | None = None,
) -> Figure:
    """Reliability diagram (Guo et al. 2017): accuracy against confidence per bin.

    A perfectly calibrated model sits on the diagonal; bars below it mean over-confidence.
    The lower panel shows how many predictions fall in each bin.

    Args:
        bins: ``reliability_bins`` output of the raw model.
        ece: its expected calibration error.
        calibrated, ece_calibrated, temperature: the same after temperature scaling, if any.
    """
    lower = np.array([b["lower"] for b in bins])
    width = bins[0]["upper"] - bins[0]["lower"]
    with _style():
        fig = Figure(figsize=(5.2, 5.6))
        ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
        conf = np.array([b["confidence"] if b["count"] else 0.0 for b in bins])
        has = np.array([b["count"] > 0 for b in bins])
        ax.bar(lower, acc, width=width, align="edge", color="#3b82f6", edgecolor="white",
               label="accuracy")
        # The gap between confidence and accuracy, hatched, is what ECE averages.
        ax.bar(lower[has], (conf - acc)[has], bottom=acc[has], width=width, align="edge",
               color="none", edgecolor="#ef4444", hatch="//", linewidth=0.6, label="gap")
        ax.plot([0, 1], [0, 1], "--", color="#6b7280", linewidth=1, label="perfect calibration")
        title = f"Reliability diagram  (ECE {100 * ece:.2f}%)"
        if calibrated is not None:
            cacc = [b["accuracy"] for b in calibrated if b["count"]]
            cconf = [b["confidence"] for b in calibrated if b["count"]]
            ax.plot(cconf, cacc, "o-", color="#f59e0b", markersize=4,
                    label=f"after T={temperature:.2f} (ECE {100 * ece_calibrated:.2f}%)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8, frameon=False)
        counts = np.array([b["count"] for b in bins])
        hist.bar(lower, counts, width=width, align="edge", color="#9ca3af", edgecolor="white")
        hist.set_xlabel("confidence (top probability)")
        hist.set_ylabel("images")
        fig.tight_layout()
    return fig


def plot_per_class(classes: list[str], precision, recall, f1, support) -> Figure:
    """Horizontal bars of precision, recall and F1 per class (F1 only above 30 classes)."""
    c = len(classes)
    y = np.arange(c)
    with _style():
        fig = Figure(figsize=(7, min(max(2.5, 0.32 * c + 1.2), 30)))
        ax = fig.add_subplot()
        if c <= 30:
            h = 0.27
            ax.barh(y - h, precision, height=h, color="#3b82f6", label="precision")
            ax.barh(y, recall, height=h, color="#10b981", label="recall")
            ax.barh(y + h, f1, height=h, color="#f59e0b", label="F1")
            ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8,
                      frameon=False)
        else:
            ax.barh(y, f1, height=0.8, color="#f59e0b", label="F1")
        labels = [f"{n} ({int(s)})" for n, s in zip(classes, support)]
        ax.set_yticks(y, labels, fontsize=8 if c <= 30 else 5)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("score (support in brackets)")
        ax.set_title("Per-class precision, recall and F1", pad=22 if c <= 30 else 6)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
    return fig


def plot_training_curves(history: list[dict]) -> Figure:
    """Loss, accuracy and learning rate per epoch from ``metrics.jsonl`` rows."""
    ep = [h.get("epoch", i) for i, h in enumerate(history)]

    def series(key):
        vals = [h.get(key) for h in history]
        pts = [(e, v) for e, v in zip(ep, vals) if isinstance(v, (int, float))]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None

    with _style():
        fig = Figure(figsize=(11, 3.4))
        axes = fig.subplots(1, 3)
        for ax, keys, title in (
            (axes[0], ("train_loss", "val_loss"), "Loss"),
            (axes[1], ("train_acc", "val_acc"), "Accuracy"),
            (axes[2], ("lr",), "Learning rate"),
        ):
            for key, color in zip(keys, ("#3b82f6", "#ef4444")):
                s = series(key)
                if s:
                    ax.plot(*s, "o-" if len(s[0]) < 30 else "-", color=color, markersize=3,
                            label=key.replace("_", " "))
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0] and len(keys) > 1:
                ax.legend(fontsize=8, frameon=False)
        axes[1].set_ylim(top=1.0)
        fig.tight_layout()
    return fig


def plot_explanation(
    image, overlay_image, title: str, subtitle: str = "", ok: bool | None = None
) -> Figure:
    """The image beside its Grad-CAM overlay, with the labels as a title.

    Args:
        image: (H, W, 3) uint8 array or PIL image as the model saw it.
        overlay_image: the same with the heat map blended in (``gradcam.overlay``).
        title: e.g. ``"predicted: cat (93%)"``.
        subtitle: e.g. ``"true: dog"``.
        ok: colours the title green (right), red (wrong) or neutral (unknown).
    """
    colour = {True: "#047857", False: "#b91c1c", None: "#111827"}[ok]
    with _style():
        fig = Figure(figsize=(5.0, 2.9))
        axes = fig.subplots(1, 2)
        for ax, img, name in ((axes[0], image, "input"), (axes[1], overlay_image, "Grad-CAM")):
            ax.imshow(np.asarray(img), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            ax.set_xlabel(name, fontsize=8, color="#6b7280")
        if title or subtitle:
            fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10, color=colour)
        fig.tight_layout()
    return fig
