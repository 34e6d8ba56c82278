"""``reslab evaluate``: metrics, confusion matrix and calibration of a trained model.

By default it runs the way training evaluated (the run's precision, eager model, the same
batch size), so its test accuracy is the training log's; ``--precision`` picks the fast
inference path (BatchNorm folded, bf16 weights where the CPU has them) instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from reslab.cli.options import add_checkpoint, add_device, add_json, add_precision, check_output
from reslab.errors import ConfigError


def add_arguments(p) -> None:
    add_checkpoint(p)
    p.add_argument("--data", metavar="DATA",
                   help="image folder, CSV manifest or built-in name (default: the run's own data)")
    p.add_argument("--split", choices=("test", "val", "train"),
                   help="split to evaluate (default: test when the data has one, else val)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--calibrate", action="store_true",
                   help="fit a temperature on the val split (L-BFGS on NLL), "
                        "saved as temperature.json")
    add_json(p, "the metrics")
    p.add_argument("--out", metavar="DIR",
                   help="where metrics.json and the plots go (default: RUN/evaluation)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass (default: the batch training evaluated with)")
    add_device(p)
    add_precision(p, default=None, help="number format of the forward pass (default: the one "
                  "training evaluated with, so the numbers match the training log)")


def output_dir(args, loaded) -> Path:
    """``--out``, else RUN/evaluation, else NAME-evaluation beside a checkpoint file."""
    from reslab.evaluate.report import EVAL_DIR

    if args.out:
        return Path(args.out)
    if loaded.run_dir:
        return loaded.run_dir / EVAL_DIR
    return loaded.checkpoint_path.with_name(loaded.checkpoint_path.stem + "-evaluation")


def inference_settings(args, loaded, log) -> dict:
    """The precision, batch size and path: the training's unless the flags say otherwise."""
    settings = dict(loaded.as_trained)
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    if args.precision is not None:
        return dict(settings, precision=args.precision, eager=False)
    log(f"evaluating as training did (precision={settings['precision']} from the run's config, "
        f"eager model, batch {settings['batch_size']}), so the numbers match the training log; "
        "pass --precision auto for the fast inference path")
    return settings


def calibrate(args, loaded, bundle, split_name, out_dir, common, log) -> float:
    """``--calibrate``: fits the temperature on the val split and saves it in the run."""
    from reslab.evaluate import evaluate, fit_temperature
    from reslab.evaluate.loading import TEMPERATURE_FILE, write_temperature

    if bundle.val is None or len(bundle.val) < 2:
        raise ConfigError(f"--calibrate fits the temperature on the val split, but "
                          f"{bundle.source!r} has none; use data with a val/ folder or a "
                          "val_fraction > 0.")  # fmt: skip
    val = evaluate(loaded.model, bundle.val, loaded.classes, tta=args.tta, **common)
    temperature = fit_temperature(val.logits, val.labels)
    where = (loaded.run_dir or out_dir) / TEMPERATURE_FILE
    write_temperature(where, temperature, fitted_on="val", samples=val.num_samples,
                      nll_before=val.loss, tta=args.tta)  # fmt: skip
    log(f"temperature {temperature:.4f} fitted on {val.num_samples} val images -> {where}")
    if split_name == "val":
        log("note: evaluating on the same val images the temperature was fitted on; "
            "calibrated numbers are optimistic (use --split test when you have one).")
    return temperature


def run(args) -> int:
    from reslab.evaluate import evaluate
    from reslab.evaluate.loading import TEMPERATURE_FILE, load_eval_data, load_run, pick_split

    from ..device import resolve_device

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, received {args.batch_size}.")
    if args.out:
        check_output(args.out, "dir")
    # With --json, stdout carries only the JSON document; notes go to stderr.
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    loaded = load_run(args.checkpoint, resolve_device(args.device))
    out_dir = check_output(output_dir(args, loaded), "dir")
    bundle, label_map = load_eval_data(loaded, args.data, log=log)
    split_name, split = pick_split(bundle, args.split)
    if args.tta and not getattr(split, "hflip", True):
        log(f"note: --tta flips images horizontally, which changes their meaning "
            f"for {bundle.source!r}.")
    common = dict(preprocess=loaded.preprocess, label_map=label_map, log=log,
                  **inference_settings(args, loaded, log))  # fmt: skip
    temperature = loaded.temperature
    if args.calibrate:
        temperature = calibrate(args, loaded, bundle, split_name, out_dir, common, log)
    elif temperature is not None:
        log(f"using the temperature {temperature:.4f} from {loaded.run_dir / TEMPERATURE_FILE}")

    res = evaluate(loaded.model, split, loaded.classes, tta=args.tta, temperature=temperature,
                   **common)  # fmt: skip
    res.extra = {"split": split_name, "data": str(bundle.source),
                 "checkpoint": str(loaded.checkpoint_path)}  # fmt: skip
    paths = res.save(out_dir)
    if args.json:
        print(json.dumps(json.loads(paths["metrics"].read_text()), indent=2, ensure_ascii=False))
    else:
        print(f"{loaded.checkpoint_path} on {bundle.source} ({split_name} split), {res.inference}")
        print(res.summary())
        print(f"wrote {out_dir}/: " + ", ".join(p.name for p in paths.values()))
    return 0
