"""tf.distribute: strategy registry, MirroredStrategy over 2 logical CPUs vs one device."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from epkd_tf import distribute

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")


def test_registry_and_errors(monkeypatch):
    assert distribute.strategy_names() == ["default", "mirrored", "multi_worker_mirrored",
                                           "tpu"]
    with pytest.raises(ValueError, match="--distribution='nccl' is unknown"):
        distribute.make_strategy("nccl")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        distribute.make_strategy("multi_worker_mirrored")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not a valid cluster description"):
        distribute.check_tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 3}}))
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.check_tf_config()
    assert distribute.is_chief(distribute.make_strategy("default"))


def test_mirrored_over_two_cpus_matches_one_device():
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, "mirrored_vs_one_device.py")],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    one, two = out["one"], out["two"]
    # Same global batch, loss averaged over it: the same training within float tolerance.
    np.testing.assert_allclose(two["distill_loss"], one["distill_loss"], rtol=1e-4)
    np.testing.assert_allclose(two["distill_acc"], one["distill_acc"], atol=1e-6)
    np.testing.assert_allclose(two["classifier_loss"], one["classifier_loss"], rtol=1e-4)
    for a, b in zip(one["student"], two["student"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-5)
