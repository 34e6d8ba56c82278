"""``import reslab`` leaves the process's malloc settings alone (issue 19 item 7); ``fit``
opts in. Fresh interpreters: the settings are process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")

PROBE = """
import sys, tempfile
import reslab
from reslab import cpu_memory
print("after import:", cpu_memory._applied)
if sys.argv[1] == "fit":
    out = tempfile.mkdtemp() + "/run"
    reslab.fit(reslab.load_config(None, {"data": {"source": "digits", "batch_size": 64, "limit_train": 64,
               "limit_val": 32, "check": False}, "epochs": 1, "threads": 1, "device": "cpu", "out": out}))
    print("after fit:", cpu_memory._applied)
"""


def _run(mode: str) -> str:
    res = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_import_reslab_leaves_malloc_alone_and_fit_opts_in():
    assert "after import: None" in _run("import")
    out = _run("fit")
    assert "after import: None" in out
    assert "after fit: ['malloc keeps freed memory']" in out
