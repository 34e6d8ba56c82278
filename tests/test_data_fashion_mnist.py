"""Fashion-MNIST reader: idx parsing on files the test writes, the search order, checksum
verification of downloads, the offline error, and the real files when installed."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from reslab.data import fashion_mnist as fm
from reslab.data import load_dataset
from reslab.download import download_file, verify_file
from reslab.errors import DataError

REAL = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RESLAB_DATA_DIR", str(tmp_path / "data"))


def _write_small(folder: Path, n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, arr in arrays.items():
        fm.write_idx_gz(folder / fm.FILES[key][0], arr)
    return arrays


def test_idx_reader_roundtrip(tmp_path):
    arrays = _write_small(tmp_path / "fm")
    data = fm.read_fashion_mnist(tmp_path / "fm", download=False)
    np.testing.assert_array_equal(data["train"][0][:, 0].numpy(), arrays["train_images"])
    np.testing.assert_array_equal(data["test"][1].numpy(), arrays["test_labels"])
    assert data["train"][0].shape == (40, 1, 28, 28) and data["train"][1].dtype == torch.int64
    assert data["verified"] is False  # not the published files


def test_idx_header_is_parsed_by_the_spec():
    # magic 0x00000803 (uint8, 3 dims), then big-endian 2, 2, 3, then 12 bytes
    raw = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(12))
    np.testing.assert_array_equal(fm.parse_idx(raw), np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    with pytest.raises(DataError, match="truncated"):
        fm.parse_idx(raw[:-1])
    with pytest.raises(DataError, match="not an idx file"):
        fm.parse_idx(b"PK\x03\x04rest")


def test_mismatched_files_are_rejected(tmp_path):
    _write_small(tmp_path / "fm")
    fm.write_idx_gz(tmp_path / "fm" / fm.FILES["train_labels"][0], np.zeros(39, np.uint8))
    with pytest.raises(DataError, match="do not belong together"):
        fm.read_fashion_mnist(tmp_path / "fm", download=False)


def test_load_dataset_from_explicit_folder(tmp_path):
    _write_small(tmp_path / "fm", n_train=100)
    b = load_dataset(f"fashion-mnist:{tmp_path / 'fm'}", val_fraction=0.2, log=None, min_per_class=1)
    assert b.classes[0] == "T-shirt/top" and len(b.classes) == 10
    assert (len(b.train), len(b.val), len(b.test)) == (80, 20, 20)
    assert b.val.class_counts(10) == [2] * 10
    assert b.preprocess["input_size"] == [1, 28, 28] and b.train.hflip
    x = b.train.images.float() / 255
    assert b.preprocess["mean"][0] == pytest.approx(float(x.mean()), abs=1e-4)
    assert b.preprocess["std"][0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-4)


def test_user_data_dir_comes_before_the_system_folder(tmp_path, monkeypatch):
    arrays = _write_small(tmp_path / "data" / "fashion-mnist", n_train=30)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    found = fm.locate(download=False)
    assert found["train_images"].parent == tmp_path / "data" / "fashion-mnist"
    data = fm.read_fashion_mnist(download=False)
    assert len(data["train"][1]) == len(arrays["train_labels"])


def test_offline_and_absent_names_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(fm, "MIRRORS", (f"file://{tmp_path}/no-such-mirror/",))
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", log=None)
    msg = str(e.value)
    assert "fashion-mnist:/that/folder" in msg and "RESLAB_DATA_DIR" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "download failed" in msg


def test_download_verifies_checksums(tmp_path):
    src = tmp_path / "mirror" / "file.gz"
    src.parent.mkdir()
    src.write_bytes(gzip.compress(b"payload"))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    got = download_file(src.as_uri(), tmp_path / "out" / "file.gz", md5=md5, sha256=sha)
    assert got.read_bytes() == src.read_bytes()
    with pytest.raises(DataError, match="md5"):
        download_file(src.as_uri(), tmp_path / "out" / "bad.gz", md5="0" * 32)
    assert not (tmp_path / "out" / "bad.gz").exists()  # a mismatching download is not kept
    assert not list((tmp_path / "out").glob(".*part"))
    with pytest.raises(DataError, match="sha256"):
        verify_file(got, sha256="f" * 64)


def test_download_path_fills_a_folder_from_a_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    _write_small(mirror)
    table = {k: (name, hashlib.md5((mirror / name).read_bytes()).hexdigest(), sha)
             for k, (name, _, sha) in fm.FILES.items()}  # fmt: skip
    monkeypatch.setattr(fm, "FILES", table)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "nowhere")
    found = fm._download(tmp_path / "dest", mirrors=(mirror.as_uri() + "/",))
    assert {p.name for p in found.values()} == {name for name, _, _ in table.values()}


@pytest.mark.skipif(not REAL, reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    b = load_dataset("fashion-mnist", log=None)
    assert b.split_info["sha256_verified"] and b.split_info["folder"].startswith("/usr/share")
    assert (len(b.train), len(b.val), len(b.test)) == (54000, 6000, 10000)
    assert b.val.class_counts(10) == [600] * 10  # stratified 10%
    x = torch.cat([b.train.images, b.val.images]).float() / 255  # the full 60k training set
    assert float(x.mean()) == pytest.approx(0.2860, abs=5e-4)
    assert float(x.std()) == pytest.approx(0.3530, abs=5e-4)
    assert b.preprocess["mean"][0] == pytest.approx(0.2860, abs=1e-3)
    assert b.preprocess["std"][0] == pytest.approx(0.3530, abs=1e-3)
