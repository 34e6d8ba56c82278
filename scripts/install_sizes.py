"""How much disk each part of a reslab install takes: the figures in docs/dependencies.md.

    python scripts/install_sizes.py [--cpu-wheel PATH/torch-...+cpu-....whl]

Sums the installed files of each distribution in the running interpreter's environment
(``importlib.metadata``), grouped as torch / CUDA libraries (nvidia-*, triton) / reslab's
other core dependencies / each extra. With ``--cpu-wheel``, also reports what the CPU-only
build of torch unpacks to, the torch a laptop gets from PyTorch's CPU index.
"""

from __future__ import annotations

import argparse
import json
import re
import zipfile
from importlib import metadata
from pathlib import Path

CORE = ["torch", "torchvision", "numpy", "pillow", "pyyaml", "pydantic", "pydantic-core", "safetensors",
        "rich", "matplotlib", "ninja"]


def dist_size(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-wheel", help="a torch +cpu wheel to measure unpacked")
    args = ap.parse_args()
    sizes = {norm(d.metadata["Name"]): dist_size(d) for d in metadata.distributions()}
    cuda = sum(v for k, v in sizes.items() if k.startswith("nvidia-") or k in ("triton", "cuda-bindings",
                                                                             "cuda-pathfinder"))
    out = {
        "torch": sizes.get("torch", 0),
        "cuda_libraries (nvidia-*, triton)": cuda,
        "other core dependencies": sum(sizes.get(k, 0) for k in CORE if k != "torch"),
        "all installed": sum(sizes.values()),
    }
    if args.cpu_wheel:
        with zipfile.ZipFile(args.cpu_wheel) as z:
            out["torch CPU build, unpacked"] = sum(i.file_size for i in z.infolist())
    print(json.dumps({k: f"{v / 1e9:.2f} GB" for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()
