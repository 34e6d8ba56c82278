"""reslab.experiments.teaching against oracles: nn.Conv2d, SciPy, autograd, closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import signal
from sklearn.datasets import load_digits
from torch import nn

import reslab
from reslab.errors import ConfigError
from reslab.experiments.teaching import (
    ACTIVATIONS,
    ToyBlock,
    activation_derivative,
    block_gradient_norms,
    conv_output_size,
    cross_correlate2d,
    dead_unit_fraction,
    input_gradient_norm,
    toy_stack,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits_batch():
    """16 real 8x8 digit images, scaled to [0, 1], as (16, 1, 8, 8), with their labels."""
    d = load_digits()
    x = torch.tensor(d.images[:16] / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target[:16], dtype=torch.int64)
    return x, y


# ---- convolution arithmetic ------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 8, 28, 32, 224])
@pytest.mark.parametrize("k,s,p,d", [(1, 1, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), (7, 2, 3, 1),
                                     (5, 3, 0, 1), (3, 1, 2, 2), (2, 2, 0, 1), (4, 3, 1, 2)])
def test_conv_output_size_matches_conv2d_and_maxpool(n, k, s, p, d):
    if n + 2 * p < d * (k - 1) + 1:
        with pytest.raises(ConfigError, match="does not fit"):
            conv_output_size(n, k, s, p, d)
        return
    x = torch.zeros(1, 1, n, n)
    conv = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)(x)
    assert conv.shape[-1] == conv_output_size(n, k, s, p, d)
    if p <= k // 2:  # PyTorch's max-pool limits padding to half the kernel
        pool = F.max_pool2d(x, k, stride=s, padding=p, dilation=d)
        assert pool.shape[-1] == conv_output_size(n, k, s, p, d)


@pytest.mark.parametrize("kwargs", [dict(size=0, kernel=3), dict(size=8, kernel=3, stride=0),
                                    dict(size=8, kernel=3, padding=-1), dict(size=8, kernel=2.5)])
def test_conv_output_size_rejects_bad_values_naming_them(kwargs):
    with pytest.raises(ConfigError, match="received"):
        conv_output_size(**kwargs)


def test_cross_correlate2d_is_what_conv2d_and_scipy_compute():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(7, 9, generator=gen, dtype=torch.float64)
    kernel = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    ours = cross_correlate2d(image, kernel)
    torch.testing.assert_close(ours, F.conv2d(image[None, None], kernel[None, None])[0, 0])
    scipy_valid = signal.correlate2d(image.numpy(), kernel.numpy(), mode="valid")
    np.testing.assert_allclose(ours.numpy(), scipy_valid)
    # Flipping the kernel turns it into the convolution of signal processing.
    np.testing.assert_allclose(
        cross_correlate2d(image, kernel.flip(0, 1)).numpy(),
        signal.convolve2d(image.numpy(), kernel.numpy(), mode="valid"),
    )


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (2, 1), (3, 2)])
def test_cross_correlate2d_with_stride_and_padding_matches_conv2d(stride, padding):
    gen = torch.Generator().manual_seed(1)
    image, kernel = torch.randn(10, 8, generator=gen), torch.randn(3, 3, generator=gen)
    expected = F.conv2d(image[None, None], kernel[None, None], stride=stride, padding=padding)[0, 0]
    torch.testing.assert_close(cross_correlate2d(image, kernel, stride, padding), expected)


def test_cross_correlate2d_on_the_source_tutorials_example():
    image = torch.arange(1.0, 10.0).reshape(3, 3)
    kernel = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # Window by window, by hand: 1+4+5, 2+5+6, 4+7+8, 5+8+9.
    assert cross_correlate2d(image, kernel).tolist() == [[10.0, 13.0], [19.0, 22.0]]


def test_cross_correlate2d_wants_single_channel_2d_inputs():
    with pytest.raises(ConfigError, match=r"received shapes \(1, 1, 3, 3\)"):
        cross_correlate2d(torch.zeros(1, 1, 3, 3), torch.zeros(2, 2))


# ---- gradients through residual connections ----------------------------------------------


def test_toy_block_jacobian_is_identity_plus_branch_jacobian():
    torch.manual_seed(0)
    block = ToyBlock(5, activation="tanh", residual=True).double()
    x = torch.randn(5, dtype=torch.float64)
    W, b = block.fc.weight.detach(), block.fc.bias.detach()
    jac = torch.autograd.functional.jacobian(block, x)
    branch = torch.diag(1 - torch.tanh(W @ x + b) ** 2) @ W  # d tanh(Wx + b) / dx, by hand
    torch.testing.assert_close(jac, torch.eye(5, dtype=torch.float64) + branch)
    block.residual = False
    torch.testing.assert_close(torch.autograd.functional.jacobian(block, x), branch)


def test_toy_stack_twins_share_weights_and_leave_the_callers_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    plain = toy_stack(4, width=8, residual=False, seed=7)
    res = toy_stack(4, width=8, residual=True, seed=7)
    torch.testing.assert_close(torch.rand(3), expected_next)
    for a, b in zip(plain.state_dict().values(), res.state_dict().values()):
        assert torch.equal(a, b)
    assert [blk.residual for blk in res] == [True] * 4 and not any(blk.residual for blk in plain)
    x = torch.randn(2, 8)
    torch.testing.assert_close(res[0](x), x + torch.tanh(res[0].fc(x)))


def test_toy_stack_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="depth=0"):
        toy_stack(0)
    with pytest.raises(ConfigError, match="'swish'"):
        toy_stack(2, activation="swish")


def test_input_gradient_norm_of_a_linear_map_is_known_in_closed_form():
    lin = nn.Linear(4, 3, bias=True)
    x = torch.randn(6, 4)
    # d sum(W x + b) / dx = W^T 1 for every sample.
    per_sample = lin.weight.detach().sum(dim=0)
    expected = per_sample.expand(6, 4).norm().item()
    assert input_gradient_norm(lin, x) == pytest.approx(expected, rel=1e-6)
    assert x.grad is None and not x.requires_grad


def test_shortcuts_keep_the_gradient_of_a_deep_tanh_stack():
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    plain = input_gradient_norm(toy_stack(20, 32, residual=False), x)
    res = input_gradient_norm(toy_stack(20, 32, residual=True), x)
    identity = x.numel() ** 0.5  # the gradient of sum(x) itself: all ones
    assert plain < 1e-3 * identity  # vanished
    assert res >= identity  # the identity path alone passes all of it


def test_block_gradient_norms_matches_autograd_on_the_blocks_input(digits_batch):
    x, y = digits_batch
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", num_classes=10, in_chans=1)
    norms = block_gradient_norms(model, x, y)
    assert [n for n, _ in norms] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert all(p.grad is None for p in model.parameters())
    assert all(not blk._forward_pre_hooks for stage in model.stages for blk in stage)

    # Oracle: cut the graph at the input of layer2.0 and of layer1.0 and ask autograd.
    stem = model.forward_stem(x).detach().requires_grad_(True)
    mid = model.layer1(stem)
    mid_leaf = mid.detach().requires_grad_(True)
    logits = model.forward_head(model.final_norm(model.layer3(model.layer2(mid_leaf))))
    loss = F.cross_entropy(logits, y)
    (g_mid,) = torch.autograd.grad(loss, mid_leaf)
    (g_stem,) = torch.autograd.grad(mid, stem, grad_outputs=g_mid)
    got = dict(norms)
    assert got["layer2.0"] == pytest.approx(g_mid.norm().item(), rel=1e-4)
    assert got["layer1.0"] == pytest.approx(g_stem.norm().item(), rel=1e-4)


def test_block_gradient_norms_needs_a_reslab_resnet():
    with pytest.raises(ConfigError, match="Sequential"):
        block_gradient_norms(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
                             torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.int64))


# ---- activations ---------------------------------------------------------------------------


def test_activation_derivatives_match_their_closed_forms():
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    x = x[x != 0]  # ReLU's slope at exactly 0 is a convention
    s, t = torch.sigmoid(x), torch.tanh(x)
    normal = torch.distributions.Normal(0.0, 1.0)
    closed = {
        "sigmoid": s * (1 - s),
        "tanh": 1 - t**2,
        "relu": (x > 0).double(),
        "leaky_relu": torch.where(x > 0, 1.0, 0.01).double(),
        "gelu": normal.cdf(x) + x * normal.log_prob(x).exp(),  # d/dx x*Phi(x)
    }
    assert set(closed) == set(ACTIVATIONS)
    for name, expected in closed.items():
        torch.testing.assert_close(activation_derivative(name, x), expected, msg=name)
    assert activation_derivative("sigmoid", x).max().item() <= 0.25


def test_activation_derivative_names_the_choices_when_unknown():
    with pytest.raises(ConfigError, match="expected one of"):
        activation_derivative("swish", torch.zeros(3))


def test_dead_unit_fraction_counts_units_negative_for_every_sample():
    pre = torch.tensor([[-1.0, 2.0, 0.0, -3.0],
                        [-2.0, -1.0, 0.0, 5.0],
                        [-0.5, -1.0, 0.0, -1.0]])
    # unit 0: always < 0 (dead); 1 and 3: positive once (alive); 2: always exactly 0 (dead).
    assert dead_unit_fraction(pre) == 0.5
    with pytest.raises(ConfigError, match=r"\(2, 3, 4\)"):
        dead_unit_fraction(torch.zeros(2, 3, 4))


def test_a_dead_relu_unit_gets_no_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(10, 50)
    with torch.no_grad():
        layer.bias -= 3.0
    x = torch.randn(64, 10)
    pre = layer(x)
    dead = (pre <= 0).all(dim=0)
    assert dead_unit_fraction(pre) == pytest.approx(dead.float().mean().item())
    assert dead.any()
    torch.relu(pre).sum().backward()
    assert torch.count_nonzero(layer.weight.grad[dead]) == 0
