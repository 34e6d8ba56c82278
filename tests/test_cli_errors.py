"""Errors, never tracebacks: every failure is one message and a documented exit code
(0 ok, 1 check found blocking problems, 2 usage/config/data error, 3 runtime failure)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from test_export_support import digits_checkpoint

from reslab.cli.main import COMMANDS, main
from reslab.errors import ConfigError
from reslab.export.artifact import check_export_args, opset_range
from reslab.export.extras import require_extra


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return digits_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture
def a_file(tmp_path):
    """A plain file: a path under it can never be created, whatever the user's rights."""
    path = tmp_path / "plain.txt"
    path.write_text("x")
    return path


def run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_missing_onnx_extra_names_the_extra_and_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"onnxscript.*pip install 'reslab\[onnx\]'"):
        require_extra("onnx")
    with pytest.raises(ConfigError, match="reslab\\[onnx\\]"):
        check_export_args("onnx", "fp32")
    check_export_args("torchscript", "fp32")  # plain PyTorch formats need no extra


def test_the_export_docs_name_the_onnx_extra():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    assert "pip install 'reslab[onnx]'" in text


@pytest.mark.parametrize("opset", [999, 16, 0])
def test_an_opset_out_of_range_is_refused_with_the_range(ckpt, tmp_path, capsys, opset):
    low, high = opset_range()
    code, err = run(capsys, "export", "--checkpoint", ckpt, "--format", "onnx", "--opset", str(opset),
                    "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and (f"opsets {low} to {high}" in err or "too old" in err)
    assert not (tmp_path / "x").exists()


def test_negative_parity_images_is_refused(ckpt, tmp_path, capsys):
    code, err = run(capsys, "export", "--checkpoint", ckpt, "--format", "torchscript",
                    "--parity-images", "-1", "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "--parity-images -1" in err and "at least 1" in err


@pytest.mark.parametrize("device, words", [("mps", "MPS"), ("cuda:7", "CUDA"), ("tpu", "not a device")])
def test_unavailable_devices_are_messages(ckpt, capsys, device, words):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    code, err = run(capsys, "evaluate", "--checkpoint", ckpt, "--device", device)
    assert code == 2 and words in err, err


@pytest.mark.parametrize("verb", ["evaluate", "export", "check", "predict", "report"])
def test_outputs_that_cannot_be_written_are_refused_before_work(ckpt, a_file, tmp_path, capsys, verb):
    under_a_file = str(a_file / "sub" / "out")
    argv = {
        "evaluate": ["evaluate", "--checkpoint", ckpt, "--out", under_a_file],
        "export": ["export", "--checkpoint", ckpt, "--format", "torchscript", "--out", under_a_file],
        "check": ["check", "digits", "--fast", "--out", under_a_file + ".json"],
        "predict": ["predict", "--checkpoint", ckpt, str(tmp_path), "--out", str(tmp_path)],
        "report": ["report", "--checkpoint", str(run_folder_with_a_folder_for_report(ckpt, tmp_path))],
    }[verb]
    code, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: "), err


def run_folder_with_a_folder_for_report(ckpt: str, tmp_path):
    """A run folder whose report.html is a folder: the report cannot be written there."""
    import shutil

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, run / "checkpoints" / "best.pt")
    (run / "config.yaml").write_text("epochs: 1\n")
    (run / "report.html").mkdir()
    return run


def test_a_folder_given_as_an_output_file_is_refused(ckpt, tmp_path, capsys):
    (tmp_path / "out.csv").mkdir()
    code, err = run(capsys, "predict", "--checkpoint", ckpt, str(tmp_path), "--out", str(tmp_path / "out.csv"))
    assert code == 2 and "is a folder" in err


def test_a_broken_preprocess_record_is_a_message(tmp_path, capsys):
    good = torch.load(digits_checkpoint(tmp_path / "good.pt"), weights_only=True)
    good["preprocess"] = {"input_size": [1, 8], "mean": "grey"}
    torch.save(good, tmp_path / "broken.pt")
    for argv in (["evaluate", "--checkpoint", str(tmp_path / "broken.pt")],
                 ["export", "--checkpoint", str(tmp_path / "broken.pt"), "--format", "torchscript",
                  "--out", str(tmp_path / "x")]):  # fmt: skip
        code, err = run(capsys, *argv)
        assert code == 2 and "broken preprocess record" in err and "input_size" in err, err


def test_a_non_utf8_config_is_a_message(tmp_path, capsys):
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("# caf\xe9\nepochs: 1\n".encode("latin-1"))
    code, err = run(capsys, "train", "--config", str(recipe), "--data", "digits")
    assert code == 2 and "not UTF-8" in err


def test_a_runtime_failure_exits_3_with_one_line(tmp_path, capsys, monkeypatch):
    """A verb that breaks while working (here a plug-in verb dividing by zero) gets exit 3."""
    (tmp_path / "boom_verb.py").write_text(textwrap.dedent("""
        def add_arguments(p):
            pass

        def run(args):
            return 1 // 0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "boom", ("boom_verb", "a verb that fails"))
    code, err = run(capsys, "boom")
    assert code == 3 and "ZeroDivisionError" in err and "--verbose" in err
    assert main(["boom", "--verbose"]) == 3
    assert "Traceback" in capsys.readouterr().err  # --verbose shows it


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--no-such-flag"])
    assert e.value.code == 2
    code, _ = run(capsys, "train", "--config", "no_such_recipe")
    assert code == 2
