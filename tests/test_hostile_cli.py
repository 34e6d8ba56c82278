"""Issue 17's hostile and clumsy cases, run through the real ``reslab`` command.

Each test runs ``python -m reslab`` in a subprocess on small generated data and checks the
contract of a trusted tool: no traceback, the documented exit code (0 ok, 1 ``check`` found
blocking problems, 2 usage/config/data error, 3 runtime failure, 130/143 signals), a
message that names what was received and what to do (asserted on stable key words), and
the user's own files byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_cases import (
    FAST,
    SilentServer,
    assert_clean,
    cli_env,
    csv_manifest,
    has_any,
    image_folder,
    reslab,
    snapshot,
)
from PIL import Image

TRAIN = ["--model", "resnet20", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--precision", "fp32"]
NO_PROBLEMS = "no problems found"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A finished one-epoch digits run (1 channel, 8x8) that predict/evaluate/export read."""
    run = tmp_path_factory.mktemp("base") / "run"
    res = reslab("train", "--data", "digits", *TRAIN, "--out", run, "data.check=false", *FAST)
    assert_clean(res, 0)
    return run


@pytest.fixture
def tmp_path(tmp_path_factory) -> Path:
    """A neutral folder name: pytest's own is named after the test, and words of the test's
    name (link, html, nan...) in a printed path would pass the message checks by accident."""
    return tmp_path_factory.mktemp("case")


@pytest.fixture
def grey_png(tmp_path) -> Path:
    path = tmp_path / "seven.png"
    Image.fromarray(np.full((8, 8), 120, np.uint8)).save(path)
    return path


def copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("verb", ["predict", pytest.param("evaluate", marks=pytest.mark.slow),
                                  pytest.param("export", marks=pytest.mark.slow)])  # fmt: skip
def test_the_commands_work_on_good_input(digits_run, tmp_path, grey_png, verb):
    # the control: every command line below fails only because of its hostile part
    res = reslab(*_verb(verb, digits_run, tmp_path, grey_png))
    assert_clean(res, 0)


# ---------------------------------------------------------------- silent corruption or loss


def test_symlink_loop_in_a_class_folder_is_blocking(tmp_path):
    data = image_folder(tmp_path / "pets")
    os.symlink("..", data / "dog" / "loop")
    res = reslab("check", data)
    assert_clean(res, 1)
    assert has_any(res.text, "cycle", "loop") and has_any(res.text, "link")
    assert NO_PROBLEMS not in res.text.lower() and "ok to train" not in res.text.lower()


@pytest.mark.slow
def test_a_link_to_the_filesystem_root_does_not_hang_check(tmp_path):
    data = image_folder(tmp_path / "pets")
    os.symlink("/", data / "dog" / "everything")
    res = reslab("check", "--fast", data, timeout=90)
    assert_clean(res, (0, 1))
    assert has_any(res.text, "link")
    assert "20 images" in res.text  # only the dataset's own images were counted


@pytest.mark.slow
def test_16bit_images_are_scaled_by_bit_depth_not_by_their_maximum(tmp_path):
    # "dim" holds 16-bit values <= 255 (near black), "bright" the same values x 257 (near
    # white). Scaled per image (values <= 255 kept, larger ones / 257) both decode to the
    # same pixels and no model can tell them apart; scaled by bit depth they are trivial.
    rng = np.random.default_rng(0)
    for name, factor in (("dim", 1), ("bright", 257)):
        (tmp_path / "d16" / name).mkdir(parents=True)
        for i in range(40):
            px = np.clip(rng.normal(150, 40, (12, 12)), 0, 255).astype(np.uint16) * factor
            Image.fromarray(px.astype(np.uint16)).save(tmp_path / "d16" / name / f"{i}.png")
    run = tmp_path / "run"
    res = reslab("train", "--data", tmp_path / "d16", "--model", "resnet20", "--epochs", "3", "--batch-size", "16",
                 "--device", "cpu", "--precision", "fp32", "--out", run, "threads=1", "data.val_fraction=0.5",
                 "optim.name=adamw", "optim.lr=3e-3", "data.check=warn")  # fmt: skip
    assert_clean(res, 0)
    assert json.loads((run / "summary.json").read_text())["best_metric"] >= 0.9, res


def test_split_folders_differing_only_in_case_are_blocking(tmp_path):
    image_folder(tmp_path / "ds" / "train")
    image_folder(tmp_path / "ds" / "Train", seed=1)
    image_folder(tmp_path / "ds" / "val", per_class=4, seed=2)
    res = reslab("check", tmp_path / "ds")
    assert_clean(res, 1)
    assert "Train" in res.text and "train" in res.text
    assert NO_PROBLEMS not in res.text.lower()


def test_a_csv_header_without_a_label_column_names_the_columns_found(tmp_path):
    image_folder(tmp_path / "pets")
    rows = [(f"pets/{c}/{i}.png", c, "x") for c in ("cat", "dog") for i in range(10)]
    manifest = csv_manifest(tmp_path / "m.csv", rows, header=("path", "species", "notes"))
    res = reslab("check", manifest)
    assert_clean(res, 2)
    assert "label" in res.text and "species" in res.text and "notes" in res.text


@pytest.mark.slow
def test_duplicate_csv_rows_are_reported(tmp_path):
    image_folder(tmp_path / "pets")
    rows = [(f"pets/{c}/{i}.png", c) for c in ("cat", "dog") for i in range(10)]
    manifest = csv_manifest(tmp_path / "m.csv", rows + rows[:3])
    res = reslab("check", manifest)
    assert_clean(res, (0, 1))
    assert NO_PROBLEMS not in res.text.lower()
    assert has_any(res.text, "more than once", "repeated", "duplicate row")


def test_a_path_listed_under_two_labels_is_blocking(tmp_path):
    image_folder(tmp_path / "pets")
    rows = [(f"pets/{c}/{i}.png", c) for c in ("cat", "dog") for i in range(10)]
    manifest = csv_manifest(tmp_path / "m.csv", rows + [("pets/cat/0.png", "dog")])
    res = reslab("check", manifest)
    assert_clean(res, 1)
    assert NO_PROBLEMS not in res.text.lower()
    assert has_any(res.text, "two labels", "conflict", "different labels") and "cat/0.png" in res.text


@pytest.mark.slow
def test_a_single_class_dataset_is_refused_for_training(tmp_path):
    data = image_folder(tmp_path / "only", classes=("cat",))
    res = reslab("check", data)
    assert_clean(res, 1)
    assert has_any(res.text, "one class", "single class", "1 class")
    res = reslab("train", "--data", data, *TRAIN, "--out", tmp_path / "run", "threads=1")
    assert_clean(res, 2)
    assert has_any(res.text, "one class", "single class", "1 class") and "data.check=warn" in res.text
    assert not (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("files", [("config.yaml", "summary.json", "metrics.csv", "model.safetensors"),
                                   pytest.param(("summary.json", "metrics.csv", "model.safetensors"),
                                                marks=pytest.mark.slow)])  # fmt: skip
def test_out_holding_the_users_own_files_is_refused_untouched(tmp_path, files):
    out = tmp_path / "mine"
    out.mkdir()
    for name in files:
        (out / name).write_bytes(f"the user's own {name}\n".encode())
    before = snapshot(out)
    res = reslab("train", "--data", "digits", *TRAIN, "--out", out, "data.check=false", *FAST)
    assert_clean(res, 2)
    assert str(out) in res.text and has_any(res.text, "--out", "another folder", "empty")
    assert snapshot(out) == before


@pytest.mark.slow
def test_a_second_writer_into_a_running_folder_is_refused_naming_the_pid(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "reslab", "train", "--data", "digits", "--model", "resnet20", "--epochs", "400",
           "--batch-size", "32", "--device", "cpu", "--precision", "fp32", "--out", str(run), "data.check=false",
           "threads=1", "data.limit_train=64", "data.limit_val=32"]  # fmt: skip
    first = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "checkpoints" / "last.pt").exists():  # the first epoch is written
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.5)
        second = reslab("train", "--resume", run, timeout=120)
        assert_clean(second, 2)
        assert str(first.pid) in second.text and "pid" in second.text
        fresh = reslab("train", "--data", "digits", *TRAIN, "--out", run, "data.check=false", *FAST, timeout=120)
        assert_clean(fresh, 2)
        assert first.poll() is None  # the first writer was never disturbed
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    assert "Traceback" not in out + err
    assert first.returncode == 143, out + err


@pytest.mark.parametrize("change", [["--model", "resnet32"],
                                    pytest.param(["--batch-size", "32"], marks=pytest.mark.slow),
                                    pytest.param(["--data", "DATA"], marks=pytest.mark.slow)],
                         ids=["model", "batch-size", "data"])  # fmt: skip
def test_resume_with_different_settings_is_refused_before_writing(digits_run, tmp_path, change):
    run = copy_run(digits_run, tmp_path / "run")
    if change[-1] == "DATA":
        change = ["--data", str(image_folder(tmp_path / "pets"))]
    before = snapshot(run)
    res = reslab("train", "--resume", run, *change)
    assert_clean(res, 2)
    key = {"--model": "model", "--batch-size": "batch_size", "--data": "data"}[change[0]]
    assert key in res.text and "epochs" in res.text  # what differs, and what a resume may change
    assert snapshot(run) == before
    if change[0] == "--model":  # the run is not broken: a plain resume still continues it
        res = reslab("train", "--resume", run, "--epochs", "2")
        assert_clean(res, 0)


@pytest.mark.slow
def test_streaming_lists_skipped_files_and_validates_on_the_real_count(tmp_path):
    data = image_folder(tmp_path / "pets", classes=("cat", "dog", "owl"), per_class=12)
    for i, c in enumerate(("cat", "dog", "owl")):
        (data / c / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    run = tmp_path / "run"
    res = reslab("train", "--data", data, *TRAIN, "--out", run, "--workers", "0", "data.in_memory=false",
                 "data.val_fraction=0.3", "threads=1")  # fmt: skip
    assert_clean(res, 0)
    text = res.text + (run / "log.txt").read_text()
    assert "skipped" in text.lower() and "broken" in text
    counts = re.search(r"train (\d+), val (\d+)(?:, test (\d+))?", res.text)
    assert counts, res
    assert sum(int(n) for n in counts.groups() if n) == 36, res  # the 36 readable images, no more


# ---------------------------------------------------------------- hangs


@pytest.mark.slow
def test_torchvision_weights_download_gives_up_on_a_silent_network(tmp_path):
    data = image_folder(tmp_path / "pets", size=32)
    with SilentServer() as server:
        res = reslab("finetune", "--data", data, "--pretrained", "torchvision:resnet18.IMAGENET1K_V1",
                     "--epochs", "1", "--out", tmp_path / "run", "--device", "cpu", "threads=1",
                     env=server.env(tmp_path / "home"), timeout=90)  # fmt: skip
    assert_clean(res, (2, 3))
    assert has_any(res.text, "timed out", "timeout", "no answer") and "download" in res.text.lower()


@pytest.mark.slow
def test_cifar_download_gives_up_on_a_silent_network(tmp_path):
    with SilentServer() as server:
        res = reslab("check", "cifar10", env=server.env(tmp_path / "home"), timeout=90)
    assert_clean(res, (2, 3))
    assert has_any(res.text, "timed out", "timeout", "no answer") and "download" in res.text.lower()


# ---------------------------------------------------------------- tracebacks instead of messages


def _broken_checkpoint(kind: str, run: Path, tmp_path: Path) -> Path:
    """A checkpoint file broken the way ``kind`` says, made from a good run's."""
    good = run / "checkpoints" / "best.pt"
    if kind == "truncated":
        path = tmp_path / "truncated.pt"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path = tmp_path / "empty.pt"
        path.write_bytes(b"")
    elif kind == "wrong-architecture":
        state = torch.load(good, map_location="cpu", weights_only=True)
        state["model_args"] = {**state["model_args"], "name": "resnet32"}
        state["config"]["model"]["name"] = "resnet32"
        path = tmp_path / "wrong_arch.pt"
        torch.save(state, path)
    elif kind == "pickle-as-safetensors":
        path = tmp_path / "model.safetensors"
        torch.save(torch.load(good, map_location="cpu", weights_only=True), path)
    else:  # html-as-pt: a login page saved under the checkpoint's name
        path = tmp_path / "resnet.pt"
        path.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>x</body></html>\n")
    return path


def _verb(verb: str, ckpt: Path, tmp_path: Path, image: Path) -> list[str]:
    if verb == "predict":
        return ["predict", "--checkpoint", ckpt, image, "--device", "cpu"]
    if verb == "evaluate":
        return ["evaluate", "--checkpoint", ckpt, "--data", "digits", "--device", "cpu", "--out", tmp_path / "ev"]
    return ["export", "--checkpoint", ckpt, "--format", "torchscript", "--out", tmp_path / "ex"]


def _cases(verbs: tuple[str, ...], kinds: tuple[str, ...], fast: tuple[str, str]) -> list:
    """Every (verb, kind) pair; all but ``fast`` are marked slow (one subprocess each)."""
    return [pytest.param(v, k, id=f"{v}-{k}", marks=() if (v, k) == fast else pytest.mark.slow)
            for v in verbs for k in kinds]  # fmt: skip


@pytest.mark.parametrize("verb, kind", _cases(("predict", "evaluate", "export"),
                                              ("truncated", "empty", "wrong-architecture", "pickle-as-safetensors"),
                                              fast=("predict", "truncated")))  # fmt: skip
def test_a_broken_checkpoint_is_a_message(digits_run, tmp_path, grey_png, verb, kind):
    ckpt = _broken_checkpoint(kind, digits_run, tmp_path)
    before = ckpt.read_bytes()
    res = reslab(*_verb(verb, ckpt, tmp_path, grey_png))
    assert_clean(res, 2)
    if kind == "wrong-architecture":  # what was received is the model name the file claims
        assert "resnet32" in res.err and has_any(res.err, "architecture", "do not fit", "match", "missing")
    else:
        assert ckpt.name in res.err
    assert ckpt.read_bytes() == before


def test_a_broken_preprocess_record_is_a_message(digits_run, tmp_path, grey_png):
    state = torch.load(digits_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    state["preprocess"] = {**state["preprocess"], "mean": "grey", "input_size": [1, 8]}
    ckpt = tmp_path / "bad_preprocess.pt"
    torch.save(state, ckpt)
    res = reslab("predict", "--checkpoint", ckpt, grey_png, "--device", "cpu")
    assert_clean(res, 2)
    assert "preprocess" in res.text and ckpt.name in res.text


@pytest.mark.slow
def test_a_non_utf8_csv_is_a_message(tmp_path):
    image_folder(tmp_path / "pets")
    rows = [(f"pets/{c}/{i}.png", c) for c in ("cat", "dog") for i in range(10)] + [("pets/cat/caf\xe9.png", "cat")]
    manifest = csv_manifest(tmp_path / "m.csv", rows, encoding="latin-1")
    res = reslab("check", manifest)
    assert_clean(res, 2)
    assert "UTF-8" in res.text.upper().replace("UTF8", "UTF-8") and "m.csv" in res.text


def test_a_non_utf8_config_yaml_is_a_message(tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_bytes("# recette d'\xe9t\xe9\ndata:\n  source: digits\nepochs: 1\n".encode("latin-1"))
    before = cfg.read_bytes()
    res = reslab("train", "--config", cfg, "--out", tmp_path / "run", "threads=1")
    assert_clean(res, 2)
    assert "UTF-8" in res.text.upper().replace("UTF8", "UTF-8") and "recipe.yaml" in res.text
    assert cfg.read_bytes() == before


def _output_case(verb: str, where: str, tmp_path: Path) -> tuple[Path, Path | None]:
    """(the output path to pass, the user's file that must survive or None)."""
    blocker = tmp_path / "notes.txt"  # a file where a folder is needed
    blocker.write_text("the user's notes\n")
    name = {"check": "report.json", "predict": "out.csv"}.get(verb, "dir")  # evaluate, export: a folder
    if where == "missing-parent":
        return tmp_path / "no" / "such" / name, None
    if where == "parent-is-a-file":  # as unwritable as it gets for root
        return blocker / name, blocker
    if name == "dir":  # "wrong-kind": a file where a folder is wanted
        return blocker, blocker
    folder = tmp_path / name  # "wrong-kind": a folder where a file is wanted
    folder.mkdir()
    (folder / "keep.txt").write_text("keep\n")
    return folder, folder / "keep.txt"


@pytest.mark.parametrize("verb, where", _cases(("check", "predict", "evaluate", "export"),
                                               ("missing-parent", "parent-is-a-file", "wrong-kind"),
                                               fast=("predict", "parent-is-a-file")))  # fmt: skip
def test_a_bad_output_path_is_a_message(digits_run, tmp_path, grey_png, verb, where):
    out, user_file = _output_case(verb, where, tmp_path)
    before = user_file.read_bytes() if user_file else None
    args = {
        "check": ["check", "digits", "--out", out],
        "predict": ["predict", "--checkpoint", digits_run, grey_png, "--csv", out, "--device", "cpu"],
        "evaluate": ["evaluate", "--checkpoint", digits_run, "--data", "digits", "--device", "cpu", "--out", out],
        "export": ["export", "--checkpoint", digits_run, "--format", "torchscript", "--out", out],
    }[verb]
    res = reslab(*args)
    if where == "missing-parent":  # creating the parents is as good as a message
        assert_clean(res, (0, 2))
        assert res.rc == 0 or str(out.parent.parent) in res.text
    else:
        assert_clean(res, 2)
        assert user_file.name in res.text or str(out) in res.text
        assert user_file.read_bytes() == before


@pytest.mark.slow
def test_report_into_a_folder_it_cannot_write_is_a_message(digits_run, tmp_path):
    run = copy_run(digits_run, tmp_path / "run")
    (run / "report.html").mkdir()  # the page's path is taken by a folder
    (run / "report.html" / "keep.txt").write_text("keep\n")
    res = reslab("report", run, "--device", "cpu", "--top-losses", "0")
    assert_clean(res, 2)
    assert "report.html" in res.text
    assert (run / "report.html" / "keep.txt").read_text() == "keep\n"


def test_export_parity_images_minus_one_is_a_message(digits_run, tmp_path):
    res = reslab("export", "--checkpoint", digits_run, "--format", "torchscript", "--out", tmp_path / "ex",
                 "--parity-images", "-1")  # fmt: skip
    assert_clean(res, 2)
    assert "--parity-images" in res.text and "-1" in res.text
    assert not (tmp_path / "ex").exists()


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_resnet18_on_tiny_batches_is_a_message(tmp_path, batch):
    def train(size: int):
        return reslab("train", "--data", "digits", "--model", "resnet18", "--epochs", "1", "--batch-size", str(size),
                      "--device", "cpu", "--precision", "fp32", "--out", tmp_path / "run", "data.check=false",
                      "threads=1", "data.limit_train=24", "data.limit_val=8")  # fmt: skip

    res = train(batch)
    if batch == 1:  # BatchNorm has no statistics over one image: refused before training
        assert_clean(res, 2)
        assert "BatchNorm" in res.text and "batch" in res.text.lower()
        assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
        assert_clean(train(8), 0)  # the refusal left nothing in the way of the corrected command
    else:  # may train or end in NaN, but a NaN must not be blamed on the learning rate alone
        assert_clean(res, (0, 3))
        assert "batch" in res.text.lower() and "BatchNorm" in res.text


# ---------------------------------------------------------------- messages that point the wrong way


def test_the_data_refusal_names_the_cli_key(tmp_path):
    data = image_folder(tmp_path / "pets")
    (data / "owl").mkdir()  # a class without images: blocking
    res = reslab("train", "--data", data, *TRAIN, "--out", tmp_path / "run", "threads=1")
    assert_clean(res, 2)
    assert "data.check=warn" in res.text and "owl" in res.text


def test_an_html_page_saved_as_pt_is_called_html(digits_run, tmp_path, grey_png):
    ckpt = _broken_checkpoint("html-as-pt", digits_run, tmp_path)
    res = reslab("predict", "--checkpoint", ckpt, grey_png, "--device", "cpu")
    assert_clean(res, 2)
    assert "HTML" in res.err and ckpt.name in res.err
    assert not has_any(res.err, "arbitrary code", "code-running", "pickled")


@pytest.mark.slow
def test_nan_weights_are_blamed_on_the_weights(digits_run, tmp_path):
    state = torch.load(digits_run / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    state["model"] = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()}
    weights = tmp_path / "nan.pt"
    torch.save(state, weights)
    res = reslab("finetune", "--data", "digits", "--pretrained", weights, "--epochs", "1", "--strategy", "full",
                 "--device", "cpu", "--precision", "fp32", "--out", tmp_path / "run", "data.check=false",
                 *FAST)  # fmt: skip
    assert_clean(res, (2, 3))
    # the refusal names the weights file as the source of the NaN, not only the learning rate
    assert "nan" in res.err.lower() and weights.name in res.err


@pytest.mark.slow
def test_grey_weights_on_colour_images_name_in_chans(digits_run, tmp_path):
    data = image_folder(tmp_path / "pets", size=8)
    res = reslab("finetune", "--data", data, "--pretrained", digits_run, "--epochs", "1", "--device", "cpu",
                 "--out", tmp_path / "run", "threads=1")  # fmt: skip
    assert_clean(res, 2)
    assert "data.in_chans=1" in res.text


def test_out_inside_the_data_folder_is_not_blamed_on_the_data(tmp_path):
    data = image_folder(tmp_path / "pets")
    before = snapshot(data)
    res = reslab("train", "--data", data, *TRAIN, "--out", data / "run", "threads=1")
    assert_clean(res, (0, 2))
    if res.rc == 2:
        assert "--out" in res.text
    else:
        assert json.loads((data / "run" / "classes.json").read_text()) == ["cat", "dog"]
    after = snapshot(data)
    assert {k: v for k, v in after.items() if not k.startswith("run")} == before


@pytest.mark.slow
def test_export_opset_999_is_refused_without_writing(digits_run, tmp_path):
    out = tmp_path / "onnx"
    res = reslab("export", "--checkpoint", digits_run, "--format", "onnx", "--out", out, "--opset", "999")
    assert_clean(res, 2)
    assert "opset" in res.err.lower() and "999" in res.err
    assert not out.exists() or not any(out.iterdir())  # no model, no card saying 999


def test_data_digits_next_to_a_digits_folder_is_not_silently_the_folder(tmp_path):
    image_folder(tmp_path / "digits", classes=("a", "b"))
    res = reslab("train", "--data", "digits", *TRAIN, "--out", tmp_path / "run", "data.check=false", *FAST,
                 cwd=tmp_path)  # fmt: skip
    assert_clean(res, (0, 2))
    assert has_any(res.text, "built-in") and "./digits" in res.text


def test_workers_beyond_the_cores_are_capped_with_a_note(tmp_path):
    res = reslab("train", "--data", "digits", *TRAIN, "--workers", "64", "--out", tmp_path / "run",
                 "data.check=false", *FAST)  # fmt: skip
    assert_clean(res, 0)
    note = [line for line in res.text.splitlines() if "64" in line and "workers" in line]
    assert note and "core" in note[0], res
