"""Redraws every results figure from the experiments' JSON files (no training).

    python -m reslab.experiments.figures runs/exp docs/results/img

Reads whichever of ``gradients/gradients.json``, ``degradation/degradation.json`` and
``transfer_merged/transfer.json`` (a study joined with its reruns by ``reslab experiment
transfer --merge``), else ``transfer/transfer.json``, exist under the runs folder and writes
the PNGs the pages in docs/results/ show. The Fashion-MNIST headline figures join a GPU
accuracy sweep with CPU timings and are drawn by ``scripts/sweep_headline.py
--figure/--figure-headline``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import plots
from .tables import read_json


def draw_all(runs: str | Path, img: str | Path) -> list[Path]:
    """Draws every figure whose results exist.

    Args:
        runs: the experiments folder (``scripts/run_experiments.sh``'s ``$EXP_OUT``).
        img: output folder for the PNGs.
    Returns:
        The written files.
    """
    runs, img = Path(runs), Path(img)
    written: list[Path] = []
    g = runs / "gradients" / "gradients.json"
    if g.is_file():
        r = read_json(g)
        n = f"{len(r['seeds'])} inits, {r['batch']} images"
        written.append(plots.plot_grad_norms(
            {m: p["grad_norm"] for m, p in r["profiles"].items()}, img / "grad_norms_init.png",
            f"Gradient norm per conv at initialisation ({n})",
        ))  # fmt: skip
        written.append(plots.plot_grad_norms(
            {m: p["relative"] for m, p in r["profiles"].items()}, img / "grad_relative_init.png",
            f"Gradient relative to weight at initialisation ({n})", ylabel="||dL/dW|| / ||W||",
        ))  # fmt: skip
    d = runs / "degradation" / "degradation.json"
    if d.is_file():
        r = read_json(d)
        s = r["setup"]
        budget = f"{s['dataset']}: {s['train_size']} training images, {s['epochs']} epochs, batch {s['batch_size']}"
        written.append(plots.plot_error_curves(r["curves"], img / "degradation_curves.png", budget))
        if r.get("grad_trained"):
            both = {f"{m} init": r["grad_init"][m]["grad_norm"] for m in r["grad_trained"]}
            both.update({f"{m} trained": v for m, v in r["grad_trained"].items()})
            written.append(plots.plot_grad_norms(
                {k: v for k, v in both.items() if k.endswith("trained")}, img / "grad_norms_trained.png",
                f"Gradient norm per conv after training ({s['train_size']} images, {s['epochs']} epochs)",
            ))  # fmt: skip
    t = runs / "transfer_merged" / "transfer.json"
    if not t.is_file():
        t = runs / "transfer" / "transfer.json"
    if t.is_file():
        r = read_json(t)
        written.append(plots.plot_accuracy_vs_labels(
            r["rows"], img / "transfer.png", f"digits (28 px): {r['weights']} vs scratch"
        ))  # fmt: skip
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m reslab.experiments.figures RUNS_DIR IMG_DIR", file=sys.stderr)
        return 2
    for p in draw_all(*argv):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
