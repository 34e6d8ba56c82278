"""Weights in: head replacement from a 1000-class torchvision file, grey/colour adaptation,
and the shipped reslab:resnet20_fashion_mnist weights with their card."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torchvision

import reslab
from reslab.finetune.run import prepare_model
from reslab.finetune.bn import FixedStatsBatchNorm2d

WEIGHTS_DIR = Path(reslab.__file__).parent / "weights"
FMNIST = Path("/usr/share/datasets/fashion-mnist")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory):
    """torchvision's resnet18 (random weights, 1000 classes) saved as a plain state_dict file."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    # give BatchNorm real-looking statistics so the frozen-BN comparison is not trivial
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    return tv.eval(), path


def test_head_replaced_from_1000_class_torchvision_file(tv_file):
    tv, path = tv_file
    model, report, n_bn = prepare_model("resnet18", 7, 3, str(path), bn="frozen", log=None)
    assert model.get_classifier().out_features == 7
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert n_bn == 20 and all(isinstance(m, FixedStatsBatchNorm2d) for m in model.modules()
                              if isinstance(m, torch.nn.BatchNorm2d))
    sd = tv.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, sd[k]), k
    # oracle: torchvision's pooled features (eval mode) equal ours, even in train mode
    tv_body = torch.nn.Sequential(*list(tv.children())[:-1])
    x = torch.randn(2, 3, 64, 64)
    model.train()
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        theirs = tv_body(x).flatten(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_grey_input_adapts_the_first_conv(tv_file):
    tv, path = tv_file
    model, report, _ = prepare_model("resnet18", 4, 1, str(path), bn="train", log=None)
    assert "conv1.weight" in report.adapted
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    # a grey image repeated on three channels gives the same first-conv output (timm's rule: sum)
    torch.testing.assert_close(model.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))


def test_shipped_card_matches_its_file():
    card = json.loads((WEIGHTS_DIR / "resnet20_fashion_mnist.json").read_text())
    blob = (WEIGHTS_DIR / "resnet20_fashion_mnist.safetensors").read_bytes()
    assert card["sha256"] == hashlib.sha256(blob).hexdigest()
    assert card["file_bytes"] == len(blob) < 4_000_000
    assert card["architecture"] == "resnet20" and card["model_args"]["in_chans"] == 1
    assert card["preprocess"]["input_size"] == [1, 28, 28]
    assert 0.9 < card["accuracy"]["test_top1"] < 1.0
    md = (WEIGHTS_DIR / "resnet20_fashion_mnist.md").read_text()
    assert card["sha256"] in md and card["command"] in md and f"{100 * card['accuracy']['test_top1']:.2f}%" in md


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST idx files not installed (make system)")
def test_shipped_weights_reach_the_card_accuracy_on_real_test_images():
    """2,000 of the 10,000 test images: within 2 points of the card's full-test accuracy."""
    from reslab.data import load_dataset, make_loader
    from reslab.device import resolve_precision
    from reslab.engine.step import evaluate

    card = json.loads((WEIGHTS_DIR / "resnet20_fashion_mnist.json").read_text())
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    reslab.load_pretrained(model, "reslab:resnet20_fashion_mnist", log=None)
    pre = card["preprocess"]
    bundle = load_dataset(f"fashion-mnist:{FMNIST}", check=False, log=None, mean=pre["mean"], std=pre["std"])
    test = bundle.test.subset(torch.arange(0, 10_000, 5))
    loader = make_loader(test, batch_size=500, train=False, preprocess=pre)
    res = evaluate(model, loader, resolve_precision(torch.device("cpu"), "fp32"))
    assert res["count"] == 2000
    assert abs(res["acc"] - card["accuracy"]["test_top1"]) < 0.02
