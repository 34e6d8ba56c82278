"""Bring your own data (issue 16): torch map-style Datasets become a DataBundle on the
in-memory uint8 fast path, wrong items are named, and the bundle trains through fit."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset
from torchvision import datasets
from torchvision.transforms import v2

from reslab.config import load_config
from reslab.data import from_datasets
from reslab.data.images import normalize_mode, pil_to_uint8
from reslab.engine import fit
from reslab.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _fake(n=60, size=(3, 16, 16), seed=0, **kw):
    # torchvision's own FakeData: items (PIL image, int label), like any torchvision dataset
    return datasets.FakeData(size=n, image_size=size, num_classes=3, random_offset=seed, **kw)


class _Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_pil_items_are_decoded_once_into_uint8_tensors():
    train, val = _fake(), _fake(24, seed=1000)
    bundle = from_datasets(train, val, classes=["a", "b", "c"], log=None, min_per_class=1)
    assert bundle.train.in_memory and bundle.train.images.dtype == torch.uint8
    assert tuple(bundle.train.images.shape) == (60, 3, 16, 16) and len(bundle.val) == 24
    img, label = train[5]
    assert torch.equal(bundle.train.images[5], pil_to_uint8(normalize_mode(img)))
    assert int(bundle.train.labels[5]) == label
    assert bundle.classes == ["a", "b", "c"] and bundle.preprocess["input_size"] == [3, 16, 16]


def test_float_chw_tensors_from_to_tensor_match_the_pil_path():
    pil = from_datasets(_fake(), val_fraction=0.2, log=None, min_per_class=1)
    tensors = from_datasets(_fake(transform=v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])),
                            val_fraction=0.2, log=None, min_per_class=1)  # fmt: skip
    assert torch.equal(pil.train.images, tensors.train.images) and len(pil.val) == len(tensors.val) > 0
    grey = _Items([(torch.full((1, 8, 8), i % 2, dtype=torch.uint8) + i, i % 2) for i in range(20)])
    assert from_datasets(grey, check=False, log=None).in_chans == 1


@pytest.mark.parametrize("item, expected", [
    ({"image": 1, "label": 0}, "received dict"),
    (("not an image", 0), r"received tuple\(str, int\)"),
    ((torch.zeros(3, 8, 8), 0.5), r"received tuple\(Tensor\(3, 8, 8\) torch.float32, float\)"),
    ((torch.zeros(8, 8, 3), 0), "permute"),
    ((torch.full((3, 8, 8), -1.5), 0), "Drop Normalize"),
])  # fmt: skip
def test_wrong_items_name_what_was_received(item, expected):
    with pytest.raises(DataError, match=expected):
        from_datasets(_Items([item] * 4), check=False, log=None)


def test_an_iterable_dataset_is_refused_by_name():
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(3, 8, 8), 0

    with pytest.raises(DataError, match="received Stream.*map-style"):
        from_datasets(Stream(), log=None)


def test_the_bundle_trains_through_fit(tmp_path):
    bundle = from_datasets(_fake(96), _fake(30, seed=1000), log=None, min_per_class=1)
    cfg = load_config(None, {
        "data": {"batch_size": 16}, "model": {"name": "resnet20"}, "epochs": 1, "threads": 1,
        "precision": "fp32", "out": str(tmp_path / "run"),
    })  # fmt: skip
    result = fit(cfg, data=bundle)
    assert len(result.history) == 1 and result.history[0]["val_acc"] is not None
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
