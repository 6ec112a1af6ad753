"""The frontier benchmark's own logic (``benchmarks/frontier.py``): the IDX reader it
imports Fashion-MNIST with, and the drop ladder it reads off one run with the package's
stop rules."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import argparse
import gzip
import os
import re
import importlib.util
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.unit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def frontier():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("frontier_benchmark",
                                                      BENCHMARKS / "frontier.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def protocol(frontier):
    """benchmarks/frontier_protocol.py: what runs and how it is named."""
    import frontier_protocol
    return frontier_protocol


@pytest.fixture(scope="module")
def page(frontier):
    """benchmarks/frontier_page.py: the page section and plot."""
    import frontier_page
    return frontier_page


@pytest.fixture(scope="module")
def peer(frontier):
    """benchmarks/frontier_peer.py: the Torch-Pruning side."""
    import frontier_peer
    return frontier_peer


def _idx(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file, written independently of the reader."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_idx_files_read_back_exactly(frontier, tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(7,), (5, 4, 3)]:
        array = rng.integers(0, 256, shape)
        path = tmp_path / "a.gz"
        path.write_bytes(_idx(array))
        np.testing.assert_array_equal(frontier.read_idx(str(path)), array)
    path.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc"))
    with pytest.raises(ValueError, match="unsigned-byte IDX"):
        frontier.read_idx(str(path))


def test_the_ladder_is_what_each_max_accuracy_drop_would_have_chosen(frontier, tmp_path):
    """Validation accuracy 90.0% for the teacher; students lose 0.1, 0.3, 0.6 and 1.5
    points, each cheaper than the last. A run with a drop of 0.25 stops after student 2
    and keeps 1; 0.5 stops after 3 and keeps 2; 1.0 after 4 and keeps 3; 2.0 never stops
    and keeps the cheapest, 4."""
    pd.DataFrame({"iteration": [0], "validation_accuracy": [0.900], "test_accuracy": [0.9],
                  "cost": [100.0], "goal_met": [False]}).to_csv(tmp_path / "teacher.csv",
                                                                index=False)
    pd.DataFrame({"iteration": [1, 2, 3, 4],
                  "validation_accuracy": [0.899, 0.897, 0.894, 0.885],
                  "test_accuracy": [0.9, 0.9, 0.9, 0.9], "cost": [80.0, 64.0, 51.0, 41.0],
                  "goal_met": [False] * 4}).to_csv(tmp_path / "students.csv", index=False)
    rungs = frontier.ladder(str(tmp_path), [0.05, 0.25, 0.5, 1.0, 2.0], "latency")
    assert rungs == [(0.05, 0), (0.25, 1), (0.5, 2), (1.0, 3), (2.0, 4)]


def test_drop_patience_reads_each_rung_as_a_run_with_that_patience_would(
        frontier, protocol, page, tmp_path):
    """Validation 90.0% for the teacher; students lose 0.1, 0.6, 0.3, 0.7, 0.8 and 0.2
    points. With --drop_patience=1 a 0.5 run goes on after student 2 (one beyond), stops
    after 5 (4 and 5 beyond) and keeps 3; with 2 it never stops and keeps 6; without
    patience it stops after 2 and keeps 1."""
    pd.DataFrame({"iteration": [0], "validation_accuracy": [0.900], "test_accuracy": [0.9],
                  "cost": [100.0], "goal_met": [False]}).to_csv(tmp_path / "teacher.csv",
                                                                index=False)
    lost = np.array([0.1, 0.6, 0.3, 0.7, 0.8, 0.2])
    pd.DataFrame({"iteration": np.arange(1, 7), "validation_accuracy": 0.9 - lost / 100,
                  "test_accuracy": 0.9, "cost": 100 * 0.8 ** np.arange(1, 7),
                  "goal_met": False}).to_csv(tmp_path / "students.csv", index=False)
    read = [frontier.ladder(str(tmp_path), [0.5, 1.0], "macs", patience) for patience in
            (0, 1, 2)]
    assert read == [[(0.5, 1), (1.0, 6)], [(0.5, 3), (1.0, 6)], [(0.5, 6), (1.0, 6)]]
    # Runs with patience go to directories and a page section of their own.
    assert frontier.run_suffix(None, frontier.VALIDATION_SPLIT, 3) == "_patience3"
    assert protocol.section_name(["lenet5"], ["fashion_mnist"], 0) == "frontier"
    assert protocol.section_name(["resnet18"], ["fashion_mnist"], 3) == \
        "frontier_resnet18_fashion_mnist_patience3"
    assert page.patience_words(0) == "" and "--drop_patience=3" in \
        page.patience_words(3)


def _residual_model():
    """conv -> two convs added -> dense layers: ``a`` and ``b`` are coupled by the Add."""
    import tf_keras
    from tf_keras import layers
    x = tf_keras.Input((8, 8, 3))
    stem = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x)
    a = layers.Conv2D(6, 3, padding="same", name="a")(stem)
    b = layers.Conv2D(6, 1, padding="same", name="b")(stem)
    y = layers.ReLU(name="out")(layers.Add(name="add")([a, b]))
    y = layers.Dense(7, activation="relu", name="fc")(layers.GlobalAveragePooling2D()(y))
    return tf_keras.Model(x, layers.Dense(4, name="logits")(y))


def test_the_rebuilt_model_has_the_peers_widths(frontier, peer):
    asked = {"stem": 5, "a": 3, "b": 3, "fc": 2, "logits": 4}
    rebuilt = peer.rebuild_at_widths(_residual_model(), asked)
    assert {name: int(rebuilt.get_layer(name).output_shape[-1]) for name in asked} == asked
    assert tuple(rebuilt(np.zeros((2, 8, 8, 3), np.float32)).shape) == (2, 4)
    # Layers left out keep their width.
    rebuilt = peer.rebuild_at_widths(_residual_model(), {"fc": 3})
    assert [int(rebuilt.get_layer(n).output_shape[-1]) for n in ("stem", "a", "b", "fc")] \
        == [8, 6, 6, 3]


def test_coupled_layers_given_different_widths_are_refused_by_name(frontier, peer):
    with pytest.raises(ValueError, match=r"different widths: a 3, b 4"):
        peer.rebuild_at_widths(_residual_model(), {"a": 3, "b": 4})
    with pytest.raises(ValueError, match="fixed.*logits"):
        peer.rebuild_at_widths(_residual_model(), {"logits": 2})
    with pytest.raises(ValueError, match="no layer named nope"):
        peer.rebuild_at_widths(_residual_model(), {"nope": 2})
    with pytest.raises(ValueError, match="out of range.*stem 9 of 8"):
        peer.rebuild_at_widths(_residual_model(), {"stem": 9})


def test_the_lenet5_peers_widths_rebuild_the_zoo_lenet5(frontier, peer):
    from epkd_tf.graph.count import model_macs
    from epkd_tf.models import build_model
    widths = peer.peer_widths("lenet5", {"widths": "3, 7, 20"})
    assert widths == {"conv1": 3, "conv2": 7, "fc1": 20}
    rebuilt = peer.rebuild_at_widths(build_model("lenet5", (28, 28, 1), 10), widths)
    assert {n: int(rebuilt.get_layer(n).output_shape[-1]) for n in widths} == widths
    # The count peer_torch_pruning.py's lenet_macs gives for these widths.
    assert model_macs(rebuilt) == 24 * 24 * 25 * 3 + 8 * 8 * 25 * 3 * 7 + 16 * 7 * 20 + 20 * 10


CONTRACT = {"teacher", "data", "target_macs", "steps", "epochs", "seed", "keras_test_accuracy",
            "keras_macs", "bn_recalibration_batches", "out"}


def test_every_network_has_a_peer_and_its_command_carries_the_contract(frontier, peer):
    import re
    assert set(frontier.NETWORKS) == set(frontier.PEERS)
    row = {"network": "x", "macs": 1234, "iteration": 3, "seed": 1}
    inputs = {"teacher": "w.npz", "data": "d.npz", "keras_test_accuracy": 0.8755,
              "keras_macs": 34751744, "bn_recalibration_batches": 20, "epochs": 2}
    for network, port in frontier.PEERS.items():
        assert port.path.parent == BENCHMARKS and port.protocol
        command = peer.peer_command(network, row, inputs, "r.json")
        assert command[0] == str(port.path)
        flags = dict(f[2:].split("=", 1) for f in command[1:])
        if network == "lenet5":       # peer_torch_pruning.py's own command line
            assert flags == {"teacher": "w.npz", "mnist": "d.npz", "target_macs": "1234",
                             "steps": "3", "seed": "1", "out": "r.json"}
        else:
            assert set(flags) == CONTRACT
            assert (flags["target_macs"], flags["steps"], flags["epochs"], flags["seed"],
                    flags["keras_macs"], flags["bn_recalibration_batches"]) \
                == ("1234", "3", "2", "1", "34751744", "20")
            assert float(flags["keras_test_accuracy"]) == 0.8755
        if port.path.exists():        # the script accepts every flag it is given
            defined = set(re.findall(r'add_argument\(\s*"--(\w+)"', port.path.read_text()))
            assert set(flags) <= defined, (network, set(flags) - defined)


def test_the_runs_data_settings_are_read_off_its_flags(frontier, peer, tmp_path):
    (tmp_path / "flags.txt").write_text(
        "--dataset=fashion_mnist\n--data_dir=/elsewhere\n--train_split=train[:20%]\n"
        "--validation_split=0.1\n--seed=3\n--image_size=32\n--nodownload\n--teacher=resnet18\n")
    cfg = peer.run_data_config(str(tmp_path), "tfds_here")
    assert (cfg.dataset, cfg.data_dir, cfg.train_split, cfg.validation_split, cfg.seed,
            cfg.image_size, cfg.download, cfg.batch_size) == (
        "fashion_mnist", "tfds_here", "train[:20%]", "0.1", 3, 32, False, 128)


def _point(**changes) -> dict:
    """One epkd_tf point of the page's tables (a ResNet-18 student, seed 0), with
    ``changes``."""
    row = {"network": "resnet18", "dataset": "fashion_mnist", "budget": "latency",
           "allocation": "importance", "seed": 0, "drop_allowed": 0.5, "iteration": 3,
           "iterations_run": 9, "test_accuracy": 0.87, "teacher_accuracy": 0.875,
           "macs": 1000, "teacher_macs": 4000, "params": 10, "teacher_params": 40,
           "float_speedup": 2.0, "int8_speedup": 1.5, "model_error": 0.05, "seconds": 1.0,
           "peer": False}
    row.update(changes)
    return row


def test_the_page_gives_the_peers_int8_speedup_and_names_missing_points(frontier):
    import types
    row = _point(test_accuracy=0.87, teacher_accuracy=0.875, float_speedup=2.0,
                 int8_speedup=1.5)
    peer = {**row, "allocation": "peer", "of_allocation": "importance", "peer": True,
            "test_accuracy": 0.86, "float_speedup": 1.8, "int8_speedup": 1.25}
    missing = {**row, "network": "mobilenet_v2", "of_allocation": "importance", "peer": True,
               "peer_missing": "no PyTorch port"}
    frame = pd.DataFrame([row, peer])
    frame["change"] = 100 * (frame.test_accuracy - frame.teacher_accuracy)
    args = types.SimpleNamespace(networks=["resnet18", "mobilenet_v2"],
                                 datasets=["fashion_mnist"], budgets=["latency"],
                                 allocations=["importance"], seeds=[0], drops=[0.5],
                                 finetune_epochs=2, train_split=None, teacher_epochs=None,
                                 peer_drops=[0.5])
    text = frontier.markdown(frame, args, pd.DataFrame([row]), pd.DataFrame([missing]))
    assert "| 2.00x | 1.80x | 1.50x | 1.25x |" in text
    assert "missing: no PyTorch port" in text
    assert "ResNet-18 (0.25), MobileNetV2 (0.35): the epkd_tf run's own training" in text
    assert "54,000" not in text           # LeNet-5's protocol only where LeNet-5 is shown


def test_the_peer_is_compared_with_the_epkd_tf_students_of_the_seeds_it_ran(frontier):
    import types
    base = {"network": "resnet18", "dataset": "fashion_mnist", "budget": "latency",
            "allocation": "importance", "drop_allowed": 0.5, "iteration": 3,
            "iterations_run": 9, "teacher_accuracy": 0.9, "macs": 1000, "teacher_macs": 4000,
            "params": 10, "teacher_params": 40, "int8_speedup": 1.0, "model_error": 0.05,
            "seconds": 1.0, "peer": False}
    ours = [{**base, "seed": 0, "test_accuracy": 0.899, "float_speedup": 3.0},
            {**base, "seed": 1, "test_accuracy": 0.88, "float_speedup": 5.0}]
    peer = {**base, "seed": 0, "allocation": "peer", "of_allocation": "importance",
            "peer": True, "test_accuracy": 0.895, "float_speedup": 2.5}
    frame = pd.DataFrame([*ours, peer])
    frame["change"] = 100 * (frame.test_accuracy - frame.teacher_accuracy)
    args = types.SimpleNamespace(networks=["resnet18"], datasets=["fashion_mnist"],
                                 budgets=["latency"], allocations=["importance"], seeds=[0, 1],
                                 drops=[0.5], finetune_epochs=2, train_split=None,
                                 teacher_epochs=None, peer_drops=[0.5], peer_seeds=[0])
    text = frontier.markdown(frame, args, pd.DataFrame(ours), pd.DataFrame())
    # seed 0 alone on the epkd_tf side: -0.10 points and 3.00x, not the two seeds' mean;
    # as accurate as the peer (-0.10 against -0.50), its seeds 1.90 points apart
    assert "| -0.10 | -0.50 | 3.00x | 2.50x | 1.00x | 1.00x | yes (spread 1.90) |" in text
    assert text.startswith("## Accuracy against measured speed, ResNet-18 (0.25) on fashion_mnist")
    assert "--peer_seeds=0" in text
    # A section of runs with patience says so in its heading, its rungs and its plot.
    args.drop_patience = 3
    text = frontier.markdown(frame, args, pd.DataFrame(ours), pd.DataFrame())
    assert text.startswith("## Accuracy against measured speed, ResNet-18 (0.25) on "
                           "fashion_mnist, `--drop_patience=3`")
    assert "stops once 4 students in a row lose more" in text
    assert "plots/frontier_resnet18_fashion_mnist_patience3.png" in text


def test_each_seed_trains_its_own_teacher_and_shares_it_with_its_other_runs(frontier):
    # A teacher shared across seeds has trained on the other seeds' validation examples.
    recipe = ["--teacher=resnet18", "--teacher_width=0.25", "--image_size=32",
              "--teacher_epochs=4"]
    assert frontier.teacher_flags(recipe) == recipe
    assert frontier.teacher_flags(recipe, "runs/seed1/checkpoints/teacher.keras") == [
        "--image_size=32", "--teacher_path=runs/seed1/checkpoints/teacher.keras"]


def _stub_runs(frontier, monkeypatch, fake_run):
    """frontier.main() without work: ``fake_run(flags, out)`` stands for each CLI run,
    every run yields one point, and nothing is plotted or written."""
    def fake_points(network, dataset, budget, allocation, seed, out, drops, wall,
                    patience=0):
        return [{"network": network, "dataset": dataset, "budget": budget,
                 "allocation": allocation, "seed": seed, "drop_allowed": drops[0],
                 "iteration": 0, "iterations_run": 0, "test_accuracy": 0.9,
                 "teacher_accuracy": 0.9}]
    monkeypatch.setattr(frontier, "run", fake_run)
    monkeypatch.setattr(frontier, "points", fake_points)
    monkeypatch.setattr(frontier, "data_dir_for", lambda dataset, args, work: "tfds")
    monkeypatch.setattr(frontier, "plot", lambda frame, path: None)
    monkeypatch.setattr(frontier, "markdown", lambda *a, **k: "")
    monkeypatch.setattr(frontier, "replace_section", lambda *a, **k: None)


def test_the_runs_of_a_seed_share_its_teacher_and_no_other_seed_does(frontier, monkeypatch,
                                                                       tmp_path):
    calls = []

    def fake_run(flags, out):
        calls.append((os.path.basename(out), [f for f in flags if f.startswith("--teacher")]))
        return 1.0

    _stub_runs(frontier, monkeypatch, fake_run)
    monkeypatch.setattr(sys, "argv", ["frontier.py", "--networks=lenet5",
                                      "--budgets=latency,macs", "--allocations=importance",
                                      "--seeds=0,1", f"--keep_runs={tmp_path}"])
    assert frontier.main() == 0
    flags = dict(calls)
    own = ["--teacher=lenet5", "--teacher_epochs=8"]
    assert flags["lenet5_fashion_mnist_latency_importance_seed0"] == own
    assert flags["lenet5_fashion_mnist_latency_importance_seed1"] == own
    for seed in (0, 1):
        assert flags[f"lenet5_fashion_mnist_macs_importance_seed{seed}"] == [
            "--teacher_path=" + os.path.join(str(tmp_path), f"lenet5_fashion_mnist_latency_"
                                             f"importance_seed{seed}", "checkpoints",
                                             "teacher.keras")]


@pytest.mark.parametrize("split, suffix", [(None, ""), ("0.25", "_val025")])
def test_the_validation_split_reaches_every_run_and_names_its_directories(
        frontier, monkeypatch, tmp_path, split, suffix):
    """--validation_split (default 0.1) is every run's, and runs of another value are
    named after it, so a cached run of the default is never reused for it."""
    seen = {}

    def fake_run(flags, out):
        seen[os.path.basename(out)] = [f for f in flags if f.startswith("--validation_split")]
        return 1.0

    _stub_runs(frontier, monkeypatch, fake_run)
    argv = ["frontier.py", "--networks=lenet5", "--budgets=latency",
            "--allocations=importance", f"--keep_runs={tmp_path}"]
    monkeypatch.setattr(sys, "argv", argv + ([f"--validation_split={split}"] if split else []))
    assert frontier.main() == 0
    assert seen == {f"lenet5_fashion_mnist{suffix}_latency_importance_seed0":
                    [f"--validation_split={split or '0.1'}"]}


@pytest.mark.parametrize("flags, directory, passed", [
    (["--drop_patience=2"], "lenet5_fashion_mnist_patience2_macs_importance_seed0",
     ["--drop_patience=2"]),
    (["--keep_ratio=0.9", "--drop_patience=3"],
     "lenet5_fashion_mnist_patience3_keep09_macs_importance_seed0",
     ["--keep_ratio=0.9", "--drop_patience=3"]),
    (["--keep_of=removable", "--keep_ratio=0.9"],
     "lenet5_fashion_mnist_keep09_removable_macs_importance_seed0",
     ["--keep_ratio=0.9", "--keep_of=removable"]),
])
def test_the_runs_settings_reach_every_run_and_name_its_directories(
        frontier, monkeypatch, tmp_path, flags, directory, passed):
    """Runs with another stop rule or other steps sit beside the default's."""
    seen = {}

    def fake_run(run_flags, out):
        seen[os.path.basename(out)] = [f for f in run_flags
                                       if f.startswith(("--drop_patience", "--keep_ratio=",
                                                        "--keep_of"))
                                       and f != "--keep_ratio=0.8"]
        return 1.0

    _stub_runs(frontier, monkeypatch, fake_run)
    monkeypatch.setattr(sys, "argv", ["frontier.py", "--networks=lenet5", "--budgets=macs",
                                      "--allocations=importance", *flags,
                                      f"--keep_runs={tmp_path}"])
    assert frontier.main() == 0
    assert seen == {directory: passed}


def test_the_default_keep_ratio_keeps_the_names_and_another_is_named(frontier, protocol,
                                                                      monkeypatch):
    # The default keeps every earlier directory and section name.
    assert frontier.run_suffix(None, frontier.VALIDATION_SPLIT, 0, frontier.KEEP_RATIO) == ""
    assert protocol.section_name(["lenet5"], ["fashion_mnist"], 0, 0.8) == "frontier"
    assert protocol.section_name(["lenet5"], ["fashion_mnist"], 0, 0.9) == \
        "frontier_lenet5_fashion_mnist_keep09"
    with pytest.raises(SystemExit):
        monkeypatch.setattr(sys, "argv", ["frontier.py", "--keep_ratio=1"])
        frontier.main()


def test_a_section_of_runs_with_another_keep_ratio_gives_it(frontier, protocol):
    args = argparse.Namespace(
        networks=["resnet18"], datasets=["fashion_mnist"], budgets=["latency"],
        allocations=["importance"], seeds=[0], drops=[0.5], finetune_epochs=2,
        train_split=None, teacher_epochs=None, iterations=20, validation_split="0.1",
        peer_drops=[], peer_seeds=None, drop_patience=3, keep_ratio=0.87)
    assert protocol.invocation(args).endswith("--drop_patience=3 --keep_ratio=0.87")
    row = _point(teacher_accuracy=0.9, test_accuracy=0.899, float_speedup=3.0,
                 int8_speedup=1.0)
    frame = pd.DataFrame([row])
    frame["change"] = 100 * (frame.test_accuracy - frame.teacher_accuracy)
    text = frontier.markdown(frame, args, pd.DataFrame([row]), pd.DataFrame())
    assert text.splitlines()[0].endswith(
        "`--drop_patience=3`, `--keep_ratio=0.87` (`benchmarks/frontier.py`)")
    assert "Every run: `--keep_ratio=0.87 --pruners=" in text
    assert "plots/frontier_resnet18_fashion_mnist_patience3_keep087.png" in text
    # Steps on the removable cost: named in the heading, every run's flags and the plot.
    args.keep_of = "removable"
    assert protocol.invocation(args).endswith("--keep_ratio=0.87 --keep_of=removable")
    text = frontier.markdown(frame, args, pd.DataFrame([row]), pd.DataFrame())
    assert text.splitlines()[0].endswith("`--keep_ratio=0.87`, `--keep_of=removable` "
                                         "(`benchmarks/frontier.py`)")
    assert "Every run: `--keep_ratio=0.87 --keep_of=removable --pruners=" in text
    assert "plots/frontier_resnet18_fashion_mnist_patience3_keep087_removable.png" in text


def test_a_validation_split_string_reaches_the_runs_their_names_and_the_invocation(
        frontier, protocol):
    # The default fraction keeps the run directories of earlier invocations resumable.
    assert frontier.run_suffix("train[:20%]", frontier.VALIDATION_SPLIT) == "_train20"
    assert frontier.run_suffix(None, frontier.VALIDATION_SPLIT) == ""
    # Another validation split never resumes (or is resumed by) a run on other examples.
    assert frontier.run_suffix("train[:20%]", "train[20%:40%]") == "_train20_valtrain2040"
    assert frontier.run_suffix("train[:20%]", "0.25") == "_train20_val025"
    args = argparse.Namespace(
        networks=["mobilenet_v2"], datasets=["fashion_mnist"], budgets=["latency"],
        allocations=["importance"], seeds=[0], drops=[0.5], finetune_epochs=2,
        train_split="train[:20%]", teacher_epochs=8, iterations=8,
        validation_split="train[20%:40%]", peer_drops=[], peer_seeds=None)
    command = protocol.invocation(args)
    # Split strings are quoted, so the page's command pastes into a shell as it is.
    assert "--train_split='train[:20%]'" in command
    assert "--validation_split='train[20%:40%]'" in command
    assert shlex.split(command)[-1] == "--validation_split=train[20%:40%]"


def test_the_page_says_whether_seeds_share_their_validation_examples(frontier, page):
    """A fraction is carved by each seed; a split string is one set of examples for all."""
    assert "draws its own" in page.validation_words(frontier.VALIDATION_SPLIT)
    words = page.validation_words("train[20%:40%]")
    assert "same validation examples" in words and "train[20%:40%]" in words
    assert "draws its own" not in words


def _whole_runs(frontier, monkeypatch, tmp_path, argv=()):
    """``frontier.main()`` with ``--whole`` and stubbed runs: {run directory: its flags}
    and the (run directory, seed, rung) of every peer point asked for."""
    runs, peers = {}, []

    def fake_run(flags, out):
        runs[os.path.basename(out)] = flags
        return 1.0

    _stub_runs(frontier, monkeypatch, fake_run)

    def fake_points(network, dataset, budget, allocation, seed, out, drops, wall,
                    patience=0):
        runs[os.path.basename(out)].append(f"patience read={patience}")
        return [{"network": network, "dataset": dataset, "budget": budget,
                 "allocation": allocation, "seed": seed, "drop_allowed": drop,
                 "iteration": 1, "iterations_run": 1, "test_accuracy": 0.9,
                 "teacher_accuracy": 0.9} for drop in drops]

    def fake_peer(row, out, work, settings, data_dir):
        peers.append((os.path.basename(out), row["seed"], row["drop_allowed"]))
        return {**row, "peer": True}

    monkeypatch.setattr(frontier, "points", fake_points)
    monkeypatch.setattr(frontier, "peer_point", fake_peer)
    monkeypatch.setattr(sys, "argv", ["frontier.py", "--whole", f"--keep_runs={tmp_path}",
                                      *argv])
    assert frontier.main() == 0
    return runs, peers


def test_whole_runs_every_network_on_every_dataset_under_its_own_protocol(
        frontier, monkeypatch, tmp_path):
    runs, peers = _whole_runs(frontier, monkeypatch, tmp_path)
    networks, datasets = list(frontier.NETWORKS), list(frontier.DATASETS)
    assert len(runs) == len(networks) * len(datasets) * 2 * 2      # 2 budgets, 2 seeds
    for network in networks:
        protocol = frontier.PROTOCOLS[network]
        suffix = frontier.run_suffix(protocol.train_split, protocol.validation_split,
                                     protocol.drop_patience, protocol.keep_ratio)
        for dataset in datasets:
            for budget in ("latency", "macs"):
                for seed in (0, 1):
                    flags = runs[f"{network}_{dataset}{suffix}_{budget}_importance_seed{seed}"]
                    assert f"--iterations={protocol.iterations}" in flags
                    assert f"--keep_ratio={protocol.keep_ratio:g}" in flags
                    assert f"--validation_split={protocol.validation_split}" in flags
                    assert (f"--train_split={protocol.train_split}" in flags) == \
                        bool(protocol.train_split)
                    assert (f"--drop_patience={protocol.drop_patience}" in flags) == \
                        bool(protocol.drop_patience)
                    # The ladder is read with the patience the run ran with.
                    assert f"patience read={protocol.drop_patience}" in flags
                    if seed == 0 and budget == "latency" and protocol.teacher_epochs:
                        assert f"--teacher_epochs={protocol.teacher_epochs}" in flags
    # The protocols differ where the networks' sections did.
    assert runs["resnet18_mnist_train20_valtrain2040_patience3_macs_importance_seed1"] != \
        runs["lenet5_mnist_macs_importance_seed1"]
    # The peer: at the 0.5 rung of seed 0, for every network, dataset and budget.
    assert sorted(peers) == sorted(
        (name, 0, 0.5) for name in runs if name.endswith("seed0"))


def test_whole_refuses_a_run_flag_by_name(frontier, monkeypatch, tmp_path, capsys):
    for flag in ("--iterations=3", "--networks=lenet5", "--seeds=0", "--keep_ratio=0.9"):
        with pytest.raises(SystemExit) as raised:
            _whole_runs(frontier, monkeypatch, tmp_path, [flag])
        assert raised.value.code == 2
        assert f"{flag.split('=')[0]} cannot be combined with --whole" in \
            capsys.readouterr().err


def _finished_run(out: Path, flags) -> Path:
    """A finished run directory whose flags.txt records ``flags``."""
    out.mkdir()
    (out / "flags.txt").write_text("\n".join(flags) + "\n")
    (out / "final.csv").write_text("iteration\n1\n")
    (out / "wall_seconds.txt").write_text("12.5\n")
    return out


def test_a_finished_run_is_reused_only_with_the_flags_it_ran_with(frontier, tmp_path,
                                                                  monkeypatch):
    recorded = ["--dataset=mnist", "--data_dir=/elsewhere/tfds", "--iterations=12",
                "--temperature_start=50.0", "--validation_split=train[20%:40%]",
                "--teacher_path=/a/teacher.keras", "--export_every_student"]
    out = _finished_run(tmp_path / "run", recorded)
    monkeypatch.setattr(frontier.subprocess, "run",
                        lambda *a, **k: pytest.fail("a finished run was run again"))
    same = ["--dataset=mnist", "--data_dir=tfds", "--iterations=12",
            "--temperature_start=50", "--validation_split=train[20%:40%]",
            "--teacher=resnet18", "--teacher_epochs=4", "--export_every_student"]
    assert frontier.stale_flag(same, str(out)) is None
    assert frontier.run(same, str(out)) == 12.5
    for changed, named in ((["--iterations=16"], "--iterations=16 (the run: --iterations=12)"),
                           (["--drop_patience=3"], "--drop_patience=3 (the run: not set)"),
                           (["--validation_split=0.1"], "--validation_split=0.1")):
        assert frontier.stale_flag(same + changed, str(out)).startswith(named)
        with pytest.raises(SystemExit, match=re.escape(named)):
            frontier.run(same + changed, str(out))


def test_the_whole_section_gives_each_networks_protocol(frontier, protocol):
    args = argparse.Namespace(whole=True, networks=list(frontier.NETWORKS),
                              datasets=list(frontier.DATASETS), **frontier.WHOLE)
    assert protocol.invocation(args) == "python benchmarks/frontier.py --whole"
    assert frontier.section_of(args) == "frontier_whole"
    row = _point()
    frame = pd.DataFrame([row])
    frame["change"] = 100 * (frame.test_accuracy - frame.teacher_accuracy)
    text = frontier.markdown(frame, args, pd.DataFrame([row]), pd.DataFrame())
    lines = text.splitlines()
    assert lines[0].startswith("## The whole frontier: LeNet-5, ResNet-18 (0.25), "
                               "MobileNetV2 (0.35) on fashion_mnist, mnist")
    assert "plots/frontier_whole.png" in text
    assert "seeds 0, 1, Torch-Pruning Taylor + KD at the 0.5 rung of seed 0" in text
    assert "and its network's `--drop_patience` chooses" in text
    protocol = {line.split(" | ")[0][2:]: line.split(" | ")[1:7] for line in lines
                if line.startswith("| ") and line.count(" | ") == 7}
    assert protocol["ResNet-18 (0.25)"] == ["train[:20%]", "train[20%:40%]", "4", "12", "3",
                                            "0.8"]
    # A network's recipe gives its teacher epochs where its protocol does not.
    assert protocol["LeNet-5"] == ["train (all)", "0.1", "8", "20", "0", "0.8"]


def test_the_whole_plot_has_a_row_per_network_and_a_column_per_dataset(frontier, tmp_path):
    rows = [_point(network=n, dataset=d) for n in frontier.NETWORKS for d in frontier.DATASETS]
    frame = pd.DataFrame(rows)
    frame["change"] = 100 * (frame.test_accuracy - frame.teacher_accuracy)
    path = tmp_path / "whole.png"
    frontier.plot(frame, path)
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = (int.from_bytes(header[16 + 4 * i: 20 + 4 * i], "big") for i in (0, 1))
    # 2 panels of 6.5 in across, 3 of 6 in down, at 110 dpi.
    assert (width, height) == (round(2 * 6.5 * 110), round(3 * 6.0 * 110))


@pytest.mark.parametrize("mine, peer, seeds, verdict", [
    ([-0.30], [-0.10], [-0.30, -0.70], "yes (spread 0.40)"),     # behind, within the spread
    ([-0.30], [+0.20], [-0.30, -0.70], "**no** (spread 0.40)"),  # behind by more
    ([-0.30], [-0.30], [-0.30], "yes (spread 0.00)"),            # one seed: no worse
    ([-0.30], [-0.20], [-0.30], "**no** (spread 0.00)"),
    ([-0.30], [-0.10, -0.80], [-0.30], "yes (spread 0.70)"),     # the peer's seeds' range
])
def test_as_accurate_as_the_peer_within_the_seed_spread(page, mine, peer, seeds, verdict):
    assert page.as_accurate(pd.Series(mine), pd.Series(peer), pd.Series(seeds)) == verdict
