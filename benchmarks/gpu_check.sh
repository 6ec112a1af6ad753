#!/usr/bin/env bash
# The scale benchmark (benchmarks/scale.py, issue #24 §4) on a machine with GPUs, written to
# the sections scale_gpu_* of docs/benchmarks/scale.md next to the CPU figures:
#
#   1. float32, one GPU                      (the baseline of the same card)
#   2. mixed precision (--precision=mixed_float16) + XLA (--jit_compile), one GPU
#   3. the same with --distribution=mirrored: tf.distribute.MirroredStrategy over every
#      visible GPU (--batch_size is the global batch, so it is scaled by the GPU count)
#
# Mixed precision and XLA are epkd_tf's own flags: --precision (layers compute in float16,
# float32 variables and logits, loss scaling; every export a float32 copy) and
# --jit_compile (teacher training and distillation train steps; op determinism is off
# with it, as XLA has no deterministic max-pooling gradient). Both paths are tested on a
# CPU (tests/test_precision.py). A run that stops anyway gets its section all the same
# ("the run did not finish") and the next step goes on.
#
# Usage (from the repository root, with epkd_tf's environment active):
#   bash benchmarks/gpu_check.sh [WORK_DIR]
# Sizes can be changed through the environment: NETWORKS, IMAGES, CLASSES, IMAGE_SIZE,
# BATCH (per GPU), EVAL_IMAGES; defaults: ImageNet's shape at a size a GPU does in minutes.
# Exit status: that of the first step that fails (each step's figures are written as it ends).
set -euo pipefail

cd "$(dirname "$0")/.."
WORK_DIR="${1:-${TMPDIR:-/tmp}/epkd_scale_gpu}"
NETWORKS="${NETWORKS:-mobilenet_v2,resnet50}"
IMAGES="${IMAGES:-5000,5000}"
CLASSES="${CLASSES:-1000}"
IMAGE_SIZE="${IMAGE_SIZE:-224}"
BATCH="${BATCH:-64}"
EVAL_IMAGES="${EVAL_IMAGES:-1000}"

GPUS="$(python -c 'import epkd_tf, tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))')"
if [ "${GPUS}" -lt 1 ]; then
  echo "error: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty): run this on a GPU machine; the CPU figures come from python benchmarks/scale.py" >&2
  exit 2
fi
echo "${GPUS} GPU(s): $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | paste -sd';' || echo unknown)"

common=(--networks="${NETWORKS}" --images="${IMAGES}" --classes="${CLASSES}"
        --image_size="${IMAGE_SIZE}" --eval_images="${EVAL_IMAGES}" --seed=0
        --work_dir="${WORK_DIR}")

python benchmarks/scale.py "${common[@]}" --batch_size="${BATCH}" --section=scale_gpu_float32
python benchmarks/scale.py "${common[@]}" --batch_size="${BATCH}" --section=scale_gpu_mixed_xla \
  --precision=mixed_float16 --jit_compile
python benchmarks/scale.py "${common[@]}" --batch_size="$((BATCH * GPUS))" \
  --section=scale_gpu_mixed_xla_mirrored --precision=mixed_float16 --jit_compile \
  --distribution=mirrored
echo "figures written to docs/benchmarks/scale.md (sections scale_gpu_*)"
