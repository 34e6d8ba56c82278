"""Result tables and files: Markdown for the docs, JSON for re-plotting, one machine line."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Renders rows as a GitHub Markdown table.

    Args:
        rows: one dict per row.
        columns: ``(key, header, format)``, e.g. ``("test_error", "test err (%)", "{:.2f}")``;
            a missing key or None prints as an em dash.
    Returns:
        The table, header and separator included, ending with a newline.
    """
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("—" if v is None else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    """CPU model, cores this process may use, torch version and the precision chosen."""
    import torch

    from ..device import cpu_bf16_support

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    info = {
        "cpu": model,
        "cores": cores,
        "bf16": cpu_bf16_support()[1],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line for a results page, e.g. ``Intel Xeon, 2 cores (CPU has amx_bf16), torch 2.x``."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return f"{info['cpu']}, {info['cores']} cores ({info['bf16']}){gpu}, torch {info['torch']}"


def write_json(path: str | Path, data: Any) -> Path:
    """Writes ``data`` as indented JSON (creating folders), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
