"""``reslab export``: artifact folder, parity with real runtimes, failures that stop the export.

Oracles: the eager PyTorch model on the same digits images, and each artifact loaded by its
own runtime (onnxruntime.InferenceSession, torch.jit.load, torch.export.load) without reslab.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from test_export_support import digits_checkpoint, one_thread, split_tensors, trained_digits_model

from reslab.cli.main import main
from reslab.export import export_model

# torch.jit.load is deprecated in favour of torch.export, but TorchScript is what we test here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _small_ops_on_one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return digits_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="module")
def images():
    return split_tensors("test", 48)


def _reference(x):
    with torch.no_grad():
        return trained_digits_model()(x)


def _check_folder(out, model_file):
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [model_file, "preprocess.json", "labels.json", "model_card.md"]
    )
    pre = json.loads((out / "preprocess.json").read_text())
    assert pre["input_size"] == [1, 8, 8] and len(pre["mean"]) == 1
    assert json.loads((out / "labels.json").read_text()) == [str(i) for i in range(10)]
    card = (out / "model_card.md").read_text()
    for needle in (
        "resnet20",
        "parameters",
        "MACs",
        "parity PASS",
        "Run it without reslab",
        "90.00%",
    ):
        assert needle in card, needle


def test_onnx_export_runs_in_onnxruntime_with_any_batch(ckpt, images, tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "onnx"
    assert (
        main(
            ["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(out), "--opset", "18"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert re.search(r"parity PASS on 143 digits val images", printed)  # all real val images
    _check_folder(out, "model.onnx")
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x, _ = images
    for n in (1, 5, 48):  # dynamic batch
        logits = session.run(None, {"input": x[:n].numpy()})[0]
        np.testing.assert_allclose(logits, _reference(x[:n]).numpy(), rtol=1e-4, atol=1e-4)
    assert session.get_inputs()[0].shape[0] == "batch"


def test_onnx_int8_export_is_calibrated_and_checked(ckpt, images, tmp_path, caplog):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "onnx8"
    with caplog.at_level("INFO", logger="reslab.export"):  # the library logs, never prints
        result = export_model(ckpt, "onnx", out, precision="int8", parity_images=128)
    assert (
        result.parity.passed
        and result.accuracy["n"] == 128
        and result.parity.source == "digits val"
    )
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized (QDQ)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x, y = images
    logits = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    ref = _reference(x)
    assert (logits.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    assert "top-1 on 128 digits val images: artifact" in caplog.text


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_torchscript_export_loads_with_torch_jit(ckpt, images, tmp_path, precision):
    out = tmp_path / f"ts-{precision}"
    result = export_model(ckpt, "torchscript", out, precision=precision, parity_images=64, log=None)
    _check_folder(out, "model.pt")
    loaded = torch.jit.load(str(out / "model.pt"))
    x, _ = images
    with torch.no_grad():
        logits = loaded(x)
    assert logits.dtype == torch.float32
    tol = 1e-4 if precision == "fp32" else 0.1 * _reference(x).abs().max().item()
    torch.testing.assert_close(logits, _reference(x), rtol=0, atol=tol)
    assert result.parity.precision == precision and result.parity.passed


def test_exported_program_loads_with_torch_export(ckpt, images, tmp_path):
    out = tmp_path / "ep"
    export_model(ckpt, "exported-program", out, log=None, parity_images=64)
    _check_folder(out, "model.pt2")
    program = torch.export.load(str(out / "model.pt2")).module()
    x, _ = images
    for n in (3, 48):
        torch.testing.assert_close(program(x[:n]), _reference(x[:n]), rtol=1e-4, atol=1e-4)


def test_parity_falls_back_to_generated_images_without_data(images, tmp_path, capsys, caplog):
    ckpt = digits_checkpoint(tmp_path / "c.pt", source=str(tmp_path / "moved-away"))
    with caplog.at_level("INFO", logger="reslab.export"):  # the library logs, never prints
        result = export_model(ckpt, "torchscript", tmp_path / "gen", parity_images=16)
    assert capsys.readouterr().out == ""
    printed = caplog.text
    assert "using generated images instead" in printed and result.parity.source == "generated"
    assert result.parity.passed and result.accuracy is None


def test_failing_parity_fails_the_export(tmp_path, capsys):
    """A real disagreement: the trained model with 3e4 added to every logit. fp32 (spacing
    0.002 at 3e4) keeps its predictions; bf16 (8-bit mantissa, spacing 128 at 3e4) rounds
    every logit to the same value, so top-1 no longer matches and the export must fail."""
    model = trained_digits_model()
    with torch.no_grad():
        model.fc.bias.add_(3e4)
    path = digits_checkpoint(tmp_path / "c.pt", model=model)
    args = ["--format", "torchscript", "--precision", "bf16", "--parity-images", "64"]
    code = main(["export", "--checkpoint", path, "--out", str(tmp_path / "bad"), *args])
    err = capsys.readouterr().err
    assert code == 2 and "disagrees with PyTorch" in err and "parity FAIL" in err
    assert "top-1 agreement" in err and "do not deploy" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--format", "onnx", "--precision", "bf16"], "no bf16 convolutions"),
        (["--format", "torchscript", "--precision", "int8"], "cannot be scripted"),
        (["--format", "torchscript", "--opset", "17"], "--opset applies to --format onnx only"),
    ],
)
def test_unsupported_options_fail_before_any_work(ckpt, tmp_path, capsys, args, message):
    code = main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "x"), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_without_out_the_artifact_goes_next_to_the_checkpoint(ckpt, tmp_path, capsys):
    import shutil

    from reslab.cli.export import default_out

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, run / "checkpoints" / "best.pt")
    (run / "config.yaml").write_text("epochs: 1\n")
    assert default_out(str(run), "onnx", "fp32") == run / "export" / "onnx"
    best = str(run / "checkpoints" / "best.pt")
    assert default_out(best, "torchscript", "int8") == run / "export" / "torchscript-int8"
    # a checkpoint file outside a run folder: a folder named after it, beside it
    bare = tmp_path / "weights.pt"
    shutil.copy(ckpt, bare)
    assert main(["export", "--checkpoint", str(bare), "--format", "torchscript", "--parity-images", "32"]) == 0
    assert (tmp_path / "weights-torchscript" / "model.pt").is_file()
    assert "weights-torchscript" in capsys.readouterr().out
