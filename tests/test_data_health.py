"""The health check finds every planted problem with the right blocking flag; the CLI's
exit code follows; training refuses blocking problems unless told to warn."""

from __future__ import annotations

import json

import pytest
import torch

from reslab.cli.main import main
from reslab.data import check_dataset, load_dataset
from reslab.data.health import KINDS, check_tensors, tensor_groups
from reslab.data.synthetic import make_image_folder, make_nasty_folder
from reslab.errors import DataError

BLOCKING = {"class_mismatch", "leakage", "empty_class"}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def nasty(tmp_path_factory):
    root = tmp_path_factory.mktemp("nasty")
    planted = make_nasty_folder(root)
    return root, planted


@pytest.fixture(scope="module")
def full_report(nasty):
    return check_dataset(nasty[0], full=True, min_per_class=5)


def test_full_check_finds_every_planted_problem(nasty, full_report):
    _, planted = nasty
    found = {p.kind: p for p in full_report.problems}
    assert set(planted) | {"imbalance"} == set(found)
    for kind, paths in planted.items():
        if kind in ("class_mismatch",):
            assert any(p.startswith("val/fish") for p in found[kind].paths)
        else:
            assert set(paths) <= set(found[kind].paths), kind
    assert found["mode"].count == 5
    assert {d.split(": ")[-1] for d in found["mode"].details} >= {"CMYK", "RGBA", "P", "LA"}
    assert found["not_image"].count == 2  # text.jpg (content) and notes.txt (extension)


def test_blocking_flags(full_report):
    assert full_report.blocking
    assert {p.kind for p in full_report.problems if p.blocking} == BLOCKING
    for p in full_report.problems:
        assert p.blocking == KINDS[p.kind][0]
    d = full_report.to_dict()
    assert set(d["blocking_kinds"]) == BLOCKING
    assert json.loads(json.dumps(d)) == d  # plain JSON types only


def test_fast_check_is_the_file_level_subset(nasty, full_report):
    fast = check_dataset(nasty[0], full=False, min_per_class=5)
    kinds = {p.kind for p in fast.problems}
    assert {"zero_byte", "not_image", "duplicate", "leakage", "hidden", "empty_class", "class_mismatch"} <= kinds
    assert not kinds & {"corrupt", "mode", "exif_orientation", "decompression_bomb", "extreme_aspect"}
    assert fast.blocking


def test_leakage_names_both_copies(full_report):
    leak = full_report.problem("leakage")
    assert leak.count == 1 and leak.details == ["val/dog/leaked.png == train/dog/00001.png"]


def test_clean_folder_has_no_problems(tmp_path):
    make_image_folder(tmp_path / "ok", ["a", "b"], per_class=12, splits={"train": 12, "val": 3})
    report = check_dataset(tmp_path / "ok", min_per_class=5)
    assert report.problems == [] and not report.blocking
    assert report.stats["splits"]["train"]["classes"] == {"a": 12, "b": 12}


def test_cli_exit_codes_and_json(nasty, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["check", str(nasty[0]), "--json", "--out", str(out), "--min-per-class", "5"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert set(printed["blocking_kinds"]) == BLOCKING
    make_image_folder(tmp_path / "ok", ["a", "b"], per_class=3)
    assert main(["check", str(tmp_path / "ok"), "--min-per-class", "5", "--fast"]) == 0
    text = capsys.readouterr().out
    assert "small_class" in text and "OK to train" in text
    assert main(["check", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_training_refuses_blocking_problems_unless_warned(nasty):
    with pytest.raises(DataError, match="leakage") as e:
        load_dataset(nasty[0], log=None)
    assert "check='warn'" in str(e.value)
    logs = []
    bundle = load_dataset(nasty[0], check="warn", log=logs.append, min_per_class=5)
    assert any("BLOCKING leakage" in line for line in logs)
    assert bundle.health["blocking"] and {"zero_byte", "not_image"} <= {p["kind"] for p in bundle.health["problems"]}
    names = {p.split("/")[-1] for p in (d["path"] for d in bundle.health["skipped"])}
    assert names == {"truncated.jpg", "bomb.png"}


def test_tensor_groups_are_exact_duplicates():
    x = torch.randint(0, 256, (50, 1, 5, 5), dtype=torch.uint8)  # 25 bytes: padded to words
    x[7] = x[3]
    x[40] = x[3]
    ids = tensor_groups(x)
    assert ids[3] == ids[7] == ids[40]
    assert len(set(ids.tolist())) == 48


def test_builtin_style_check_reports_leakage_without_blocking():
    x = torch.randint(0, 256, (30, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(30) % 3
    train, test = (x[:20], y[:20]), (x[20:].clone(), y[20:])
    test[0][0] = x[5]
    test[0][1] = x[5]  # also a duplicate within test
    report = check_tensors("toy", {"train": train, "test": test}, ["a", "b", "c"], min_per_class=1)
    leak, dup = report.problem("leakage"), report.problem("duplicate")
    assert leak.count == 1 and not leak.blocking and leak.paths == ["test[0]"]
    assert dup.count == 1 and dup.paths == ["test[1]"]
    assert not report.blocking


def test_digits_builtin_check_is_clean():
    report = check_dataset("digits", min_per_class=5)
    assert not report.blocking
    assert report.stats["splits"]["test"]["images"] == 359
