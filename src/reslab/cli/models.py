"""``reslab models``: every architecture with its parameters and MACs at its default input size.

The counts are exact: each comes from one forward pass of one image on the ``meta`` device
(``reslab.models.count_macs``), made once per table row and shipped as data
(``reslab.models.counts``), so listing the table builds no network. A row changed since
(or registered later) is counted live. ``counting_model`` builds a network the fastest way
for ``reslab summary``'s per-layer table: the ImageNet nets on the ``meta`` device (shapes
without memory, data or init) and the small-but-deep CIFAR nets on the CPU (for 1,200
layers of 32x32 images the meta device's per-operation overhead costs more than real
arithmetic). tests/test_cli_models.py checks both against ordinary models.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from typing import Any, Sequence

FAMILIES = ("imagenet", "cifar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", choices=FAMILIES, help="only this family")
    parser.add_argument("--pattern", help="only names matching this glob, e.g. 'resnet*d'")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def counting_model(name: str, **kwargs: Any):
    """``create_model(name, **kwargs)`` built the fastest way to count its parameters and MACs.

    Args:
        name: a registered architecture.
        **kwargs: ``create_model`` arguments (``num_classes``, ``in_chans``...).
    Returns:
        The model in eval mode: on the ``meta`` device for the ImageNet family (no values at
        all), on the CPU with its random init for the CIFAR family. Not for inference.
    """
    import torch

    from reslab.models import get_spec
    from reslab.models.registry import create_model

    if get_spec(name).family != "imagenet":
        return create_model(name, **kwargs).eval()
    with torch.device("meta"):
        return create_model(name, **kwargs).eval()


@contextmanager
def single_thread():
    """Runs the block with one intra-op thread, then restores the previous count.

    Counting runs thousands of tiny ops (one 32x32 image); waking a thread pool for each
    costs more than it saves, and on a busy machine spinning threads waste whole cores.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_rows(family: str | None = None, pattern: str | None = None) -> list[dict[str, Any]]:
    """One dict per registered architecture: name, family, params, macs, input_size, paper.

    Args:
        family: ``imagenet``, ``cifar`` or ``None`` for all.
        pattern: optional glob on the name.
    Returns:
        Rows in registry order; ``macs`` is for one image at the default ``input_size``.
    """
    from reslab.models.counts import table_counts
    from reslab.models.table import get_spec, model_names

    names = model_names(pattern=pattern, family=family)
    counts = table_counts(names)  # shipped counts: no torch import unless a row is counted live
    rows = []
    for name in names:
        spec = get_spec(name)
        rows.append({
            "name": name,
            "family": spec.family,
            "params": counts[name]["params"],
            "macs": counts[name]["macs"],
            "input_size": list(spec.input_size),
            "paper": spec.paper,
        })
    return rows


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'; keeps three significant digits."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:g}{unit}"


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
    file=None,
) -> None:
    """Prints a table: a rich table on a terminal, plain aligned text otherwise (pipes, files).

    Args:
        columns: header names.
        rows: cell values (converted with ``str``).
        title: optional caption above the table.
        right: names of columns to right-align (numbers).
        file: stream (default ``sys.stdout``).
    """
    file = file or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    if file.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, header_style="bold")
        for c in columns:
            table.add_column(c, justify="right" if c in right else "left")
        for row in cells:
            table.add_row(*row)
        Console(file=file).print(table)
        return
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def fmt(row):
        return "  ".join(
            v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(row, widths, columns)
        ).rstrip()

    if title:
        print(title, file=file)
    print(fmt(list(columns)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print(fmt(row), file=file)


def render(rows: Sequence[dict[str, Any]], file=None) -> None:
    """Prints ``model_rows`` output as the ``reslab models`` table."""
    print_table(
        ["model", "family", "params", "GMACs", "input", "paper"],
        [
            (r["name"], r["family"], f"{r['params']:,}", f"{r['macs'] / 1e9:.3f}",
             "x".join(map(str, r["input_size"])), r["paper"])
            for r in rows
        ],
        title=f"{len(rows)} architectures (MACs for one image at the input size)",
        right=("params", "GMACs"),
        file=file,
    )


def run(args: argparse.Namespace) -> int:
    rows = model_rows(args.family, args.pattern)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        render(rows)
    return 0
