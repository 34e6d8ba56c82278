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
# Everything lands in OUT_DIR; gpu_check.tar.gz holds the run folders.
set -uo pipefail
out=${1:?OUT_DIR}; budget=${2:-240}; steps=" ${3:-1 2 3} "
mkdir -p "$out"; work=$(mktemp -d)
export PYTHONUNBUFFERED=1 RESLAB_OFFLINE=1
t0=$SECONDS
stamp() { echo "[gpu_check +$((SECONDS - t0)) s] $*"; }
step() { [[ $steps == *" $1 "* ]] && stamp "$*"; }

if step 1 correctness; then
  python3 scripts/gpu_check.py --device cuda 2>&1 | tee "$out/cuda_sanity.txt"
fi

if step 2 speed; then
  python3 -m reslab bench --model resnet50 --batch-size 64 --device cuda --mode both --no-int8 --json \
    > "$out/bench_cuda_resnet50.json" 2> "$out/bench.err"; tail -n 4 "$out/bench.err"
  python3 benchmarks/bench_train.py --device cuda --out "$out/train_cuda.json" 2>&1 | tail -n 12 | tee "$out/bench_train.txt"
fi

step 3 training runs || { stamp done; exit 0; }
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
