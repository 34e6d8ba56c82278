"""``write_report``: one self-contained HTML page about a run, for people.

It gathers what the run folder holds (config, metrics.jsonl, summary, evaluation), runs
the evaluation itself when ``evaluation/metrics.json`` is missing, finds the validation
images with the highest loss and explains them with Grad-CAM, and writes
``RUN_DIR/report.html`` with every image inlined (no external files, CSS or scripts).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import logging
import os
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from ..errors import ConfigError, ReslabError
from ..files import atomic_write_bytes
from . import report_html as H
from .evaluate import evaluate, metrics_from_logits
from .inference import inference_fn, model_device
from .loading import LoadedRun, load_eval_data, load_run, pick_split
from .run_files import describe_duration, read_history, read_json, reproduce_command

EVAL_DIR = "evaluation"  # RUN_DIR/evaluation/metrics.json + plots, written by `reslab evaluate`
HEALTH_FILES = ("health.json", "check.json", "data_health.json")


def _top_losses(fn, batches, k: int, label_map=None):
    """One pass: all logits and labels, plus the ``k`` inputs with the highest loss.

    Returns:
        ``(logits (N, C), labels (N,), top)`` with ``top = (x (k, C, H, W), y (k,), loss (k,))``
        sorted by loss, highest first.
    """
    logits_all, labels_all = [], []
    best_x = best_y = best_l = None
    for x, y in batches:
        y = y.cpu().long()
        y = label_map[y] if label_map is not None else y
        out = fn(x).float().cpu()
        loss = F.cross_entropy(out, y, reduction="none")  # (B,)
        logits_all.append(out)
        labels_all.append(y)
        xs = x.detach().cpu().float()
        if best_x is not None:
            xs, y, loss = torch.cat([best_x, xs]), torch.cat([best_y, y]), torch.cat([best_l, loss])
        keep = loss.topk(min(k, len(loss))).indices
        best_x, best_y, best_l = xs[keep], y[keep], loss[keep]
    return torch.cat(logits_all), torch.cat(labels_all), (best_x, best_y, best_l)


def _eval_loader(split, run: LoadedRun, batch_size: int):
    from ..data import make_loader

    return make_loader(split, batch_size=batch_size, train=False, preprocess=run.preprocess,
                       device=str(model_device(run.model)))


def _side_by_side(left, right, gap: int = 6) -> bytes:
    """Two PIL images of one size next to each other on white, as PNG bytes."""
    import io

    from PIL import Image

    w, h = left.size
    canvas = Image.new("RGB", (2 * w + gap, h), "white")
    canvas.paste(left.convert("RGB"), (0, 0))
    canvas.paste(right.convert("RGB"), (w + gap, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _saved_png(folder: Path, name: str) -> bytes | None:
    """A plot ``reslab evaluate`` already wrote next to metrics.json, if any."""
    path = folder / name
    return path.read_bytes() if path.exists() else None


class _Report:
    """Collects the sections of one report; each ``add_*`` appends one."""

    def __init__(self, run: LoadedRun, log):
        self.run, self.log = run, log
        self.run_dir: Path = run.run_dir
        self.sections: list[tuple[str, str, str]] = []  # (anchor, nav label, html)
        self.metrics: dict | None = read_json(self.run_dir / EVAL_DIR / "metrics.json")
        self.history = read_history(self.run_dir / "metrics.jsonl")
        self.summary = read_json(self.run_dir / "summary.json") or {}
        self.bundle = None
        self.data_error: str | None = None
        self.top = None
        self.top_split = None

    # ---------------------------------------------------------------- data and evaluation
    def load_data(self, data, split, top_losses, batch_size, precision):
        """Loads the run's data, finds the top losses and evaluates when metrics are missing.

        When the run's own dataset cannot be used any more (moved, deleted), only the data
        and image sections are lost, with the reason on the page; data passed explicitly
        must work (its error is raised).
        """
        try:
            self.bundle, label_map = load_eval_data(self.run, data, check=True, log=self.log)
            self._judge(label_map, split, top_losses, batch_size, precision)
        except (ReslabError, OSError) as e:
            if data is not None:
                raise
            self.data_error = (
                f"The dataset could not be used, so the data and image sections are partial: {e}"
            )
            self.log(f"note: {self.data_error}")

    def _judge(self, label_map, split, top_losses, batch_size, precision):
        run, b = self.run, self.bundle
        loss_name = "val" if b.val is not None and len(b.val) else pick_split(b, split)[0]
        loss_split = getattr(b, loss_name)
        batches = iter(_eval_loader(loss_split, run, batch_size))
        first = next(batches)
        eager = precision is None  # the path and precision training evaluated with
        precision = run.train_precision if eager else precision
        fn, how = inference_fn(run.model, first[0], precision, eager=eager, log=self.log,
                               num_images=len(loss_split))  # fmt: skip
        logits, labels, self.top = _top_losses(fn, itertools.chain([first], batches),
                                               top_losses, label_map)
        self.top_split = loss_name
        if self.metrics is None:
            eval_name, eval_split = pick_split(b, split)
            self.log(f"no {EVAL_DIR}/metrics.json in the run: evaluating on the {eval_name} split")
            if eval_name == loss_name:
                res = metrics_from_logits(logits, labels, run.classes, temperature=run.temperature,
                                          inference=how)
            else:
                res = evaluate(run.model, eval_split, run.classes, temperature=run.temperature,
                               precision=precision, batch_size=batch_size, eager=eager,
                               preprocess=run.preprocess, label_map=label_map, log=self.log)
            res.extra = {"split": eval_name, "data": str(b.source),
                         "checkpoint": str(run.checkpoint_path)}
            res.save(self.run_dir / EVAL_DIR)
            self.metrics = res.to_dict()

    # ---------------------------------------------------------------- sections
    def add(self, anchor, label, title, lead, body):
        self.sections.append((anchor, label, H.section(anchor, title, lead, body)))

    def add_model_card(self):
        from ..models import count_macs, count_params

        run, m = self.run, self.metrics or {}
        cfg = getattr(run.model, "default_cfg", {}) or {}
        args = dict(run.checkpoint.get("model_args") or {})
        input_size = tuple(run.preprocess["input_size"])
        try:
            macs = count_macs(run.model, input_size)
        except Exception:  # an unusual model should not cost the whole report
            macs = None
        best = max((h for h in self.history if isinstance(h.get("val_acc"), (int, float))),
                   key=lambda h: h["val_acc"], default=None)
        optim = run.config.get("optim") or {}
        command = reproduce_command(self.run_dir, self.summary, run.config)
        rows = [
            ("architecture", args.get("name", cfg.get("architecture"))),
            ("paper", cfg.get("paper")),
            ("parameters", H.human(count_params(run.model))),
            ("multiply-accumulates / image", H.human(macs) + "MACs" if macs else None),
            ("input", f"{input_size[0]} × {input_size[1]} × {input_size[2]} (C × H × W)"),
            ("normalisation",
             f"mean {run.preprocess.get('mean')}, std {run.preprocess.get('std')}"),
            ("classes", f"{len(run.classes)}: " + ", ".join(run.classes[:12])
             + (" …" if len(run.classes) > 12 else "")),
            ("trained on", run.data_source),
            ("epochs", run.config.get("epochs")),
            ("optimizer", f"{optim.get('name', '')} lr={optim.get('lr')}" if optim else None),
            ("fine-tuned from", (run.config.get("finetune") or {}).get("pretrained")),
            ("best validation accuracy",
             f"{H.pct(best['val_acc'])} (epoch {best.get('epoch')})" if best else None),
            *self.accuracy_rows(),
            ("calibration error (ECE)", H.pct(m.get("ece")) if m else None),
            ("trained in", self.summary.get("precision")),
            ("training time", describe_duration(self.summary)),
            ("checkpoint", str(run.checkpoint_path)),
            ("reproduce with", H.Raw(f"<code>{H.escape(command)}</code>")),
        ]
        limits = H.explain(
            "<b>Intended use and limits.</b> This model only knows the "
            f"{len(run.classes)} classes above and the kind of images it was trained on; "
            "anything else still gets one of these labels, often with high confidence. "
            "Check the per-class table for classes it handles poorly before relying on it."
        )
        self.add("model", "Model card", "Model card", "What this model is and how it was made.",
                 H.kv_table(rows) + limits)

    def accuracy_rows(self) -> list[tuple]:
        """The evaluation's top-1 and the training log's test accuracy, each labelled with
        the precision it ran in, and a word on why they differ when they do."""
        m, test = self.metrics or {}, self.summary.get("test_acc")
        rows = []
        if m:
            rows.append((f"top-1 on {m.get('split', 'evaluation')} split (evaluation: "
                         f"{m.get('inference') or 'unrecorded precision'})", H.pct(m.get("top1"))))
        if isinstance(test, (int, float)):
            rows.append((f"test accuracy in the training log (training's evaluation: "
                         f"{self.summary.get('precision', 'unrecorded precision')})", H.pct(test)))
        if m and isinstance(test, (int, float)) and m.get("split") == "test" \
                and abs(m.get("top1", test) - test) > 1e-12:
            rows.append(("why two test accuracies", "they ran in different precisions or "
                         "inference paths (above); `reslab evaluate` without --precision "
                         "reproduces the training log's number"))
        return rows

    def add_data(self):
        b = self.bundle
        body = ""
        if self.data_error:
            body += H.note(self.data_error)
        if b is not None:
            counts = {name: s.class_counts(len(b.classes)) for name, s in b.splits().items()}
            body += H.kv_table([
                ("source", b.source),
                ("classes", len(b.classes)),
                ("images", ", ".join(f"{n}: {sum(c)}" for n, c in counts.items())),
                ("stored as", f"{b.in_chans} channel(s)"),
            ] + [(f"split: {k.replace('_', ' ')}", v) for k, v in (b.split_info or {}).items()
                 if isinstance(v, (str, int, float, bool)) and k != "source"])
            body += "<h3>Images per class</h3>" + H.split_table(list(b.classes), counts)
        health = (b.health if b is not None else None) or next(
            (h for f in HEALTH_FILES if isinstance(h := read_json(self.run_dir / f), dict)), None)
        if health:
            body += "<h3>Health check</h3>" + H.health_html(health)
        elif b is not None:
            body += ("<p>No health report was recorded; run <code>reslab check DATA</code> "
                     "for one.</p>")
        self.add("data", "Data", "Data", "What the model learned from and was judged on.", body)

    def add_training(self):
        from . import plots as P

        if not self.history:
            body = H.note("No metrics.jsonl in this run folder, so there are no training curves.")
        else:
            last = self.history[-1]
            body = H.img(P.png_bytes(P.plot_training_curves(self.history)), "training curves")
            body += H.explain(
                "Training loss should fall steadily. If validation loss starts rising while "
                "training loss keeps falling, the model is <b>overfitting</b>: it memorises the "
                "training images. A big gap between training and validation accuracy says the same."
            )
            body += "<h3>Last epoch</h3>" + H.kv_table(
                [(k, f"{v:.4g}" if isinstance(v, float) else v) for k, v in last.items()])
        self.add("training", "Training", "Training curves", f"{len(self.history)} epochs.", body)

    def add_evaluation(self):
        from . import plots as P

        m = self.metrics
        if not m:
            self.add("evaluation", "Evaluation", "Evaluation", "",
                     H.note("No evaluation: the run has no evaluation/metrics.json and the data "
                            "could not be loaded. Run "
                            "`reslab evaluate --checkpoint RUN --data DATA`."))
            return
        classes = m["classes"]
        cm = m["confusion_matrix"]
        png = _saved_png(self.run_dir / EVAL_DIR, "confusion_matrix.png") or P.png_bytes(
            P.plot_confusion_matrix(np.array(cm), classes))
        body = H.img(png, "confusion matrix", max_width=760)
        body += H.explain(
            "Each row is a true class, each column what the model said. A perfect model puts "
            "everything on the diagonal; colours show the share of each true class, so a dark "
            "cell off the diagonal is a confusion that happens often."
        )
        body += "<h3>Most confused pairs</h3>" + H.confused_table(m.get("most_confused") or [])
        pc = m["per_class"]
        body += "<h3>Per class</h3>"
        body += H.explain(
            "<b>Precision</b>: of the images the model called this class, the share that really "
            "were. <b>Recall</b>: of the images of this class, the share the model found. "
            "<b>F1</b> balances the two. The three weakest classes are marked in red."
        )
        body += H.per_class_table(pc)
        lead = (f"{m['num_samples']} images of the {m.get('split', 'evaluation')} split"
                + (" with test-time augmentation" if m.get("tta") else "") + ".")
        self.add("evaluation", "Evaluation", "Evaluation", lead, body)

    def add_calibration(self):
        from . import plots as P

        m = self.metrics
        if not m or not m.get("reliability"):
            return
        png = _saved_png(self.run_dir / EVAL_DIR, "reliability.png") or P.png_bytes(
            P.plot_reliability(m["reliability"], m["ece"], m.get("reliability_calibrated"),
                               m.get("ece_calibrated"), m.get("temperature")))
        text = (
            "When the model says it is 90% sure, is it right 9 times out of 10? The "
            "<b>expected calibration error</b> (ECE) is the average gap between confidence and "
            "accuracy over 15 confidence bins, weighted by how many images fall in each "
            f"(Guo et al. 2017). Here it is <b>{H.pct(m['ece'])}</b>. "
        )
        if m.get("temperature"):
            text += (f"Temperature scaling (all logits divided by T = {m['temperature']:.3f}, "
                     "fitted "
                     f"on validation data) brings it to <b>{H.pct(m.get('ece_calibrated'))}</b> "
                     "without changing any prediction.")
        else:
            text += ("Bars under the diagonal mean over-confidence. "
                     "<code>reslab evaluate --calibrate</code> fits a temperature that fixes "
                     "most of it.")
        self.add("calibration", "Calibration", "Calibration", "",
                 '<div class="grid2">' + H.img(png, "reliability diagram")
                 + f"<div>{H.explain(text)}</div></div>")

    def add_top_losses(self, layer):
        from .explain import explain_tensor

        if self.top is None or self.top[0] is None or not len(self.top[0]):
            return
        x, y, loss = self.top
        x = x.to(model_device(self.run.model))
        items = []
        explained = explain_tensor(self.run.model, x, self.run.classes, self.run.preprocess,
                                   layer=layer, size=160)
        for i, (base, ov, pred, prob, _) in enumerate(explained):
            items.append({"png": _side_by_side(base, ov), "true": self.run.classes[int(y[i])],
                          "pred": pred, "prob": prob, "loss": float(loss[i])})
        body = H.explain(
            "The images the model got most wrong (highest loss), with <b>Grad-CAM</b> heat maps "
            "(Selvaraju et al. 2017): red marks the regions that pushed the model towards its "
            "answer. A heat map on the background instead of the object hints at a shortcut "
            "the model learned; a wrong label in the data shows up here too."
        ) + H.gallery(items)
        self.add("top-losses", "Top losses", "Top losses",
                 f"The {len(items)} {self.top_split} images with the highest loss.", body)

    def add_config(self):
        path = self.run_dir / "config.yaml"
        text = (path.read_text() if path.exists()
                else yaml.safe_dump(self.run.config, sort_keys=False))
        self.add("config", "Config", "Config", "The resolved configuration of the run.",
                 "<details><summary>show config.yaml</summary>" + H.code_block(text) + "</details>")

    # ---------------------------------------------------------------- page
    def kpis(self) -> str:
        from ..models import count_params

        m = self.metrics or {}
        items = []
        if m:
            items += [
                ("top-1 accuracy", H.pct(m.get("top1")),
                 f"{m.get('split', '')} split, {m.get('num_samples')} images"),
                (f"top-{m.get('top5_k', 5)} accuracy", H.pct(m.get("top5")), ""),
                ("macro F1", H.pct((m.get("macro") or {}).get("f1")), "mean over classes"),
                ("calibration error", H.pct(m.get("ece")), "ECE, 15 bins"),
            ]
        items.append(("parameters", H.human(count_params(self.run.model)), ""))
        if self.history:
            items.append(("epochs", str(len(self.history)), ""))
        return H.kpis(items)

    def render(self) -> str:
        page = resources.files("reslab.evaluate").joinpath("report.html")
        tpl = Template(page.read_text("utf-8"))
        __version__ = package_version()

        run = self.run
        arch = (run.checkpoint.get("model_args") or {}).get("name", "model")
        when = _dt.datetime.fromtimestamp(os.path.getmtime(run.checkpoint_path))
        source = self.bundle.source if self.bundle is not None else run.data_source
        source = source or "unknown data"
        return tpl.substitute(
            title=H.escape(f"{self.run_dir.name}: {arch} on {source}"),
            subtitle=H.escape(f"{len(run.classes)} classes · checkpoint of "
                              f"{when:%Y-%m-%d %H:%M} · {run.checkpoint_path.name}"),
            nav="".join(f'<a href="#{a}">{H.escape(lbl)}</a>' for a, lbl, _ in self.sections),
            kpis=self.kpis(),
            sections="\n".join(html for _, _, html in self.sections),
            version=__version__,
            generated=f"{_dt.datetime.now():%Y-%m-%d %H:%M}",
        )


def package_version() -> str:
    """reslab's installed version (read from the package metadata: the report module does
    not import the top-level package, which sits above it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reslab")
    except PackageNotFoundError:
        return "unknown"


def write_report(
    run_dir: str | os.PathLike,
    *,
    data: str | None = None,
    split: str | None = None,
    top_losses: int = 8,
    layer: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    log=logging.getLogger("reslab.evaluate").info,
) -> Path:
    """Writes ``RUN_DIR/report.html``, one self-contained page about a run.

    Args:
        run_dir: a run folder (``checkpoints/best.pt``, ``config.yaml``, ``metrics.jsonl``...).
        data: dataset to evaluate on (default: the run's own ``data.source``).
        split: split for the evaluation when it must be run (default test, else val).
        top_losses: how many highest-loss validation images to explain with Grad-CAM.
        layer: Grad-CAM layer (default the last stage).
        precision: inference precision for the evaluation passes (default: the one training
            evaluated with, on the eager model, so the page agrees with the training log).
        batch_size: evaluation batch size (default: the one training evaluated with).
        device: where the model runs.
        log: callable for progress notes (default: the ``reslab.evaluate`` logger).
    Returns:
        The path of ``report.html``.
    """
    run = load_run(run_dir, device)
    if run.run_dir is None:
        raise ConfigError(
            f"{run_dir} is not a run folder (no config.yaml or metrics.jsonl beside checkpoints/); "
            "pass the folder `reslab train` created, e.g. runs/<name>."
        )
    if top_losses < 0:
        raise ConfigError(f"top_losses must be >= 0, received {top_losses}.")
    rep = _Report(run, log)
    rep.load_data(data, split, top_losses, batch_size or run.eval_batch_size, precision)
    rep.add_model_card()
    rep.add_data()
    rep.add_training()
    rep.add_evaluation()
    rep.add_calibration()
    rep.add_top_losses(layer)
    rep.add_config()
    out = run.run_dir / "report.html"
    page = rep.render().encode("utf-8")
    atomic_write_bytes(out, lambda f: f.write(page))
    return out
