"""Figures of the experiments, as PNG files.

Each function takes plain numbers (lists and dicts, as saved in the experiment's JSON), so
a figure can be redrawn from a results file without re-running anything. Figures are drawn
on an explicit ``matplotlib.figure.Figure`` with the Agg canvas: no pyplot global state, no
display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

# One colour per depth, the same in every figure (tab10 blue, orange, green, red).
DEPTH_COLORS = {20: "#1f77b4", 32: "#ff7f0e", 44: "#2ca02c", 56: "#d62728", 110: "#9467bd"}


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=110, layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path)
    return path


def _finish(fig, ax, path: str | Path, title: str = "", grid_which: str = "major",
            legend_below: bool = False) -> Path:  # fmt: skip
    """The common end of a one-axes figure: grid, legend (inside, or below the axes where
    long labels would cover the lines), optional title, saved PNG."""
    ax.grid(alpha=0.3, which=grid_which)
    if legend_below:
        fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center")
    else:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _depth(name: str) -> int | None:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else None


def plot_error_curves(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    title: str = "",
) -> Path:
    """The paper's Figure 6: plain nets left, residual nets right; thin = train, bold = test.

    Args:
        curves: ``{model name: {"epoch": [...], "train_error": [...], "test_error": [...]}}``,
            errors in percent. Names starting with ``plain`` go left, the others right.
        path: PNG file to write.
        title: suptitle (dataset and budget).
    Returns:
        The written path.
    """
    fig, (left, right) = _figure(2)
    top = 0.0
    for name, c in curves.items():
        ax = left if name.startswith("plain") else right
        color = DEPTH_COLORS.get(_depth(name) or 0, None)
        ax.plot(c["epoch"], c["train_error"], "--", lw=1.0, color=color)
        ax.plot(c["epoch"], c["test_error"], "-", lw=2.2, color=color, label=name)
        top = max(top, *c["train_error"][1:], *c["test_error"][1:]) if len(c["epoch"]) > 1 else top
    for ax, kind in ((left, "plain"), (right, "ResNet")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_title(f"{kind}: dashed = train, bold = test")
        ax.grid(alpha=0.3)
        if top > 0:
            ax.set_ylim(0, min(100.0, top * 1.1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_grad_norms(
    profiles: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str = "",
    ylabel: str = "||dL/dW||",
) -> Path:
    """Gradient norm per conv layer (input to output), log scale; plain dashed, residual solid.

    Args:
        profiles: ``{label: [norm of layer 1, layer 2, ...]}``; a label starting with
            ``plain`` is drawn dashed, and the depth in the label picks the colour.
        path: PNG file to write.
        title: axes title.
        ylabel: what the norms are.
    Returns:
        The written path.
    """
    fig, (ax,) = _figure(1, width=6.4, height=4.0)
    for label, norms in profiles.items():
        style = "--" if label.startswith("plain") else "-"
        color = DEPTH_COLORS.get(_depth(label.split()[0]) or 0, None)
        ax.plot(range(1, len(norms) + 1), norms, style, marker=".", lw=1.6, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("conv layer (1 = stem, input side)")
    ax.set_ylabel(ylabel)
    return _finish(fig, ax, path, title, grid_which="both")


def plot_accuracy_vs_time(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    target: float | None = 94.0,
    title: str = "",
    log_x: bool = True,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Test accuracy against wall-clock time, one line per recipe.

    Args:
        curves: ``{label: {"seconds": [...], "accuracy": [...], "extrapolated": bool?}}``,
            seconds cumulative, accuracy in percent; an ``extrapolated`` curve is dotted.
        path: PNG file to write.
        target: draw this accuracy as a horizontal line (None: no line).
        title: axes title.
        log_x: log-scaled time axis (recipes differ by orders of magnitude).
        ylim: accuracy range shown (points outside it are cut off; say so where it is shown).
    Returns:
        The written path.
    """
    fig, (ax,) = _figure(1, width=6.4, height=4.0 + 0.2 * len(curves))
    for label, c in curves.items():
        style = ":" if c.get("extrapolated") else "-"
        ax.plot(c["seconds"], c["accuracy"], style, marker="o", ms=3, lw=1.6, label=label)
    if target is not None:
        ax.axhline(target, color="grey", lw=0.8, ls="--")
        ax.text(ax.get_xlim()[0], target, f" {target:g}%", va="bottom", color="grey", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if log_x:
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)
    ax.set_xlabel("wall-clock training seconds (evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    return _finish(fig, ax, path, title, grid_which="both", legend_below=True)


def plot_accuracy_vs_cost(
    points: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    target: float | None = 94.0,
    budget: float | None = None,
    xlabel: str = "training minutes",
    title: str = "",
) -> Path:
    """Final accuracy of schedules of several lengths against their cost, one line per net.

    Args:
        points: ``{net: [(minutes, accuracy_percent), ...]}``; one point per schedule length.
        path: PNG file to write.
        target: draw this accuracy as a horizontal line (None: no line).
        budget: draw this cost as a vertical line (None: no line).
        xlabel: the cost axis's label.
        title: axes title.
    Returns:
        The written path.
    """
    fig, (ax,) = _figure(1, width=6.4, height=4.0)
    for label, pts in points.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.4, label=label)
    if target is not None:
        ax.axhline(target, color="grey", lw=0.8, ls="--")
    if budget is not None:
        ax.axvline(budget, color="grey", lw=0.8, ls=":")
    ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    return _finish(fig, ax, path, title)


def plot_accuracy_vs_labels(
    rows: Sequence[Mapping],
    path: str | Path,
    title: str = "",
) -> Path:
    """Test accuracy against labelled images per class, one line per (init, strategy).

    Args:
        rows: dicts with ``init`` (``pretrained``/``scratch``), ``strategy``,
            ``labels_per_class`` (int; the full set may use its real count) and
            ``test_acc`` (percent); several seeds of the same point are averaged.
        path: PNG file to write.
        title: axes title.
    Returns:
        The written path.
    """
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        key = (r["init"], r["strategy"])
        groups.setdefault(key, {}).setdefault(int(r["labels_per_class"]), []).append(float(r["test_acc"]))
    fig, (ax,) = _figure(1, width=6.4, height=4.0)
    for (init, strategy), points in sorted(groups.items()):
        xs = sorted(points)
        ys = [sum(points[x]) / len(points[x]) for x in xs]
        style = "-" if init == "pretrained" else "--"
        ax.plot(xs, ys, style, marker="o", lw=1.6, label=f"{init}: {strategy}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel("test accuracy (%)")
    return _finish(fig, ax, path, title, grid_which="both")
