"""Exports other libraries load as their own: transformers (``--format hf``) and timm
(``--format timm``), loaded back with the real libraries and compared with reslab's logits;
ONNX metadata; and ``reslab push`` (the files it uploads, and its offline error)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

import reslab
from reslab.cli.main import main
from reslab.errors import ConfigError
from reslab.files import save_checkpoint

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

CLASSES = ["cat", "dog", "bird", "fish"]


def _checkpoint(path, name, in_chans=3, size=64, **arch):
    """A checkpoint of ``name`` with random weights and non-trivial BatchNorm statistics
    (fresh BNs are the identity, which would hide a swapped running_mean/var)."""
    torch.manual_seed(0)
    model = reslab.create_model(name, num_classes=len(CLASSES), in_chans=in_chans, **arch)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    mean, std = [0.5, 0.45, 0.4][:in_chans], [0.25, 0.22, 0.2][:in_chans]
    pre = {"input_size": [in_chans, size, size], "resize": size + size // 7, "crop": size,
           "mean": mean, "std": std, "interpolation": "bilinear"}
    save_checkpoint({"model_args": model.model_args, "model": model.state_dict(),
                     "classes": CLASSES, "preprocess": pre, "metrics": {"val_acc": 0.5}}, path)
    return path, model.eval(), pre


def _batch(pre, n=3):
    return torch.randn(n, *pre["input_size"], generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name, in_chans, arch", [
    ("resnet18", 3, {}),
    ("resnet50", 1, {"widths": (8, 16, 32, 64)}),  # grey input, narrow bottlenecks
    ("resnet34", 3, {"layers": (1, 2, 1, 1), "widths": (16, 32, 64, 128)}),
])  # fmt: skip
def test_hf_export_loads_in_transformers_with_the_same_logits(tmp_path, name, in_chans, arch):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    ckpt, model, pre = _checkpoint(tmp_path / "best.pt", name, in_chans, **arch)
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "hf", "--out", str(out)]) == 0
    theirs = AutoModelForImageClassification.from_pretrained(out).eval()
    assert type(theirs).__name__ == "ResNetForImageClassification"
    assert [theirs.config.id2label[i] for i in range(len(CLASSES))] == CLASSES
    x = _batch(pre)
    with torch.no_grad():
        diff = (theirs(pixel_values=x).logits - model(x)).abs().max().item()
    assert diff < 1e-4
    processor = AutoImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == pre["mean"] and list(processor.image_std) == pre["std"]
    assert processor.size["shortest_edge"] == pre["crop"]


def test_hf_processor_preprocesses_like_reslab(tmp_path):
    from transformers import AutoImageProcessor

    from reslab.data import eval_transform
    from reslab.export.hf import export_hf

    ckpt, _model, pre = _checkpoint(tmp_path / "best.pt", "resnet18")
    export_hf(ckpt, tmp_path / "hf", log=None)
    img = Image.fromarray((np.random.RandomState(0).rand(90, 120, 3) * 255).astype(np.uint8))
    theirs = AutoImageProcessor.from_pretrained(tmp_path / "hf")(images=img, return_tensors="pt")
    ours = eval_transform(pre)(img)
    assert theirs["pixel_values"][0].shape == ours.shape
    assert (theirs["pixel_values"][0] - ours).abs().max() < 1e-3


@pytest.mark.parametrize("name, arch, words", [
    ("resnet20", {}, "stem='cifar'"),
    ("resnet50d", {}, "shortcut='D'"),
    ("resnext50_32x4d", {}, "groups"),
    ("preact_resnet18", {}, "pre-activation"),
])  # fmt: skip
def test_hf_export_refuses_what_transformers_cannot_express(tmp_path, name, arch, words):
    from reslab.export.hf import export_hf

    size = 32 if name == "resnet20" else 64
    ckpt, _, _ = _checkpoint(tmp_path / "best.pt", name, size=size, **arch)
    with pytest.raises(ConfigError, match="cannot be written as a Hugging Face ResNet") as e:
        export_hf(ckpt, tmp_path / "hf", log=None)
    assert words in str(e.value)
    assert not (tmp_path / "hf").exists()  # refused before anything was written


@pytest.mark.parametrize("name", ["resnet18", "resnet18d"])
def test_timm_export_loads_in_timm_with_the_same_logits(tmp_path, name):
    ckpt, model, pre = _checkpoint(tmp_path / "best.pt", name)
    out = tmp_path / "timm"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "timm", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == name and config["label_names"] == CLASSES
    theirs = timm.create_model(name, pretrained=True, num_classes=len(CLASSES),
                               pretrained_cfg_overlay={"file": str(out / "model.safetensors"),
                                                       "num_classes": len(CLASSES)}).eval()
    x = _batch(pre)
    with torch.no_grad():
        assert (theirs(x) - model(x)).abs().max().item() < 1e-4


def test_timm_export_refuses_models_timm_lacks(tmp_path):
    from reslab.export.timm_format import export_timm

    ckpt, _, _ = _checkpoint(tmp_path / "a.pt", "resnet20", size=32)
    with pytest.raises(ConfigError, match="timm has no 'resnet20'"):
        export_timm(ckpt, tmp_path / "t", log=None)
    ckpt, _, _ = _checkpoint(tmp_path / "b.pt", "resnet18", widths=(16, 32, 64, 128))
    with pytest.raises(ConfigError, match="architecture was changed \\(widths\\)"):
        export_timm(ckpt, tmp_path / "t", log=None)


def test_hf_and_timm_refuse_other_precisions(tmp_path, capsys):
    ckpt, _, _ = _checkpoint(tmp_path / "best.pt", "resnet18")
    rc = main(["export", "--checkpoint", str(ckpt), "--format", "hf", "--precision", "int8",
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "fp32" in capsys.readouterr().err


def test_onnx_metadata_carries_labels_and_preprocessing(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from reslab.export.onnx import export_onnx, write_metadata

    _, model, pre = _checkpoint(tmp_path / "best.pt", "resnet18", size=32)
    path = export_onnx(model, _batch(pre, 2), tmp_path / "model.onnx")
    write_metadata(path, CLASSES, pre)
    meta = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == CLASSES
    assert json.loads(meta["mean"]) == pre["mean"] and json.loads(meta["std"]) == pre["std"]
    assert json.loads(meta["input_size"]) == [3, 32, 32] and meta["producer"] == '"reslab"'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens


def test_push_lists_the_folder_and_fails_clearly_offline(tmp_path, capsys, monkeypatch):
    from reslab.export.hf import export_hf, files_to_upload

    ckpt, _, _ = _checkpoint(tmp_path / "best.pt", "resnet18")
    out = export_hf(ckpt, tmp_path / "hf", log=None)
    (out / ".DS_Store").write_text("hidden files stay home")
    expected = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert files_to_upload(out) == expected
    assert main(["push", str(out), "--repo", "alice/resnet18-pets", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert all(f in listed for f in expected) and ".DS_Store" not in listed

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_TOKEN", "hf_offline_test_token")
    assert main(["push", str(out), "--repo", "alice/resnet18-pets"]) == 2
    err = capsys.readouterr().err
    assert "could not reach the Hugging Face Hub" in err and "Nothing was uploaded" in err

    assert main(["push", str(out), "--repo", "not a repo"]) == 2
    assert "user/name" in capsys.readouterr().err
    assert main(["push", str(tmp_path), "--repo", "alice/x", "--dry-run"]) == 2
    assert "reslab export" in capsys.readouterr().err
