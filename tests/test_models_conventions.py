"""timm's and torchvision's conventions: ``create_model(name, pretrained=True)`` loads the name's
default weights (reslab's own offline, the others from their cache or with a clear offline
error), ``list_models(pretrained=True)`` lists those names, and ``default_cfg`` follows the
model's input channels and the loaded weights' normalisation."""

from __future__ import annotations

import pytest
import torch

from reslab.data import fashion_mnist as fm
from reslab.errors import ConfigError, WeightsError
from reslab.models import catalog, create_model, list_models
from reslab.models.normalisation import IMAGENET_MEAN, IMAGENET_STD
from reslab.models.pretrained import load_pretrained, weights_info


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty torch.hub and Hugging Face caches, downloads off."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.delenv("RESLAB_WEIGHTS_DIR", raising=False)
    return tmp_path


def test_list_models_pretrained_names_the_defaults(offline):
    names = list_models(pretrained=True)
    assert {"resnet18", "resnet50", "resnext101_32x8d", "resnet50d", "resnet20"} <= set(names)
    assert "wrn16_2" not in names and "plain20" not in names
    assert set(names) < set(list_models())
    assert list_models("resnet5*", pretrained=True) == ["resnet50", "resnet50d"]
    # torchvision's DEFAULT is its most accurate record; ResNet-D comes from timm
    assert catalog.default_weights("resnet50") == "torchvision:resnet50.IMAGENET1K_V2"
    assert catalog.default_weights("resnet50d") == "timm:resnet50d.ra2_in1k"
    assert catalog.default_weights("resnet20") == "reslab:resnet20_fashion_mnist"


def test_pretrained_true_loads_the_shipped_weights_offline(offline):
    model = create_model("resnet20", pretrained=True).eval()
    # the weights decide the shape the caller did not ask for: 1 channel, 10 classes
    assert model.model_args == {"name": "resnet20", "num_classes": 10, "in_chans": 1}
    cfg = model.default_cfg
    assert cfg["input_size"][0] == 1 and cfg["mean"] == (0.2863,) and cfg["std"] == (0.3531,)
    # oracle: the published test split, normalised as default_cfg says
    try:
        data = fm.read_fashion_mnist(download=False)
    except Exception as e:  # noqa: BLE001 - the dataset is a Debian package, maybe absent
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    x, y = data["test"]
    x, y = x[:500].float() / 255, y[:500]
    x = (x - torch.tensor(cfg["mean"]).view(1, -1, 1, 1)) / torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9  # the card says 94.55% on the whole split


def test_pretrained_true_with_another_head_keeps_the_backbone(offline):
    model = create_model("resnet20", num_classes=3, pretrained=True)
    assert model.model_args["num_classes"] == 3 and model.model_args["in_chans"] == 1
    assert model.fc.out_features == 3


def test_pretrained_true_offline_names_the_cache_path(offline):
    cache = offline / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(WeightsError, match="offline") as err:
        create_model("resnet50", pretrained=True)
    assert str(cache) in str(err.value) and "curl -L" in str(err.value)
    with pytest.raises(WeightsError, match="timm/resnet50d.ra2_in1k"):
        create_model("resnet50d", pretrained=True)
    with pytest.raises(ConfigError, match="no default weights.*resnet20"):
        create_model("wrn16_2", pretrained=True)


def test_pretrained_true_from_the_cache_follows_channels_and_weights(offline):
    tvm = pytest.importorskip("torchvision.models")
    cache = offline / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(tvm.resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    model = create_model("resnet18", in_chans=1, pretrained=True)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 1000
    # 3-channel ImageNet statistics for a grayscale model: one value, their average
    assert model.default_cfg["mean"] == (pytest.approx(sum(IMAGENET_MEAN) / 3),)
    assert model.default_cfg["std"] == (pytest.approx(sum(IMAGENET_STD) / 3),)


def test_default_cfg_follows_in_chans():
    rgb = create_model("resnet18")
    assert rgb.default_cfg["mean"] == IMAGENET_MEAN and rgb.default_cfg["std"] == IMAGENET_STD
    gray = create_model("resnet20", in_chans=1)
    assert len(gray.default_cfg["mean"]) == 1 == len(gray.default_cfg["std"])
    four = create_model("resnet20", in_chans=4)
    assert len(four.default_cfg["mean"]) == 4 and four.default_cfg["input_size"][0] == 4
    # the weights' own preprocess record for another channel count
    pre = catalog.weight_meta("torchvision:resnet50").preprocess(in_chans=1)
    assert pre["input_size"][0] == 1 and len(pre["mean"]) == 1 and len(pre["std"]) == 1
    assert weights_info("torchvision:resnet50")["preprocess"]["mean"] == list(IMAGENET_MEAN)


def test_loading_weights_sets_their_normalisation(offline, tmp_path):
    # a reslab card with its own statistics, loaded into a model built without them
    model = create_model("resnet20", num_classes=10, in_chans=1)
    assert model.default_cfg["mean"] != (0.2863,)
    load_pretrained(model, "reslab:resnet20_fashion_mnist", log=None)
    assert model.default_cfg["mean"] == (0.2863,) and model.default_cfg["std"] == (0.3531,)
