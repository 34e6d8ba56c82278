"""The model family: every registered architecture through the one interface, torchvision
parity, the published parameter/MAC counts and the options (zero-init, stochastic depth,
norm layers, activation checkpointing, export).

Inputs are small (64 px for the ImageNet family, 32 px for CIFAR, batch 2). The largest
networks get forward-only checks and the slow mark: building 100M+ random weights is most
of their cost.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reslab
from reslab.models import (
    BasicBlock,
    Bottleneck,
    Conv1x1,
    DropPath,
    GlobalAvgPool,
    PreActBasicBlock,
    PreActBottleneck,
    ZeroPadShortcut,
    count_macs,
    count_params,
    create_model,
    get_spec,
    list_models,
    mixed_layout_ops,
)
from reslab.models.blocks import BLOCKS

ALL = list_models()
BIG_PATTERNS = ("resnet1202", "*101*", "*152*", "wide_*", "wrn28_10")
BLOCK_TYPES = (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)
# One of each block type, stem, shortcut and family, for the costlier option tests.
REPRESENTATIVES = ["resnet18", "resnet50d", "resnext50_32x4d", "preact_resnet18", "resnet20",
                   "resnet20_b", "plain20", "preact_resnet20", "preact_resnet164", "wrn16_4"]


def is_big(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in BIG_PATTERNS)


def params_marked(names):
    return [pytest.param(n, marks=pytest.mark.slow) if is_big(n) else n for n in names]


def image_size(name: str) -> int:
    return 64 if get_spec(name).family == "imagenet" else 32


def expected_stage_shapes(name: str, size: int) -> list[tuple[int, int]]:
    """(channels, spatial) of each stage output, derived from the registry row."""
    arch = get_spec(name).arch
    expansion = BLOCKS[arch["block"]].expansion
    widths = arch.get("widths", (64, 128, 256, 512))
    first = size // 4 if arch.get("stem", "imagenet") != "cifar" else size
    return [(w * expansion, first // 2**i) for i, w in enumerate(widths)]


def blocks_of(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, BLOCK_TYPES)]


# ---- every model through the interface -----------------------------------------------------
@pytest.mark.parametrize("name", params_marked(ALL))
def test_forward_backward_and_interface(name):
    torch.manual_seed(0)
    size = image_size(name)
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, size, size)
    stage_shapes = expected_stage_shapes(name, size)
    n_feat = stage_shapes[-1][0]
    assert model.num_features == n_feat and model.num_classes == 7 and model.in_chans == 3

    if is_big(name):
        # Forward only (building the weights is the expensive part already), with batch
        # statistics: in eval mode an untrained net uses BN's initial (0, 1) statistics, so in
        # resnet1202 each of 600 blocks roughly doubles the activations until float32
        # overflows. Training mode is the regime such a net is trained in.
        with torch.no_grad():
            out = model(x)
    else:
        model.train()
        out = model(x)
        out.square().mean().backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None]
        assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        model.eval()
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()

    with torch.no_grad():
        feats = model.forward_features(x)
        stages = model.forward_stages(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    last = stage_shapes[-1][1]
    assert feats.shape == (2, n_feat, last, last)
    assert [tuple(s.shape) for s in stages] == [(2, c, h, h) for c, h in stage_shapes]
    assert len(stages) == len(model.stage_names)
    assert pooled.shape == (2, n_feat)
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))  # oracle: global average pool
    torch.testing.assert_close(logits, model(x))

    # param_groups: stem first, head last, every parameter in exactly one group
    groups = model.param_groups()
    assert list(groups) == ["stem", *model.stage_names, "head"]
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups["head"]} == {id(p) for p in model.fc.parameters()}
    assert set(model.param_group_of().values()) <= set(groups)


@pytest.mark.parametrize("name", params_marked(ALL))
def test_grayscale_input_and_new_heads(name):
    torch.manual_seed(0)
    size = image_size(name)
    # training mode (batch statistics) for the reason given in the test above
    model = create_model(name, num_classes=5, in_chans=1).train()
    x = torch.randn(2, 1, size, size)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    assert model.default_cfg["input_size"][0] == 1 and model.model_args["in_chans"] == 1
    with torch.no_grad():
        assert model(x).shape == (2, 5)
        feats = model.forward_features(x)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model.get_classifier().out_features == 3
        assert model(x).shape == (2, 3)
        # the new head is the only change: same features, fc applied to the pooled ones
        torch.testing.assert_close(model.forward_features(x), feats)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), nn.Identity)
        assert model(x).shape == (2, model.num_features)
    assert model.param_groups()["head"] == []


def test_reset_classifier_follows_the_model_dtype():
    # (and its device: the same code path, untestable without a GPU here)
    model = create_model("resnet20").to(torch.float64)
    model.reset_classifier(4)
    assert model.fc.weight.dtype == torch.float64
    assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 4)


# ---- zero-init residual: every block starts as the identity (Goyal et al. 2017) ---------
def _block_inputs(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    inputs = {}
    hooks = [b.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0].clone()))
             for b in blocks_of(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return inputs


# The big ImageNet nets repeat the blocks of resnet50/resnext50; resnet1202 is the deepest.
ZERO_INIT = [n for n in ALL if not n.startswith("plain") and (not is_big(n) or n == "resnet1202")]


@pytest.mark.parametrize("name", params_marked(ZERO_INIT))
def test_zero_init_residual_makes_every_block_an_identity(name):
    torch.manual_seed(0)
    size = image_size(name)
    model = create_model(name, zero_init_residual=True).eval()
    inputs = _block_inputs(model, torch.randn(2, 3, size, size))
    assert len(inputs) == len(blocks_of(model)) > 0
    with torch.no_grad():
        for block, x in inputs.items():
            if isinstance(block, (PreActBasicBlock, PreActBottleneck)):
                # nothing after the addition: out = shortcut, which projects the pre-activation
                pre = block.relu(block.bn1(x))
                expected = x if block.downsample is None else block.downsample(pre)
            else:  # post-activation: out = ReLU(shortcut(x))
                expected = torch.relu(x if block.downsample is None else block.downsample(x))
            torch.testing.assert_close(block(x), expected)


def test_zero_init_residual_leaves_plain_nets_alive():
    # A plain block has no shortcut to fall back on: zeroing it would zero the whole net.
    torch.manual_seed(0)
    model = create_model("plain20", zero_init_residual=True).eval()
    assert all(b.bn2.weight.abs().sum() > 0 for b in blocks_of(model))
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    assert out.std(dim=0).max() > 0  # the output depends on the input


# ---- shortcuts: option A is parameter-free, plain nets have none --------------------------
@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_option_a_is_parameter_free_and_plain_has_no_shortcut(depth):
    names = (f"resnet{depth}", f"plain{depth}", f"resnet{depth}_b")
    res, plain, res_b = (create_model(n) for n in names)
    pads = [m for m in res.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(pads) == 2  # stage 2 and 3 entries: 16->32 and 32->64 channels
    assert all(sum(p.numel() for p in m.parameters()) == 0 for m in pads)
    # option A adds no parameter: the residual net and its plain twin have the same count,
    # option B adds exactly two 1x1 projections with their BatchNorms
    assert count_params(res) == count_params(plain)
    assert count_params(res_b) - count_params(res) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert all(b.downsample is None and not b.residual for b in blocks_of(plain))
    # oracle: a plain block is exactly its convolution path
    block = blocks_of(plain)[3].eval()
    x = torch.randn(2, block.conv1.in_channels, 16, 16)
    with torch.no_grad():
        path = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        torch.testing.assert_close(block(x), torch.relu(path))


def test_zero_pad_shortcut_matches_hand_computation():
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(2, 32)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_zero_pad_shortcut_gradient_matches_autograd_and_keeps_layout(layout):
    # The custom backward must equal autograd's slice+pad backward and return the gradient
    # in the input's layout (a contiguous gradient would make the rest of a channels_last
    # backward pass run on mixed layouts).
    x = torch.randn(3, 16, 9, 9).contiguous(memory_format=layout).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    y = ZeroPadShortcut(2, 32)(x)
    assert y.is_contiguous(memory_format=layout)
    g = torch.randn(y.shape)
    y.backward(g)
    F.pad(ref[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)).backward(g)
    torch.testing.assert_close(x.grad, ref.grad, rtol=0, atol=0)
    assert x.grad.is_contiguous(memory_format=layout)



def test_global_avg_pool_matches_adaptive_pool_and_keeps_layout():
    x = torch.randn(3, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    ref = x.detach().clone().requires_grad_()
    y = GlobalAvgPool()(x)
    torch.testing.assert_close(y, F.adaptive_avg_pool2d(ref, 1))
    g = torch.randn(y.shape)
    y.backward(g)
    F.adaptive_avg_pool2d(ref, 1).backward(g)
    torch.testing.assert_close(x.grad, ref.grad)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def _aten_ops(fn) -> set[str]:
    """The aten ops that running ``fn`` dispatches (forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: set[str] = set()

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Spy():
        fn()
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_conv1x1_trains_as_a_matrix_product_equal_to_the_convolution(dtype):
    # On channels_last CPU tensors with gradients on, Conv1x1 runs F.linear on the NHWC view
    # (oneDNN's 1x1 convolution backward is slower: benchmarks/bench_layouts.py). Output
    # and both gradients must equal the convolution's and stay channels_last.
    torch.manual_seed(0)
    conv = Conv1x1(32, 48).to(dtype).to(memory_format=torch.channels_last)
    x = torch.randn(3, 32, 7, 5, dtype=dtype).contiguous(memory_format=torch.channels_last)
    g = torch.randn(3, 48, 7, 5, dtype=dtype).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    wb = conv.weight.detach().clone().requires_grad_()
    out = {}

    def ours():
        out["y"] = conv(xa)
        out["grads"] = torch.autograd.grad(out["y"], (xa, conv.weight), g)

    ops = _aten_ops(ours)
    assert "convolution" not in ops and "mm" in ops  # the matrix-product path ran
    y_ref = F.conv2d(xb, wb)
    grads_ref = torch.autograd.grad(y_ref, (xb, wb), g)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 5e-2}
    torch.testing.assert_close(out["y"], y_ref, **tol)
    for got, ref in zip(out["grads"], grads_ref):
        torch.testing.assert_close(got, ref, **tol)
    assert out["y"].is_contiguous(memory_format=torch.channels_last)
    assert out["grads"][0].is_contiguous(memory_format=torch.channels_last)


def test_conv1x1_is_a_plain_convolution_outside_channels_last_training():
    # Inference, tracing (export) and NCHW inputs run nn.Conv2d's own forward, and the
    # parameters are nn.Conv2d's (torchvision/timm checkpoints load unchanged).
    conv = Conv1x1(8, 4, stride=2)
    assert isinstance(conv, nn.Conv2d) and set(conv.state_dict()) == {"weight"}
    x = torch.randn(2, 8, 6, 6)
    cl = x.contiguous(memory_format=torch.channels_last)
    stride1 = Conv1x1(8, 4)
    with torch.no_grad():
        assert "convolution" in _aten_ops(lambda: stride1(cl))
    assert "convolution" in _aten_ops(lambda: stride1(x.requires_grad_()))  # NCHW
    assert "convolution" in _aten_ops(lambda: conv(cl.requires_grad_()))  # stride 2
    traced = torch.jit.trace(stride1, cl)
    assert "aten::_convolution" in str(traced.graph)
    stride1.eval()
    assert "convolution" in _aten_ops(lambda: stride1(cl.requires_grad_()))  # eval mode


def test_fx_tracing_a_bottleneck_net_with_gradients_on_sees_plain_ops():
    # FX symbolic tracing (export, int8 preparation) runs forward on proxies: every layer
    # that chooses a faster training path must keep its plain ops there, even with
    # gradients enabled and in train mode.
    model = create_model("resnet50", num_classes=3).to(memory_format=torch.channels_last)
    gm = torch.fx.symbolic_trace(model)
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    assert not any("linear" in c for c in called)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gm.eval()(x), model(x))


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet20", "wrn16_2", "resnet18", "resnet50"])
def test_channels_last_backward_never_mixes_layouts(name):
    # A contiguous gradient meeting a channels_last one makes each op 5-20x slower on CPU
    # (benchmarks/bench_layouts.py); reslab's shortcut and pooling keep the layout.
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    x = torch.randn(2, model.in_chans, image_size(name), image_size(name))
    assert mixed_layout_ops(model, x) == []
    assert mixed_layout_ops(model, x, torch.bfloat16) == []


def test_mixed_layout_ops_finds_a_contiguous_gradient():
    # autograd's own slice + pad (the option-A shortcut without reslab's Function) returns
    # a contiguous gradient: the check must see the mixed ops that follow.
    class PlainShortcutBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 1, 1)
            self.conv = nn.Conv2d(8, 16, 3, 2, 1)

        def forward(self, x):
            x = self.stem(x)  # its gradient sums the two paths below
            return torch.relu(self.conv(x) + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4)))

    assert mixed_layout_ops(PlainShortcutBlock(), torch.randn(2, 3, 8, 8)) != []

# ---- torchvision parity (random weights, no download) -------------------------------------
TV_MODELS = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d", "resnet101", "resnet152",
             "wide_resnet50_2", "wide_resnet101_2", "resnext101_32x8d"]


# Random BN statistics make parity a real test (one helper, shared with the weights tests).
from test_pretrained import randomize_bn as _randomize_bn  # noqa: E402


@pytest.mark.parametrize("name", params_marked(TV_MODELS))
def test_torchvision_parity(name):
    tv_models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    tv = getattr(tv_models, name)().eval()
    _randomize_bn(tv)
    with torch.device("meta"):  # no init: every tensor comes from torchvision's state dict
        ours = create_model(name)
    ours.load_state_dict(tv.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (ours(x) - tv(x)).abs().max().item()
    assert diff <= 1e-4
    assert count_params(ours) == count_params(tv)


# ---- published counts ----------------------------------------------------------------------
def _meta_model(name, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


@pytest.mark.parametrize("name, params", [("resnet18", 11_689_512), ("resnet50", 25_557_032),
                                          ("resnet101", 44_549_160), ("resnet152", 60_192_808)])
def test_published_parameter_counts(name, params):
    assert count_params(_meta_model(name)) == params


@pytest.mark.parametrize("name, gmacs", [("resnet18", 1.814), ("resnet50", 4.089)])
def test_published_macs(name, gmacs):
    # He et al. report 1.8 / 3.8 GFLOPs (multiply-adds, ResNet v1); torchvision's v1.5 table
    # lists 1.81 / 4.09 GFLOPS: conv + linear multiply-accumulates at 224 px.
    macs = count_macs(_meta_model(name), (3, 224, 224))
    assert round(macs / 1e9, 3) == gmacs


def _cifar_params_by_hand(n: int, classes: int = 10) -> int:
    """He et al. 2015 section 4.2 net with option A: count every conv, BN and fc weight."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv 3x3 + its BN (gamma, beta)
    c_in = 16
    for w in (16, 32, 64):
        for _ in range(n):
            total += c_in * w * 9 + w * w * 9 + 2 * 2 * w  # two 3x3 convs + two BNs
            c_in = w
    return total + 64 * classes + classes


@pytest.mark.parametrize("depth, approx", [(20, "0.27M"), (56, "0.85M"), (110, "1.7M")])
def test_cifar_counts_match_the_paper(depth, approx):
    n = (depth - 2) // 6
    params = count_params(create_model(f"resnet{depth}"))
    assert params == _cifar_params_by_hand(n)
    digits = len(approx.split(".")[1]) - 1  # the paper's rounding: 0.27M, 0.85M, 1.7M
    assert f"{params / 1e6:.{digits}f}M" == approx


# ---- options --------------------------------------------------------------------------------
def test_drop_path_rates_rise_linearly_and_only_act_in_training():
    torch.manual_seed(0)
    model = create_model("resnet20", drop_path_rate=0.2)
    rates = [b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks_of(model)]
    expected = [0.2 * i / (len(rates) - 1) for i in range(len(rates))]
    assert rates == pytest.approx(expected)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    a, b = model(x), model(x)
    assert not torch.allclose(a, b)  # stochastic in training
    plain = create_model("resnet20")
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))  # the identity at eval


def test_drop_path_keeps_the_expectation():
    torch.manual_seed(0)
    dp = DropPath(0.25).train()
    y = dp(torch.ones(40_000, 1, 1, 1))
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.75, abs=0.01)
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.75])
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    assert DropPath(1.0).train()(torch.ones(4, 3)).abs().sum() == 0  # all dropped, no NaN


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_groupnorm_is_batch_independent(name):
    torch.manual_seed(0)
    size = image_size(name)
    model = create_model(name, num_classes=4, norm_layer="groupnorm").train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    x = torch.randn(2, 3, size, size)
    out = model(x)
    out.sum().backward()
    # GroupNorm normalises each sample alone: the first sample's output ignores the second
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), out[:1].detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_frozen_batchnorm_matches_batchnorm_in_eval_and_never_updates(name):
    torch.manual_seed(0)
    size = image_size(name)
    bn_model = create_model(name, num_classes=4)
    _randomize_bn(bn_model)
    frozen = create_model(name, num_classes=4, norm_layer="frozen_batchnorm")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    frozen.load_state_dict(bn_model.state_dict())  # BN checkpoints load as they are
    bns = [m for m in bn_model.modules() if isinstance(m, nn.BatchNorm2d)]
    norm_params = sum(2 * m.num_features for m in bns)
    assert count_params(frozen) == count_params(bn_model) - norm_params
    x = torch.randn(2, 3, size, size)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    frozen.train()
    out_train = frozen(x)
    with torch.no_grad():
        torch.testing.assert_close(out_train, bn_model.eval()(x), atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())


@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_grad_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    size = image_size(name)
    model = create_model(name, num_classes=4, drop_path_rate=0.1).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(2, 3, size, size)
    torch.manual_seed(1)
    model(x).square().mean().backward()
    torch.manual_seed(1)  # same stochastic-depth draws (checkpoint replays the RNG state)
    ckpt(x).square().mean().backward()
    # the blocks really ran again in backward: their BatchNorms counted two training steps
    assert blocks_of(model)[0].bn1.num_batches_tracked == 1
    assert blocks_of(ckpt)[0].bn1.num_batches_tracked == 2
    for (n, p), q in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=n)


# ---- export ---------------------------------------------------------------------------------
# basic block + option A, pre-activation, bottleneck + ResNet-D
EXPORTED = ["resnet20", "preact_resnet20", "resnet50d"]
TRACED = ["resnet18", "resnet20", "preact_resnet20", "resnet50d", "plain20"]


@pytest.mark.parametrize("name", EXPORTED)
def test_torch_export(name):
    torch.manual_seed(0)
    size = image_size(name)
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, size, size)
    program = torch.export.export(model, (x,))
    x2 = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x2), model(x2))


@pytest.mark.parametrize("name", TRACED)
def test_torchscript_trace(name):
    torch.manual_seed(0)
    size = image_size(name)
    model = create_model(name, num_classes=5).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit.trace is deprecated upstream; still used by C++ apps
        traced = torch.jit.trace(model, torch.randn(2, 3, size, size), check_trace=False)
    x = torch.randn(3, 3, size, size)  # another batch size: the trace must not bake it in
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_unknown_model_suggests_close_names():
    with pytest.raises(reslab.errors.ConfigError, match="resnet50"):
        create_model("resnet05")
