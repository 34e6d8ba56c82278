"""``reslab check DATA``: the dataset health report, before any training.

Exit code 0 when nothing blocks training (warnings are fine), 1 when a blocking problem
was found, 2 for a usage error (e.g. DATA does not exist).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="image folder, CSV manifest or built-in name (fashion-mnist, digits, ...)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    parser.add_argument("--out", metavar="DIR|FILE.json",
                        help="also write the JSON report: into DIR/check.json, or to FILE.json")  # fmt: skip
    parser.add_argument("--min-per-class", type=int, default=None, metavar="K",
                        help="report classes with fewer than K training images (default 10)")
    parser.add_argument("--fast", action="store_true",
                        help="file-level checks only (what training runs first): no full decode")  # fmt: skip
    parser.add_argument("--near-duplicates", action=argparse.BooleanOptionalAction, default=None,
                        help="compare small embeddings of every image across splits to find resized "
                             "or re-encoded copies (default: on, up to 20000 images; off with --fast)")  # fmt: skip
    parser.add_argument("--near-duplicate-threshold", type=float, default=None, metavar="COS",
                        help="cosine similarity (-1..1) from which a pair is reported (default 0.98)")  # fmt: skip


def format_report(report) -> str:
    """Human-readable report: counts per split, one block per problem kind, the verdict."""
    d = report.to_dict()
    lines = [f"reslab check {d['source']} ({'full' if d['full'] else 'fast'} scan)"]
    for split, info in d["stats"].get("splits", {}).items():
        lines.append(f"  {split}: {info['images']} images in {len(info['classes'])} classes")
    if "imbalance_ratio" in d["stats"]:
        lines.append(f"  class imbalance (largest / smallest): {d['stats']['imbalance_ratio']}")
    near = d["stats"].get("near_duplicates")
    if near:
        lines.append(f"  near-duplicates across splits: skipped ({near['skipped']})" if "skipped" in near
                     else f"  near-duplicates across splits: {near['pairs']} pair(s) among {near['images']} "
                          f"images at similarity >= {near['threshold']}")  # fmt: skip
    lines.append("")
    if not report.problems:
        lines.append("No problems found.")
    for p in report.problems:
        tag = "BLOCKING" if p.blocking else "warning"
        lines.append(f"[{tag}] {p.kind}: {p.count} - {p.message}")
        for path in p.paths[:5]:
            lines.append(f"    {path}")
        if p.paths and p.count > len(p.paths[:5]):
            lines.append(f"    ... ({p.count - len(p.paths[:5])} more)")
        for detail in p.details[:3]:
            if detail not in p.paths:
                lines.append(f"    note: {detail}")
        lines.append(f"    fix: {p.fix}")
    lines.append("")
    # near_duplicate needs every image decoded: only reslab check looks, training would not refuse
    refused = [k for k in d["blocking_kinds"] if k != "near_duplicate"]
    if refused:
        kinds = ", ".join(d["blocking_kinds"])
        lines.append(f"BLOCKING: {kinds}. Training refuses this dataset until they are fixed (exit code 1).")
    elif report.blocking:
        lines.append("BLOCKING: near_duplicate. Training's own check does not compare images and would "
                     "run, but val/test scores would be inflated: fix it first (exit code 1).")
    else:
        lines.append("OK to train: nothing blocking (warnings are handled automatically and logged).")
    return "\n".join(lines)


def report_path(out: str) -> Path:
    """``--out``: a ``.json`` name is the file itself; anything else is a folder that gets
    ``check.json`` (the same meaning --out has in the other verbs). Checked before the scan."""
    from reslab.errors import ConfigError

    path = Path(out)
    if path.suffix.lower() != ".json":
        path = path / "check.json"
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; pass a folder without a check.json folder "
                          "inside, or a FILE.json.")  # fmt: skip
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: cannot write under {parent}; choose a writable place.")
    return path


def run(args: argparse.Namespace) -> int:
    from reslab.data import check_dataset
    from reslab.data.health import MIN_PER_CLASS, NEAR_DUPLICATE_THRESHOLD
    from reslab.engine.progress import TaskProgress
    from reslab.errors import ConfigError

    k = MIN_PER_CLASS if args.min_per_class is None else args.min_per_class
    if args.out:
        report_path(args.out)  # refuse an unwritable --out before the (long) scan
    threshold = NEAR_DUPLICATE_THRESHOLD if args.near_duplicate_threshold is None else args.near_duplicate_threshold
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"--near-duplicate-threshold {threshold:g} is a cosine similarity: "
                          "use -1..1 (default 0.98; higher reports fewer pairs).")

    # the scan reports no steps, so the bar pulses and shows the elapsed time on a terminal
    with TaskProgress("check (fast scan)" if args.fast else "check (full scan)"):
        report = check_dataset(args.data, full=not args.fast, min_per_class=k,
                               near_duplicates=args.near_duplicates, near_duplicate_threshold=threshold)
    text = json.dumps(report.to_dict(), indent=2)
    out = report_path(args.out) if args.out else None
    if out is not None:
        from reslab.files import write_text

        write_text(out, text + "\n")
    print(text if args.json else format_report(report))
    if out is not None and not args.json:
        print(f"report written to {out}")
    return 1 if report.blocking else 0
