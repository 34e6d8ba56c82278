#!/usr/bin/env bash
# Every number and figure in docs/results/ comes from a command in this file, run on the
# machine named in each results page (2 CPU cores, no GPU, shared with other jobs; the ones
# marked "one GPU" ran on a lent GPU machine, as their pages say).
#
#   scripts/run_experiments.sh gradients    # gradient norms at initialisation       (~1 min quiet)
#   scripts/run_experiments.sh degradation  # plain vs residual, 20 and 56 layers     (~10 min quiet)
#   scripts/run_experiments.sh degradation_gpu  # the same on all 54,000 images, 6 epochs (~2 min, one GPU)
#   scripts/run_experiments.sh transfer     # Fashion-MNIST weights vs scratch, digits (~10 min quiet)
#   scripts/run_experiments.sh transfergradual  # its gradual arms rerun after a fix, joined  (~2 min quiet)
#   scripts/run_experiments.sh timing       # seconds per epoch of the three recipes  (~3 min quiet)
#   scripts/run_experiments.sh sweep        # accuracy after E epochs, 36 recipes     (~20 min on one GPU)
#   scripts/run_experiments.sh cost         # CPU seconds per epoch of 7 nets          (~5 min quiet)
#   scripts/run_experiments.sh fast         # configs/fmnist_fast.yaml, seed 0         (~26 min, 1 thread)
#   scripts/run_experiments.sh fast2t       # configs/fmnist_fast.yaml, seeds 1 2 0, 2 threads (~50 min idle)
#   scripts/run_experiments.sh fastfused    # configs/fmnist_fast.yaml, seeds 0 1 2, 2 threads, fused kernel (~35 min)
#   scripts/run_experiments.sh fastprogressive  # the same with progressive resizing 16 -> 28 px (~33 min)
#   scripts/run_experiments.sh fast5min     # what 5 minutes buy: the fast recipe in 6 epochs, 3 seeds (~18 min)
#   scripts/run_experiments.sh fast3seeds   # configs/fmnist_fast.yaml, 3 seeds       (~80 min)
#   scripts/run_experiments.sh best         # configs/fmnist_best.yaml                (2 hours)
#   scripts/run_experiments.sh figures      # redraw the figures into docs/results/img/
#
# Results land in $EXP_OUT (default runs/exp/<experiment>/): JSON, Markdown table, PNG and
# run folders. Set RESLAB to another launcher if needed (default: python -m reslab).
set -eu
cd "$(dirname "$0")/.."
RESLAB=${RESLAB:-"python -m reslab"}
# The results pages were measured with OMP_NUM_THREADS=1 while other jobs shared the 2 cores:
# two threads per process spin at every barrier when the cores are oversubscribed (~5x slower
# here). On a quiet machine leave it unset (reslab then uses both cores).
OUT=${EXP_OUT:-runs/exp}
mkdir -p "$OUT"

case "${1:-}" in
gradients)
  # docs/results/degradation.md, "at initialisation": 256 Fashion-MNIST images, 3 initialisations.
  $RESLAB experiment gradients --dataset fashion-mnist --batch 256 --seeds 0 1 2 --out "$OUT/gradients"
  ;;
degradation)
  # docs/results/degradation.md: the budget that fitted this session on a shared CPU (a seeded
  # random 5,000-image training subset, 5 epochs, batch 64; 1,000 test images every epoch);
  # drop --subset/--test-subset/--val-subset and raise --epochs for the full experiment.
  $RESLAB experiment degradation --dataset fashion-mnist --subset 5000 --test-subset 1000 \
    --val-subset 500 --epochs 5 --batch-size 64 --grad-seeds 0 --out "$OUT/degradation"
  # CIFAR-10, when its files are in $RESLAB_DATA_DIR/cifar10 (not downloadable on this machine):
  # $RESLAB experiment degradation --dataset cifar10 --epochs 30 --out "$OUT/degradation_cifar10"
  ;;
degradation_gpu)
  # docs/results/degradation.md, "the full training set": all 54,000 images, 6 epochs, the
  # four nets side by side on one GPU (one process each), then one table and one figure.
  for m in plain20 plain56 resnet20 resnet56; do
    $RESLAB experiment degradation --models $m --epochs 6 --device cuda --out "$OUT/degradation_gpu/$m" &
  done
  wait
  $RESLAB experiment degradation --merge "$OUT"/degradation_gpu/{plain20,plain56,resnet20,resnet56} \
    --out "$OUT/degradation_gpu/all"
  ;;
transfer)
  # docs/results/transfer.md: digits at 28 px with 5, 20 and all (~115) labels per class.
  $RESLAB experiment transfer --weights reslab:resnet20_fashion_mnist --labels 5 20 0 \
    --strategies linear full gradual discriminative --seeds 0 1 --steps 150 --out "$OUT/transfer"
  ;;
transfergradual)
  # docs/results/transfer.md: the gradual arms rerun after finetune.step_clip fixed their
  # collapse, joined with the first study (the rerun's arms replace the first run's); the
  # figure and docs/results/data/transfer.json come from the joined file.
  $RESLAB experiment transfer --weights reslab:resnet20_fashion_mnist --labels 5 20 0 \
    --strategies gradual --seeds 0 1 --steps 150 --out "$OUT/transfer_gradual"
  $RESLAB experiment transfer --merge "$OUT/transfer" "$OUT/transfer_gradual" --out "$OUT/transfer_merged"
  cp "$OUT/transfer_merged/transfer.json" docs/results/data/transfer.json
  ;;
timing)
  # docs/results/fashion-mnist.md, "time per epoch": a few training batches through `fit`.
  $RESLAB experiment headline --config fmnist_fast --time-batches 20 --out "$OUT/fmnist_fast_timing"
  $RESLAB experiment headline --config fmnist_best --time-batches 6 --out "$OUT/fmnist_best_timing"
  $RESLAB experiment headline --config tutorial_recipe --time-batches 3 --out "$OUT/tutorial_recipe_timing"
  # the fast recipe with wider or deeper nets, timed side by side (10 batches each)
  for m in resnet20 wrn28_2 wrn16_4 resnet56; do
    $RESLAB experiment headline --config fmnist_fast --time-batches 10 --out "$OUT/fast_timing_$m" \
      model.name=$m
  done
  ;;
sweep)
  # docs/results/fashion-mnist.md, "choosing the fast recipe": test accuracy at the end of
  # E-epoch schedules of 7 nets (and the best and tutorial recipes), 12 jobs at a time on a GPU
  # (the accuracy is what matters here, not the GPU's time). DEVICE=cpu works, for days.
  python scripts/sweep_headline.py --out "$OUT/sweep" --device "${DEVICE:-cuda}" --workers 12 --threads 1
  ;;
cost)
  # ... and the CPU's seconds per epoch of the same nets, interleaved rounds, then the figure.
  python scripts/sweep_headline.py --cpu-cost docs/results/data/fmnist_cpu_cost.json
  python scripts/sweep_headline.py --figure docs/results/data/fmnist_sweep_h100.json \
    docs/results/data/fmnist_cpu_cost.json docs/results/img/fmnist_fast_sweep.png
  ;;
fast)
  # docs/results/fashion-mnist.md: the fast recipe trained to the end on this CPU, test
  # accuracy (plain and with flip TTA) after every epoch against training seconds.
  $RESLAB experiment headline --config fmnist_fast --seeds 0 --tta-flip --out "$OUT/fast_cpu_1t" threads=1
  ;;
fast2t)
  # docs/results/fashion-mnist.md: seeds 1 and 2, then seed 0 again, with both cores
  # (reslab's default threads), measured when the machine was otherwise idle.
  $RESLAB experiment headline --config fmnist_fast --seeds 1 2 --tta-flip --out "$OUT/fast_cpu_2t"
  $RESLAB experiment headline --config fmnist_fast --seeds 0 --tta-flip --out "$OUT/fast_cpu_2t_seed0"
  ;;
fastfused)
  # docs/results/fashion-mnist.md: the three seeds again, after the fused BatchNorm + ReLU kernel.
  $RESLAB experiment headline --config fmnist_fast --seeds 0 --tta-flip --out "$OUT/fast_fused_seed0"
  $RESLAB experiment headline --config fmnist_fast --seeds 1 2 --tta-flip --out "$OUT/fast_fused_seeds12"
  ;;
fastprogressive)
  # docs/results/fashion-mnist.md: the fast recipe with smaller images in its first 7 epochs.
  $RESLAB experiment headline --config fmnist_fast --seeds 0 1 2 --tta-flip \
    --out "$OUT/fast_progressive" data.progressive_resize.min_size=16 data.progressive_resize.end_epoch=8
  ;;
fast5min)
  # docs/results/fashion-mnist.md: the accuracy a 5-minute budget reaches, the fast recipe's
  # one-cycle schedule compressed into the 6 epochs that fit in it.
  $RESLAB experiment headline --config fmnist_fast --seeds 0 1 2 --tta-flip \
    --out "$OUT/fast_5min" epochs=6
  ;;
fast3seeds)
  # the headline claim in full: mean of 3 seeds on this CPU.
  $RESLAB experiment headline --config fmnist_fast --seeds 0 1 2 --tta-flip --out "$OUT/fast"
  ;;
best)
  $RESLAB experiment headline --config fmnist_best --seeds 0 --tta-flip --out "$OUT/best"
  ;;
figures)
  # the CPU epoch times of the best and tutorial recipes: `timing` on the near-idle machine,
  # one thread (EXP_OUT=runs/exp_quiet1 OMP_NUM_THREADS=1 scripts/run_experiments.sh timing)
  TIMING=${TIMING:-runs/exp_quiet1}
  python -m reslab.experiments.figures "$OUT" docs/results/img
  python scripts/sweep_headline.py --figure docs/results/data/fmnist_sweep_h100.json \
    docs/results/data/fmnist_cpu_cost.json docs/results/img/fmnist_fast_sweep.png
  # the recipes trained here, from the copies of their headline.json in docs/results/data/
  D=docs/results/data
  python scripts/sweep_headline.py --figure-headline $D/fmnist_sweep_h100.json \
    "$TIMING/fmnist_best_timing/timing.json" "$TIMING/tutorial_recipe_timing/timing.json" \
    docs/results/img/fmnist_accuracy_vs_time.png \
    "fast (wrn16_2)=$D/fmnist_fast_cpu_seed0_2t.json+$D/fmnist_fast_cpu_seeds12_2t.json" \
    "fast, fused kernel=$D/fmnist_fast_cpu_seed0_fused.json+$D/fmnist_fast_cpu_seeds12_fused.json" \
    "fast, fused kernel, progressive resizing=$D/fmnist_fast_cpu_progressive.json" \
    "fast, fused kernel, 6 epochs (5 minutes)=$D/fmnist_fast_cpu_5min.json" \
    "best (wrn28_2)=$D/fmnist_best_cpu.json"
  ;;
*)
  sed -n 2,24p "$0"
  exit 2
  ;;
esac
