"""BatchNorm folding: exact in fp32 for every block type, torchvision names kept."""

from __future__ import annotations

import pytest
import torch
from test_export_support import one_thread
from torch import nn

import reslab
from reslab.export.fuse import fold_batchnorm, fold_conv_bn
from reslab.models import FrozenBatchNorm2d, ResNet


@pytest.fixture(scope="module", autouse=True)
def _small_ops_on_one_thread():
    with one_thread():
        yield


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial statistics and affine parameters, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


# One network per block / stem / shortcut kind, one or two blocks per stage so the test
# stays fast; registry models of the same layouts (resnet50, resnext50_32x4d...) differ
# only in depth.
CASES = {
    "basic-B": dict(block="basic", layers=(1, 2, 1, 1)),
    "bottleneck-B": dict(block="bottleneck", layers=(1, 2, 1, 1)),
    "resnext-groups": dict(block="bottleneck", layers=(1, 1, 1, 1), groups=4, width_per_group=8),
    "deep-stem-D": dict(block="bottleneck", layers=(1, 2, 1, 1), stem="deep", shortcut="D"),
    "cifar-A": dict(
        block="basic", layers=(2, 2, 2), widths=(16, 32, 64), stem="cifar", shortcut="A"
    ),
    "plain": dict(
        block="basic", layers=(2, 2, 2), widths=(16, 32, 64), stem="cifar", residual=False
    ),
    "preact-basic": dict(block="preact_basic", layers=(2, 2, 2), widths=(16, 32, 64), stem="cifar"),
    "preact-bottleneck": dict(
        block="preact_bottleneck", layers=(2, 2, 2), widths=(16, 32, 64), stem="cifar"
    ),
    "frozen-bn": dict(block="basic", layers=(1, 1, 1, 1), norm_layer="frozen_batchnorm"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_folding_is_exact_in_fp32(case):
    torch.manual_seed(0)
    model = _randomise_norms(ResNet(num_classes=7, **CASES[case]))
    folded, report = fold_batchnorm(model)
    size = 8 if CASES[case].get("stem") == "cifar" else 32
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = model(x), folded(x)
    scale = max(1.0, ref.abs().max().item())
    assert (out - ref).abs().max().item() <= 1e-5 * scale
    assert len(report.folded) > 0
    # Every norm that directly follows a conv is gone; only pre-activation norms remain.
    left = [m for m in folded.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert len(left) == len(report.kept)
    if not model.preact:
        assert report.kept == ()


def test_registry_model_folds_exactly():
    model = _randomise_norms(reslab.create_model("resnet20", num_classes=10))
    folded, report = fold_batchnorm(model)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    assert len(report.folded) == 19  # stem + 2 per block x 9 blocks


def test_folded_names_follow_torchvision():
    import torchvision

    model = _randomise_norms(reslab.create_model("resnet50"))
    folded, report = fold_batchnorm(model)
    keys = set(folded.state_dict())
    tv = torchvision.models.resnet50()
    tv_convs = {n for n, m in tv.named_modules() if isinstance(m, nn.Conv2d)}
    # Each torchvision conv keeps its weight and gains a bias; no BatchNorm tensor is left.
    assert {f"{c}.weight" for c in tv_convs} | {f"{c}.bias" for c in tv_convs} | {
        "fc.weight",
        "fc.bias",
    } == keys
    assert ("layer1.0.downsample.0", "layer1.0.downsample.1") in report.folded
    assert isinstance(folded, type(model)) and hasattr(folded, "forward_features")


def test_fold_conv_bn_matches_torch_reference():
    """Oracle: PyTorch's own eval-mode conv-BN fusion, on a grouped, strided, biased conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4, bias=True)
    bn = _randomise_norms(nn.Sequential(nn.BatchNorm2d(12)))[0]
    conv.eval()
    ours, theirs = fold_conv_bn(conv, bn), fuse_conv_bn_eval(conv, bn)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=1e-6, atol=1e-7)


def test_unfoldable_norms_are_left_alone():
    model = reslab.create_model("resnet18", num_classes=5, norm_layer="groupnorm").eval()
    folded, report = fold_batchnorm(model)
    assert report.folded == () and report.kept == ()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


def test_original_model_is_not_modified():
    model = _randomise_norms(reslab.create_model("resnet20", num_classes=10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="running statistics"):
        fold_conv_bn(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
