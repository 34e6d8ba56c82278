"""The notebooks in notebooks/: stored without outputs, and each one runs top to bottom.

They run in a fresh kernel each (nbclient, the `notebooks` extra) in one temporary folder, with
this process's Python, so the tests see the reslab under test.
"""

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# What each notebook must print when it works (its claims, checked on the real run).
EXPECTED = {
    "01_residual_block.ipynb": ["J == I + J_F: True"],
    "02_build_resnets.ipynb": ["resnet50: 25,557,032 parameters", "max |difference|: 0.0"],
    "03_train_fashion_mnist.ipynb": ["best val acc", "config.yaml"],
    "04_finetune_your_folder.ipynb": ["ft       test accuracy", "scratch  test accuracy"],
    "05_gradcam_and_report.ipynb": ["_gradcam.png", "report.html"],
    "06_export_and_serve.ipynb": ["agree / 一致: 9 of 9"],
}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    # nbstripout's rule: git keeps the source only; outputs bloat diffs and go stale.
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        i for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs; strip them before committing with "
        f"`jupyter nbconvert --clear-output --inplace {path}`"
    )


def _text_of(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for all notebooks, as a reader running them in order has: notebooks 5 and
    6 reuse notebook 4's run instead of training their own."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, workdir, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="pip install 'reslab[notebooks]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install 'reslab[notebooks]'")
    pytest.importorskip("ipykernel", reason="pip install 'reslab[notebooks]'")
    # The kernel inherits the environment: reslab from this checkout, plots without a display.
    src = str(Path(__file__).resolve().parents[1] / "src")
    paths = filter(None, [src, os.environ.get("PYTHONPATH")])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("MPLBACKEND", "agg")
    nb = nbformat.read(path, as_version=4)
    # kernel "python3" with argv[0] "python" runs as this very interpreter (jupyter_client).
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    text = _text_of(nb)
    for expected in EXPECTED[path.name]:
        assert expected in text, f"{path.name} did not print {expected!r}:\n{text[-3000:]}"
