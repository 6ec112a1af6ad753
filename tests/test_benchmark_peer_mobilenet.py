"""The Torch-Pruning peer's MobileNetV2 port (``benchmarks/peer_torch_mobilenet.py``): loaded
with a Keras zoo MobileNetV2's weights it computes the Keras function and counts its MACs as
epkd_tf does, and it refuses a Keras accuracy it does not reproduce (fast; the ResNet port's
twin is in test_benchmark_scripts.py). Needs the peer's virtual environment
(``benchmarks/.peer-venv``, made by ``benchmarks/peers.py:peer_python()``) and is skipped
without it rather than installing PyTorch from a test.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_benchmark_scripts import load_residual

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
PEER_PYTHON = BENCHMARKS / ".peer-venv" / "bin" / "python"


@pytest.mark.skipif(not PEER_PYTHON.exists(),
                    reason=f"the peer's virtual environment {PEER_PYTHON.parent.parent} does "
                           "not exist (python benchmarks/peers.py makes it)")
def test_mobilenet_port_computes_the_keras_function(tmp_path, monkeypatch):
    """Random BatchNorm statistics (so eps and every moving statistic matter), 32x32 inputs
    (stride-2 'same' padding of even inputs, the zoo's small-input strides), a scaled-up
    logits layer (so a misplaced window shows in the logits): same logits, same
    parameters, same MACs in epkd_tf's count; a Keras accuracy or MAC count the port does
    not reproduce is refused (exit 3, no pruning). (On this model a port padding the
    strided convs symmetrically differs by ~3e-3 in its logits, against ~6e-6 for the right
    one: the test's bound of 1e-3 catches it.)"""
    export = load_residual(monkeypatch).keras_weights   # the frontier's exporter
    import tf_keras
    from epkd_tf.graph.count import model_macs
    from epkd_tf.models import build_model
    rng = np.random.default_rng(0)
    model = build_model("mobilenet_v2", (32, 32, 1), 10, width=0.35)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights([rng.uniform(0.5, 1.5, shapes[0]), rng.normal(0, 0.2, shapes[1]),
                               rng.normal(0, 0.2, shapes[2]), rng.uniform(0.5, 2.0, shapes[3])])
    logits_layer = model.get_layer("logits")
    kernel, bias = logits_layer.get_weights()
    logits_layer.set_weights([kernel * 30, bias])
    weights = tmp_path / "weights.npz"
    np.savez(weights, **export(model))
    x = rng.uniform(0, 1, (64, 32, 32, 1)).astype("float32")
    logits = model.predict(x, verbose=0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x, y_train=logits.argmax(1), x_test=x, y_test=logits.argmax(1),
             keras_test_logits=logits)
    macs = model_macs(model)

    def port(keras_accuracy, keras_macs):
        out = tmp_path / f"port_{keras_accuracy}_{keras_macs}.json"
        result = subprocess.run([str(PEER_PYTHON), str(BENCHMARKS / "peer_torch_mobilenet.py"),
                                 f"--teacher={weights}", f"--data={data}",
                                 f"--keras_test_accuracy={keras_accuracy}",
                                 f"--keras_macs={keras_macs}", "--check_port_only",
                                 f"--out={out}"],
                                capture_output=True, text=True)
        return result, json.loads(out.read_text())

    result, same = port(1.0, macs)
    assert result.returncode == 0, result.stderr[-2000:]
    assert same["port_ok"] and same["torch_teacher_test_accuracy"] == 1.0
    assert same["max_logit_error"] < 1e-3
    assert same["teacher_macs"] == macs
    assert same["teacher_params"] == model.count_params()
    for keras_accuracy, keras_macs in [(0.5, macs), (1.0, macs + 1)]:
        result, refused = port(keras_accuracy, keras_macs)
        assert result.returncode == 3 and not refused["port_ok"] and "macs" not in refused
        assert "DIFFERS" in result.stdout
