"""The BatchNorm policy: frozen statistics stay bit-identical through real training."""

import copy

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import reslab
from reslab.errors import ConfigError
from reslab.finetune.bn import FixedStatsBatchNorm2d, apply_bn_policy
from reslab.finetune.strategies import set_trainable, trainable_groups

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    return (x - x.mean()) / x.std(), torch.tensor(d.target)


@pytest.fixture(scope="module")
def pretrained(digits):
    """A resnet20 whose BatchNorm statistics are real (not the 0/1 init): a few train steps."""
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    x, y = digits
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(0, 320, 32):
        opt.zero_grad()
        F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()
    return model


def _bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "bn" in k or "final_norm" in k}


def _epoch(model, x, y, strategy="full"):
    """One real epoch the way the engine runs it: model.train(), then SGD steps."""
    set_trainable(model, trainable_groups(model, strategy))
    opt = torch.optim.SGD([p for p in model.parameters()], lr=0.05, momentum=0.9)
    model.train()
    for i in range(0, len(y), 32):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
        opt.step()


def _bns(model):
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("strategy", ["full", "linear"])
def test_frozen_keeps_statistics_and_affine_bit_identical(pretrained, digits, strategy):
    model = copy.deepcopy(pretrained)
    assert apply_bn_policy(model, "frozen") == len(_bns(pretrained)) == 19
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = digits
    _epoch(model, x[320:640], y[320:640], strategy)
    after = model.state_dict()
    bn_keys = [k for k in before if k.rsplit(".", 1)[-1] in
               ("running_mean", "running_var", "num_batches_tracked")]
    assert len(bn_keys) == 3 * 19
    for k in bn_keys:
        assert torch.equal(before[k], after[k]), k
    for m in _bns(model):
        assert not m.weight.requires_grad and m.weight.grad is None
    for name, bn in model.named_modules():
        if isinstance(bn, nn.BatchNorm2d):
            assert torch.equal(bn.weight, before[name + ".weight"])
            assert torch.equal(bn.bias, before[name + ".bias"])
    # the convolutions did train under `full`: the policy froze BN only
    assert torch.equal(after["conv1.weight"], before["conv1.weight"]) == (strategy == "linear")
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


def test_eval_fixes_statistics_but_trains_affine(pretrained, digits):
    model = copy.deepcopy(pretrained)
    apply_bn_policy(model, "eval")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = digits
    _epoch(model, x[320:640], y[320:640])
    after = model.state_dict()
    for k in before:
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(before["bn1.weight"], after["bn1.weight"])
    assert not torch.equal(before["layer2.0.bn2.bias"], after["layer2.0.bn2.bias"])


def test_train_policy_updates_statistics(pretrained, digits):
    model = copy.deepcopy(pretrained)
    assert apply_bn_policy(model, "train") == 0
    before = _bn_state(model)
    x, y = digits
    _epoch(model, x[320:640], y[320:640])
    after = _bn_state(model)
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert after["bn1.num_batches_tracked"] == before["bn1.num_batches_tracked"] + 10


def test_fixed_bn_in_train_mode_computes_the_eval_forward(pretrained, digits):
    """Oracle: the original model in eval mode. model.train() must not switch to batch stats."""
    x, _ = digits
    ref = copy.deepcopy(pretrained).eval()
    for policy in ("frozen", "eval"):
        model = copy.deepcopy(pretrained)
        apply_bn_policy(model, policy)
        model.train()
        assert model.training and not any(m.training for m in _bns(model))
        with torch.no_grad():
            torch.testing.assert_close(model(x[:64]), ref(x[:64]), rtol=0, atol=1e-6)


def test_policy_keeps_state_dict_keys_and_round_trips(pretrained):
    model = copy.deepcopy(pretrained)
    apply_bn_policy(model, "frozen")
    assert all(isinstance(m, FixedStatsBatchNorm2d) and m.freeze_affine for m in _bns(model))
    fresh = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    fresh.load_state_dict(model.state_dict(), strict=True)  # same keys as plain BatchNorm2d
    apply_bn_policy(model, "eval")
    assert all(isinstance(m, FixedStatsBatchNorm2d) and not m.freeze_affine for m in _bns(model))
    assert all(m.weight.requires_grad for m in _bns(model))
    apply_bn_policy(model, "train")
    assert not any(isinstance(m, FixedStatsBatchNorm2d) for m in model.modules())
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_frozen_affine_survives_unfreezing(pretrained):
    model = copy.deepcopy(pretrained)
    apply_bn_policy(model, "frozen")
    set_trainable(model, trainable_groups(model, "full"))
    assert all(not m.weight.requires_grad for m in _bns(model))
    assert model.conv1.weight.requires_grad


def test_groupnorm_model_has_nothing_to_freeze():
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1, norm_layer="groupnorm")
    assert apply_bn_policy(model, "frozen") == 0
    with pytest.raises(ConfigError, match="policy='stop'"):
        apply_bn_policy(model, "stop")
