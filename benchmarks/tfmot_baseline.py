"""The in-ecosystem baseline of ``benchmarks/peers.py``: TF-MOT's plain magnitude pruning.

    python benchmarks/tfmot_baseline.py --work=DIR --ratio=10 --seed=0 --out=result.json

The shared LeNet-5 teacher (``compression_setup.py``) wrapped by
``tfmot.sparsity.keras.prune_low_magnitude`` with a ``PolynomialDecay`` schedule from 0 to
the sparsity that leaves 1/ratio of the kernel weights, fine-tuned on hard labels (no
distillation: TF-MOT's own recipe) for the protocol's whole training budget (5 × 2 = 10
epochs, Adam 5e-4, batch 128) on ``train[:90%]``, then ``strip_pruning``. Writes the
nonzero parameters, test accuracy and the float TFLite latency (the zeros are still
stored and multiplied: no speed-up) as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import epkd_tf  # noqa: E402,F401  (Keras 2 for TensorFlow, before it is imported)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--ratio", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import numpy as np
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from epkd_tf.budget import multiply_accumulates
    from epkd_tf.deploy import tflite as metrics
    from epkd_tf.config import DataConfig
    from epkd_tf.data import load_data
    from epkd_tf.graph import nonzero_params
    from compression_setup import EPOCHS_PER_STEP, STEPS, TRAIN_SPLIT, teacher
    tf_keras.utils.set_random_seed(args.seed)
    data = load_data(DataConfig(dataset="mnist", data_dir=os.path.join(args.work, "tfds"),
                                train_split=TRAIN_SPLIT, seed=args.seed))
    model = tf_keras.models.load_model(teacher(args.work, os.path.join(args.work, "tfds")),
                                       compile=False)
    total = nonzero_params(model)
    kernels = sum(int(np.prod(w.shape)) for w in model.trainable_weights if len(w.shape) >= 2)
    others = total - kernels
    target = total / args.ratio
    final_sparsity = 1.0 - (target - others) / kernels
    epochs = STEPS * EPOCHS_PER_STEP
    steps = math.ceil(data.spec.num_train / data.cfg.batch_size) * epochs
    sparsity = tfmot.sparsity.keras
    schedule = sparsity.PolynomialDecay(initial_sparsity=0.0, final_sparsity=final_sparsity,
                                        begin_step=0, end_step=int(steps * 0.8), frequency=50)
    wrapped = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
    wrapped.compile(optimizer=tf_keras.optimizers.Adam(5e-4),
                    loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    wrapped.fit(data.train(), epochs=epochs, verbose=0,
                callbacks=[sparsity.UpdatePruningStep()])
    pruned = sparsity.strip_pruning(wrapped)
    seconds = time.perf_counter() - start
    from epkd_tf.training import accuracy
    flatbuffer = metrics.to_tflite(pruned)
    result = {"ratio": args.ratio, "seed": args.seed, "params": nonzero_params(pruned),
              "dense_params": int(sum(w.size for w in pruned.get_weights())),
              "test_accuracy": accuracy(pruned, data.test()),
              "latency_ms": metrics.tflite_latency_ms(flatbuffer, runs=200),
              "macs": multiply_accumulates(pruned), "seconds": seconds}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
