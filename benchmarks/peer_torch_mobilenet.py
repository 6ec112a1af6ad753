"""The peer side of ``benchmarks/frontier.py`` on MobileNetV2: Torch-Pruning on a verified
PyTorch port of epkd_tf's MobileNetV2 teacher, pruned to the MACs of an epkd_tf student.

Runs inside the peer's own virtual environment (PyTorch CPU + torch-pruning; never a
dependency of epkd_tf, made by ``peers.py:peer_python()``):

    python peer_torch_mobilenet.py --teacher=weights.npz --data=data.npz \\
        --target_macs=4000000 --steps=5 --epochs=1 --seed=0 \\
        --keras_test_accuracy=0.9012 --keras_macs=11969216 \\
        --bn_recalibration_batches=20 --out=result.json

(``--check_port_only``: the port check alone.) The inputs are the frontier's export, the
same as ``residual.py``'s: ``--teacher`` holds every Keras weight by ``layer/weight``
(``residual.py:keras_weights``), ``--data`` the training and test examples exactly as
epkd_tf preprocessed them (NHWC float32: ``x_train``, ``y_train``, ``x_test``, ``y_test``)
and ``keras_test_logits``, the Keras teacher's logits on the first test images.

* The model: a PyTorch port of the zoo's MobileNetV2 (``epkd_tf/models/mobilenet.py``,
  e.g. ``--teacher=mobilenet_v2 --teacher_width=0.35 --image_size=32``): a 3x3
  conv-BN-ReLU6 stem, inverted residual blocks (a 1x1 conv-BN-ReLU6 expansion unless the
  block's expansion is 1, a 3x3 depthwise conv-BN-ReLU6, a linear 1x1 conv-BN projection,
  the input added back where the block keeps the resolution and the width), a 1x1
  conv-BN-ReLU6 head, global average pooling, dropout 0.2 and dense logits. Its layout
  (every width, which blocks expand and by how much, the head's width, kernel sizes, which
  layers have a bias) is read from the names and shapes of the exported weights, so any
  ``--teacher_width`` works. Strides are the one fact the weights do not carry: they are
  the zoo's (the paper's table; below 100 px the stem and the second stage keep stride 1,
  so a 32x32 image ends at 4x4), and a wrong one would fail the MAC and logit checks.
  What makes it the *same function* and not only the same architecture: Keras'
  ``padding="same"`` pads a stride-2 conv of an even input by 0 before and 1 after
  (PyTorch's ``padding=1`` pads 1 on both sides, shifting every window), so every conv is
  padded explicitly the way TensorFlow pads it (``peer_torch_resnet.same_padding``);
  ReLU6 where Keras has ``ReLU(6.0)`` and none after the projection; Keras'
  BatchNormalization eps 1e-3 and momentum 0.99 (PyTorch: eps 1e-5, momentum 0.1 for the
  *new* statistics), so eps=1e-3, momentum=0.01; the depthwise conv is a grouped
  ``nn.Conv2d`` (one group per channel) whose output channel ``c·m + j`` is Keras'
  depthwise kernel ``[:, :, c, j]`` (TensorFlow's order), so the (kh, kw, C, m) kernel is
  transposed to (C, m, kh, kw) and reshaped to (C·m, 1, kh, kw).
* The port is checked before any pruning: the teacher's test accuracy in PyTorch must be
  within 0.1 points of the Keras one (``--keras_test_accuracy``), its logits within 1e-2
  (largest absolute difference) of ``keras_test_logits`` (accuracy alone can miss a
  wrongly padded conv), and its MACs, counted as epkd_tf counts them
  (``epkd_tf/graph/count.py:model_macs``: convolutions at output positions × kernel area ×
  input channels per group × output channels, depthwise ones included, dense layers at
  inputs × outputs; BatchNorm, activations, pooling and additions count 0), equal to the
  Keras teacher's (``--keras_macs``). Otherwise the result says ``port_ok: false`` with
  the measured figures and the script exits with status 3 without pruning: a peer figure
  on a different function would be meaningless.
* The protocol is the ResNet peer's (``peer_torch_resnet.py``) on MACs instead of
  parameters: ``--steps`` pruning steps, step k to round(M / (M / N) ** (k / K)) MACs
  (M the teacher's, N ``--target_macs``, K ``--steps``: the same geometric ladder as
  epkd_tf's iterations), each step one ``tp.pruner.MetaPruner`` step with global ranking,
  ``TaylorImportance`` (gradients of the cross-entropy over 8 batches of 128 training
  examples, the model in evaluation mode so its BatchNorm statistics are not touched), the
  logits layer not pruned, no per-layer floor (``max_pruning_ratio=1.0``); the global
  channel ratio is found by bisection so that the student lands closest to the step's
  target from below, in epkd_tf's MAC count. DepGraph couples each depthwise conv with the
  conv producing its channels (and the BatchNorm between), and the outputs of every block
  joined by an addition, as epkd_tf's channel graph does. After each step every BatchNorm
  layer's statistics are re-estimated on ``--bn_recalibration_batches`` batches drawn as
  epkd_tf draws them (``peer_torch_resnet.recalibrate_batchnorm``; 0: never), then
  ``--epochs`` epochs of distillation from the original teacher (``peer_torch_pruning.distil``:
  alpha 0.1, T = max(1, 50 − 5·(k − 1)), loss alpha·CE + (1 − alpha)·T²·KL, Adam 5e-4
  constant, batch 128, cached teacher logits), then the statistics are re-estimated again.

Parameters are counted as epkd_tf counts them (``peer_torch_resnet.keras_params``: every
stored weight, BatchNorm moving mean and variance included). The JSON holds the port check
(``port_ok``, both accuracies, ``max_logit_error``, ``teacher_macs``; the PyTorch accuracy
and the logit error also under the ResNet port's names, ``teacher_test_accuracy`` and
``port_max_logit_diff``) and, after pruning,
the student's ``macs`` (epkd_tf's count), ``params``, ``test_accuracy``, ``widths`` (output
channels of every Conv2D, DepthwiseConv2D and Dense, by Keras layer name), the settings,
the wall time and the library versions.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

# This script runs from benchmarks/, so its sibling peers are importable: the distillation
# loop (and its recipe) is the LeNet peer's, the rest the ResNet peer's.
from peer_torch_pruning import distil
from peer_torch_resnet import (BN_EPS, BN_MOMENTUM, LOGIT_TOLERANCE, PORT_TOLERANCE, T0,
                               T_MIN, T_STEP, accuracy, keras_params, logits_of,
                               recalibrate_batchnorm, recalibration_batches, same_padding,
                               prune_to, epkd_macs, load_data, port_figures)

# The zoo's stages (epkd_tf/models/mobilenet.py, the paper's table): (blocks, first stride).
# Widths and expansions come from the weights; only the strides are not in them.
STAGES = [(1, 1), (2, 2), (3, 2), (4, 2), (3, 1), (3, 2), (1, 1)]
# Below this many pixels on the shorter side the zoo keeps the stem and the second stage
# at stride 1 (epkd_tf/models/common.py: SMALL_INPUT_PX).
SMALL_INPUT_PX = 100
DROPOUT = 0.2


class ConvBN(nn.Module):
    """Conv -> BatchNorm -> ReLU6 (or nothing), padded like Keras' ``padding="same"``;
    ``groups`` = channels makes it the depthwise conv. ``name``: the Keras conv layer's."""

    def __init__(self, name: str, cin: int, cout: int, kernel, stride: int, groups: int = 1,
                 bias: bool = False, relu6: bool = True):
        super().__init__()
        self.name, self.kernel, self.stride, self.relu6 = name, tuple(kernel), stride, relu6
        self.conv = nn.Conv2d(cin, cout, self.kernel, stride, padding=0, groups=groups,
                              bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x):
        top, bottom = same_padding(x.shape[2], self.kernel[0], self.stride)
        left, right = same_padding(x.shape[3], self.kernel[1], self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.relu6 else x


class InvertedResidual(nn.Module):
    """``block{i}``: [expand 1x1 ReLU6] -> depthwise ReLU6 -> project 1x1 (linear),
    plus the input when the teacher's block kept the resolution and the width (fixed at
    construction: pruning keeps the two sides of an addition equal)."""

    def __init__(self, expand, dw, project, residual: bool):
        super().__init__()
        self.expand, self.dw, self.project, self.residual = expand, dw, project, residual

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, stem, blocks, head, logits):
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.Sequential(*blocks), head
        self.dropout = nn.Dropout(DROPOUT)
        self.logits = logits

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.logits(self.dropout(x.mean(dim=(2, 3))))

    def convs(self) -> list:
        """Every ConvBN in forward order (the Keras conv layers)."""
        return [m for m in self.modules() if isinstance(m, ConvBN)]


def block_strides(count: int, image_px: int) -> list:
    """The zoo's stride of each of ``count`` blocks for images of ``image_px`` pixels (the
    shorter side), and the stem's first."""
    small = image_px < SMALL_INPUT_PX
    if count != sum(n for n, _ in STAGES):
        raise ValueError(f"{count} inverted residual blocks: the zoo's MobileNetV2 has "
                         f"{sum(n for n, _ in STAGES)}")
    strides = []
    for stage, (n, s) in enumerate(STAGES):
        if small and stage == 1:
            s = 1
        strides += [s] + [1] * (n - 1)
    return [1 if small else 2] + strides


def build(weights, image_px: int) -> MobileNetV2:
    """The port at the exported teacher's layout (weights not loaded yet)."""
    def conv(name, stride, relu6=True):
        if f"{name}/depthwise_kernel" in weights.files:
            kh, kw, channels, multiplier = weights[f"{name}/depthwise_kernel"].shape
            return ConvBN(name, channels, channels * multiplier, (kh, kw), stride,
                          groups=channels, bias=f"{name}/bias" in weights.files, relu6=relu6)
        kh, kw, cin, cout = weights[f"{name}/kernel"].shape
        return ConvBN(name, cin, cout, (kh, kw), stride, bias=f"{name}/bias" in weights.files,
                      relu6=relu6)

    count = len([k for k in weights.files if re.fullmatch(r"block\d+_dw/depthwise_kernel", k)])
    strides = block_strides(count, image_px)
    stem = conv("stem_conv", strides[0])
    blocks, cin = [], stem.conv.out_channels
    for index, stride in enumerate(strides[1:]):
        name = f"block{index}"
        expand = conv(f"{name}_expand", 1) if f"{name}_expand/kernel" in weights.files else None
        dw = conv(f"{name}_dw", stride)
        project = conv(f"{name}_project", 1, relu6=False)
        cout = project.conv.out_channels
        blocks.append(InvertedResidual(expand, dw, project, stride == 1 and cin == cout))
        cin = cout
    head = conv("head_conv", 1)
    kernel = weights["logits/kernel"]
    logits = nn.Linear(kernel.shape[0], kernel.shape[1], bias="logits/bias" in weights.files)
    return MobileNetV2(stem, blocks, head, logits)


def load_teacher(path: str, image_px: int) -> MobileNetV2:
    """The Keras teacher: conv kernels HWIO -> OIHW, depthwise kernels (kh, kw, C, m) ->
    (C·m, 1, kh, kw); BatchNorm gamma, beta, moving mean and variance; the dense kernel
    transposed. Every exported weight must be used."""
    w = np.load(path)
    model = build(w, image_px)
    used = set()

    def put(target, key, value):
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{key}: shape {value.shape} does not fit {tuple(target.shape)}")
        target.copy_(torch.tensor(value))
        used.add(key)

    with torch.no_grad():
        for m in model.convs():
            if f"{m.name}/depthwise_kernel" in w.files:
                key = f"{m.name}/depthwise_kernel"
                kh, kw, channels, multiplier = w[key].shape
                put(m.conv.weight, key, w[key].transpose(2, 3, 0, 1)
                    .reshape(channels * multiplier, 1, kh, kw))
            else:
                put(m.conv.weight, f"{m.name}/kernel", w[f"{m.name}/kernel"].transpose(3, 2, 0, 1))
            if m.conv.bias is not None:
                put(m.conv.bias, f"{m.name}/bias", w[f"{m.name}/bias"])
            for target, short in [(m.bn.weight, "gamma"), (m.bn.bias, "beta"),
                                  (m.bn.running_mean, "moving_mean"),
                                  (m.bn.running_var, "moving_variance")]:
                put(target, f"{m.name}_bn/{short}", w[f"{m.name}_bn/{short}"])
        put(model.logits.weight, "logits/kernel", w["logits/kernel"].T)
        if model.logits.bias is not None:
            put(model.logits.bias, "logits/bias", w["logits/bias"])
    unused = sorted(set(w.files) - used)
    if unused:       # a weight the port does not know would make it another function
        raise ValueError(f"teacher weights the port does not use: {unused[:5]}")
    return model


def prune_to_macs(model, target: int, example, seed: int, x, y):
    """A pruned copy of ``model`` whose global channel ratio (one MetaPruner step, Taylor
    importance) lands closest to ``target`` MACs (epkd_tf's count) from below: the ResNet
    port's bisection (``peer_torch_resnet.prune_to``) measured in MACs."""
    def macs(candidate):
        return epkd_macs(candidate, example)
    return prune_to(model, target, example, seed, x, y, measure=macs)


def widths(model: MobileNetV2) -> dict:
    """Output channels of every Keras Conv2D, DepthwiseConv2D and Dense, by layer name."""
    out = {m.name: int(m.conv.out_channels) for m in model.convs()}
    out["logits"] = int(model.logits.out_features)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help=".npz of the Keras teacher's weights (layer/weight)")
    parser.add_argument("--data", help=".npz of x_train, y_train, x_test, y_test (NHWC, "
                        "preprocessed) and keras_test_logits")
    parser.add_argument("--target_macs", type=int, help="the final student's MACs "
                        "(epkd_tf's count)")
    parser.add_argument("--steps", type=int, default=1, help="pruning steps")
    parser.add_argument("--epochs", type=int, default=1, help="distillation epochs per step")
    parser.add_argument("--seed", type=int, default=0,
                        help="also epkd_tf's data seed: the BatchNorm batches are its")
    parser.add_argument("--keras_test_accuracy", type=float)
    parser.add_argument("--keras_macs", type=int, help="the Keras teacher's MACs "
                        "(epkd_tf's count)")
    parser.add_argument("--bn_recalibration_batches", type=int, default=20,
                        help="batches of training examples whose average statistics "
                        "replace every BatchNorm layer's after each pruning step and each "
                        "distillation, as epkd_tf's setting of that name; 0: never")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    parser.add_argument("--check_port_only", action="store_true",
                        help="check the port and stop")
    args = parser.parse_args()
    required = ["teacher", "data", "keras_test_accuracy", "keras_macs", "out"]
    if not args.check_port_only:
        required.append("target_macs")
    missing = [f"--{name}" for name in required if getattr(args, name) is None]
    if missing:
        parser.error("the following arguments are required: " + ", ".join(missing))
    if args.steps < 1 or args.epochs < 0 or args.bn_recalibration_batches < 0:
        parser.error("--steps must be 1 or more, --epochs and --bn_recalibration_batches "
                     "0 or more")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x, y, x_test, y_test, keras_logits = load_data(args.data)
    teacher = load_teacher(args.teacher, min(x.shape[2], x.shape[3])).eval()
    example = torch.zeros(1, *x.shape[1:])
    teacher_macs = epkd_macs(teacher, example)
    torch_accuracy, logit_gap = port_figures(teacher, x_test, y_test, keras_logits)
    port_ok = (abs(torch_accuracy - args.keras_test_accuracy) <= PORT_TOLERANCE
               and logit_gap <= LOGIT_TOLERANCE and teacher_macs == args.keras_macs)
    print(f"teacher: test accuracy Keras {100 * args.keras_test_accuracy:.2f}%, PyTorch port "
          f"{100 * torch_accuracy:.2f}%; largest logit difference {logit_gap:.2e} on "
          f"{len(keras_logits)} test images; MACs Keras {args.keras_macs:,}, port "
          f"{teacher_macs:,}; port {'ok' if port_ok else 'DIFFERS'}", flush=True)
    result = {"port_ok": port_ok, "keras_test_accuracy": args.keras_test_accuracy,
              "torch_teacher_test_accuracy": torch_accuracy, "max_logit_error": logit_gap,
              "keras_macs": args.keras_macs, "teacher_macs": teacher_macs,
              # The ResNet port's names of the same two figures (frontier.py reads them).
              "teacher_test_accuracy": torch_accuracy, "port_max_logit_diff": logit_gap,
              "teacher_params": keras_params(teacher), "steps": args.steps,
              "epochs": args.epochs, "seed": args.seed,
              "bn_recalibration_batches": args.bn_recalibration_batches,
              "torch": torch.__version__, "torch_pruning": getattr(tp, "__version__", "?")}
    if not port_ok or args.check_port_only:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        return 0 if port_ok else 3

    start = time.perf_counter()
    teacher_logits = logits_of(teacher, x)
    # Drawn once: every re-estimation uses the same batches, as in epkd_tf.
    bn_batches = recalibration_batches(x, args.bn_recalibration_batches, args.seed)
    ratio = teacher_macs / args.target_macs
    student, per_step = copy.deepcopy(teacher), []
    for step in range(1, args.steps + 1):
        target = int(round(teacher_macs / ratio ** (step / args.steps)))
        student = prune_to_macs(student, target, example, args.seed * 1000 + step, x, y)
        # Removing channels upstream changes what every later BatchNorm layer sees.
        recalibrate_batchnorm(student, bn_batches)
        temperature = max(T_MIN, T0 - T_STEP * (step - 1))
        if args.epochs:
            distil(student, x, y, teacher_logits, temperature, args.seed * 100 + step,
                   epochs=args.epochs)
            recalibrate_batchnorm(student, bn_batches)
        per_step.append({"step": step, "target_macs": target,
                         "macs": epkd_macs(student, example), "params": keras_params(student),
                         "test_accuracy": accuracy(student, x_test, y_test)})
        print(f"step {step}/{args.steps}: {per_step[-1]['macs']:,} MACs (target {target:,}), "
              f"{per_step[-1]['params']:,} params, T={temperature:g}, test "
              f"{100 * per_step[-1]['test_accuracy']:.2f}%", flush=True)
    result.update({"target_macs": args.target_macs, "macs": per_step[-1]["macs"],
                   "params": per_step[-1]["params"],
                   "test_accuracy": per_step[-1]["test_accuracy"], "widths": widths(student),
                   "per_step": per_step, "bn_recalibration_examples":
                   sum(len(b) for b in bn_batches), "seconds": time.perf_counter() - start})
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_step", "widths")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
