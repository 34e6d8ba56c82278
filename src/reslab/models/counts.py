"""Parameter and MAC counts of every registered architecture at its input size, kept as data.

Counting builds each network and runs one image through it: about 10 s for the whole
table on a laptop CPU, even on the ``meta`` device (most of it is building ~40 networks,
a few with 1,200 layers). The counts are a pure function of a table row, so they are
shipped in ``counts.json`` beside this file, as torchvision ships ``num_params`` and
GFLOPs in its weights' records. Each entry carries a hash of its row: an entry whose row
has changed since it was written, or a name added later (``table.register``), is counted
live instead, so a stale number is never shown. tests/test_models_counts.py checks every
shipped entry against a live count; ``write_counts()`` rewrites the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from .table import get_spec, model_names

COUNTS_FILE = Path(__file__).with_name("counts.json")


def row_key(name: str) -> str:
    """A hash of everything in ``name``'s table row that changes its counts."""
    spec = get_spec(name)
    row = {"arch": spec.arch, "input_size": spec.input_size, "num_classes": spec.num_classes}
    text = json.dumps(row, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def count_live(name: str) -> dict[str, int]:
    """``{"params", "macs"}`` of ``name`` counted now, on the ``meta`` device (shapes only)."""
    import torch

    from .profile import count_macs, count_params
    from .registry import create_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny shape-only ops: a thread pool costs more than it saves
    try:
        with torch.device("meta"):
            model = create_model(name)
        return {"params": count_params(model), "macs": count_macs(model, get_spec(name).input_size)}
    finally:
        torch.set_num_threads(before)


def _shipped(path: Path) -> dict[str, dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing or damaged: every count is made live
        return {}


def table_counts(
    names: Iterable[str] | None = None, *, path: str | Path = COUNTS_FILE
) -> dict[str, dict[str, int]]:
    """``{name: {"params": int, "macs": int}}``, from ``counts.json`` where its entry is current.

    Args:
        names: architectures (default: the whole table).
        path: the counts file.
    Returns:
        Counts for the default ``num_classes`` and 3 input channels, MACs for one image at
        the row's ``input_size``.
    """
    shipped = _shipped(Path(path))
    out = {}
    for name in model_names() if names is None else names:
        entry = shipped.get(name)
        if entry and entry.get("row") == row_key(name):
            out[name] = {"params": int(entry["params"]), "macs": int(entry["macs"])}
        else:
            out[name] = count_live(name)
    return out


def write_counts(path: str | Path = COUNTS_FILE) -> dict[str, dict]:
    """Counts the whole table live and writes ``counts.json`` (after changing a row)."""
    data = {name: {"row": row_key(name), **count_live(name)} for name in model_names()}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
    return data
