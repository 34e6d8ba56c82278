"""``reslab recipes``: the training recipes shipped with reslab, one line each.

    reslab recipes                       # name and what it is for
    reslab train --config fmnist_fast    # use one by name (a path to a YAML file works too)
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print name, summary and path as JSON")


def run(args: argparse.Namespace) -> int:
    from reslab.recipes import RECIPES_DIR, recipe_names, recipe_summary

    names = recipe_names()
    if args.json:
        rows = [{"name": n, "summary": recipe_summary(n), "path": str(RECIPES_DIR / f"{n}.yaml")}
                for n in names]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {recipe_summary(name)}")
    return 0
