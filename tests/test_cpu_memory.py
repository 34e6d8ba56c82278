"""reslab.cpu_memory: importing reslab stops large tensors from page-faulting on every batch.

Each case runs in a fresh interpreter: the settings are process-wide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")

# Allocates and frees a 64 MB tensor (above glibc's largest mmap threshold) 20 times, as a
# forward pass does with its activations, and counts the minor page faults it costs.
PROBE = """
import json, resource, sys
if sys.argv[1] == "reslab":
    import reslab
    from reslab import cpu_memory
    applied = cpu_memory.configure()
else:
    applied = []
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # glibc's heap settles first (aligned requests skip exact-size holes)
    torch.empty(16 * 2**20).fill_(1.0)
before = faults()
for _ in range(20):
    torch.empty(16 * 2**20).fill_(1.0)
print(json.dumps({"faults": faults() - before, "applied": applied}))
"""


def _probe(mode: str, **env) -> dict:
    full_env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=full_env, capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_reslab_removes_the_page_faults_of_large_tensors():
    plain = _probe("torch-only")
    tuned = _probe("reslab")
    assert tuned["applied"] == ["malloc keeps freed memory"]
    # 20 x 64 MB is 327,680 4 KB pages; freed memory now comes back without faults
    assert plain["faults"] > 100_000, plain
    assert tuned["faults"] < plain["faults"] / 20, (plain, tuned)


def test_opt_out_leaves_the_platform_default():
    out = _probe("reslab", RESLAB_CPU_MEMORY="default")
    assert out["applied"] == []
    assert out["faults"] > 100_000, out


def test_describe_names_the_settings_and_the_opt_out():
    from reslab import cpu_memory

    line = cpu_memory.describe()
    assert line.startswith("CPU memory: ") and "RESLAB_CPU_MEMORY" in line
