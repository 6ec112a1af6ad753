"""Benchmark: every keras.applications classifier through epkd_tf, written to its page
docs/benchmarks/keras_applications.md.

    python benchmarks/keras_applications.py [--models=MobileNetV2,ConvNeXtTiny] [--runs=20]

For each classifier of Keras 3's ``keras.applications`` (random weights, 10 classes, no
softmax, the smallest input it allows: 32x32, 75x75 for the Inceptions, 71x71 for
Xception, or ``--size``): saved as ``.keras``, converted with
``epkd_tf.models.keras3.load_keras3`` and compared with the Keras 3 outputs on 0..255
inputs (max absolute error, and relative to the largest logit); pruned structurally by
``l1_filter`` to half its MACs (``budget="macs"``); the pruned model written back to Keras 3
(``save_keras3``, reloaded by plain ``keras.models.load_model`` and compared) and to float
TFLite; teacher and pruned TFLite files timed side by side (batch 1, one thread, median of
``--runs``, alternating rounds). Each model's row is kept in keras_applications.json next
to this script, so models can be run one process each (the 40 in one process would hold
every graph in memory); the section is rendered from all rows.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import epkd_tf  # noqa: E402  (Keras 2 before TensorFlow)
from epkd_tf.budget import multiply_accumulates  # noqa: E402
from epkd_tf.deploy import tflite as metrics  # noqa: E402
from epkd_tf.models.keras3 import load_keras3, save_keras3  # noqa: E402

from benchmarks_md import page, replace_section  # noqa: E402

SECTION = "keras_applications"
ROWS = Path(__file__).resolve().with_name("keras_applications.json")
SMALLEST = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
TOLERANCE = 1e-5          # relative to the largest logit (see the section's text)
PERTURBATION = 1e-7       # relative input change for the Keras 3 model's own sensitivity
DAMPING = 0.3             # residual branches' last BatchNormalization gamma, for the re-check


def classifier_names():
    import keras
    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def relative(a, b) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))


def damp_residual_branches(model, factor: float = DAMPING) -> int:
    """Multiplies by ``factor`` the gamma of each BatchNormalization that ends a residual
    branch of a Keras 3 model (its only consumer is an ``Add``, possibly through
    ``Dropout``; a shortcut, read by the next block too, is left alone). A deep random net
    whose residual stream grows to 1e3 (EfficientNetV2L) amplifies float32 rounding until
    its logits are noise; damped, the same architecture stays well conditioned, so the
    conversion can be judged on it. Returns the number of layers damped."""
    import keras
    damped = 0
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Add):
            continue
        for tensor in layer._inbound_nodes[0].input_tensors:
            source = tensor._keras_history.operation
            while isinstance(source, keras.layers.Dropout):
                source = source._inbound_nodes[0].input_tensors[0]._keras_history.operation
            if (isinstance(source, keras.layers.BatchNormalization)
                    and len(source._outbound_nodes) == 1):
                source.gamma.assign(source.gamma * factor)
                damped += 1
    return damped


def self_sensitivity(model, x) -> float:
    """How far the Keras 3 model's own logits move when its input is multiplied by
    1 + PERTURBATION: the float32 rounding it amplifies, with no conversion involved."""
    return relative(np.asarray(model(x * np.float32(1 + PERTURBATION))), np.asarray(model(x)))


def bench_model(name: str, size: int, runs: int, seed: int) -> dict:
    import keras
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, name)(
        input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None)
    x = np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype("float32")
    row = {"name": name, "size": size, "params": int(model.count_params())}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        expected = np.asarray(model(x))
        teacher = load_keras3(path, None)
        got = teacher(x).numpy()
        row.update(abs_error=float(np.abs(got - expected).max()),
                   rel_error=relative(got, expected), logit_scale=float(np.abs(expected).max()),
                   macs=int(multiply_accumulates(teacher)))
        if row["rel_error"] > TOLERANCE:
            # Rounding amplified by the model itself, or a conversion bug? The Keras 3
            # model's own sensitivity, then the same check on its damped version.
            row["keras3_self_error"] = self_sensitivity(model, x)
            row["damped_layers"] = damp_residual_branches(model)
            damped_path = os.path.join(tmp, "damped.keras")
            model.save(damped_path)
            want = np.asarray(model(x))
            got = load_keras3(damped_path, None)(x).numpy()
            row.update(damped_abs_error=float(np.abs(got - want).max()),
                       damped_rel_error=relative(got, want),
                       damped_self_error=self_sensitivity(model, x))
        del model
        start = time.perf_counter()
        try:
            pruned = epkd_tf.prune(teacher, 0.5, criterion="l1_filter", budget="macs")
        except Exception as err:  # the table says why
            row["prune_error"] = " ".join(str(err).split())[:200]
            return row
        row.update(prune_s=time.perf_counter() - start,
                   pruned_params=int(pruned.count_params()),
                   pruned_macs=int(multiply_accumulates(pruned)))
        out = os.path.join(tmp, "pruned.keras")
        save_keras3(pruned, out)
        reference = pruned(x).numpy()
        row["keras3_rel_error"] = relative(np.asarray(keras.models.load_model(out)(x)),
                                           reference)
        blobs = [metrics.to_tflite(teacher), metrics.to_tflite(pruned)]
        row["tflite_rel_error"] = relative(
            metrics.tflite_predict(metrics.make_interpreter(blobs[1]), x), reference)
        timed = metrics.tflite_latency_side_by_side(blobs, runs=runs, rounds=5, warmup=3,
                                                    seed=seed)
        row["latency_ms"] = [median for median, _ in timed]
    return row


def converts(row) -> bool:
    """Within TOLERANCE; or, where the Keras 3 model itself amplifies rounding beyond it,
    within TOLERANCE once its residual branches are damped (well conditioned)."""
    return row["rel_error"] <= TOLERANCE or (
        row.get("keras3_self_error", 0.0) > TOLERANCE
        and row.get("damped_self_error", 1.0) <= TOLERANCE
        and row.get("damped_rel_error", 1.0) <= TOLERANCE)


def passed(row) -> bool:
    return ("pruned_macs" in row and converts(row)
            and abs(row["pruned_macs"] / row["macs"] - 0.5) <= 0.02
            and row["keras3_rel_error"] <= TOLERANCE and row["tflite_rel_error"] <= 1e-4)


def render(rows, total: int) -> str:
    ok = sum(passed(r) for r in rows)
    lines = [
        "## Every keras.applications classifier (`benchmarks/keras_applications.py`)", "",
        f"**{ok} of {total} keras.applications classifiers convert, prune and export** "
        f"({len(rows)} of {total} measured"
        + (f"; not yet: {', '.join(sorted(set(classifier_names()) - {r['name'] for r in rows}))}"
           if len(rows) < total else "")
        + f"). Measured {datetime.date.today()} on "
        f"{platform.machine()}, {os.cpu_count()} cores, CPU only, Keras 3 "
        f"{_keras_version()}. Keras 3 models with random weights, 10 classes, no softmax, "
        "at the smallest input each allows (32x32; 75x75 Inception; 71x71 Xception), "
        "converted by `load_keras3` and compared on two 0..255 images. Conversion error: "
        "max |tf_keras - Keras 3| over the logits, absolute and relative to the largest "
        "logit; the criterion is relative (<= 1e-5): both run the same float32 "
        "operations, in a different order in places, and the rounding grows with the "
        "logits' scale. Where a Keras 3 model is itself unstable in float32 (its logits "
        f"move by more than 1e-5 when its input is multiplied by 1 + {PERTURBATION:g}: "
        "\"Keras 3 vs itself\"), that error is float32 rounding the model amplifies, not "
        "the conversion's; the conversion is then judged on the same model with the gamma "
        "of each residual branch's last BatchNormalization multiplied by "
        f"{DAMPING:g} (\"damped\": well conditioned, \"itself\" <= 1e-5). "
        "Pruned by `l1_filter` to half the MACs (`budget=\"macs\"`), "
        "exported with `save_keras3` (reloaded by plain `keras.models.load_model`) and to "
        "float TFLite, both compared with the pruned tf_keras model. Speed-up: teacher / "
        "pruned float TFLite latency, batch 1, one thread, timed side by side (the machine "
        "is shared: rows are measured one process each, possibly at different loads, so "
        "compare speed-ups, not milliseconds across rows).", "",
        "| model | input | params (M) | conversion max error (abs / rel) "
        "| half the MACs | params (M) / MMACs after | Keras 3 / TFLite rel error "
        "| TFLite ms teacher / pruned | speed-up |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["name"]):
        head = (f"| {r['name']} | {r['size']} | {r['params'] / 1e6:.2f} "
                f"| {r['abs_error']:.1e} / {r['rel_error']:.1e}")
        if "damped_rel_error" in r:
            head += (f"; Keras 3 vs itself: {r['keras3_self_error']:.1e}; damped "
                     f"({r['damped_layers']} branches): {r['damped_abs_error']:.1e} / "
                     f"{r['damped_rel_error']:.1e}, itself {r['damped_self_error']:.1e}")
        head += " "
        if "pruned_macs" not in r:
            lines.append(head + f"| no: {r['prune_error']} | | | | |")
            continue
        t = r["latency_ms"]
        lines.append(
            head + f"| {'yes' if passed(r) else '**no**'} "
            f"({r['pruned_macs'] / r['macs']:.3f} of {r['macs'] / 1e6:.1f} MMACs) "
            f"| {r['pruned_params'] / 1e6:.2f} / {r['pruned_macs'] / 1e6:.1f} "
            f"| {r['keras3_rel_error']:.1e} / {r['tflite_rel_error']:.1e} "
            f"| {t[0]:.2f} / {t[1]:.2f} | {t[0] / t[1]:.2f}x |")
    return "\n".join(lines)


def _keras_version() -> str:
    import keras
    return keras.__version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated; default: all 40")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", type=int, default=0, help="input size (default: smallest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", action="store_true",
                        help="only write the section from the kept rows (no measurement)")
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()] or classifier_names()
    rows = {r["name"]: r for r in json.loads(ROWS.read_text())} if ROWS.exists() else {}
    for name in [] if args.render else names:
        start = time.perf_counter()
        size = args.size or SMALLEST.get(name, 32)
        try:
            rows[name] = bench_model(name, size, args.runs, args.seed)
        except Exception as err:  # recorded, so that one failure does not stop the run
            traceback.print_exc()
            rows[name] = {"name": name, "size": size, "params": 0, "abs_error": float("nan"),
                          "rel_error": float("nan"),
                          "prune_error": f"conversion failed: {' '.join(str(err).split())[:200]}"}
        ROWS.write_text(json.dumps(sorted(rows.values(), key=lambda r: r["name"]), indent=1))
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    replace_section(SECTION, render(list(rows.values()), len(classifier_names())), page(__file__))
    print(f"wrote section {SECTION} of {page(__file__)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
