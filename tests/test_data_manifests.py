"""Splits and manifests (issue 17): split folders that differ only in case, CSV headers,
repeated and conflicting rows, non-UTF-8 CSVs, and a dataset of a single class."""

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


def _csv(tmp_path, text: str, encoding: str = "utf-8"):
    make_image_folder(tmp_path / "img", {"cat": 6, "dog": 6}, size=(12, 12))
    path = tmp_path / "m.csv"
    path.write_bytes(text.encode(encoding))
    return path


def _rows(label_of=lambda c: c):
    return "".join(f"img/{c}/{i:05d}.png,{label_of(c)}\n" for c in ("cat", "dog") for i in range(6))


def test_split_folders_differing_only_in_case_block(tmp_path):
    root = make_image_folder(tmp_path / "d", ["a", "b"], per_class=4, size=(12, 12),
                             splits={"train": 4, "val": 2})
    other = make_image_folder(tmp_path / "x", ["a", "b"], per_class=4, size=(12, 12), seed=1)
    os.rename(other, root / "Train")
    report = check_dataset(root, full=False, min_per_class=1)
    dup = report.problem("duplicate_split")
    assert dup is not None and dup.blocking and "Train" in dup.paths[0]
    with pytest.raises(DataError, match="duplicate_split"):
        load_dataset(root, log=None, min_per_class=1)


def test_csv_header_without_label_column_names_the_columns_found(tmp_path):
    path = _csv(tmp_path, "file,category\n" + _rows())
    with pytest.raises(DataError, match=r"no 'path' or 'label' column.*\['file', 'category'\]"):
        load_dataset(path, log=None, min_per_class=1)
    path.write_text("path,kind,label\n" + _rows().replace(",", ",x,"))  # label is column 3
    bundle = load_dataset(path, log=None, min_per_class=1, val_fraction=0.34)
    assert bundle.classes == ["cat", "dog"]


def test_csv_repeated_rows_warn_and_conflicting_labels_block(tmp_path):
    body = _rows()
    first = body.splitlines()[0]
    path = _csv(tmp_path, "path,label\n" + body + first + "\n")
    report = check_dataset(path, full=False, min_per_class=1)
    assert report.problem("duplicate_row").count == 1 and not report.blocking
    assert report.stats["images"] == 12
    path.write_text("path,label\n" + body + first.replace(",cat", ",dog") + "\n")
    report = check_dataset(path, full=False, min_per_class=1)
    assert report.problem("conflicting_rows").blocking
    assert "'cat', 'dog'" in report.problem("conflicting_rows").paths[0]
    assert main(["check", str(path), "--fast", "--min-per-class", "1"]) == 1


def test_non_utf8_csv_is_a_data_error_naming_the_file_and_encoding(tmp_path):
    path = _csv(tmp_path, "path,label\n" + _rows(lambda c: "chat" if c == "cat" else "chien é"), "latin-1")
    with pytest.raises(DataError, match=r"m\.csv is not UTF-8.*UTF-8"):
        check_dataset(path, full=False)
    assert main(["check", str(path)]) == 2


def test_a_single_class_blocks_training_unless_warned(tmp_path):
    root = make_image_folder(tmp_path / "d", ["only"], per_class=12, size=(12, 12))
    report = check_dataset(root, full=False)
    assert report.problem("single_class").blocking
    with pytest.raises(DataError, match="single_class"):
        load_dataset(root, log=None)
    bundle = load_dataset(root, log=None, check="warn")
    assert bundle.classes == ["only"]
