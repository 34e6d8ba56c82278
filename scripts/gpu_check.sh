#!/usr/bin/env bash
# CUDA correctness and speed check, run on a lent GPU machine (see docs/benchmarks.md).
# Usage: bash scripts/gpu_check.sh OUT_DIR [SECONDS] [STEPS]   (STEPS: default "1 2 3")
#   Fashion-MNIST is read from $RESLAB_DATA_DIR/fashion-mnist (or the Debian package's folder).
# In order, with the GPU to itself for the first two steps:
#   1. scripts/gpu_check.py: model families, layout-keeping autograd Functions, inference path;
#   2. speed: `reslab bench` (inference + training) and benchmarks/bench_train.py on CUDA;
#   3. side by side: resnet20 trained with `--device cuda` (bare, no index), evaluated and
#      exported to ONNX with its parity check; the same with `compile=true`; and
#      configs/fmnist_best.yaml (accuracy cross-check of the CPU run), stopped by SIGTERM after
#      SECONDS and resumed with `reslab train --resume` to its end (the resume check on CUDA).
# Issue 21 (GPU speed), each step with the GPU to itself, ~8 min for "4 5 6" on an H200:
#   4. Fashion-MNIST on the GPU: no host sync per step (scripts/gpu_check.py --checks sync),
#      the learning-rate sweep of fmnist_fast_gpu (1 seed per lr, in parallel;
#      the best lr -> fmnist_gpu_lr_sweep.json), then its headline: 3 seeds with that lr,
#      eager, and 1 seed with compile=true compile_mode=reduce-overhead (CUDA graphs);
#   5. resnet50 training at batch 256: `reslab bench --mode train --train-compile` (reslab's
#      engine step vs torchvision bf16+cl eager, fused SGD, compile, CUDA graphs);
#   6. a JPEG folder decoded on the GPU: benchmarks/bench_loader.py --device cuda.
# Everything lands in OUT_DIR; gpu_check.tar.gz holds the run folders.
# GPU_CHECK_SMOKE=1 runs steps 4-6 on the CPU with tiny sizes (checks this script's glue).
set -uo pipefail
out=${1:?OUT_DIR}; budget=${2:-240}; steps=" ${3:-1 2 3} "
mkdir -p "$out"; work=$(mktemp -d)
export PYTHONUNBUFFERED=1 RESLAB_OFFLINE=1
t0=$SECONDS
stamp() { echo "[gpu_check +$((SECONDS - t0)) s] $*"; }
step() { [[ $steps == *" $1 "* ]] && stamp "$*"; }
dev=cuda; lrs="0.4 0.6 0.8 1.2"; seeds="0 1 2"
fm_sync=(--data fashion-mnist --batch 512 --steps 20)
fm_over=(device=cuda); r50=(--model resnet50 --batch-size 256 --iters 10 --warmup 3); jpeg=()
if [[ ${GPU_CHECK_SMOKE:-0} == 1 ]]; then
  dev=cpu; lrs="0.2 0.4"; seeds="0"
  fm_sync=(--data digits --batch 32 --steps 2)
  fm_over=(device=cpu data.source=digits epochs=1 data.batch_size=64 model.name=resnet20 precision=fp32 threads=1)
  r50=(--model resnet18 --batch-size 2 --image-size 32 --iters 1 --warmup 1); jpeg=(--quick)
fi

if step 4 fashion-mnist on the GPU; then
  python3 scripts/gpu_check.py --device $dev --checks sync "${fm_sync[@]}" --out "$out/fmnist_no_sync.json" \
    2>&1 | tail -n 4 | tee "$out/fmnist_no_sync.txt"
  fast=fmnist_fast_gpu
  for lr in $lrs; do  # test accuracy after the last epoch only (--test-every 100)
    timeout 150 python3 -m reslab experiment headline --config $fast --seeds 0 --test-every 100 \
      --out "$work/lr$lr" "${fm_over[@]}" optim.lr=$lr > "$work/lr$lr.log" 2>&1 &
  done
  wait
  best_lr=$(python3 scripts/gpu_check.py --pick-lr "$work" "$out/fmnist_gpu_lr_sweep.json" $lrs)
  stamp "lr sweep: $(tr -d '\n ' < "$out/fmnist_gpu_lr_sweep.json" | head -c 400); headline with optim.lr=$best_lr"
  timeout 200 python3 -m reslab experiment headline --config $fast --seeds $seeds --tta-flip \
    --out "$work/fast_gpu" "${fm_over[@]}" optim.lr=$best_lr > "$work/fast_gpu.log" 2>&1
  cp "$work/fast_gpu/headline.json" "$out/fmnist_fast_gpu_headline.json"
  timeout 150 python3 -m reslab experiment headline --config $fast --seeds 0 --tta-flip --out "$work/fast_gpu_graphs" \
    "${fm_over[@]}" optim.lr=$best_lr compile=true compile_mode=reduce-overhead > "$work/fast_gpu_graphs.log" 2>&1
  cp "$work/fast_gpu_graphs/headline.json" "$out/fmnist_fast_gpu_graphs_headline.json"
  tail -n 2 "$work/fast_gpu.log" "$work/fast_gpu_graphs.log" | tee "$out/fmnist_fast_gpu.txt"
fi

if step 5 resnet50 training at batch 256; then
  timeout 300 python3 -m reslab bench "${r50[@]}" --device $dev --mode train --train-compile \
    --compile-mode reduce-overhead --json > "$out/bench_train_resnet50_b256.json" 2> "$out/bench_train.err"
  tail -n 3 "$out/bench_train.err"
  python3 -m json.tool "$out/bench_train_resnet50_b256.json" | grep -E '"(name|images_per_s|vs_bf16cl|note)"'
fi

if step 6 JPEG folder decoded on the GPU; then
  python3 scripts/gpu_check.py --device $dev --checks decode 2>&1 | tail -n 3 | tee "$out/decode_check.txt"
  timeout 150 python3 benchmarks/bench_loader.py --device $dev --cases device-jpeg "${jpeg[@]}" \
    --out "$out/loader_device_jpeg.json" 2>&1 | tail -n 4 | tee "$out/loader_device_jpeg.txt"
fi
[[ $steps == *" 3 "* ]] || { mkdir -p "$out/logs"; cp "$work"/*.log "$out/logs/" 2>/dev/null; stamp done; exit 0; }

if step 1 correctness; then
  python3 scripts/gpu_check.py --device cuda 2>&1 | tee "$out/cuda_sanity.txt"
fi

if step 2 speed; then
  python3 -m reslab bench --model resnet50 --batch-size 64 --device cuda --mode both --no-int8 --json \
    > "$out/bench_cuda_resnet50.json" 2> "$out/bench.err"; tail -n 4 "$out/bench.err"
  python3 benchmarks/bench_train.py --device cuda --out "$out/train_cuda.json" 2>&1 | tail -n 12 | tee "$out/bench_train.txt"
fi

step 3 training runs
fm=(--data fashion-mnist --config fmnist_resnet20 --device cuda)
( python3 -m reslab train "${fm[@]}" --out "$work/r20" overwrite=true > "$work/r20.log" 2>&1 \
  && python3 -m reslab evaluate --checkpoint "$work/r20" --json > "$work/evaluate.json" 2> "$work/evaluate.err" \
  && python3 -m reslab export --checkpoint "$work/r20" --format onnx --out "$work/r20_onnx" > "$work/export.log" 2>&1 ) &
( python3 -m reslab train "${fm[@]}" --epochs 2 --out "$work/r20_compile" compile=true overwrite=true \
  > "$work/r20_compile.log" 2>&1 ) &
timeout "$budget" python3 -m reslab experiment headline --config fmnist_best --seeds 0 --tta-flip \
  --out "$work/best" device=cuda threads=4 > "$work/best.log" 2>&1 &
wait
stamp "fmnist_best: resume to the end, then test accuracy of its last checkpoint"
python3 -m reslab train --resume "$work/best/seed0" > "$work/best_resume.log" 2>&1
for tta in "" --tta; do
  python3 -m reslab evaluate --checkpoint "$work/best/seed0/checkpoints/last.pt" --data fashion-mnist --json $tta \
    2> /dev/null | python3 -c "import json, sys; d = json.load(sys.stdin); print('$tta', d['split'], d['top1'])"
done | tee "$out/best_eval.txt"
stamp "done"
for f in r20.log r20_compile.log export.log best.log best_resume.log; do echo "== $f"; tail -n 5 "$work/$f"; done \
  | tee "$out/runs.txt"
cp "$work/evaluate.json" "$out/" 2>/dev/null
tar -czf "$out/gpu_check.tar.gz" -C "$work" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.onnx' .
echo "gpu_check done"
