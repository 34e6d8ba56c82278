"""Messages that point the right way (issue 17): the refusal names the CLI and Python
forms of check=warn; a bare built-in name that is also a folder is refused with both
spellings; a run folder inside the data is named as such, never blamed on the data."""

from __future__ import annotations

import pytest

from reslab.config import load_config
from reslab.data import check_dataset, check_out_not_inside, load_dataset
from reslab.data.synthetic import make_image_folder
from reslab.engine import fit
from reslab.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE_DIR", str(tmp_path / "cache"))


def test_the_refusal_names_the_cli_and_python_forms(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 6, "b": 0}, size=(12, 12))  # b: empty class
    with pytest.raises(DataError) as err:
        load_dataset(root, log=None, min_per_class=1)
    assert "data.check=warn" in str(err.value) and "check='warn'" in str(err.value)


def test_a_builtin_name_that_is_also_a_folder_is_refused_with_both_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "digits", ["x", "y"], per_class=6, size=(12, 12))
    for call in (lambda s: load_dataset(s, log=None, min_per_class=1), lambda s: check_dataset(s, full=False)):
        with pytest.raises(DataError, match=r"both the built-in dataset digits and the folder.*\./digits.*digits:"):
            call("digits")
    assert load_dataset("./digits", log=None, min_per_class=1).classes == ["x", "y"]
    assert load_dataset("digits:", check=False, log=None).num_classes == 10


def test_out_inside_the_data_is_refused_by_name_and_never_blamed_on_the_data(tmp_path):
    root = make_image_folder(tmp_path / "d", ["a", "b"], per_class=12, size=(12, 12))
    with pytest.raises(ConfigError, match=r"--out .*run1 is inside the data folder"):
        check_out_not_inside(root, root / "run1")
    check_out_not_inside(root, tmp_path / "runs" / "run1")  # outside: fine
    check_out_not_inside("digits", root / "run1")  # a built-in has no folder to protect
    # fit checks it before it creates anything: no run folder lands among the images
    cfg = load_config(None, {
        "data": {"source": str(root), "batch_size": 8, "image_size": 12},
        "model": {"name": "resnet20"}, "epochs": 1, "threads": 1, "precision": "fp32", "out": str(root / "run1"),
    })  # fmt: skip
    with pytest.raises(ConfigError, match=r"is inside the data folder"):
        fit(cfg)
    assert not (root / "run1").exists()
