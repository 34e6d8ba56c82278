"""Strategies: which parameters train (by group, never by name), at which learning rate,
and how far a pretrained filter may move in one step (``step_clip``)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import reslab
from reslab.config import load_config
from reslab.engine.optim import build_optimizer
from reslab.errors import ConfigError
from reslab.finetune.step_clip import (
    DEFAULT_STEP_CLIP,
    EPS,
    StepClip,
    clip_unit_steps_,
    resolve_step_clip,
)
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


def _clip_oracle(w: np.ndarray, g: np.ndarray, lr: float, ratio: float) -> np.ndarray:
    """Per-filter step clipping written out in NumPy, one filter at a time."""
    out = g.astype(np.float64).copy()
    for i in range(len(w)):
        allowed = ratio * max(np.linalg.norm(w[i]), EPS)
        step = lr * np.linalg.norm(g[i])
        if step > allowed:
            out[i] *= allowed / step
    return out


def test_clip_unit_steps_matches_a_per_filter_oracle():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3)  # (C_out, C_in, k, k)
    w[2] *= 1e-6  # a near-zero filter: its norm is floored at EPS
    g = torch.randn_like(w)
    g[0] *= 100.0  # a jump: clipped
    g[1] *= 1e-4  # a small step: left alone
    lr, ratio = 0.01, 0.0025
    conv = torch.nn.Parameter(w.clone())
    conv.grad = g.clone()
    bias = torch.nn.Parameter(torch.zeros(8))
    bias.grad = torch.full((8,), 1e3)
    clip_unit_steps_([conv, bias], lr, ratio)
    expected = _clip_oracle(w.numpy(), g.numpy(), lr, ratio)
    np.testing.assert_allclose(conv.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert torch.equal(conv.grad[1], g[1])  # under the bound: untouched, bit for bit
    assert not torch.allclose(conv.grad[0], g[0])
    assert torch.equal(bias.grad, torch.full((8,), 1e3))  # 1-D tensors are never clipped
    # still-scaled fp16 gradients (GradScaler + fused optimizer) clip to the same values
    scaled = torch.nn.Parameter(w.clone())
    scaled.grad = g.clone() * 1024.0
    clip_unit_steps_([scaled], lr, ratio, grad_scale=torch.tensor([1024.0]))
    torch.testing.assert_close(scaled.grad / 1024.0, conv.grad)


def test_step_clip_bounds_the_first_sgd_step_of_pretrained_filters_only(digits_batch):
    x, y = digits_batch
    model = _model()
    set_trainable(model, trainable_groups(model, "full"))
    lr, ratio, wd = 0.5, 0.0025, 5e-4  # a rate far too large: every filter wants to jump
    cfg = load_config(None, [f"optim.lr={lr}", f"optim.weight_decay={wd}"]).optim
    opt = build_optimizer(cfg, model, build_param_groups(model, "full"))
    nesterov = 1 + cfg.momentum if cfg.nesterov else 1.0
    StepClip(model, ratio).on_fit_start(SimpleNamespace(optimizer=opt))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    F.cross_entropy(model(x), y).backward()
    opt.step()
    head = {id(p) for m in model.module_groups()["head"] for p in m.parameters()}
    checked = 0
    for name, p in model.named_parameters():
        if p.ndim < 2 or id(p) in head:
            continue
        dims = tuple(range(1, p.ndim))
        moved = torch.linalg.vector_norm(p.detach() - before[name], dim=dims)
        floor = torch.linalg.vector_norm(before[name], dim=dims).clamp_min(EPS)
        # first step: buffer = clipped gradient + wd * w (decay is added after the clip), and
        # Nesterov steps by (1 + momentum) x the buffer
        assert (moved <= nesterov * (ratio + lr * wd) * floor * (1 + 1e-4)).all(), name
        checked += 1
    assert checked == 19  # every conv of resnet20
    fc, fc0 = model.get_classifier().weight.detach(), before["fc.weight"]
    assert ((fc - fc0).norm(dim=1) / fc0.norm(dim=1)).max() > 10 * ratio  # the head is not clipped


def test_step_clip_auto_is_on_only_for_gradual_sgd_with_fixed_bn():
    assert resolve_step_clip("auto", "gradual", "frozen", "sgd")[0] == DEFAULT_STEP_CLIP
    assert resolve_step_clip("auto", "gradual", "eval", "sgd")[0] == DEFAULT_STEP_CLIP
    for strategy, bn, opt in [("gradual", "train", "sgd"), ("gradual", "frozen", "adamw"),
                              ("full", "frozen", "sgd"), ("discriminative", "frozen", "sgd"),
                              ("linear", "frozen", "sgd")]:  # fmt: skip
        assert resolve_step_clip("auto", strategy, bn, opt) == (0.0, None), (strategy, bn, opt)
    assert resolve_step_clip(0.01, "full", "train", "sgd") == (0.01, "step_clip=0.01 (your choice)")
    assert resolve_step_clip(0.0, "gradual", "frozen", "sgd")[0] == 0.0
    with pytest.raises(ConfigError, match="does nothing with strategy=linear"):
        resolve_step_clip(0.01, "linear", "frozen", "sgd")
    with pytest.raises(ConfigError, match="optim.name=adamw"):
        resolve_step_clip(0.01, "gradual", "frozen", "adamw")


@pytest.mark.parametrize("value", [-0.1, 1.0, "off", "yes", True])
def test_bad_step_clip_values_are_refused_with_the_value(value):
    with pytest.raises(ConfigError, match=r"step_clip: received .*expected auto, 0 \(off\)"):
        load_config(None, {"finetune.step_clip": value})


def test_step_clip_config_accepts_numbers_and_refuses_linear():
    assert load_config(None, ["finetune.step_clip=0"]).finetune.step_clip == 0.0
    assert load_config(None, ["finetune.step_clip=0.01"]).finetune.step_clip == 0.01
    assert load_config(None, ["finetune.pretrained=x"]).finetune.step_clip == "auto"
    with pytest.raises(ConfigError, match="step_clip=0.01 does nothing with strategy=linear"):
        load_config(None, ["finetune.step_clip=0.01", "finetune.strategy=linear"])
