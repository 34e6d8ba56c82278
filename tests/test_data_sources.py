"""Sources: image-folder layouts, CSV manifests, deterministic stratified splits, digits,
the decoded-image cache and class-list checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import load_dataset
from reslab.data.bundle import check_classes
from reslab.data.cache import cache_key, cache_path, decode_files_cached, file_fingerprint
from reslab.data.digits import read_digits, write_digits_folder
from reslab.data.splits import stratified_split
from reslab.data.synthetic import make_image_folder
from reslab.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE_DIR", str(tmp_path / "cache"))


def test_split_is_deterministic_and_stratified():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    a_keep, a_val = stratified_split(labels, 0.2, seed=1)
    b_keep, b_val = stratified_split(labels, 0.2, seed=1)
    _, c_val = stratified_split(labels, 0.2, seed=2)
    assert torch.equal(a_val, b_val) and torch.equal(a_keep, b_keep)
    assert not torch.equal(a_val, c_val)
    assert torch.bincount(labels[a_val]).tolist() == [10, 6, 4]  # 20% of every class
    assert sorted(torch.cat([a_keep, a_val]).tolist()) == list(range(100))


def test_split_keeps_each_class_on_both_sides_and_groups_together():
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1])
    keep, val = stratified_split(labels, 0.01, seed=0)
    assert set(labels[val].tolist()) == {0, 1} and set(labels[keep].tolist()) == {0, 1}
    groups = ["a", "b", "c", "c", "c", "d", "e", "f"]  # items 2..4 are copies of one file
    for seed in range(10):
        keep, val = stratified_split(labels, 0.5, seed=seed, groups=groups)
        sides = {i in set(val.tolist()) for i in (2, 3, 4)}
        assert len(sides) == 1
    with pytest.raises(ConfigError, match="val_fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_folder_without_split_gets_recorded_stratified_split(tmp_path):
    make_image_folder(tmp_path / "d", {"cat": 10, "dog": 20}, size=(16, 16))
    a = load_dataset(tmp_path / "d", val_fraction=0.2, seed=3, log=None, min_per_class=1)
    b = load_dataset(tmp_path / "d", val_fraction=0.2, seed=3, log=None, min_per_class=1)
    c = load_dataset(tmp_path / "d", val_fraction=0.2, seed=4, log=None, min_per_class=1)
    assert a.classes == ["cat", "dog"] and a.test is None
    assert a.val.class_counts(2) == [2, 4] and a.train.class_counts(2) == [8, 16]
    assert a.split_info["val_sha256"] == b.split_info["val_sha256"] != c.split_info["val_sha256"]
    assert torch.equal(a.val.images, b.val.images)
    assert a.split_info["seed"] == 3 and a.split_info["val_fraction"] == 0.2
    assert a.preprocess["input_size"] == [3, 16, 16] and a.in_chans == 3


def test_folder_with_splits_and_grey_images(tmp_path):
    make_image_folder(tmp_path / "d", ["x", "y"], mode="L", size=(20, 20),
                      splits={"train": 6, "val": 2, "test": 3})  # fmt: skip
    b = load_dataset(tmp_path / "d", log=None, min_per_class=1)
    assert (len(b.train), len(b.val), len(b.test)) == (12, 4, 6)
    assert b.in_chans == 1 and b.train.images.shape[1:] == (1, 20, 20)
    assert b.split_info["val_from"] == "given"
    img = np.asarray(Image.open(tmp_path / "d/train/x/00000.png"))
    x = b.train.images[(b.train.labels == 0).nonzero()[0, 0]]
    assert np.array_equal(x[0].numpy(), img)  # stored pixels are the file's pixels


def test_folder_image_size_and_channels_override(tmp_path):
    make_image_folder(tmp_path / "d", ["a", "b"], per_class=4, size=(300, 260), fmt="jpg")
    b = load_dataset(tmp_path / "d", image_size=224, in_chans=1, log=None, min_per_class=1, val_fraction=0.25)
    # torchvision's ImageNet V2 recipe: resize 232, centre crop 224
    assert b.preprocess == {**b.preprocess, "input_size": [1, 224, 224], "crop": 224, "resize": 232}
    assert b.train.images.shape[1:] == (1, 232, 232)
    assert len(b.preprocess["mean"]) == 1


def test_csv_manifest_with_and_without_split_column(tmp_path):
    make_image_folder(tmp_path / "imgs", {"0": 6, "2": 6, "10": 6}, size=(12, 12))
    rows = [f"imgs/{c}/{i:05d}.png,{c}" for c in ("0", "2", "10") for i in range(6)]
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\nimgs/missing.png,2\n")
    b = load_dataset(tmp_path / "plain.csv", val_fraction=0.34, log=None, min_per_class=1)
    assert b.classes == ["0", "2", "10"]  # numeric labels sort as numbers
    assert len(b.train) + len(b.val) == 18 and b.val.class_counts(3) == [2, 2, 2]
    assert {p["kind"] for p in b.health["problems"]} == {"missing_file"}

    split_rows = ["path,label,split"] + [
        f"imgs/{c}/{i:05d}.png,{c},{'val' if i < 2 else 'train'}" for c in ("0", "2", "10") for i in range(6)
    ]
    (tmp_path / "split.csv").write_text("\n".join(split_rows) + "\n")
    s = load_dataset(tmp_path / "split.csv", log=None, min_per_class=1)
    assert (len(s.train), len(s.val)) == (12, 6)
    assert s.split_info["layout"] == "csv-split"
    (tmp_path / "bad.csv").write_text("path,label,split\nimgs/0/00000.png,0,holdout\n")
    with pytest.raises(DataError, match="holdout"):
        load_dataset(tmp_path / "bad.csv", log=None)


def test_missing_source_and_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="neither a file"):
        load_dataset(tmp_path / "nothing", log=None)
    with pytest.raises(ConfigError, match="in_chans"):
        load_dataset("digits", in_chans=2, log=None)
    with pytest.raises(ConfigError, match="check"):
        load_dataset("digits", check="maybe", log=None)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(tmp_path / "flat", log=None)


def test_digits_scaling_matches_sklearn():
    from sklearn.datasets import load_digits

    x, y = read_digits()
    ref = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.uint8
    np.testing.assert_array_equal(x[:, 0].numpy(), np.rint(ref.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(y.numpy(), ref.target)


def test_digits_bundle_has_fixed_test_and_no_flip():
    a = load_dataset("digits", seed=0, log=None)
    b = load_dataset("digits", seed=1, log=None)
    assert torch.equal(a.test.images, b.test.images)  # the test hold-out ignores the seed
    assert not torch.equal(a.val.labels, b.val.labels) or not torch.equal(a.val.images, b.val.images)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.train.hflip is False and a.preprocess["input_size"] == [1, 8, 8]
    up = load_dataset("digits", image_size=28, in_chans=3, log=None)
    assert up.preprocess["input_size"] == [3, 28, 28] and up.train.images.shape[1] == 3


def test_write_digits_folder_roundtrip(tmp_path):
    counts = write_digits_folder(tmp_path / "dig", per_class=5, seed=0, size=28)
    assert set(counts["train"].values()) == {5}
    assert sum(counts["test"].values()) == 359
    img = Image.open(next((tmp_path / "dig/train/3").glob("*.png")))
    assert img.size == (28, 28) and img.mode == "L"
    b = load_dataset(tmp_path / "dig", log=None, min_per_class=1)
    assert b.classes == [str(d) for d in range(10)] and len(b.train) == 50
    assert b.preprocess["input_size"] == [1, 28, 28]


def test_decode_cache_hits_and_invalidates(tmp_path):
    make_image_folder(tmp_path / "d", ["a"], per_class=3, size=(10, 10))
    paths = sorted(str(p) for p in (tmp_path / "d").rglob("*.png"))
    x1, kept1, _ = decode_files_cached(paths, 3, 10)
    key = cache_key("files", file_fingerprint(paths), 3, 10)
    assert cache_path(key).is_file()
    x2, _, _ = decode_files_cached(paths, 3, 10)
    assert torch.equal(x1, x2) and kept1.tolist() == [0, 1, 2]
    Image.new("RGB", (10, 10), (255, 0, 0)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))
    x3, _, _ = decode_files_cached(paths, 3, 10)
    assert (x3[0, 0] == 255).all() and not torch.equal(x1[0], x3[0])
    new_key = cache_key("files", file_fingerprint(paths), 3, 10)
    cache_path(new_key).write_bytes(b"garbage")  # damaged cache: rebuilt, not trusted
    x4, _, _ = decode_files_cached(paths, 3, 10)
    assert torch.equal(x3, x4)


def test_check_classes():
    check_classes(["a", "b"], ["a", "b"])
    with pytest.raises(DataError, match="different order"):
        check_classes(["a", "b"], ["b", "a"])
    with pytest.raises(DataError, match=r"only in the data: \['c'\]"):
        check_classes(["a", "b"], ["a", "b", "c"])


def test_hidden_and_stray_files_are_ignored(tmp_path):
    make_image_folder(tmp_path / "d", ["a", "b"], per_class=5, size=(12, 12))
    Image.new("RGB", (12, 12)).save(tmp_path / "d" / "stray.png")
    (tmp_path / "d" / ".git").mkdir()
    b = load_dataset(tmp_path / "d", log=None, min_per_class=1)
    assert b.classes == ["a", "b"]
    kinds = {p["kind"]: p["paths"] for p in b.health["problems"]}
    assert kinds == {"stray_file": ["stray.png"], "hidden": [".git"]}
    assert Path(b.source).name == "d"


def test_cifar_absent_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cifar10 is not in") as e:
        load_dataset(f"cifar10:{tmp_path / 'c10'}", download=False, log=None)
    assert str(tmp_path / "c10") in str(e.value) and "cifar-10-python.tar.gz" in str(e.value)
