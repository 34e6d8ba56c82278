"""What reslab's CPU memory setting (``reslab/cpu_memory.py``) buys: ``reslab bench`` in
fresh processes with the setting (the default) and without it (``RESLAB_CPU_MEMORY=default``,
glibc's own behaviour), alternating, so slow drifts of the machine hit both alike.

Every path in the process gains from the setting, torchvision's included, so this compares
each path with itself; the side-by-side ratios are in ``bench_inference.py``'s figures.

    python benchmarks/bench_cpu_memory.py              # resnet50, batch 32, 3 processes per setting
    python benchmarks/bench_cpu_memory.py --quick      # smoke run: resnet20, 1 process each, writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import write_json  # benchmarks/common.py

SETTINGS = {"reslab (glibc keeps freed memory)": "tuned", "platform default": "default"}


def run_once(setting: str, args) -> dict:
    env = {**os.environ, "RESLAB_CPU_MEMORY": setting}
    cmd = [sys.executable, "-m", "reslab", "bench", "--model", args.model, "--batch-size", str(args.batch_size),
           "--image-size", str(args.image_size), "--iters", str(args.iters), "--no-int8", "--json"]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out[out.index("{") :])
    tuned = "keeps freed memory" in result.get("cpu_memory", "")
    if tuned != (setting == "tuned"):
        raise RuntimeError(f"the child asked for {setting!r} ran with {result.get('cpu_memory')!r}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3, help="processes per setting")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_memory.json"))
    p.add_argument("--quick", action="store_true", help="resnet20 at 28 px, 1 process each, 2 rounds; writes nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.image_size, args.batch_size, args.iters, args.repeats = "resnet20", 28, 32, 2, 1
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for i in range(args.repeats):
        for name, setting in SETTINGS.items():
            r = run_once(setting, args)
            runs[name].append(r)
            rates = ", ".join(f"{row['name']} {row['images_per_s']:.1f}" for row in r["inference"])
            print(f"[{i + 1}/{args.repeats}] {name}: {rates} img/s; peak RSS {r.get('max_rss_mb')} MB", flush=True)
    paths = [row["name"] for row in runs["platform default"][0]["inference"]]
    table = {}
    for name in SETTINGS:
        table[name] = {
            path: statistics.median(row["images_per_s"] for r in runs[name] for row in r["inference"] if row["name"] == path)
            for path in paths
        }  # fmt: skip
        table[name]["peak RSS (MB)"] = statistics.median(r.get("max_rss_mb", 0) for r in runs[name])
    base, tuned = table["platform default"], table["reslab (glibc keeps freed memory)"]
    print(f"\n{'path':28} {'default img/s':>14} {'reslab img/s':>13} {'gain':>6}")
    for path in paths:
        print(f"{path:28} {base[path]:14.1f} {tuned[path]:13.1f} {tuned[path] / base[path]:5.2f}x")
    print(f"{'peak RSS (MB)':28} {base['peak RSS (MB)']:14.0f} {tuned['peak RSS (MB)']:13.0f}")
    first = runs["platform default"][0]
    record = {"model": args.model, "batch_size": args.batch_size, "image_size": args.image_size,
              "cpu": first["cpu"], "threads": first["threads"], "torch": first["torch"],
              "median": table, "runs": runs}  # fmt: skip
    if args.quick:
        return 0
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
