"""CUDA correctness checks for reslab's models, run on a lent GPU by scripts/gpu_check.sh.

    python scripts/gpu_check.py [--device cuda]

1. Every family trains one bf16-autocast, channels_last step (finite gradients) and its
   ``optimize_for_inference`` path agrees with the eager model.
2. The layout-keeping autograd Functions (``ZeroPadShortcut``, ``GlobalAvgPool``) give
   autograd's gradients on this device, in both layouts and in fp32/bf16, and return them
   in the input's layout.
3. Whole nets: gradients with those Functions equal the plain ops' gradients, and no op of
   a bf16 channels_last backward pass receives both memory layouts.

Runs on CPU too (``--device cpu``), which is how the script itself is checked before a
GPU is spent on it. Exits non-zero on the first failed check.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

import reslab
from reslab.export import optimize_for_inference
from reslab.models import GlobalAvgPool, ZeroPadShortcut, layers, mixed_layout_ops

FAMILIES = ["resnet50", "resnet50d", "resnext50_32x4d", "resnet20", "preact_resnet20", "wrn16_4"]
LAYOUT_NETS = ["resnet20", "preact_resnet20", "wrn16_2", "resnet18", "resnet50"]


def _input(model, batch: int, device) -> torch.Tensor:
    size = model.default_cfg["input_size"]
    return torch.randn(batch, *size, device=device).contiguous(memory_format=torch.channels_last)


def check_families(device, amp_dtype) -> None:
    for name in FAMILIES:
        torch.manual_seed(0)
        m = reslab.create_model(name).to(device).to(memory_format=torch.channels_last)
        x = _input(m, 8, device)
        with torch.autocast(device.type, dtype=amp_dtype):
            loss = m(x).float().logsumexp(1).mean()
        loss.backward()
        bad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not bad, f"{name}: missing or non-finite gradients in {bad[:3]}"
        m.eval()
        fast = optimize_for_inference(m, x[:2], precision="auto", validate=True, log=None)
        with torch.no_grad():
            ref, got = m(x), fast(x)
        agree = (ref.argmax(1) == got.argmax(1)).float().mean().item()
        diff = (ref - got).abs().max().item()
        print(f"{name:18s} fwd/bwd ok  optimized: {fast.info.describe()}  max|diff| {diff:.3g}  top1 agree {agree:.2f}")


def check_layers(device) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(3, 16, 9, 9, device=device, dtype=dtype).contiguous(memory_format=layout)
            # the shortcut: slice + pad, against autograd's own backward
            a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
            y = ZeroPadShortcut(2, 32)(a)
            g = torch.randn(y.shape, device=device, dtype=dtype)
            y.backward(g)
            F.pad(b[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)).backward(g)
            assert y.is_contiguous(memory_format=layout), "shortcut output changed layout"
            assert torch.equal(a.grad, b.grad), f"shortcut gradient differs ({dtype}, {layout})"
            assert a.grad.is_contiguous(memory_format=layout), "shortcut gradient changed layout"
            # the pool: mean over H, W
            a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
            y = GlobalAvgPool()(a)
            g = torch.randn(y.shape, device=device, dtype=dtype)
            y.backward(g)
            F.adaptive_avg_pool2d(b, 1).backward(g)
            tol = dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
            torch.testing.assert_close(a.grad, b.grad, **tol)
            assert a.grad.is_contiguous(memory_format=layout), "pool gradient changed layout"
    print(f"layout-keeping Functions: gradients equal autograd's on {device} (fp32, bf16; both layouts)")


def _grads(model, x) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x).float().logsumexp(1).mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def check_nets(device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    for name in LAYOUT_NETS:
        torch.manual_seed(0)
        m = reslab.create_model(name, num_classes=10).to(device).to(memory_format=torch.channels_last).train()
        x = _input(m, 4, device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            ours = _grads(m, x)
        keep = layers._needs_grad_fn
        layers._needs_grad_fn = lambda t: False  # the plain slice/pad and adaptive pool
        try:
            plain = _grads(m, x)
        finally:
            layers._needs_grad_fn = keep
        worst = max(((ours[k] - plain[k]).abs().max() / plain[k].abs().max().clamp_min(1e-12)).item() for k in ours)
        assert worst < 1e-4, f"{name}: gradients differ from the plain ops' by {worst:.3g} (relative)"
        mixed = mixed_layout_ops(m, x, torch.bfloat16)
        assert not mixed, f"{name}: backward ops on mixed layouts: {sorted(set(mixed))[:5]}"
        print(f"{name:18s} grads match plain ops (worst rel {worst:.2g}); bf16 cl backward: no mixed layouts")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        print("torch", torch.__version__, torch.cuda.get_device_name(device))
    check_layers(device)
    check_nets(device)
    check_families(device, torch.bfloat16)
    print("gpu_check.py: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
