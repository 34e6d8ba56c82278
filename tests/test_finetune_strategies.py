"""Strategies: which parameters train (by group, never by name) and at which learning rate."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import reslab
from reslab.errors import ConfigError
from reslab.finetune.strategies import (
    STRATEGIES,
    build_param_groups,
    resolve_lr_decay,
    set_trainable,
    trainable_groups,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits_batch():
    """16 real digits, (16, 1, 8, 8) normalised, and their labels."""
    d = load_digits()
    x = torch.tensor(d.images[:16], dtype=torch.float32).unsqueeze(1) / 16.0
    return (x - x.mean()) / x.std(), torch.tensor(d.target[:16])


def _model(name="resnet20"):
    torch.manual_seed(0)
    return reslab.create_model(name, num_classes=10, in_chans=1)


def _grads_by_group(model, x, y):
    """Runs one real forward/backward and says, per group, whether each parameter got a grad."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {g: [p.grad is not None for p in ps] for g, ps in model.param_groups().items()}


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "preact_resnet20"])
def test_linear_and_full_gradients_follow_groups(name, digits_batch):
    x, y = digits_batch
    if name == "resnet18":
        x = F.interpolate(x, size=16)
    model = _model(name)
    set_trainable(model, trainable_groups(model, "linear"))
    grads = _grads_by_group(model, x, y)
    assert all(grads["head"]) and grads["head"]
    assert not any(g for name_, gs in grads.items() if name_ != "head" for g in gs)

    set_trainable(model, trainable_groups(model, "full"))
    grads = _grads_by_group(model, x, y)
    assert all(all(gs) for gs in grads.values())


def test_gradual_unfreezes_one_group_from_the_top_per_period(digits_batch):
    x, y = digits_batch
    model = _model()
    names = list(model.module_groups())  # stem, layer1, layer2, layer3, head
    assert names == ["stem", "layer1", "layer2", "layer3", "head"]
    every = 2
    for epoch in range(10):
        groups = trainable_groups(model, "gradual", epoch, unfreeze_every=every)
        n_open = min(epoch // every, 4)
        expected = names[4 - n_open : 4] + ["head"]
        assert groups == expected, epoch
        set_trainable(model, groups)
        grads = _grads_by_group(model, x, y)
        for g, flags in grads.items():
            assert all(flags) if g in expected else not any(flags), (epoch, g)


def test_discriminative_lr_scales_equal_the_decay_formula():
    model = _model("resnet18")
    for decay in (0.5, 0.3, 1.0):
        groups = build_param_groups(model, "discriminative", decay)
        names = [g["name"] for g in groups]
        assert names == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
        for i, g in enumerate(groups):
            assert g["lr_scale"] == pytest.approx(decay ** (len(groups) - 1 - i))
        # every parameter listed exactly once
        ids = [id(p) for g in groups for p in g["params"]]
        assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert build_param_groups(model, "discriminative")[0]["lr_scale"] == pytest.approx(0.5**5)


def test_build_param_groups_lists_frozen_parameters_too():
    model = _model()
    set_trainable(model, ["head"])
    groups = build_param_groups(model, "gradual")
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["lr_scale"] == 1.0 for g in groups)


def test_bad_values_are_explained():
    model = _model()
    with pytest.raises(ConfigError, match="strategy='partial'"):
        trainable_groups(model, "partial")
    with pytest.raises(ConfigError, match="lr_decay=1.5"):
        resolve_lr_decay("discriminative", 1.5)
    with pytest.raises(ConfigError, match="has no effect"):
        resolve_lr_decay("full", 0.5)
    with pytest.raises(ConfigError, match="unfreeze_every=0"):
        trainable_groups(model, "gradual", 3, unfreeze_every=0)
    with pytest.raises(ConfigError, match="unknown parameter groups"):
        set_trainable(model, ["layer9"])
    assert set(STRATEGIES) == {"linear", "full", "gradual", "discriminative"}
