"""The training recipes shipped inside the package, addressable by name or by path.

``--config fmnist_fast`` and ``load_config("fmnist_fast")`` find ``reslab/recipes/fmnist_fast.yaml``
in the installed package, so a recipe works outside the checkout; a path to any YAML file
works as before. The older spelling ``configs/<name>.yaml`` (the recipes' folder before
they became package data) still resolves to the packaged recipe when no such file exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from reslab.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent
LEGACY_DIR = "configs"  # where the recipes lived in the checkout; old commands name it


def recipe_names() -> list[str]:
    """The names of the packaged recipes, sorted (``fmnist_fast``, ...)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_summary(name: str) -> str:
    """The first comment line of a packaged recipe: what it is for, in one line."""
    for line in (RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def resolve_recipe(spec: str | os.PathLike) -> Path:
    """The YAML file a ``--config`` value names.

    Args:
        spec: a path to a YAML file, a packaged recipe's name (``fmnist_fast``, with or
            without ``.yaml``), or the legacy ``configs/<name>.yaml``.
    Returns:
        The path of an existing file.
    Raises:
        ConfigError naming the packaged recipes when nothing matches.
    """
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"--config {str(spec)!r} is a folder; pass a YAML file or a recipe "
                          f"name ({', '.join(recipe_names())}).")  # fmt: skip
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    bare = str(spec) in (name, path.name)
    legacy = path.parent.name == LEGACY_DIR
    packaged = RECIPES_DIR / f"{name}.yaml"
    if (bare or legacy) and packaged.is_file():
        return packaged
    raise ConfigError(f"config {str(spec)!r} does not exist as a file or a packaged recipe; "
                      f"pass a YAML file or one of {', '.join(recipe_names())} "
                      "(`reslab recipes` lists them).")  # fmt: skip
