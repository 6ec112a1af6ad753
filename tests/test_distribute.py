"""tf.distribute: strategy registry, MirroredStrategy over 2 logical CPUs vs one device."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from epkd_tf import distribute

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")


@pytest.mark.unit
def test_registry_and_errors(monkeypatch):
    assert distribute.strategy_names() == ["default", "mirrored", "multi_worker_mirrored",
                                           "tpu"]
    # config.DISTRIBUTIONS repeats the names so that configs validate without TensorFlow.
    from epkd_tf.config import DISTRIBUTIONS
    assert distribute.strategy_names() == sorted(DISTRIBUTIONS)
    with pytest.raises(ValueError, match="'mirrored' is registered twice"):
        distribute.register_strategy("mirrored")(lambda logical_cpus=0: None)
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


@pytest.mark.e2e
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


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHORT = ["--dataset=tiny_digits", "--iterations=1", "--pruners=l1_filter",
         "--teacher_epochs=2", "--finetune_epochs=1", "--export_formats=",
         "--latency_runs=2", "--batch_size=32", "--oracle_examples=64", "--eval_examples=0"]


def _main(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "epkd_tf.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))


@pytest.mark.e2e
@pytest.mark.slow   # two CLI runs (30 s); the same training is checked in the default suite
def test_cli_run_mirrored_over_two_cpus_matches_one_device(tiny_dir, tmp_path):
    import pandas as pd
    runs = {}
    for name, extra in [("one", []), ("two", ["--distribution=mirrored", "--logical_cpus=2"])]:
        out = tmp_path / name
        proc = _main([f"--data_dir={tiny_dir}", f"--output_dir={out}", *SHORT, *extra])
        log = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, log[-3000:]
        runs[name] = pd.read_csv(out / "students.csv")
    assert "2 replica(s)" in log
    for column in ("nonzero_params", "test_accuracy", "train_accuracy"):
        np.testing.assert_allclose(runs["two"][column], runs["one"][column], atol=0.02)


@pytest.mark.e2e
@pytest.mark.slow
def test_multi_worker_mirrored_two_workers_complete_a_run(tiny_dir, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    out = tmp_path / "run"
    workers = [_main([f"--data_dir={tiny_dir}", f"--output_dir={out}", *SHORT,
                      "--distribution=multi_worker_mirrored"],
                     env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                   "task": {"type": "worker", "index": i}})})
               for i in range(2)]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    for w, log in zip(workers, logs):
        assert w.returncode == 0, log[-3000:]
    assert "2 replica(s)" in logs[0]
    import pandas as pd
    students = pd.read_csv(out / "students.csv")        # written by the chief alone
    assert students.iteration.tolist() == [1]
    assert not any(name.startswith(".tmp") for name in os.listdir(out))
