"""House sizes in reslab.data (issue 19): no function over 80 lines, no file over 450."""

from __future__ import annotations

import ast
from pathlib import Path

import reslab.data

DATA = Path(reslab.data.__file__).parent
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 450


def test_data_functions_and_files_stay_small():
    too_long = []
    for path in sorted(DATA.glob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, "split these by job: " + "; ".join(too_long)
