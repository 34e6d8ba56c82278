"""The fused BatchNorm (+ residual add) + ReLU CPU kernel (reslab/models/fused.py).

Its results are checked against a float64 computation from the same bf16 inputs, next to
ATen's bf16 ops: the kernel rounds once where ATen rounds after each op, so it must be at
least as close. It must also leave every case it does not serve to ATen, unchanged.
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reslab.models import FrozenBatchNorm2d, create_model, fused

CL = torch.channels_last


@pytest.fixture(scope="module")
def kernel():
    ok, why = fused.enable()
    if not ok:
        pytest.skip(why)
    yield fused._kernel


class _Counting:
    """Wraps the loaded kernel and counts its forward calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def forward(self, *args):
        self.calls += 1
        return self.inner.forward(*args)

    def backward(self, *args):
        return self.inner.backward(*args)


@pytest.fixture
def counting(kernel, monkeypatch):
    wrapper = _Counting(kernel)
    monkeypatch.setattr(fused, "_kernel", wrapper)
    return wrapper


def _bn(c: int, seed: int = 0) -> nn.BatchNorm2d:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.normal_(0, 0.1)
    bn.running_mean.normal_(0, 0.1)
    return bn


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("shape,with_residual", [((8, 64, 9, 9), True), ((8, 32, 5, 5), False),
                                                 ((4, 2048, 3, 3), True), ((2, 16, 28, 28), False)])  # fmt: skip
def test_kernel_is_at_least_as_close_to_float64_as_aten(counting, shape, with_residual):
    torch.manual_seed(1)
    x0 = (torch.randn(shape) * 2 + 0.3).bfloat16().contiguous(memory_format=CL)
    r0 = torch.randn(shape).bfloat16().contiguous(memory_format=CL)
    dy = torch.randn(shape).bfloat16().contiguous(memory_format=CL)
    results = {}
    for name in ("fused", "aten"):
        bn = _bn(shape[1])
        x, r = x0.clone().requires_grad_(), r0.clone().requires_grad_()
        if name == "fused":
            y = fused.bn_act(bn, nn.ReLU(), x, r if with_residual else None)
        else:
            y = bn(x)
            y = F.relu(y + r if with_residual else y)
        y.backward(dy)
        results[name] = (y, x.grad, bn.weight.grad, bn.bias.grad, r.grad, bn)
    assert counting.calls == 1
    # float64 reference from the same bf16 inputs
    bn = _bn(shape[1])
    xd, rd = x0.double().requires_grad_(), r0.double().requires_grad_()
    wd, bd = bn.weight.detach().double().requires_grad_(), bn.bias.detach().double().requires_grad_()
    rm, rv = bn.running_mean.double(), bn.running_var.double()
    yd = F.batch_norm(xd, rm, rv, wd, bd, True, bn.momentum, bn.eps)
    yd = F.relu(yd + rd if with_residual else yd)
    yd.backward(dy.double())
    refs = (yd, xd.grad, wd.grad, bd.grad, rd.grad)
    ours, aten = results["fused"], results["aten"]
    for i, ref in enumerate(refs):
        if i == 4 and not with_residual:
            assert ours[4] is None
            continue
        err, aten_err = _rel(ours[i], ref), _rel(aten[i], ref)
        assert err <= max(1.2 * aten_err, 5e-3), (i, err, aten_err)
    y, gx = ours[0], ours[1]
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=CL)
    assert gx.is_contiguous(memory_format=CL)
    fbn, abn = ours[5], aten[5]
    torch.testing.assert_close(fbn.running_mean, rm.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fbn.running_var, rv.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fbn.running_var, abn.running_var, rtol=1e-4, atol=1e-6)
    assert int(fbn.num_batches_tracked) == int(abn.num_batches_tracked) == 1


def test_cumulative_average_momentum_none(counting):
    bn = _bn(16)
    bn.momentum = None
    ref = copy.deepcopy(bn)
    for seed in range(3):
        torch.manual_seed(seed)
        x = torch.randn(4, 16, 6, 6).bfloat16().contiguous(memory_format=CL).requires_grad_()
        fused.bn_act(bn, nn.ReLU(), x)
        F.relu(ref(x.detach().clone()))
    assert counting.calls == 3
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-4, atol=1e-6)


def _cases():
    bf = lambda *s: torch.randn(*s).bfloat16().contiguous(memory_format=CL)  # noqa: E731
    yield "eval mode", _bn(16).eval(), nn.ReLU(), bf(2, 16, 4, 4), None
    yield "fp32 input", _bn(16), nn.ReLU(), torch.randn(2, 16, 4, 4).contiguous(memory_format=CL), None
    yield "NCHW input", _bn(16), nn.ReLU(), torch.randn(2, 16, 4, 4).bfloat16(), None
    yield "channels not a multiple of 16", _bn(24), nn.ReLU(), bf(2, 24, 4, 4), None
    yield "frozen BatchNorm", FrozenBatchNorm2d(16), nn.ReLU(), bf(2, 16, 4, 4), None
    yield "not a ReLU", _bn(16), nn.SiLU(), bf(2, 16, 4, 4), None
    yield "NCHW residual", _bn(16), nn.ReLU(), bf(2, 16, 4, 4), torch.randn(2, 16, 4, 4).bfloat16()
    no_stats = nn.BatchNorm2d(16, track_running_stats=False)
    yield "no running statistics", no_stats, nn.ReLU(), bf(2, 16, 4, 4), None


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_every_other_case_runs_atens_ops_unchanged(counting, case):
    _, bn, act, x, residual = case
    ref_bn = copy.deepcopy(bn)
    out = fused.bn_act(bn, act, x, residual)
    expected = ref_bn(x)
    expected = act(expected if residual is None else expected + residual)
    assert counting.calls == 0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_no_grad_and_tracing_run_atens_ops(counting):
    bn, x = _bn(16), torch.randn(2, 16, 4, 4).bfloat16().contiguous(memory_format=CL)
    with torch.no_grad():
        fused.bn_act(bn, nn.ReLU(), x)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.relu = _bn(16), nn.ReLU()

        def forward(self, t):
            return fused.bn_act(self.bn, self.relu, t)

    torch.fx.symbolic_trace(Block())  # training mode: traced as the plain ops
    torch.jit.trace(Block(), x.requires_grad_(), check_trace=False)
    assert counting.calls == 0


@pytest.mark.parametrize("name,size", [("resnet20", 28), ("wrn16_2", 28), ("resnet50", 64)])
def test_a_training_step_with_the_kernel_matches_atens(counting, name, size):
    # One bf16 channels_last step with the kernel, one with ATen's ops, one in fp32: the
    # kernel's gradients are as close to fp32's as ATen's bf16 ones, and the running
    # statistics agree. (Blocks start as identities, as reslab's recipes train them: a
    # randomly initialised resnet50 is so sensitive that any two bf16 runs differ.)
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, zero_init_residual=True).to(memory_format=CL).train()
    aten, fp32 = copy.deepcopy(model), copy.deepcopy(model)
    x = torch.randn(8, 3, size, size).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (8,))

    def step(m, bf16=True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(m(x), y)
        loss.backward()
        return torch.cat([p.grad.flatten().float() for p in m.parameters()])

    fused_grads = step(model)
    assert counting.calls > 0
    saved = fused._kernel
    try:
        fused._kernel = None  # ATen's ops
        aten_grads, fp32_grads = step(aten), step(fp32, bf16=False)
    finally:
        fused._kernel = saved
    cos = lambda a, b: F.cosine_similarity(a, b, dim=0).item()  # noqa: E731
    assert cos(fused_grads, aten_grads) > 0.98
    assert cos(fused_grads, fp32_grads) >= cos(aten_grads, fp32_grads) - 0.01 > 0.97
    for a, b in zip(model.buffers(), aten.buffers()):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_no_op_of_the_fused_backward_mixes_layouts(kernel):
    from reslab.models import mixed_layout_ops

    for name in ("resnet20", "wrn16_2", "resnet50"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=3)
        size = 64 if name == "resnet50" else 28
        assert mixed_layout_ops(model, torch.randn(2, 3, size, size), torch.bfloat16) == []


def test_enable_says_why_it_is_off(monkeypatch, caplog):
    saved = (fused._kernel, fused._status)
    try:
        fused.disable()
        monkeypatch.setenv("RESLAB_FUSED_BN", "0")
        assert fused.enable() == (False, "fused BatchNorm+ReLU off (RESLAB_FUSED_BN=0)")
        fused.disable()
        monkeypatch.delenv("RESLAB_FUSED_BN")
        monkeypatch.setattr(fused, "_cpu_flags", lambda: {"avx512f"})
        ok, why = fused.enable()
        assert not ok and "AVX512-BF16" in why
        fused.disable()
        monkeypatch.setattr(fused, "_cpu_flags", lambda: {"avx512_bf16"})
        monkeypatch.setattr(fused.shutil, "which", lambda _cc: None)
        ok, why = fused.enable()
        assert not ok and "C++ compiler" in why
        fused.disable()
        monkeypatch.setattr(fused.shutil, "which", lambda _cc: "/usr/bin/g++")

        def broken(name, folder):
            raise RuntimeError(f"Error building extension '{name}'")

        monkeypatch.setattr(fused, "_build", broken)
        monkeypatch.setattr(fused, "_import_built", lambda name, folder: None)  # not built yet
        with caplog.at_level(logging.WARNING, logger="reslab.models.fused"):
            ok, why = fused.enable()
        assert not ok and "could not be built" in why and "reslab_bn_act" in why
        assert [r.getMessage() for r in caplog.records] == [why]  # one clear line
        assert "using ATen's ops" in why
        assert not fused.is_enabled()
        bn, x = _bn(16), torch.randn(2, 16, 4, 4).bfloat16().contiguous(memory_format=CL)
        torch.testing.assert_close(fused.bn_act(bn, nn.ReLU(), x), F.relu(_bn(16)(x)))
    finally:
        fused._kernel, fused._status = saved


def test_the_kernel_refuses_what_it_cannot_read(kernel):
    # bn_act only hands it contiguous bf16 (M, C) rows and fp32 per-channel vectors; called
    # directly with anything else, it says so instead of reading the wrong memory.
    x = torch.randn(8, 32).bfloat16()
    w, b = torch.ones(32), torch.zeros(32)
    with pytest.raises(RuntimeError, match="contiguous bf16"):
        kernel.forward(x.t().contiguous().t(), w, b, None, 1e-5)
    with pytest.raises(RuntimeError, match="C % 16"):
        kernel.forward(torch.randn(8, 24).bfloat16(), torch.ones(24), torch.zeros(24), None, 1e-5)
    with pytest.raises(RuntimeError, match="one value per channel"):
        kernel.forward(x, torch.ones(16), b, None, 1e-5)
    with pytest.raises(RuntimeError, match="differ in shape"):
        kernel.forward(x, w, b, torch.randn(4, 32).bfloat16(), 1e-5)


def test_each_build_configuration_has_its_own_name_and_folder(monkeypatch, tmp_path):
    """Two installs (another source, torch, flags or Python) never share, so never rebuild,
    one compiled file; the same configuration always finds the same one."""
    base = dict(source=b"kernel v1", torch_version="2.14.0", flags=("-O3",), python="cpython-311")
    names = {fused.build_name(**base)}
    for key, other in [("source", b"kernel v2"), ("torch_version", "2.15.0"),
                       ("flags", ("-O2",)), ("python", "cpython-312")]:
        names.add(fused.build_name(**{**base, key: other}))
    assert len(names) == 5
    assert fused.build_name(**base) == fused.build_name(**base)
    assert fused.build_name().startswith("reslab_bn_act_")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert fused.build_dir("reslab_bn_act_x") == tmp_path / "reslab" / "reslab_bn_act_x"
    assert fused.build_dir("reslab_bn_act_x") != fused.build_dir("reslab_bn_act_y")


def test_a_second_load_imports_the_compiled_kernel(kernel):
    """After one build, enable() imports the compiled file: no compile, no compile message."""
    so = fused.build_dir() / f"{fused.build_name()}.so"
    assert so.is_file()
    before = so.stat().st_mtime_ns
    saved = (fused._kernel, fused._status)
    lines = []
    try:
        fused.disable()
        assert fused.enable(log=lines.append) == (True, "fused BatchNorm+ReLU kernel on")
        assert fused.last_load == "cached" and lines == []
        assert so.stat().st_mtime_ns == before
    finally:
        fused._kernel, fused._status = saved
