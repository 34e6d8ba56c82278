"""Symbolic links in an image folder (issue 17): read inside the dataset folder, never out
of it and never into a cycle; every link is reported and a cycle blocks training."""

from __future__ import annotations

import os

import pytest

from reslab.cli.main import main
from reslab.data import check_dataset, load_dataset
from reslab.data.synthetic import make_image_folder
from reslab.errors import DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE_DIR", str(tmp_path / "cache"))


def _folder(tmp_path):
    return make_image_folder(tmp_path / "d", {"cat": 12, "dog": 12}, size=(16, 16))


def test_a_link_back_up_is_a_blocking_cycle_and_adds_no_image(tmp_path, capsys):
    root = _folder(tmp_path)
    os.symlink("..", root / "dog" / "loop")  # followed, it lists the dataset again, ~40 deep
    report = check_dataset(root, full=False, min_per_class=1)
    loop = report.problem("symlink_loop")
    assert loop is not None and loop.blocking and loop.paths == [os.path.join("dog", "loop")]
    assert report.stats["splits"]["all"]["classes"] == {"cat": 12, "dog": 12}
    with pytest.raises(DataError, match="symlink_loop"):
        load_dataset(root, log=None, min_per_class=1)
    bundle = load_dataset(root, log=None, min_per_class=1, check="warn", val_fraction=0.25)
    assert len(bundle.train) + len(bundle.val) == 24
    assert main(["check", str(root), "--fast"]) == 1
    assert "symlink_loop" in capsys.readouterr().out


def test_links_out_of_the_dataset_are_reported_not_followed(tmp_path):
    root = _folder(tmp_path)
    outside = make_image_folder(tmp_path / "elsewhere", {"bird": 5}, size=(16, 16))
    os.symlink(outside / "bird", root / "bird")  # a class folder living elsewhere
    os.symlink(outside / "bird", root / "cat" / "more")  # a sub-folder living elsewhere
    os.symlink("/", root / "dog" / "root")  # followed, a scan of the whole disk
    report = check_dataset(root, full=False, min_per_class=1)
    out = report.problem("link_outside")
    assert out is not None and not out.blocking and out.count == 3
    assert report.stats["images"] == 24
    assert not report.blocking


def test_a_link_to_a_file_inside_is_read_and_reported(tmp_path):
    root = _folder(tmp_path)
    first = sorted(os.listdir(root / "cat"))[0]
    os.symlink(os.path.join("..", "cat", first), root / "dog" / "copy.png")
    os.symlink("missing.png", root / "dog" / "broken.png")
    report = check_dataset(root, full=False, min_per_class=1)
    assert report.problem("symlink").paths == [os.path.join("dog", "copy.png")]
    assert report.problem("broken_link").paths == [os.path.join("dog", "broken.png")]
    assert report.stats["splits"]["all"]["classes"] == {"cat": 12, "dog": 13}
    assert report.problem("conflicting_labels") is not None  # the same file under cat and dog


def test_a_run_folder_inside_the_data_is_ignored_not_blamed_on_the_data(tmp_path):
    root = _folder(tmp_path)
    (root / "run1" / "checkpoints").mkdir(parents=True)  # what --out d/run1 creates first
    (root / "run1" / "log.txt").write_text("x")
    report = check_dataset(root, full=False, min_per_class=1)
    assert report.problem("run_folder").paths == ["run1"]
    assert not report.blocking and report.stats["splits"]["all"]["classes"] == {"cat": 12, "dog": 12}


def test_a_folder_made_only_of_outside_links_says_why_it_is_empty(tmp_path):
    outside = make_image_folder(tmp_path / "real", ["a", "b"], per_class=4, size=(12, 12))
    (tmp_path / "d").mkdir()
    os.symlink(outside, tmp_path / "d" / "train")
    with pytest.raises(DataError, match=r"no class folders \(links lead out of it.*train"):
        check_dataset(tmp_path / "d", full=False)
