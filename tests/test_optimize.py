"""optimize_for_inference on a trained model and real images (scikit-learn digits).

Oracle: the eager fp32 model on the same images. No timing assertions (speed lives in
benchmarks/bench_inference.py).
"""

from __future__ import annotations

import pytest
import torch
from test_export_support import one_thread, split_tensors, top1, trained_digits_model
from torch import nn

from reslab.device import cpu_bf16_support
from reslab.errors import ConfigError
from reslab.export import optimize_for_inference
from reslab.export.parity import TOLERANCES


@pytest.fixture(scope="module", autouse=True)
def _small_ops_on_one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def model():
    return trained_digits_model()


@pytest.fixture(scope="module")
def val():
    return split_tensors("test")  # 359 held-out images


def _eager(model, x):
    with torch.no_grad():
        return model(x)


def test_fp32_eager_path_is_the_same_function(model, val):
    x, y = val
    fast = optimize_for_inference(model, x[:32], "fp32", backend="eager", log=None)
    assert fast.info.precision == "fp32" and fast.info.folded == 19 and fast.info.channels_last
    ref, out = _eager(model, x), fast(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())


@pytest.mark.skipif(
    not cpu_bf16_support()[0], reason="this CPU has no native bf16 (auto picks fp32)"
)
def test_auto_picks_bf16_and_stays_close_on_real_images(model, val):
    x, y = val
    fast = optimize_for_inference(model, x[:64], log=None)  # precision="auto"
    info = fast.info
    assert info.precision == "bf16" and info.backend == "eager" and info.channels_last
    assert "amx_bf16" in " ".join(info.reasons) or "avx512_bf16" in " ".join(info.reasons)
    ref, out = _eager(model, x), fast(x)
    max_rel, _ = TOLERANCES["bf16"]
    assert (out - ref).abs().max().item() <= max_rel * max(1.0, ref.abs().max().item())
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agree >= 0.97, f"top-1 agreement {agree:.3f}"
    assert abs(top1(out, y) - top1(ref, y)) <= 0.02
    assert top1(ref, y) > 0.8  # the model really is trained


def test_odd_batch_sizes_and_interface(model, val):
    x, _ = val
    fast = optimize_for_inference(model, x[:16], "fp32", backend="eager", log=None)
    for n in (1, 5, 37):
        torch.testing.assert_close(fast(x[:n]), _eager(model, x[:n]), rtol=1e-4, atol=1e-4)
    assert fast.classes == model.classes and fast.preprocess == model.preprocess
    assert "fp32" in fast.description
    with pytest.raises(RuntimeError, match="inference only"):
        fast.train()
    assert fast.eval() is fast and not fast.training
    with pytest.raises(ConfigError, match="example_input"):
        optimize_for_inference(model, x[0], log=None)
    with pytest.raises(ConfigError, match="precision"):
        optimize_for_inference(model, x[:4], "int4", log=None)


def test_fp16_on_cpu_falls_back_and_says_why(model, val):
    x, _ = val
    messages = []
    fast = optimize_for_inference(model, x[:8], "fp16", backend="eager", log=messages.append)
    expected = "bf16" if cpu_bf16_support()[0] else "fp32"
    assert fast.info.precision == expected
    assert any("fp16 ->" in m and "not fast on CPU" in m for m in fast.info.fallbacks)
    assert any(m.startswith("optimize_for_inference fallback: fp16") for m in messages)


def test_int8_on_eager_backend_falls_back_with_reason(model, val):
    x, _ = val
    fast = optimize_for_inference(model, x[:8], "int8", backend="eager", log=None)
    assert fast.info.precision in ("bf16", "fp32")
    assert any("int8" in note and "compile" in note for note in fast.info.fallbacks)


class _Cancelling(nn.Module):
    """Logits = a - b with a, b ~ 1e4: bf16 (8-bit mantissa) cannot represent the difference."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)
        with torch.no_grad():
            self.fc.weight.normal_(0, 1)
            self.fc.bias.fill_(1e4)

    def forward(self, x):
        z = self.bn(self.conv(x)).mean((2, 3))
        return self.fc(z) - 1e4


def test_validation_rejects_a_format_that_disagrees(val):
    x, _ = val
    model = _Cancelling().eval()
    fast = optimize_for_inference(model, x[:32], "bf16", backend="eager", log=None)
    assert fast.info.precision == "fp32"
    assert any("bf16 eager rejected" in n and "parity FAIL" in n for n in fast.info.fallbacks)
    torch.testing.assert_close(fast(x[:32]), _eager(model, x[:32]), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_int8_runs_and_its_accuracy_drop_is_measured(model, val, capsys):
    from reslab.export.quantize import int8_backend

    if int8_backend()[0] is None:
        pytest.skip(int8_backend()[1])
    x, y = val
    calibration, _ = split_tensors("train", 256)  # calibrate on training images, judge on test
    fast = optimize_for_inference(
        model, x[:64], "int8", calibration=calibration, validation=(x, y), log=print
    )
    info = fast.info
    assert info.precision == "int8" and info.backend == "compile", info.fallbacks
    acc = info.int8_accuracy
    ref = _eager(model, x)
    assert acc["n"] == len(y) and acc["fp32_top1"] == pytest.approx(top1(ref, y))
    out = fast(x)  # 359 images: 5 full batches of 64 and one zero-padded one
    assert acc["int8_top1"] == pytest.approx(top1(out, y))
    assert acc["drop_points"] == pytest.approx(100 * (acc["fp32_top1"] - acc["int8_top1"]))
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.9
    assert "int8 accuracy on 359 validation images" in capsys.readouterr().out
    fast.eval()  # the exported int8 graph inside refuses .eval(); the wrapper must not forward it
