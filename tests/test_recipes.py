"""Recipes are package data: addressable by name, by path, and by the old configs/ path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reslab.config import load_config
from reslab.errors import ConfigError
from reslab.recipes import RECIPES_DIR, recipe_names, recipe_summary, resolve_recipe

SRC = Path(__file__).resolve().parents[1] / "src"


def test_recipes_live_inside_the_package():
    assert RECIPES_DIR.parent.name == "reslab"
    assert {"fmnist_fast", "fmnist_best", "fmnist_resnet20", "finetune_digits"} <= set(recipe_names())


@pytest.mark.parametrize("spec", ["fmnist_fast", "fmnist_fast.yaml", "configs/fmnist_fast.yaml"])
def test_a_recipe_resolves_by_name_and_by_the_old_path(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: no configs/ folder here
    assert resolve_recipe(spec) == RECIPES_DIR / "fmnist_fast.yaml"
    assert load_config(spec).model.name == load_config(RECIPES_DIR / "fmnist_fast.yaml").model.name


def test_a_users_file_wins_over_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fmnist_fast").write_text("epochs: 1\n")
    assert load_config("fmnist_fast").epochs == 1


def test_an_unknown_recipe_names_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="fmnist_fast") as e:
        resolve_recipe("fmnist_fsat")
    assert "reslab recipes" in str(e.value)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_recipe("elsewhere/fmnist_fast.yaml")  # only the configs/ folder is an alias


def test_every_recipe_has_a_one_line_summary():
    for name in recipe_names():
        summary = recipe_summary(name)
        assert summary and summary[0].isupper(), name
        assert summary.endswith("."), f"{name}: first comment line is cut mid-sentence: {summary}"


def test_reslab_recipes_lists_one_line_each(tmp_path):
    run = [sys.executable, "-m", "reslab", "recipes"]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == len(recipe_names())
    assert any(line.startswith("fmnist_fast ") for line in lines)
    rows = json.loads(subprocess.run(run + ["--json"], cwd=tmp_path, env=env, capture_output=True,
                                     text=True, check=True).stdout)  # fmt: skip
    assert [r["name"] for r in rows] == recipe_names()
    assert all(Path(r["path"]).is_file() for r in rows)
