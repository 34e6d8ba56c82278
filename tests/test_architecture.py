"""The house rules as tests: imports point down the layers, and no module imports itself
back through a circle (shared/STYLE.md, docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
grimp = pytest.importorskip("grimp")


def test_layers_contract_holds():
    """import-linter's layers contract from pyproject.toml: cli > experiments > finetune,
    evaluate, export > engine > data, models, config > files, device, errors."""
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout, res.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_import_circles():
    """A circle means two modules cannot be understood (or imported) one without the other;
    the piece they share belongs lower down. Package ``__init__`` re-exports are left out."""
    graph = grimp.build_graph("reslab", include_external_packages=False)
    for pkg in [m for m in graph.modules if graph.find_children(m)]:
        # An __init__ that re-exports its submodules' names is not a design circle.
        for child in graph.find_modules_directly_imported_by(pkg):
            if child.startswith(pkg + "."):
                graph.remove_import(importer=pkg, imported=child)
    assert _cycles(graph) == []


MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 450


def test_files_and_functions_stay_small():
    """A file has one job and a function fits on a screen: no file in src/ over 450 lines,
    no function over 80 (split by job, as shared/STYLE.md says)."""
    import ast

    too_long = []
    for path in sorted((ROOT / "src" / "reslab").rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(ROOT / "src")
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, "split these by job: " + "; ".join(too_long)
