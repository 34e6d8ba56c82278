#!/usr/bin/env bash
# CUDA correctness and speed check, run on a lent GPU machine (see docs/benchmarks.md).
# Usage: bash scripts/gpu_check.sh OUT_DIR [FASHION_MNIST_DIR]
# It trains resnet20 on Fashion-MNIST with `--device cuda` (bare, no index), fine-tunes the
# shipped weights on digits, runs the export parity check on CUDA-trained weights, and the
# inference/training bench against torchvision on the GPU.
set -uo pipefail
out=${1:?OUT_DIR}; fm=${2:-/usr/share/datasets/fashion-mnist}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 RESLAB_OFFLINE=1
python3 - <<'PY' 2>&1 | tee "$out/cuda_sanity.txt"
import torch, reslab
from reslab.export import optimize_for_inference
print("torch", torch.__version__, torch.cuda.get_device_name(0))
for name in ["resnet50", "resnet50d", "resnext50_32x4d", "resnet20", "preact_resnet20", "wrn16_4"]:
    m = reslab.create_model(name).cuda().to(memory_format=torch.channels_last)
    size = m.default_cfg["input_size"]
    x = torch.randn(8, *size, device="cuda").to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m(x).float().logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    fast = optimize_for_inference(m, x[:2], precision="auto", validate=True)
    with torch.no_grad():
        ref = m(x); got = fast(x)
    agree = (ref.argmax(1) == got.argmax(1)).float().mean().item()
    print(f"{name:18s} fwd/bwd ok  optimized: {fast.description}  max|diff| {(ref-got).abs().max().item():.3g}  top1 agree {agree:.2f}")
PY
python3 -m reslab train --data "fashion-mnist:$fm" --config configs/fmnist_resnet20.yaml --device cuda \
  --out /tmp/gpu_run overwrite=true 2>&1 | tail -n 12 | tee "$out/train_cuda.txt"
python3 -m reslab evaluate --checkpoint /tmp/gpu_run --json > "$out/evaluate_cuda.json" 2> "$out/evaluate_cuda.err"
python3 -m reslab export --checkpoint /tmp/gpu_run --format onnx --out /tmp/gpu_export 2>&1 | tail -n 6 | tee "$out/export.txt"
python3 -m reslab bench --model resnet50 --batch-size 64 --device cuda --mode both --no-int8 --json > "$out/bench_cuda_resnet50.json" 2> "$out/bench.err"
tail -n 3 "$out/bench.err"
echo "gpu_check done"
