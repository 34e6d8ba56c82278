"""Loaders: determinism per (seed, epoch, batch), exact resume, DDP sharding, augmentation
ops against straightforward per-image oracles, class balance, and bad files skipped."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from reslab.data import (
    batch_ops,
    class_weights,
    eval_transform,
    load_dataset,
    make_loader,
    mixup_cutmix,
)
from reslab.data.bundle import Split
from reslab.data.loaders import describe_sizes, progressive_sizes
from reslab.data.sampling import epoch_indices, generator
from reslab.data.synthetic import make_image_folder, make_nasty_folder
from reslab.data.transforms import make_preprocess
from reslab.errors import ConfigError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", log=None)


def _batches(loader, start=0):
    return [(x.clone(), y.clone()) for x, y in loader.iter_from(start)]


def test_batches_depend_only_on_seed_epoch_batch(digits):
    mk = lambda seed: make_loader(digits.train, batch_size=64, train=True, preprocess=digits.preprocess,  # noqa: E731
                                  seed=seed, random_erasing=0.5)
    a, b, c = mk(1), mk(1), mk(2)
    first_a, first_b, first_c = _batches(a), _batches(b), _batches(c)
    assert len(first_a) == len(a) == len(digits.train) // 64
    for (xa, ya), (xb, yb) in zip(first_a, first_b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first_a[0][1], first_c[0][1])
    a.set_epoch(1)
    assert not torch.equal(_batches(a)[0][1], first_a[0][1])
    a.set_epoch(0)
    assert torch.equal(_batches(a)[0][0], first_a[0][0])


def test_iter_from_resumes_exactly(digits):
    loader = make_loader(digits.train, batch_size=50, train=True, preprocess=digits.preprocess, seed=3)
    loader.set_epoch(4)
    full = _batches(loader)
    resumed = _batches(loader, start=7)
    assert len(resumed) == len(full) - 7
    for (x1, y1), (x2, y2) in zip(full[7:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_epoch_covers_each_image_once(digits):
    loader = make_loader(digits.train, batch_size=100, train=True, preprocess=digits.preprocess, drop_last=False)
    idx = loader.indices()
    assert sorted(idx.tolist()) == list(range(len(digits.train)))
    labels = torch.cat([y for _, y in loader])
    assert torch.equal(torch.sort(labels).values, torch.sort(digits.train.labels).values)


def test_ddp_shards_are_disjoint_and_equal_length():
    labels = torch.arange(103) % 7
    shards = [epoch_indices(labels, seed=5, epoch=2, rank=r, world_size=4) for r in range(4)]
    assert {len(s) for s in shards} == {26}
    union = torch.cat(shards)
    assert set(union.tolist()) == set(range(103))
    assert len(set(torch.cat([s[: 103 // 4] for s in shards]).tolist())) == 4 * (103 // 4)
    split = Split("train", labels, images=torch.zeros(103, 1, 8, 8, dtype=torch.uint8))
    pre = make_preprocess(8, 1, [0.5], [0.5])
    lens = [len(make_loader(split, batch_size=8, train=True, preprocess=pre, rank=r, world_size=4)) for r in range(4)]
    assert lens == [3, 3, 3, 3]


def test_eval_loader_matches_eval_transform(tmp_path):
    """The in-memory eval batch equals eval_transform on each file (the predict path)."""
    make_image_folder(tmp_path / "d", ["a", "b"], per_class=6, size=(48, 40), fmt="png")
    bundle = load_dataset(tmp_path / "d", val_fraction=0.3, image_size=32, log=None, min_per_class=1)
    assert bundle.preprocess["resize"] == 32 and bundle.in_chans == 3
    loader = make_loader(bundle.val, batch_size=16, train=False, preprocess=bundle.preprocess)
    x, y = next(iter(loader))
    tf = eval_transform(bundle.preprocess)
    paths = sorted((tmp_path / "d").rglob("*.png"))
    singles = {p: tf(Image.open(p)) for p in paths}
    for xi in x:  # each batch image equals the transform of exactly one file
        assert min(float((xi - s).abs().max()) for s in singles.values()) < 1e-4


def test_pad_crop_flip_matches_per_image_oracle():
    x = torch.randint(0, 256, (16, 3, 12, 10), dtype=torch.uint8)
    out = batch_ops.pad_crop_flip(x, 3, True, generator(9))
    g = generator(9)  # replay the same draws
    dy, dx = torch.randint(0, 7, (16,), generator=g), torch.randint(0, 7, (16,), generator=g)
    mirror = torch.rand(16, generator=g) < 0.5
    for i in range(16):  # crop the padded image, then mirror the crop (torchvision's order)
        ref = F.pad(x[i], (3, 3, 3, 3))[:, dy[i] : dy[i] + 12, dx[i] : dx[i] + 10]
        assert torch.equal(out[i], ref.flip(-1) if mirror[i] else ref)


def test_resized_crop_full_box_is_identity_and_flip():
    x = torch.rand(4, 3, 20, 20) * 255
    boxes = torch.tensor([[0, 0, 20, 20]] * 4, dtype=torch.float32)
    out = batch_ops.resized_crop_flip(x, 20, boxes, torch.tensor([False, True, False, True]))
    torch.testing.assert_close(out[0], x[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1], x[1].flip(-1), atol=1e-3, rtol=0)
    half = batch_ops.resized_crop_flip(x, 10, torch.tensor([[0, 0, 20, 20]] * 4, dtype=torch.float32))
    torch.testing.assert_close(half, F.interpolate(x, size=10, mode="bilinear", align_corners=False), atol=1e-3, rtol=0)


def test_rrc_boxes_fit_and_follow_scale():
    b = batch_ops.rrc_boxes(2000, 64, 48, (0.08, 1.0), (3 / 4, 4 / 3), generator(1))
    top, left, h, w = b.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 48).all()
    area = h * w / (64 * 48)
    assert area.min() >= 0.06 and area.max() <= 1.0 and 0.4 < area.mean() < 0.6


def test_random_erasing_probability_and_value():
    x = torch.ones(400, 1, 16, 16)
    out = batch_ops.random_erasing(x, 0.5, generator(2))
    erased = (out == 0).flatten(1).any(1).float().mean()
    assert 0.4 < erased < 0.6
    assert ((out == 0) | (out == 1)).all()


def test_mixup_cutmix_targets():
    x = torch.rand(8, 3, 16, 16)
    y = torch.arange(8) % 4
    xm, ys = mixup_cutmix(x, y, 4, mixup_alpha=0.4, cutmix_alpha=0.0, generator=generator(3))
    torch.testing.assert_close(ys.sum(1), torch.ones(8))
    lam = float(ys[0, y[0]]) if y[0] != y[7] else None
    if lam is not None:
        torch.testing.assert_close(xm[0], lam * x[0] + (1 - lam) * x[7])
    xc, yc = mixup_cutmix(x, y, 4, mixup_alpha=0.0, cutmix_alpha=1.0, generator=generator(4))
    pasted = (xc != x).any(1).float().mean((1, 2))  # share of pixels taken from the partner
    for i in range(8):
        if y[i] != y[7 - i]:
            assert abs(float(yc[i, y[7 - i]]) - float(pasted[i])) < 0.02


def test_class_weights_match_sklearn_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    labels = torch.tensor([0] * 50 + [1] * 10 + [2] * 5)
    w = class_weights(labels, 3)
    ref = compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy())
    np.testing.assert_allclose(w.numpy(), ref / ref.mean(), rtol=1e-6)
    assert abs(float(w.mean()) - 1) < 1e-6
    assert class_weights(torch.tensor([0, 0, 2]), 3)[1] == 0


def test_balanced_sampler_evens_out_classes():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    idx = torch.cat([epoch_indices(labels, seed=0, epoch=e, sampler="balanced") for e in range(3)])
    freq = torch.bincount(labels[idx], minlength=3).float() / len(idx)
    assert (freq - 1 / 3).abs().max() < 0.03


def test_fashion_like_train_batch_statistics(digits):
    """Normalised training batches have ~zero mean / unit std (the stats come from train)."""
    loader = make_loader(digits.train, batch_size=512, train=True, preprocess=digits.preprocess, augment="none")
    x = torch.cat([b for b, _ in loader])
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)


def test_channels_follow_preprocess(digits):
    pre3 = make_preprocess(16, 3, [0.3], [0.37])
    x, _ = next(iter(make_loader(digits.val, batch_size=8, train=False, preprocess=pre3)))
    assert x.shape == (8, 3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_trivial_augment_policy_is_deterministic(digits):
    pre = make_preprocess(16, 1, digits.preprocess["mean"], digits.preprocess["std"])
    mk = lambda: make_loader(digits.train, batch_size=32, train=True, preprocess=pre, augment="trivial")  # noqa: E731
    (x1, _), (x2, _) = next(iter(mk())), next(iter(mk()))
    assert torch.equal(x1, x2)


def test_bad_arguments_are_config_errors(digits):
    with pytest.raises(ConfigError, match="augment"):
        make_loader(digits.train, batch_size=8, train=True, preprocess=digits.preprocess, augment="wild")
    with pytest.raises(ConfigError, match="sampler"):
        make_loader(digits.train, batch_size=8, train=True, preprocess=digits.preprocess, sampler="odd")
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(digits.train, batch_size=0, train=True, preprocess=digits.preprocess)


def test_streaming_matches_across_worker_counts(tmp_path):
    make_image_folder(tmp_path / "d", ["a", "b", "c"], per_class=8, size=(40, 40), fmt="jpg")
    bundle = load_dataset(tmp_path / "d", image_size=32, in_memory=False, log=None, min_per_class=1)
    assert not bundle.train.in_memory
    runs = []
    for workers in (0, 2):
        loader = make_loader(bundle.train, batch_size=6, train=True, preprocess=bundle.preprocess,
                             workers=workers, seed=11, augment="default")
        loader.set_epoch(1)
        with loader:
            runs.append(_batches(loader))
    assert len(runs[0]) == len(runs[1]) == 3
    for (x0, y0), (x1, y1) in zip(*runs):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    # progressive resizing shrinks streamed batches too: the same batches, resized
    ramp = make_loader(bundle.train, batch_size=6, train=True, preprocess=bundle.preprocess, workers=0,
                       seed=11, augment="default", sizes=[16, 24, 32])  # fmt: skip
    ramp.set_epoch(1)
    with ramp:
        for (x, y), (x0, y0) in zip(_batches(ramp), runs[0]):
            assert x.shape[-2:] == (24, 24) and torch.equal(y, y0)
            torch.testing.assert_close(x, batch_ops.resize(x0, 24))


def test_streaming_eval_matches_eval_transform(tmp_path):
    make_image_folder(tmp_path / "d", ["a", "b"], per_class=4, size=(50, 36), fmt="png")
    bundle = load_dataset(tmp_path / "d", image_size=24, in_memory=False, val_fraction=0.5, log=None, min_per_class=1)
    loader = make_loader(bundle.val, batch_size=4, train=False, preprocess=bundle.preprocess, workers=0)
    x, _ = next(iter(loader))
    tf = eval_transform(bundle.preprocess)
    for xi, path in zip(x, bundle.val.paths):
        torch.testing.assert_close(xi, tf(Image.open(path)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("in_memory", [True, False])
def test_one_epoch_over_nasty_folder_lists_skipped(tmp_path, in_memory):
    make_nasty_folder(tmp_path / "nasty")
    lines = []
    bundle = load_dataset(tmp_path / "nasty", check="warn", in_memory=in_memory, log=lines.append, min_per_class=1)
    loader = make_loader(bundle.train, batch_size=8, train=True, preprocess=bundle.preprocess,
                         workers=0, drop_last=False)  # fmt: skip
    seen = sum(len(x) for x, y in loader if torch.isfinite(x).all())
    skipped = {p.split("/")[-1] for p, _ in loader.skipped}
    assert skipped == {"truncated.jpg", "bomb.png"}
    assert all(reason for _, reason in loader.skipped)
    # streamed splits are screened at load time too: the announced count is the real one
    assert seen == len(bundle.train)
    assert {p.split("/")[-1] for p in (d["path"] for d in bundle.health["skipped"])} == skipped
    assert any("skipped 2 unreadable files" in line and "truncated.jpg" in line for line in lines)


def test_streaming_validates_on_the_announced_count_and_logs_late_failures(tmp_path):
    root = make_image_folder(tmp_path / "d", ["a", "b"], per_class=6, size=(24, 24), fmt="jpg",
                             splits={"train": 6, "val": 3})
    bad = root / "val" / "a" / "00001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated: the streaming loader cannot decode it
    bundle = load_dataset(root, in_memory=False, log=None, min_per_class=1)
    assert not bundle.val.in_memory and len(bundle.val) == 5
    assert bundle.split_info["counts"]["val"] == 5
    lines = []
    val = make_loader(bundle.val, batch_size=4, train=False, preprocess=bundle.preprocess, workers=0,
                      log=lines.append)  # fmt: skip
    assert sum(len(y) for _, y in val) == len(bundle.val) and not lines
    assert [p for p, _ in val.skipped] == [str(bad)]
    late = bundle.val.paths[0]
    open(late, "wb").close()  # breaks after loading: the loader names it in the log
    val.set_epoch(1)
    assert sum(len(y) for _, y in val) == 4
    assert len(lines) == 1 and late in lines[0] and "fewer than 5" in lines[0]


def test_v2_policy_names_are_torchvision_classes():
    from reslab.data.transforms import policy_transform

    assert isinstance(policy_transform("trivial"), v2.TrivialAugmentWide)
    assert isinstance(policy_transform("randaugment"), v2.RandAugment)


def test_progressive_sizes_ramp_from_min_to_full():
    # FFCV's ramp: min_size until start_epoch, linear, rounded to the step, full from end_epoch
    assert progressive_sizes(28, 12, 16, 0, 8) == [16, 16, 20, 20, 24, 24, 24, 28, 28, 28, 28, 28]
    assert progressive_sizes(32, 6, 16, 2, 4, step=8) == [16, 16, 16, 24, 32, 32]
    assert progressive_sizes(28, 3, 20, 0, 1, step=1) == [20, 28, 28]
    sizes = progressive_sizes(224, 40, 160, 5, 30, step=32)
    assert sizes == sorted(sizes) and sizes[:6] == [160] * 6 and set(sizes) == {160, 192, 224}
    assert describe_sizes([16, 16, 20, 28], 28) == "16 px (epochs 1-2), 20 px (epoch 3), 28 px (epoch 4)"
    with pytest.raises(ConfigError, match="min_size=28 px must be smaller than .* 28 px.*e.g. 14"):
        progressive_sizes(28, 12, 28, 0, 8)
    with pytest.raises(ConfigError, match="8 px must be smaller than .* 4 px.*too small to shrink"):
        progressive_sizes(4, 12, 8, 0, 8)
    with pytest.raises(ConfigError, match=r"end_epoch \(12\) < epochs \(12\)"):
        progressive_sizes(28, 12, 16, 0, 12)


def test_progressive_resize_shrinks_training_batches_only(digits):
    pre = {**digits.preprocess, "resize": 16, "crop": 16, "input_size": [1, 16, 16]}
    sizes = progressive_sizes(16, 4, 8, 0, 2)
    assert sizes == [8, 12, 16, 16]
    kw = dict(batch_size=64, preprocess=pre, seed=0)
    plain = make_loader(digits.train, train=True, **kw)
    ramp = make_loader(digits.train, train=True, sizes=sizes, **kw)
    for epoch, size in enumerate(sizes):
        plain.set_epoch(epoch), ramp.set_epoch(epoch)
        (x0, y0), (x1, y1) = next(iter(plain)), next(iter(ramp))
        assert x1.shape == (64, 1, size, size) and torch.equal(y0, y1)
        # the same augmented batch, resized: its mean survives the antialiased shrink
        if size < 16:
            torch.testing.assert_close(x1.mean((1, 2, 3)), x0.mean((1, 2, 3)), atol=0.02, rtol=0)
        else:
            assert torch.equal(x0, x1)
    resumed = _batches(ramp, start=3)  # resuming mid-epoch gives the same (resized) batches
    assert torch.equal(resumed[0][0], _batches(ramp)[3][0])
    ramp.set_epoch(0)
    assert "progressive resizing 8 px (epoch 1), 12 px (epoch 2), 16 px (epochs 3-4)" in ramp.describe()
    evaluation = make_loader(digits.val or digits.test, train=False, sizes=sizes, **kw)
    assert next(iter(evaluation))[0].shape[-1] == 16


def test_streaming_workers_are_capped_at_the_cores_with_a_note(tmp_path):
    make_image_folder(tmp_path / "d", ["a", "b"], per_class=4, size=(16, 16))
    bundle = load_dataset(tmp_path / "d", in_memory=False, log=None, min_per_class=1)
    cores = len(os.sched_getaffinity(0))
    lines = []
    loader = make_loader(bundle.train, batch_size=4, train=False, preprocess=bundle.preprocess,
                         workers=cores + 60, log=lines.append)  # fmt: skip
    assert loader.workers == cores and len(lines) == 1 and f"workers={cores + 60}" in lines[0]
    with pytest.raises(ConfigError, match="workers=-1"):
        make_loader(bundle.train, batch_size=4, train=False, preprocess=bundle.preprocess, workers=-1)
