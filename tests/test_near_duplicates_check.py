"""`reslab check` finds resized and re-encoded copies across splits that exact hashes miss,
reports nothing among distinct images, and skips the comparison when told to."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

import reslab.data.health as health
from reslab.cli.main import main
from reslab.data import check_dataset, load_dataset
from reslab.data.synthetic import make_image_folder

COPIED = 3  # train images that get a resized and a JPEG re-encoded copy in val


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    """train/: 3 classes x 20, val/: 3 classes x 6 distinct images, plus, in val, a resized
    and a JPEG re-encoded copy of 3 train images (in other classes, as a copy often lands).
    Returns (root, {val copy: train original}) as paths relative to root."""
    root = make_image_folder(tmp_path_factory.mktemp("nd") / "data", ["a", "b", "c"],
                             size=(64, 64), splits={"train": 20, "val": 6}, seed=3)
    expected = {}
    for i, p in enumerate(sorted((root / "train" / "a").glob("*.png"))[:COPIED]):
        img = Image.open(p).convert("RGB")
        img.resize((48, 48), Image.BICUBIC).save(root / "val" / "b" / f"resized_{i}.png")
        img.save(root / "val" / "c" / f"reencoded_{i}.jpg", quality=70)
        expected[f"val/b/resized_{i}.png"] = f"train/a/{p.name}"
        expected[f"val/c/reencoded_{i}.jpg"] = f"train/a/{p.name}"
    return root, expected


def _pairs(problem) -> dict[str, str]:
    """{copy: original} from details like 'val/b/x.png ~ train/a/y.png (similarity 0.999)'."""
    out = {}
    for d in problem.details:
        copy, rest = d.split(" ~ ")
        out[copy] = rest.split(" (similarity ")[0]
    return out


def test_check_reports_exactly_the_copies(leaky):
    root, expected = leaky
    report = check_dataset(root, min_per_class=5)
    near = report.problem("near_duplicate")
    assert near is not None and near.blocking and near.count == 2 * COPIED
    assert _pairs(near) == expected  # every copy, with its original; no distinct pair
    assert sorted(near.paths) == sorted(expected)
    assert report.problem("leakage") is None  # exact hashes see none of them
    assert [p.kind for p in report.problems] == ["near_duplicate"]
    assert report.stats["near_duplicates"] == {"images": 84, "threshold": 0.98, "pairs": 2 * COPIED}
    assert "remove one copy" in near.fix


def test_exact_copy_stays_leakage_only(tmp_path):
    root = make_image_folder(tmp_path / "d", ["a", "b"], per_class=12, splits={"train": 12, "val": 4})
    shutil.copy(root / "train" / "a" / "00000.png", root / "val" / "b" / "same.png")
    report = check_dataset(root, min_per_class=5)
    assert report.problem("leakage").paths == ["val/b/same.png"]
    assert report.problem("near_duplicate") is None  # one finding per copy, not two


def test_off_fast_and_above_the_cap(leaky, monkeypatch):
    root, _ = leaky
    for report in (check_dataset(root, min_per_class=5, near_duplicates=False),
                   check_dataset(root, min_per_class=5, full=False)):
        assert report.problems == [] and "near_duplicates" not in report.stats
    monkeypatch.setattr(health, "NEAR_DUPLICATE_MAX_IMAGES", 50)
    capped = check_dataset(root, min_per_class=5)
    assert capped.problems == [] and "84 images > 50" in capped.stats["near_duplicates"]["skipped"]
    forced = check_dataset(root, min_per_class=5, near_duplicates=True)
    assert forced.problem("near_duplicate").count == 2 * COPIED


def test_training_check_does_not_compare(leaky):
    bundle = load_dataset(leaky[0], log=None, min_per_class=5)  # would refuse a blocking kind
    assert not bundle.health["blocking"] and "near_duplicates" not in bundle.health["stats"]


def test_cli_flags(leaky, capsys):
    root, expected = leaky
    assert main(["check", str(root), "--min-per-class", "5"]) == 1
    text = capsys.readouterr().out
    assert "[BLOCKING] near_duplicate: 6" in text and "similarity" in text
    assert "Training's own check does not compare images" in text
    assert "near-duplicates across splits: 6 pair(s) among 84 images" in text
    assert main(["check", str(root), "--min-per-class", "5", "--no-near-duplicates", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["problems"] == [] and "near_duplicates" not in d["stats"]
    assert main(["check", str(root), "--min-per-class", "5", "--near-duplicate-threshold", "-1",
                 "--json"]) == 1  # the lowest threshold: every train x val pair, none within a split
    assert json.loads(capsys.readouterr().out)["stats"]["near_duplicates"]["pairs"] == 60 * 24
    assert main(["check", str(root), "--near-duplicate-threshold", "98"]) == 2
    assert "cosine similarity" in capsys.readouterr().err


def test_near_duplicates_moved_to_the_data_layer():
    from reslab.data.near_duplicates import near_duplicates
    from reslab.evaluate.embed import near_duplicates as from_evaluate

    assert from_evaluate is near_duplicates
