"""The README's main job, end to end and offline: fine-tune vs train from scratch.

1. scikit-learn's handwritten digits are written out as an image folder with only a few
   labelled images per class (``train/<digit>/*.png``, plus complete ``val`` and ``test``),
   the way a user's own photos would be laid out;
2. the shipped ``reslab:resnet20_fashion_mnist`` weights (clothes, not digits) are
   fine-tuned on it with the plan ``reslab finetune`` chooses from the data;
3. the same architecture is trained from scratch on the same images for the same epochs;
4. both are evaluated on the test split and asked to predict a few test images, a report is
   written for the fine-tuned run, and the comparison is printed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import load_config

WEIGHTS = "reslab:resnet20_fashion_mnist"
SCRATCH_LR = 0.025  # best of {0.0125, 0.025, 0.05, 0.1} for resnet20 from scratch here, batch 8 (docs/finetuning.md)


@dataclass
class DemoResult:
    """Where everything is and how the two models compare (accuracies in 0..1)."""

    data_dir: Path
    finetuned_dir: Path
    scratch_dir: Path
    report: Path | None
    finetuned_test: float
    scratch_test: float
    finetuned_seconds: float
    scratch_seconds: float

    @property
    def gain(self) -> float:
        return self.finetuned_test - self.scratch_test


def _banner(log: Callable[[str], None], step: int, text: str) -> None:
    log("")
    log(f"[{step}/4] {text}")


def run_demo(
    out: str | Path = "demo_runs",
    *,
    per_class: int = 5,
    epochs: int = 20,
    seed: int = 0,
    report: bool = True,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Runs the four steps and returns where the results are.

    Args:
        out: folder for the image folder, both run folders and the report (recreated runs).
        per_class: labelled training images per digit (val and test stay complete).
        epochs: epochs of both runs.
        seed: split, initialisation and batch order.
        report: write the HTML report of the fine-tuned run.
        threads: CPU threads (default: every core).
        log: where the progress goes.
    Returns:
        A ``DemoResult``.
    """
    from ..engine import fit
    from ..finetune import finetune

    out = Path(out)
    data_dir = out / f"digits_{per_class}_per_class"
    ft_dir, scratch_dir = out / "finetuned", out / "scratch"
    t_start = time.perf_counter()

    _banner(log, 1, f"Writing scikit-learn's digits as an image folder ({per_class} labelled images per class)")
    counts = _digits_folder(data_dir, per_class, seed, log)

    common = [f"data.source={data_dir}", f"epochs={epochs}", f"seed={seed}", "overwrite=true"]
    if threads:
        common.append(f"threads={threads}")

    _banner(log, 2, f"Fine-tuning {WEIGHTS} (trained on Fashion-MNIST clothes) on the digits")
    t0 = time.perf_counter()
    ft_cfg = load_config(None, overrides=common + [f"out={ft_dir}", f"finetune.pretrained={WEIGHTS}"])
    ft = finetune(ft_cfg)
    ft_seconds = time.perf_counter() - t0

    batch = ft.plan.batch_size
    _banner(log, 3, f"Training resnet20 from scratch on the same images, same {epochs} epochs")
    t0 = time.perf_counter()
    sc_cfg = load_config(None, overrides=common + [
        f"out={scratch_dir}", "model.name=resnet20", "model.in_chans=1", f"data.batch_size={batch}",
        f"optim.lr={SCRATCH_LR}",
    ])  # fmt: skip
    log(f"  from scratch: resnet20, batch {batch} (as the fine-tuned run), lr {SCRATCH_LR} "
        "(the best of 0.0125/0.025/0.05/0.1 in a sweep on this data; the default 0.1 reaches ~21%)")  # fmt: skip
    sc = fit(sc_cfg)
    sc_seconds = time.perf_counter() - t0

    _banner(log, 4, "Evaluating both on the test split and predicting a few test images")
    ft_eval, sc_eval = _evaluate(ft_dir, data_dir), _evaluate(scratch_dir, data_dir)
    n_test = sum(counts["test"].values())
    log(f"  {'':22s} {'val acc':>8s} {'test acc':>9s} {'macro F1':>9s} {'time':>7s}")
    for name, res, ev, secs in (("fine-tuned (pretrained)", ft, ft_eval, ft_seconds),
                                ("from scratch", sc, sc_eval, sc_seconds)):  # fmt: skip
        log(f"  {name:22s} {100 * (res.best_metric or 0):7.1f}% {100 * ev.top1:8.1f}% "
            f"{100 * ev.scores.average('macro')['f1']:8.1f}% {secs:6.0f}s")
    _predict_examples(ft_dir, scratch_dir, data_dir, log)
    report_path = None
    if report:
        from ..evaluate import write_report

        report_path = write_report(ft_dir, split="test", top_losses=4, log=lambda *_: None)

    result = DemoResult(data_dir, ft_dir, scratch_dir, report_path, ft_eval.top1, sc_eval.top1,
                        ft_seconds, sc_seconds)  # fmt: skip
    _conclude(result, per_class, n_test, time.perf_counter() - t_start, log)
    return result


def _digits_folder(data_dir: Path, per_class: int, seed: int, log: Callable[[str], None]) -> dict:
    """Writes the digits folder (kept when it exists) and returns ``{split: {class: count}}``."""
    from ..data import write_digits_folder

    if not (data_dir / "train").is_dir():
        counts = write_digits_folder(data_dir, per_class=per_class, seed=seed, size=28)
    else:
        counts = {s: {c.name: len(list(c.glob("*.png"))) for c in sorted((data_dir / s).iterdir())}
                  for s in ("train", "val", "test")}  # fmt: skip
    sizes = ", ".join(f"{s} {sum(c.values())}" for s, c in counts.items())
    log(f"  {data_dir}/{{train,val,test}}/<digit>/*.png: {sizes} images, 28x28 grey")
    return counts


def _conclude(result: DemoResult, per_class: int, n_test: int, seconds: float, log: Callable[[str], None]) -> None:
    """Where everything is, and the one-line verdict."""
    log("")
    log(f"Fine-tuned run:   {result.finetuned_dir}   (checkpoints/, metrics.csv, finetune.json, log.txt)")
    log(f"From-scratch run: {result.scratch_dir}")
    if result.report is not None:
        log(f"Report:           {result.report}")
    verdict = "beats" if result.gain > 0 else "does NOT beat"
    log(f"Result: with {per_class} labels per class, fine-tuning {verdict} training from scratch on the "
        f"{n_test} test images: {100 * result.finetuned_test:.1f}% vs {100 * result.scratch_test:.1f}% "
        f"({100 * result.gain:+.1f} points). Total time {seconds:.0f} s.")  # fmt: skip


def _evaluate(run_dir: Path, data_dir: Path):
    """Top-1 and per-class scores of a run's best checkpoint on the folder's test split."""
    from ..data import load_dataset
    from ..evaluate import evaluate, load_run

    run = load_run(run_dir)
    bundle = load_dataset(data_dir, check=False, log=None, in_chans=run.preprocess["input_size"][0],
                          image_size=run.preprocess["crop"], mean=run.preprocess["mean"],
                          std=run.preprocess["std"])  # fmt: skip
    # as training evaluated, so the table's test accuracy is the training log's
    return evaluate(run.model, bundle.test, run.classes, preprocess=run.preprocess, **run.as_trained)


def _predict_examples(ft_dir: Path, scratch_dir: Path, data_dir: Path, log, k: int = 6) -> None:
    """Both models' answers for one test image of each of ``k`` digits."""
    from ..evaluate import load_run, predict

    files = [sorted((data_dir / "test" / str(d)).glob("*.png"))[0] for d in range(k)]
    answers = {}
    for name, run_dir in (("fine-tuned", ft_dir), ("scratch", scratch_dir)):
        run = load_run(run_dir)
        answers[name] = predict(run.model, files, run.preprocess, run.classes, topk=1)
    log(f"  {'image':34s} {'true':>4s}   {'fine-tuned':>14s}   {'from scratch':>14s}")
    for i, f in enumerate(files):
        a, b = answers["fine-tuned"][i], answers["scratch"][i]
        rel = f.relative_to(data_dir.parent) if data_dir.parent != Path(".") else f
        log(f"  {str(rel):34s} {f.parent.name:>4s}   {a.label:>3s} ({100 * a.prob:3.0f}%) {_mark(a, f)}   "
            f"{b.label:>3s} ({100 * b.prob:3.0f}%) {_mark(b, f)}")  # fmt: skip


def _mark(pred, path: Path) -> str:
    return "ok" if pred.label == path.parent.name else "xx"
