"""Embeddings: `reslab embed`, `reslab similar` and near-duplicates that exact hashes miss."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import reslab
from reslab.cli.main import main
from reslab.data.synthetic import make_image_folder
from reslab.errors import ConfigError
from reslab.evaluate.embed import (
    embed_batch,
    embed_images,
    list_images,
    near_duplicates,
    nearest,
    read_index,
    write_index,
)
from reslab.evaluate.loading import preprocess_of

COPIED = 3  # originals that get a resized copy and a JPEG re-encoded copy


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """60 distinct smooth images in 3 classes, plus resized and re-encoded copies of 3 of them
    placed in *other* classes (the way a copy leaks into another split or label)."""
    root = make_image_folder(tmp_path_factory.mktemp("emb") / "data", ["a", "b", "c"],
                             per_class=20, size=(64, 64), seed=1)
    for i, p in enumerate(sorted((root / "a").glob("*.png"))[:COPIED]):
        img = Image.open(p).convert("RGB")
        img.resize((48, 48), Image.BICUBIC).save(root / "b" / f"copy_resized_{i}.png")
        img.save(root / "c" / f"copy_jpeg_{i}.jpg", quality=70)
    return root


@pytest.fixture(scope="module")
def fmnist_model():
    model = reslab.create_model("resnet20", in_chans=1, pretrained="reslab:resnet20_fashion_mnist")
    return model.eval()


def _embed(model, folder, layer="pool"):
    return embed_images(model, list_images(folder), preprocess_of(model), layer)


def test_near_duplicates_finds_resized_and_reencoded_copies(folder, fmnist_model, one_thread):
    emb, paths, skipped = _embed(fmnist_model, folder)
    assert not skipped and emb.shape == (66, 64)
    # 0.97: the resized copy against the JPEG copy of one original scores 0.976 (two
    # degradations apart); distinct images stay below 0.9 (docs/backbones.md)
    pairs = near_duplicates(emb, paths, threshold=0.97)
    found = {frozenset(Path(p).stem for p in (a, b)) for a, b, _ in pairs}
    # Each original, its resized copy and its JPEG copy: three pairs per original, no others.
    expected = set()
    for i in range(COPIED):
        trio = [f"{i:05d}", f"copy_resized_{i}", f"copy_jpeg_{i}"]
        expected |= {frozenset((trio[0], trio[1])), frozenset((trio[0], trio[2])),
                     frozenset((trio[1], trio[2]))}
    assert found == expected
    blocked = near_duplicates(emb, paths, threshold=0.97, block=7)  # blocks change nothing
    assert {(a, b) for a, b, _ in blocked} == {(a, b) for a, b, _ in pairs}
    assert sorted(s for *_, s in blocked) == pytest.approx(sorted(s for *_, s in pairs), abs=1e-6)
    # None of them has the same bytes: an exact hash finds nothing here.
    assert len({Path(p).read_bytes() for p in paths}) == len(paths)


def test_near_duplicates_across_groups_only(folder, fmnist_model, one_thread):
    emb, paths, _ = _embed(fmnist_model, folder)
    groups = ["train" if "/a/" in p else "test" for p in paths]  # a: train; b and c: test
    pairs = near_duplicates(emb, paths, threshold=0.98, groups=groups)
    assert len(pairs) == 2 * COPIED  # resized<->jpeg copies share the test split
    assert all(("/a/" in a) != ("/a/" in b) for a, b, _ in pairs)
    with pytest.raises(ConfigError, match="cosine similarity"):
        near_duplicates(emb, paths, threshold=98)


def test_layers_against_the_model_interface(fmnist_model):
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        stages = fmnist_model.forward_stages(x)
        logits = fmnist_model(x)
    torch.testing.assert_close(embed_batch(fmnist_model, x, "layer1"), stages[0].mean(dim=(2, 3)))
    torch.testing.assert_close(embed_batch(fmnist_model, x, "pool"), stages[-1].mean(dim=(2, 3)))
    torch.testing.assert_close(embed_batch(fmnist_model, x, "logits"), logits)
    with pytest.raises(ConfigError, match="layer4"):  # resnet20 has three stages
        embed_images(fmnist_model, [], preprocess_of(fmnist_model), "layer4")


def test_nearest_matches_sklearn_cosine():
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(0)
    index, query = rng.normal(size=(50, 8)), rng.normal(size=(4, 8))
    idx, sims = nearest(query, index, k=3)
    oracle = cosine_similarity(query, index)
    np.testing.assert_array_equal(idx, np.argsort(-oracle, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.sort(oracle, axis=1)[:, ::-1][:, :3], rtol=1e-5)


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_index_round_trip(tmp_path, suffix):
    emb = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    paths = [f"img_{i}.png" for i in range(5)]
    write_index(tmp_path / f"feats{suffix}", emb, paths, {"layer": "pool"})
    back, back_paths, meta = read_index(tmp_path / f"feats{suffix}")
    np.testing.assert_array_equal(back, emb)
    assert back_paths == paths and meta["layer"] == "pool" and meta["dim"] == 7


@pytest.fixture(scope="module")
def run_dir(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "ft"
    rc = main(["finetune", "--data", str(folder), "--pretrained", "reslab:resnet20_fashion_mnist",
               "--strategy", "linear", "--epochs", "1", "--out", str(out), "data.in_chans=1"])
    assert rc == 0
    return out


def test_cli_embed_and_similar(folder, run_dir, tmp_path, capsys):
    feats = tmp_path / "feats.npy"
    assert main(["embed", "--checkpoint", str(run_dir), "--data", str(folder),
                 "--out", str(feats)]) == 0
    emb, paths, meta = read_index(feats)
    assert emb.shape == (66, 64) and meta["layer"] == "pool"
    assert main(["embed", "--checkpoint", str(run_dir), "--data", str(folder), "--layer", "layer2",
                 "--out", str(tmp_path / "feats.parquet")]) == 0
    assert read_index(tmp_path / "feats.parquet")[0].shape == (66, 32)
    capsys.readouterr()
    query = folder / "b" / "copy_resized_1.png"
    assert main(["similar", str(query), "--index", str(feats), "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["neighbours"]
    assert hits[0]["path"] == str(query) and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert str(folder / "a" / "00001.png") in [h["path"] for h in hits[1:]]


def test_cli_refuses_bad_arguments_before_work(folder, run_dir, tmp_path, capsys):
    assert main(["embed", "--checkpoint", str(run_dir), "--data", str(folder),
                 "--out", str(tmp_path / "feats.csv")]) == 2
    assert main(["embed", "--checkpoint", str(run_dir), "--data", str(folder), "--layer", "fc",
                 "--out", str(tmp_path / "f.npy")]) == 2
    err = capsys.readouterr().err
    assert ".npy or .parquet" in err and "choose one of layer1, layer2, layer3, pool, logits" in err
    assert not (tmp_path / "f.npy").exists()
