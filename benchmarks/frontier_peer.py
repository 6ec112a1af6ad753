"""The Torch-Pruning side of the frontier benchmark (``benchmarks/frontier.py``): which
networks have a PyTorch port and the protocol each runs, the peer's command line and
inputs (the run's teacher and training examples, exported once), and a peer point: the
peer's widths rebuilt from the run's teacher by epkd_tf's own surgery, converted to float
and int8 TFLite and timed side by side with the teacher's files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from frontier_protocol import REPO, SIDE_BY_SIDE_ROUNDS, SIDE_BY_SIDE_RUNS


PEER = "Torch-Pruning Taylor + KD"
HERE = Path(__file__).resolve().parent


class Peer(NamedTuple):
    """The Torch-Pruning side of one network: its script (run in the peer's virtual
    environment) and the protocol it runs, as the page states it."""

    script: str
    protocol: str

    @property
    def path(self) -> Path:
        return HERE / self.script


# The networks with a PyTorch port. LeNet-5's script has its own command line (the MNIST
# npz as it is stored, 2 epochs per step); the ResNet and MobileNetV2 ports share one
# contract (``peer_command``) and train on exactly the examples the epkd_tf run trained on.
_EXPORTED = ("the epkd_tf run's own training examples (its `--train_split`, less the "
             "`--validation_split` where that is carved from it, preprocessed by epkd_tf "
             "and exported) and `--finetune_epochs` epochs of distillation after each step; "
             "the port is checked first (test accuracy within 0.1 points of the Keras "
             "teacher's, logits within 1e-2, the same MACs in epkd_tf's count), BatchNorm "
             "statistics re-estimated on the run's `--bn_recalibration_batches` after each "
             "step and each distillation")
PEERS = {
    "lenet5": Peer("peer_torch_pruning.py",
                   "the first 54,000 examples of the stored training split, whatever the "
                   "run's `--train_split` (not exactly the run's own: it carves its "
                   "validation examples at random) and 2 epochs of distillation after each "
                   "step"),
    "resnet18": Peer("peer_torch_resnet.py", _EXPORTED),
    "mobilenet_v2": Peer("peer_torch_mobilenet.py", _EXPORTED),
}


def peer_command(network: str, row: dict, inputs: dict, result: str) -> list:
    """The peer's command line for the epkd_tf point ``row`` (its script and flags; the
    interpreter is the peer's): to the student's MACs in as many steps as its iterations.
    ``inputs``: ``teacher`` and ``data`` (files), and for the shared contract
    ``keras_test_accuracy``, ``keras_macs``, ``bn_recalibration_batches``, ``epochs``."""
    script = str(PEERS[network].path)
    if network == "lenet5":
        return [script, f"--teacher={inputs['teacher']}", f"--mnist={inputs['data']}",
                f"--target_macs={int(row['macs'])}", f"--steps={int(row['iteration'])}",
                f"--seed={int(row['seed'])}", f"--out={result}"]
    return [script, f"--teacher={inputs['teacher']}", f"--data={inputs['data']}",
            f"--target_macs={int(row['macs'])}", f"--steps={int(row['iteration'])}",
            f"--epochs={int(inputs['epochs'])}", f"--seed={int(row['seed'])}",
            f"--keras_test_accuracy={float(inputs['keras_test_accuracy']):.6f}",
            f"--keras_macs={int(inputs['keras_macs'])}",
            f"--bn_recalibration_batches={int(inputs['bn_recalibration_batches'])}",
            f"--out={result}"]


def teacher_weights(out: str) -> str:
    """The run's LeNet-5 teacher as the npz the peer loads (layer_kernel, layer_bias)."""
    from peers import teacher_weights_npz
    return teacher_weights_npz(os.path.join(out, "checkpoints", "teacher.keras"),
                               os.path.join(out, "teacher_weights.npz"))


def run_data_config(out: str, data_dir: str = None):
    """The DataConfig of the epkd_tf run in ``out``, read off its flags.txt (a setting
    missing there has its default, as epkd_tf assumes); ``data_dir`` replaces the
    recorded one when given."""
    sys.path.insert(0, str(REPO))
    from epkd_tf.config import DataConfig
    from epkd_tf.records.settings_record import recorded_settings
    cfg = recorded_settings(Path(out, "flags.txt").read_text(), DataConfig())
    return cfg.replace(data_dir=data_dir) if data_dir else cfg


def export_for_peer(out: str, data_dir: str, cache: str) -> tuple:
    """(weights, data) npz files of the run in ``out`` for the ResNet / MobileNetV2 peer,
    written once into ``cache``: the run's teacher (epkd_tf's safe loader) as
    ``residual.keras_weights``, and the very examples the run trained its students on (the
    run's training split less its validation split, as epkd_tf preprocessed them, training
    order), the whole test split and the teacher's logits on the first 512 test images."""
    weights_path = os.path.join(cache, "teacher_weights.npz")
    data_path = os.path.join(cache, "data.npz")
    if os.path.exists(weights_path) and os.path.exists(data_path):
        return weights_path, data_path
    os.makedirs(cache, exist_ok=True)
    sys.path.insert(0, str(REPO))
    import epkd_tf
    from epkd_tf.data import load_data
    from residual import keras_weights
    model = epkd_tf.load_model(os.path.join(out, "checkpoints", "teacher.keras"))
    data = load_data(run_data_config(out, data_dir))
    x_train, y_train = data.numpy_train()
    x_test, y_test = data.numpy_test()
    if len(x_train) != data.spec.num_train:
        raise RuntimeError(f"exported {len(x_train)} training examples, the run has "
                           f"{data.spec.num_train}")
    logits = model.predict(x_test[:512], batch_size=256, verbose=0)
    np.savez(data_path + ".tmp.npz", x_train=x_train, y_train=y_train, x_test=x_test,
             y_test=y_test, keras_test_logits=logits)
    np.savez(weights_path + ".tmp.npz", **keras_weights(model))
    os.replace(data_path + ".tmp.npz", data_path)
    os.replace(weights_path + ".tmp.npz", weights_path)
    return weights_path, data_path


def peer_inputs(network: str, dataset: str, out: str, work: str, args, data_dir: str) -> dict:
    """What ``peer_command`` needs for the run in ``out`` (files made once)."""
    if network == "lenet5":
        npz = args.npz if dataset == "mnist" else os.path.join(work, "fashion_mnist.npz")
        return {"teacher": teacher_weights(out), "data": npz}
    from residual import bn_recalibration_batches
    weights, data = export_for_peer(out, data_dir,
                                    os.path.join(work, "peer", os.path.basename(out)))
    teacher = pd.read_csv(os.path.join(out, "teacher.csv")).iloc[0]
    return {"teacher": weights, "data": data,
            "keras_test_accuracy": float(teacher.test_accuracy),
            "keras_macs": int(teacher.macs),
            "bn_recalibration_batches": bn_recalibration_batches(out),
            "epochs": args.finetune_epochs}


def rebuild_at_widths(model, widths: dict):
    """``model`` with each layer named in ``widths`` cut to that many output channels (the
    first ones: latency does not depend on which), by epkd_tf's own channel graph and
    surgery (``epkd_tf.graph.analyze``, ``remove_groups``); layers not named keep theirs.
    A group of coupled channels (a residual addition) is kept or removed whole, so the
    layers it couples must be given one width: a ValueError names them otherwise (and a
    layer whose width cannot be cut, or whose rebuilt width differs from the one asked,
    e.g. a depthwise conv whose input was cut to another width)."""
    sys.path.insert(0, str(REPO))
    from epkd_tf.graph import analyze, remove_groups
    names = {layer.name for layer in model.layers}
    unknown = sorted(set(widths) - names)
    if unknown:
        raise ValueError(f"the model has no layer named {', '.join(unknown)}")
    graph = analyze(model)
    full = {name: int(model.get_layer(name).output_shape[-1]) for name in graph.producer_names}
    bad = sorted(name for name, width in widths.items()
                 if name in full and not 1 <= int(width) <= full[name])
    if bad:
        raise ValueError("widths out of range (1..the layer's own): " + ", ".join(
            f"{name} {widths[name]} of {full[name]}" for name in bad))
    asked = np.array([int(widths.get(name, full[name])) for name in graph.producer_names])
    keep = graph.unit_channel < asked[graph.unit_layer]
    fixed = sorted({graph.producer_names[graph.unit_layer[u]]
                    for u in np.flatnonzero((graph.group_of_unit < 0) & ~keep)})
    if fixed:
        raise ValueError(f"layers whose channels are fixed (they reach the output) cannot be "
                         f"cut: {', '.join(fixed)}")
    removed, clashes = [], set()
    for group, units in enumerate(graph.group_units):
        kept = keep[units]
        if not kept.all():
            removed.append(group)
            if kept.any():
                clashes.add(tuple(sorted(
                    f"{graph.producer_names[graph.unit_layer[u]]} "
                    f"{asked[graph.unit_layer[u]]}" for u in units)))
    if clashes:
        raise ValueError("coupled layers (their channels are added together) were given "
                         "different widths: " + "; ".join(", ".join(c) for c in
                                                           sorted(clashes)))
    rebuilt = remove_groups(graph, removed)
    wrong = [f"{name} {int(rebuilt.get_layer(name).output_shape[-1])} (asked {width})"
             for name, width in widths.items()
             if int(rebuilt.get_layer(name).output_shape[-1]) != int(width)]
    if wrong:
        raise ValueError("rebuilt widths differ from those asked: " + ", ".join(wrong))
    return rebuilt


def peer_widths(network: str, peer: dict) -> dict:
    """The peer's widths by Keras layer name (LeNet-5's script gives "conv1, conv2, fc1")."""
    if isinstance(peer["widths"], dict):
        return {name: int(width) for name, width in peer["widths"].items()}
    return dict(zip(("conv1", "conv2", "fc1"), (int(w) for w in peer["widths"].split(","))))


def peer_tflite(out: str, widths: dict, data_dir: str) -> tuple:
    """(float, int8 TFLite bytes, epkd_tf MACs) of the run's teacher rebuilt at the peer's
    widths, converted by epkd_tf's converter; int8 calibrated on the first test batch (the
    run's preprocessing) with the run's dense scales (per tensor unless its flags say
    ``--int8_dense_per_channel``)."""
    sys.path.insert(0, str(REPO))
    import epkd_tf
    from epkd_tf.data import load_data
    from epkd_tf.deploy import tflite as metrics
    from epkd_tf.graph.count import model_macs
    rebuilt = rebuild_at_widths(
        epkd_tf.load_model(os.path.join(out, "checkpoints", "teacher.keras")), widths)
    calibration = next(load_data(run_data_config(out, data_dir)).test().as_numpy_iterator())[0]
    # The run's int8 setting (flags.txt says --int8_dense_per_channel or --no...).
    per_channel = "--int8_dense_per_channel" in Path(out, "flags.txt").read_text().split()
    return (metrics.to_tflite(rebuilt),
            metrics.to_tflite(rebuilt, "tflite_int8", calibration,
                              dense_per_channel=per_channel),
            model_macs(rebuilt))


def peer_point(row: dict, out: str, work: str, args, data_dir: str) -> dict:
    """Torch-Pruning (global Taylor, in its own virtual environment) on the same teacher
    to the epkd_tf student's MACs, in as many pruning steps as the student's iterations,
    each followed by distillation (``PEERS``' protocol); its widths rebuilt from the
    run's teacher by epkd_tf's surgery, float and int8 files timed side by side with the
    teacher's. A point the peer could not make (no port, a port that fails its check) has
    ``peer_missing``: the reason."""
    from peers import peer_python
    sys.path.insert(0, str(REPO))
    from epkd_tf.deploy import tflite as metrics
    network = row["network"]
    base = {**row, "allocation": f"{PEER} at the MACs of {row['allocation']}", "peer": True,
            "of_allocation": row["allocation"]}
    if not PEERS[network].path.exists():
        reason = f"no PyTorch port (benchmarks/{PEERS[network].script} is not written)"
        print(f"{network}: peer skipped: {reason}", flush=True)
        return {**base, "peer_missing": reason}
    # Named after the run (its subset included), so a run on other data never reuses it.
    name = f"{os.path.basename(os.path.normpath(out))}_it{row['iteration']}.json"
    result = os.path.join(work, "peer", name)
    if not os.path.exists(result):
        os.makedirs(os.path.dirname(result), exist_ok=True)
        inputs = peer_inputs(network, row["dataset"], out, work, args, data_dir)
        status = subprocess.run(
            [peer_python(), *peer_command(network, row, inputs, result)]).returncode
        if status not in (0, 3):      # 3: the port check failed (recorded in the JSON)
            raise SystemExit(f"error: the {network} peer failed with exit status {status}")
    peer = json.loads(Path(result).read_text())
    if not peer.get("port_ok", True):
        reason = "port check failed: " + ", ".join(
            f"{what} {peer[key]:{form}}" for what, key, form in (
                ("PyTorch teacher test accuracy", "torch_teacher_test_accuracy", ".4f"),
                ("Keras", "keras_test_accuracy", ".4f"),
                ("largest logit difference", "port_max_logit_diff", ".1e"),
                ("PyTorch MACs", "teacher_macs", ","), ("Keras MACs", "keras_macs", ","))
            if isinstance(peer.get(key), (int, float)))
        print(f"{network}: peer point missing: {reason}", flush=True)
        return {**base, "peer_missing": reason}
    widths = peer_widths(network, peer)
    float_bytes, int8_bytes, rebuilt_macs = peer_tflite(out, widths, data_dir)
    macs = int(peer.get("lenet_macs", peer["macs"]))
    if rebuilt_macs != macs:
        print(f"warning: {network}: the rebuilt peer model counts {rebuilt_macs:,} MACs, the "
              f"peer {macs:,}", flush=True)
    (teacher_ms, _), (peer_ms, _) = metrics.tflite_latency_side_by_side(
        [Path(out, "tflite", "teacher.tflite").read_bytes(), float_bytes],
        runs=SIDE_BY_SIDE_RUNS, rounds=SIDE_BY_SIDE_ROUNDS)
    teacher_int8 = Path(out, "tflite", "teacher_int8.tflite")
    teacher_int8_ms = peer_int8_ms = np.nan
    if teacher_int8.exists():
        (teacher_int8_ms, _), (peer_int8_ms, _) = metrics.tflite_latency_side_by_side(
            [teacher_int8.read_bytes(), int8_bytes], runs=SIDE_BY_SIDE_RUNS,
            rounds=SIDE_BY_SIDE_ROUNDS)
    return {**base, "test_accuracy": peer["test_accuracy"], "macs": macs,
            "params": peer["params"], "float_speedup": teacher_ms / peer_ms,
            "int8_speedup": teacher_int8_ms / peer_int8_ms, "float_ms": peer_ms,
            "int8_ms": peer_int8_ms, "teacher_float_ms": teacher_ms,
            "teacher_int8_ms": teacher_int8_ms, "model_error": np.nan,
            "seconds": peer["seconds"], "peer_widths": json.dumps(widths)}
