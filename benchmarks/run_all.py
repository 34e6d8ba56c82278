"""Runs every benchmark in turn (`make bench`); each writes benchmarks/results/<name>.json.

    python benchmarks/run_all.py            # full runs (about 50 minutes on 2 CPU cores)
    python benchmarks/run_all.py --quick    # smoke runs, to check the scripts work

Run it on a quiet machine: the figures in docs/benchmarks.md are ratios against peers
measured side by side in one process, but other load still adds noise.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("bench_train.py", "bench_inference.py", "bench_loader.py", "bench_cpu_memory.py", "bench_layouts.py",
           "bench_fused.py", "bench_progressive.py", "bench_step.py")


def main(argv: list[str]) -> int:
    quick = ["--quick"] if "--quick" in argv else []
    failed = []
    for script in SCRIPTS:
        print(f"== {script} {' '.join(quick)}", flush=True)
        if subprocess.call([sys.executable, str(HERE / script), *quick]) != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
