"""reslab as a user gets it: a wheel installed outside the checkout, run from another folder.

The wheel is built from this checkout, installed with ``pip install --no-deps --target`` (the
dependencies come from the test venv), and run with the checkout nowhere on the path: the
packaged recipes, the shipped weights and the report template must all travel in the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """Builds and installs the wheel; returns the environment that runs it."""
    base = tmp_path_factory.mktemp("installed")
    dist, target, source = base / "dist", base / "site", base / "source"
    # A copy of what the wheel is built from, so setuptools' build/ and egg-info land there
    # (a stale build/lib in the checkout would leak old files into the next wheel).
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=skip)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    # --no-build-isolation: the test venv's setuptools builds it, so no network is needed
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
                   check=True, cwd=base)  # fmt: skip
    wheels = list(dist.glob("reslab-*.whl"))
    assert len(wheels) == 1, wheels
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheels[0])],
                   check=True, cwd=base)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PWD")}
    env["PYTHONPATH"] = str(target)
    return env


def reslab(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reslab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_wheel_is_the_package_that_runs(installed, tmp_path):
    code = "import reslab, sys; print(reslab.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=installed,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.startswith(installed["PYTHONPATH"]), out
    assert str(ROOT) not in out


def test_installed_recipes_and_a_short_training(installed, tmp_path):
    listed = reslab(installed, tmp_path, "recipes")
    assert listed.returncode == 0, listed.stderr
    assert "fmnist_fast" in listed.stdout
    short = ["epochs=1", "data.limit_train=256", "data.limit_val=128", "model.name=resnet20",
             "precision=fp32", "threads=1"]  # fmt: skip
    run = reslab(installed, tmp_path, "train", "--config", "fmnist_fast", "--out", "run", *short)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "run" / "summary.json").is_file()


def test_installed_demo_quick_path(installed, tmp_path):
    run = reslab(installed, tmp_path, "demo", "--quick", "--epochs", "1", "--out", "demo")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "demo").is_dir()
