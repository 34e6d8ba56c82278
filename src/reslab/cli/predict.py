"""``reslab predict``: top-k labels with probabilities for image files, folders or globs."""

from __future__ import annotations

from reslab.cli.options import add_checkpoint, add_device, add_json, add_precision, check_output


def add_arguments(p) -> None:
    add_checkpoint(p)
    p.add_argument("paths", nargs="+", metavar="PATHS",
                   help="image files, folders (recursive) or globs")
    p.add_argument("--topk", "--top-k", type=int, default=5, help="labels per image (default 5)")
    p.add_argument("--out", "--csv", dest="csv", metavar="FILE.csv",
                   help="also write the predictions to this CSV file")
    add_json(p, "the predictions")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    add_device(p)
    add_precision(p)


def write_csv(predictions, path, topk: int) -> None:
    """One row per readable image: path, then label_i and prob_i for i = 1..k."""
    import csv
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path"] + [c for i in range(1, topk + 1) for c in (f"label_{i}", f"prob_{i}")])
        for p in predictions:
            if p.ok:
                pairs = [v for lb, pr in zip(p.labels, p.probs) for v in (lb, f"{pr:.6f}")]
                w.writerow([p.path] + pairs)


def print_table(predictions) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    table.add_column("image", overflow="fold")
    table.add_column("prediction")
    table.add_column("prob", justify="right")
    table.add_column("next best", overflow="fold")
    for p in predictions:
        if p.ok:
            rest = ", ".join(f"{lb} {100 * pr:.1f}%" for lb, pr in zip(p.labels[1:], p.probs[1:]))
            table.add_row(p.path, p.label, f"{100 * p.prob:.1f}%", rest)
    Console().print(table)


def run(args) -> int:
    import json
    import sys

    from reslab.errors import ConfigError
    from reslab.evaluate import load_run, predict

    from ..device import resolve_device

    if args.topk < 1:
        raise ConfigError(f"--topk must be >= 1, received {args.topk}.")
    if args.csv:
        check_output(args.csv, "file")
    log = lambda *a: print(*a, file=sys.stderr)  # noqa: E731 - stdout stays machine-readable
    loaded = load_run(args.checkpoint, resolve_device(args.device))
    if loaded.temperature is not None:
        log(f"probabilities calibrated with temperature {loaded.temperature:.3f} "
            "(temperature.json)")
    preds = predict(loaded.model, args.paths, loaded.preprocess, loaded.classes, topk=args.topk,
                    batch_size=args.batch_size, temperature=loaded.temperature,
                    precision=args.precision, log=log)
    ok = [p for p in preds if p.ok]
    bad = [p for p in preds if not p.ok]
    if args.csv:
        write_csv(preds, args.csv, min(args.topk, len(loaded.classes)))
    if args.json:
        print(json.dumps({"predictions": [p.to_dict() for p in ok],
                          "skipped": [p.to_dict() for p in bad]}, indent=2, ensure_ascii=False))
    else:
        print_table(preds)
    for p in bad:
        log(f"skipped {p.path}: {p.error}")
    wrote = f"; wrote {args.csv}" if args.csv else ""
    log(f"{len(ok)} image(s) predicted, {len(bad)} skipped{wrote}")
    return 0 if ok else 1
