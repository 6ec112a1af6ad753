"""The peer side of ``benchmarks/residual.py``: Torch-Pruning on the same ResNet teacher.

Runs inside the peer's own virtual environment (PyTorch CPU + torch-pruning; never a
dependency of epkd_tf, made by ``peers.py:peer_python()``), started by residual.py:

    python peer_torch_resnet.py --teacher=teacher_weights.npz --data=peer_data.npz \\
        --targets=538000,411000,... --keras_test_accuracy=0.9871 \\
        --bn_recalibration_batches=20 --out=result.json

(without ``--targets`` it only checks the port; ``--self_test`` checks the BatchNorm
re-estimation on a small model and needs no other argument).

``benchmarks/frontier.py`` runs it in its *frontier mode* instead (the contract that
``peer_torch_mobilenet.py`` shares):

    python peer_torch_resnet.py --teacher=weights.npz --data=data.npz --target_macs=N \
        --steps=K --epochs=E --seed=S --keras_test_accuracy=A --keras_macs=M \
        --bn_recalibration_batches=B --out=result.json

The port check then also compares the port's MACs of the unpruned teacher, counted the way
epkd_tf counts them (``epkd_macs``: every Conv2d and Linear, output positions x kernel
positions x input channels x output channels / groups; BatchNorm, pooling and additions
count 0, as in ``epkd_tf/graph/count.py:model_macs``), with ``M``; then K pruning steps to
MACs geometrically spaced from M to N (step k: ``round(M / (M / N) ** (k / K))``, each
reached by bisection on the global channel ratio, in epkd_tf's count), each followed by
BatchNorm re-estimation, E epochs of distillation at T = max(1, 50 - 5 (k - 1)) and
BatchNorm re-estimation again. Its JSON: ``port_ok``, ``keras_test_accuracy``,
``torch_teacher_test_accuracy``, ``teacher_macs``, ``macs`` (epkd_tf's count),
``params``, ``test_accuracy``, ``widths`` ({Keras layer name: output channels} of every
conv and dense layer), ``steps``, ``epochs``, ``seed``, ``seconds``, ``torch``,
``torch_pruning`` (plus the port's figures and a per-step ``step_log``).

* The model: a PyTorch port of epkd_tf's basic-block ResNet (``epkd_tf/models/resnet.py``,
  CIFAR stem): conv-BN-ReLU stem, stages of basic blocks (conv-BN-ReLU, conv-BN, a 1x1
  conv-BN projection shortcut where the stride or the width changes, add, ReLU), global
  average pooling, dense logits. Its layout (widths, blocks per stage, so ResNet-18 or -34
  at any width) is read from the exported Keras weights, whose names are the zoo's.
  Two details make it the *same function* and not only the same architecture: Keras'
  ``padding="same"`` pads a stride-2 3x3 conv of an even input by 0 before and 1 after
  (PyTorch's ``padding=1`` pads 1 on both sides, shifting every window), so the port pads
  explicitly the way TensorFlow does; and Keras' BatchNormalization uses eps 1e-3 and
  momentum 0.99 (PyTorch: eps 1e-5, momentum 0.1 for the *new* statistics), so the port
  sets eps=1e-3, momentum=0.01.
* The port is checked before any pruning: the teacher's test accuracy in PyTorch must be
  within 0.1 points of the Keras one (``--keras_test_accuracy``), and its logits within
  1e-2 of the Keras teacher's on the exported test images (accuracy alone can miss a
  wrongly padded conv). Otherwise the result says ``port_ok: false`` and the script exits
  with status 3 without pruning: a peer figure on a different function would be
  meaningless.
* The protocol is epkd_tf's (``residual.py``): the training examples and the test split
  exactly as epkd_tf preprocessed them (exported by residual.py: MNIST resized to 32x32,
  scaled to [0, 1]); one pruning step per entry of ``--targets`` (epkd_tf's own student
  sizes, iteration by iteration), each followed by 1 epoch of distillation from the
  original teacher (alpha 0.1, T = 50, 45, 40, ..., loss alpha·CE + (1 - alpha)·T²·KL,
  Adam 5e-4 constant, batch 128, cached teacher logits). Pruning: ``tp.pruner.MetaPruner``
  with global ranking, ``TaylorImportance`` (gradients of the cross-entropy over 8 batches
  of 128 training examples, the model in evaluation mode so its BatchNorm statistics are
  not touched), the logits layer not pruned, no per-layer floor (``max_pruning_ratio=1.0``;
  Torch-Pruning never empties a layer). DepGraph couples the channels joined by the
  residual additions, as epkd_tf's channel graph does. Each step's global channel ratio is
  found by bisection so that the model lands on the step's parameter target.
* BatchNorm statistics are re-estimated as epkd_tf re-estimates them
  (``epkd_tf/batchnorm.py``, ``--bn_recalibration_batches``): after each pruning step
  (before distillation) and after each distillation, every BatchNorm layer's running mean
  and variance become the plain average of their per-batch values over the same
  ``--bn_recalibration_batches`` batches of ``BATCH`` training examples, drawn once as
  epkd_tf draws its own (``Data.sample``: ``np.random.default_rng(seed).choice`` over the
  training examples in their exported order, without replacement), so with residual.py's
  ``--seed`` (epkd_tf's data seed) they are the very batches epkd_tf uses. 0 turns it off.

Parameters are counted the way epkd_tf counts them: every stored weight, BatchNorm moving
mean and variance included (Keras keeps them as weights, PyTorch as buffers). Writes a
JSON with the teacher's accuracy in both frameworks, per-step parameters, the final
parameters, MACs (``tp.utils.count_ops_and_params``), widths, test accuracy, wall time and
the BatchNorm re-estimation done (``bn_recalibration_batches``: the setting;
``bn_recalibration_examples``: the examples drawn; ``bn_recalibrated``: when).
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

# The LeNet peer's distillation and its recipe (Adam rate, batch, alpha); this script runs
# from benchmarks/, so the module is importable.
from peer_torch_pruning import BATCH, distil

EPOCHS = 1
T0, T_STEP, T_MIN = 50.0, 5.0, 1.0
TAYLOR_BATCHES = 8
# Keras' BatchNormalization defaults, in PyTorch's terms.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
PORT_TOLERANCE = 0.001          # 0.1 accuracy points
# Float32 rounding in two libraries moves logits by ~1e-6..1e-4; a port that pads one
# strided conv on the wrong side moves them by ~1e-1 and can still score the same accuracy.
LOGIT_TOLERANCE = 1e-2


def same_padding(size: int, kernel: int, stride: int):
    """(before, after) padding of TensorFlow's ``padding="same"`` along one side."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm, padded like Keras' ``padding="same"``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x):
        top, bottom = same_padding(x.shape[2], self.kernel, self.stride)
        left, right = same_padding(x.shape[3], self.kernel, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """epkd_tf's ``_basic_block``: relu(shortcut(x) + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = ConvBN(cin, planes, 3, stride)
        self.conv2 = ConvBN(planes, planes, 3, 1)
        self.proj = ConvBN(cin, planes, 1, stride) if stride != 1 or cin != planes else None

    def forward(self, x):
        shortcut = self.proj(x) if self.proj is not None else x
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(shortcut + y)


class ResNet(nn.Module):
    """Stem, ``stages`` (a list of (planes, blocks)), GAP, logits: the CIFAR-stem zoo net."""

    def __init__(self, in_channels: int, stem: int, stages, num_classes: int):
        super().__init__()
        self.stem = ConvBN(in_channels, stem, 3, 1)
        blocks, cin = [], stem
        # The zoo's layer names of each block, for loading the Keras weights.
        self.block_names = []
        for index, (planes, count) in enumerate(stages):
            for b in range(count):
                blocks.append(BasicBlock(cin, planes, 2 if index > 0 and b == 0 else 1))
                self.block_names.append(f"stage{index + 1}_block{b + 1}")
                cin = planes
        self.blocks = nn.Sequential(*blocks)
        self.logits = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.stem(x)))
        return self.logits(x.mean(dim=(2, 3)))


def keras_layout(weights) -> tuple:
    """(input channels, stem width, [(planes, blocks) per stage], classes) from the names of
    the exported Keras weights (``stem_conv/kernel``, ``stage2_block1_conv1/kernel``...)."""
    stem = weights["stem_conv/kernel"]
    blocks = {}
    for key in weights.files:
        match = re.fullmatch(r"stage(\d+)_block(\d+)_conv1/kernel", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks.setdefault(stage, {})[block] = int(weights[key].shape[3])
    stages = [(blocks[s][1], len(blocks[s])) for s in sorted(blocks)]
    if any(len(set(widths.values())) != 1 for widths in blocks.values()):
        raise ValueError("the teacher's blocks of one stage differ in width: not a zoo "
                         "ResNet before pruning")
    return int(stem.shape[2]), int(stem.shape[3]), stages, int(weights["logits/kernel"].shape[1])


def keras_name_of(model: ResNet, module_path: str) -> str:
    """The Keras layer name of the ConvBN at ``module_path`` (``blocks.2.conv1`` ->
    ``stage2_block1_conv1`` in ResNet-18)."""
    if module_path == "stem":
        return "stem_conv"
    _, index, part = module_path.split(".")
    return f"{model.block_names[int(index)]}_{part}"


def load_teacher(path: str) -> ResNet:
    """The Keras teacher's weights: conv kernels HWIO -> OIHW; BatchNorm gamma, beta,
    moving mean and variance; the dense kernel transposed."""
    w = np.load(path)
    model = ResNet(*keras_layout(w))
    used = set()
    with torch.no_grad():
        for path_, module in model.named_modules():
            if not isinstance(module, ConvBN):
                continue
            name = keras_name_of(model, path_)
            pairs = [(module.conv.weight, f"{name}/kernel", (3, 2, 0, 1)),
                     (module.bn.weight, f"{name}_bn/gamma", None),
                     (module.bn.bias, f"{name}_bn/beta", None),
                     (module.bn.running_mean, f"{name}_bn/moving_mean", None),
                     (module.bn.running_var, f"{name}_bn/moving_variance", None)]
            for target, key, axes in pairs:
                value = w[key] if axes is None else w[key].transpose(axes)
                if tuple(value.shape) != tuple(target.shape):
                    raise ValueError(f"{key}: shape {value.shape} does not fit {path_} "
                                     f"{tuple(target.shape)}")
                target.copy_(torch.tensor(value))
                used.add(key)
        model.logits.weight.copy_(torch.tensor(w["logits/kernel"].T))
        model.logits.bias.copy_(torch.tensor(w["logits/bias"]))
        used.update({"logits/kernel", "logits/bias"})
    unused = sorted(set(w.files) - used)
    if unused:       # a weight the port does not know would make it another function
        raise ValueError(f"teacher weights the port does not use: {unused[:5]}")
    return model


def recalibration_batches(x: torch.Tensor, num_batches: int, seed: int) -> list:
    """``num_batches`` batches of ``BATCH`` distinct seeded training examples (at most all of
    ``x``), drawn the way epkd_tf's ``batchnorm.sample_batches`` draws them (one
    ``default_rng(seed).choice`` without replacement, cut in batches); [] for 0."""
    if num_batches <= 0:
        return []
    chosen = np.random.default_rng(seed).choice(len(x), size=min(num_batches * BATCH, len(x)),
                                                replace=False)
    examples = x[torch.from_numpy(chosen)]
    return [examples[s:s + BATCH] for s in range(0, len(examples), BATCH)]


def recalibrate_batchnorm(model: nn.Module, batches: list) -> int:
    """Replaces the running mean and variance of every BatchNorm layer of ``model`` by
    their average over ``batches`` (each batch normalised with its own statistics, as in
    training); weights are not changed, the model is left in evaluation mode. Returns the
    number of batches used (0: no BatchNorm layer or no batch, nothing done).

    epkd_tf sets each Keras layer's momentum to (k - 1) / k at batch k; PyTorch's
    ``momentum=None`` is the same cumulative average (factor 1 / num_batches_tracked, from
    freshly reset statistics). Both store the *unbiased* per-batch variance: PyTorch by
    definition, Keras because its fused kernel (used for these 4-D NHWC layers) returns the
    Bessel-corrected variance for the moving average. So the statistics are the same
    function of the same batches; only float32 rounding differs."""
    layers = [m for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not layers or not batches:
        model.eval()
        return 0
    momenta = [m.momentum for m in layers]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        # Training mode for the whole model, as Keras' model(x, training=True) does.
        model.train()
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    return len(batches)


def self_test() -> int:
    """Checks :func:`recalibrate_batchnorm` on a small conv net with two BatchNorm layers:
    re-estimated on one batch, the network at inference computes what it computes in
    training mode on that batch (once the Bessel factor n / (n - 1) kept in the running
    variance is taken out); re-estimated on several batches, the running mean and variance
    are the averages of the per-batch means and unbiased variances of each layer's inputs
    (NumPy); momenta and weights are unchanged. Returns 0 when every check passes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6, eps=BN_EPS, momentum=BN_MOMENTUM),
                          nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2),
                          nn.BatchNorm2d(5, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU(),
                          nn.Flatten(), nn.Linear(5 * 3 * 3, 4))
    bns = [model[1], model[4]]
    weights = copy.deepcopy(model.state_dict())
    batches = [torch.randn(16, 3, 10, 10) * (1 + b) + b for b in range(3)]
    failures = []

    def check(ok: bool, what: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    # One batch: inference with the re-estimated statistics = training-mode output.
    recalibrate_batchnorm(model, batches[:1])
    check(not model.training, "left in evaluation mode")
    check(all(bn.momentum == BN_MOMENTUM for bn in bns), "momenta restored")
    check(all(torch.equal(weights[k], v) for k, v in model.state_dict().items()
              if not k.split(".")[-1].startswith(("running_", "num_batches"))),
          "weights unchanged")
    with torch.no_grad():
        trained = copy.deepcopy(model).train()(batches[0])
        biased = copy.deepcopy(model)
        for bn, (h, w) in zip([biased[1], biased[4]], [(8, 8), (3, 3)]):
            n = len(batches[0]) * h * w          # values per channel in the batch
            bn.running_var *= (n - 1) / n
        gap = float((biased(batches[0]) - trained).abs().max())
        bessel = float((model(batches[0]) - trained).abs().max())
    check(gap <= 1e-5, f"one batch: eval output = train output ({gap:.1e}; {bessel:.1e} with "
          "the unbiased variance kept, as Keras keeps it)")

    # Several batches: the plain average of the per-batch statistics of each layer's inputs
    # (recorded on a copy in training mode, where every layer uses its batch's statistics,
    # so the inputs do not depend on the running ones).
    reference = copy.deepcopy(model).train()
    inputs = [[], []]
    for seen, index in zip(inputs, (1, 4)):
        reference[index].register_forward_pre_hook(
            lambda module, args, seen=seen: seen.append(args[0].numpy().copy()))
    with torch.no_grad():
        for batch in batches:
            reference(batch)
    used = recalibrate_batchnorm(model, batches)
    check(used == len(batches), f"{used} batches used")
    for index, (bn, seen) in enumerate(zip(bns, inputs)):
        mean = np.mean([a.mean(axis=(0, 2, 3)) for a in seen], axis=0)
        var = np.mean([a.var(axis=(0, 2, 3), ddof=1) for a in seen], axis=0)
        mean_gap = float(np.abs(bn.running_mean.numpy() - mean).max())
        var_gap = float(np.abs(bn.running_var.numpy() - var).max() / np.abs(var).max())
        check(mean_gap <= 1e-5 and var_gap <= 1e-5,
              f"{len(batches)} batches, BatchNorm {index + 1}: running mean = mean of batch "
              f"means ({mean_gap:.1e}), running var = mean of unbiased batch variances "
              f"({var_gap:.1e} relative)")
    drawn = recalibration_batches(torch.arange(300.0).reshape(300, 1), 3, seed=0)
    again = recalibration_batches(torch.arange(300.0).reshape(300, 1), 3, seed=0)
    check([len(b) for b in drawn] == [BATCH, BATCH, 300 - 2 * BATCH]
          and all(torch.equal(a, b) for a, b in zip(drawn, again))
          and len(torch.cat(drawn).unique()) == 300, "batches: seeded, distinct, capped")
    print("self-test " + ("passed" if not failures else f"FAILED ({len(failures)})"))
    return 0 if not failures else 1


def keras_params(model: nn.Module) -> int:
    """Parameters as epkd_tf counts them: every parameter plus BatchNorm moving statistics."""
    count = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            count += m.running_mean.numel() + m.running_var.numel()
    return count


def epkd_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one example as epkd_tf counts them
    (``epkd_tf.graph.count.model_macs``): every Conv2d counts its output positions x kernel
    positions x input channels x output channels / groups (a depthwise conv: positions x
    kernel x output channels), every Linear its inputs x outputs; nothing else counts.
    The output positions are read off one forward pass of ``example`` (one image)."""
    total = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total.append(output.shape[2] * output.shape[3] * kernel * module.in_channels
                         * module.out_channels // module.groups)
        else:
            total.append(module.in_features * module.out_features)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
    return int(sum(total))


def logits_of(model, x, batch: int = 500) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[s:s + batch]) for s in range(0, len(x), batch)])


def accuracy(model, x, y) -> float:
    return float((logits_of(model, x).argmax(1) == y).float().mean())


def load_data(path: str) -> tuple:
    """(x_train, y_train, x_test, y_test, keras_test_logits) of a peer data npz
    (residual.py's / frontier.py's export: NHWC arrays as epkd_tf preprocessed them), the
    images as NCHW tensors."""
    data = np.load(path)
    nchw = lambda a: torch.tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    return (nchw(data["x_train"]), torch.tensor(data["y_train"], dtype=torch.long),
            nchw(data["x_test"]), torch.tensor(data["y_test"], dtype=torch.long),
            data["keras_test_logits"])


def port_figures(teacher, x_test, y_test, keras_logits) -> tuple:
    """(test accuracy, largest logit difference on the images ``keras_logits`` covers) of
    a ported teacher: what the port check compares with the Keras teacher's."""
    gap = float((logits_of(teacher, x_test[:len(keras_logits)])
                 - torch.tensor(keras_logits)).abs().max())
    return accuracy(teacher, x_test, y_test), gap


def taylor_gradients(model, x, y, seed: int) -> None:
    """Accumulates the cross-entropy gradients of ``TAYLOR_BATCHES`` random training batches
    in ``model``'s parameters (evaluation mode: BatchNorm statistics untouched)."""
    model.eval()
    model.zero_grad()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for b in range(min(TAYLOR_BATCHES, -(-len(x) // BATCH))):    # fewer on a tiny slice
        idx = order[b * BATCH:(b + 1) * BATCH]
        F.cross_entropy(model(x[idx]), y[idx]).backward()


def prune_to(model, target: int, example, seed: int, x, y, measure=None):
    """A pruned copy of ``model`` whose global channel ratio (one MetaPruner step, Taylor
    importance) lands closest to ``target`` in ``measure`` (default: parameters, as
    ``keras_params`` counts them) from below (bisection on copies; the gradients are
    computed once and given to every copy)."""
    measure = measure or keras_params
    taylor_gradients(model, x, y, seed)

    def pruned(ratio):
        candidate = copy.deepcopy(model)
        # deepcopy leaves .grad behind: the copy's Taylor scores need the same gradients.
        for copied, original in zip(candidate.parameters(), model.parameters()):
            copied.grad = None if original.grad is None else original.grad.clone()
        pruner = tp.pruner.MetaPruner(candidate, example,
                                      importance=tp.importance.TaylorImportance(),
                                      global_pruning=True, pruning_ratio=ratio,
                                      max_pruning_ratio=1.0, ignored_layers=[candidate.logits])
        pruner.step()
        return candidate

    lo, hi, best = 0.0, 0.99, None
    for _ in range(24):
        mid = (lo + hi) / 2
        candidate = pruned(mid)
        count = measure(candidate)
        if count > target:
            lo = mid
        else:
            hi, best = mid, candidate
            if (target - count) / target < 0.002:
                break
    if best is None:
        raise RuntimeError(f"no channel ratio reaches {target} "
                           f"({'parameters' if measure is keras_params else measure.__name__})")
    best.zero_grad(set_to_none=True)
    return best


def widths(model: ResNet) -> str:
    """Stem and each block's inner / output width, e.g. ``16 | 9/16 12/16 | ...``."""
    parts = [str(model.stem.conv.out_channels)]
    for block in model.blocks:
        parts.append(f"{block.conv1.conv.out_channels}/{block.conv2.conv.out_channels}")
    return " ".join(parts)


def keras_widths(model: ResNet) -> dict:
    """{Keras layer name: output channels} of every conv and dense layer of ``model``."""
    result = {}
    for path, module in model.named_modules():
        if isinstance(module, ConvBN):
            result[keras_name_of(model, path)] = int(module.conv.out_channels)
    result["logits"] = int(model.logits.out_features)
    return result


def frontier(args, teacher, result, x, y, x_test, y_test) -> dict:
    """The frontier mode: ``args.steps`` global-Taylor steps to ``args.target_macs``
    (epkd_tf's MAC count, geometric targets), each followed by BatchNorm re-estimation,
    ``args.epochs`` of distillation and BatchNorm re-estimation again; ``result`` updated
    with the contract's keys."""
    example = torch.zeros(1, *x.shape[1:])
    macs = lambda model: epkd_macs(model, example)  # noqa: E731
    macs.__name__ = "MACs"
    teacher_logits = logits_of(teacher, x)
    bn_batches = recalibration_batches(x, args.bn_recalibration_batches, args.seed)
    start = time.perf_counter()
    student = copy.deepcopy(teacher)
    total, log = result["teacher_macs"], []
    for step in range(1, args.steps + 1):
        target = int(round(total / (total / args.target_macs) ** (step / args.steps)))
        student = prune_to(student, target, example, args.seed * 1000 + step, x, y, macs)
        recalibrate_batchnorm(student, bn_batches)
        temperature = max(T_MIN, T0 - T_STEP * (step - 1))
        distil(student, x, y, teacher_logits, temperature, args.seed * 100 + step,
               epochs=args.epochs)
        recalibrate_batchnorm(student, bn_batches)
        log.append({"step": step, "target_macs": target, "macs": macs(student),
                    "params": keras_params(student), "temperature": temperature,
                    "test_accuracy": accuracy(student, x_test, y_test)})
        print(f"step {step}/{args.steps}: {log[-1]['macs']:,} MACs (target {target:,}), "
              f"T={temperature:g}, test {100 * log[-1]['test_accuracy']:.2f}%", flush=True)
    result.update({"macs": macs(student), "params": keras_params(student),
                   "test_accuracy": log[-1]["test_accuracy"] if log else
                   accuracy(student, x_test, y_test),
                   "widths": keras_widths(student), "steps": args.steps,
                   "epochs": args.epochs, "seed": args.seed,
                   "bn_recalibration_examples": sum(len(b) for b in bn_batches),
                   "step_log": log, "seconds": time.perf_counter() - start})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help=".npz of the Keras teacher's weights")
    parser.add_argument("--data", help=".npz of x_train, y_train, x_test, "
                        "y_test (NHWC, preprocessed) and keras_test_logits")
    parser.add_argument("--targets", default="", help="parameter count of every step "
                        "(none: check the port and stop)")
    parser.add_argument("--keras_test_accuracy", type=float)
    parser.add_argument("--target_macs", type=int, default=None,
                        help="frontier mode: prune to this many MACs (epkd_tf's count) in "
                        "--steps steps of --epochs distillation each (instead of --targets)")
    parser.add_argument("--steps", type=int, default=1, help="frontier mode: pruning steps")
    parser.add_argument("--epochs", type=int, default=EPOCHS,
                        help="frontier mode: distillation epochs after each step")
    parser.add_argument("--keras_macs", type=int, default=None,
                        help="frontier mode: the Keras teacher's MACs (epkd_tf's count); "
                        "the port's must be equal")
    parser.add_argument("--bn_recalibration_batches", type=int, default=20,
                        help="batches of training examples whose average statistics "
                        "replace every BatchNorm layer's after each pruning step and each "
                        "distillation, as epkd_tf's setting of that name; 0: never")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    parser.add_argument("--self_test", action="store_true",
                        help="check the BatchNorm re-estimation on a small model and stop")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    missing = [f"--{name}" for name in ("teacher", "data", "keras_test_accuracy", "out")
               if getattr(args, name) is None]
    if missing:
        parser.error("the following arguments are required: " + ", ".join(missing))
    if args.bn_recalibration_batches < 0:
        parser.error("--bn_recalibration_batches must be 0 or more")
    if args.target_macs is not None:
        if args.targets:
            parser.error("give --targets or --target_macs, not both")
        if args.keras_macs is None:
            parser.error("--target_macs needs --keras_macs (the port's MACs are checked)")
        if args.steps < 1 or args.epochs < 0 or args.target_macs < 1:
            parser.error("--steps must be 1 or more, --epochs 0 or more, --target_macs "
                         "positive")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    x, y, x_test, y_test, keras_logits = load_data(args.data)
    teacher = load_teacher(args.teacher).eval()
    total = keras_params(teacher)
    torch_accuracy, logit_gap = port_figures(teacher, x_test, y_test, keras_logits)
    port_ok = (abs(torch_accuracy - args.keras_test_accuracy) <= PORT_TOLERANCE
               and logit_gap <= LOGIT_TOLERANCE)
    port_macs = epkd_macs(teacher, x_test[:1])
    if args.keras_macs is not None:
        port_ok = port_ok and port_macs == args.keras_macs
    print(f"teacher test accuracy: Keras {100 * args.keras_test_accuracy:.2f}%, PyTorch port "
          f"{100 * torch_accuracy:.2f}% (largest logit difference {logit_gap:.2e} on "
          f"{len(keras_logits)} test images); MACs (epkd_tf's count): port {port_macs:,}"
          + (f", Keras {args.keras_macs:,}" if args.keras_macs is not None else "")
          + f"; port {'ok' if port_ok else 'DIFFERS'}", flush=True)
    result = {"teacher_params": total, "keras_test_accuracy": args.keras_test_accuracy,
              "teacher_test_accuracy": torch_accuracy, "port_max_logit_diff": logit_gap,
              "port_ok": port_ok, "torch": torch.__version__,
              "torch_pruning": getattr(tp, "__version__", "?"),
              # The setting (residual.py re-runs a cached result made with another one).
              "bn_recalibration_batches": args.bn_recalibration_batches}
    if args.target_macs is not None:
        # The frontier contract's names (teacher_test_accuracy stays for residual.py's).
        result.update({"torch_teacher_test_accuracy": torch_accuracy,
                       "teacher_macs": port_macs, "keras_macs": args.keras_macs,
                       "port_tolerances": {"accuracy_points": 100 * PORT_TOLERANCE,
                                           "logits": LOGIT_TOLERANCE, "macs": 0}})
        if port_ok:
            frontier(args, teacher, result, x, y, x_test, y_test)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps({k: v for k, v in result.items() if k != "step_log"}))
        return 0 if port_ok else 3
    if not port_ok or not args.targets:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        return 0 if port_ok else 3
    teacher_logits = logits_of(teacher, x)
    # Drawn once: every re-estimation uses the same batches, as in epkd_tf.
    bn_batches = recalibration_batches(x, args.bn_recalibration_batches, args.seed)
    result.update({"bn_recalibration_examples": sum(len(b) for b in bn_batches),
                   "bn_recalibrated": "after each pruning step and after each distillation"
                   if bn_batches else "never"})
    start = time.perf_counter()
    student = copy.deepcopy(teacher)
    example = torch.zeros(1, *x.shape[1:])
    result["teacher_macs"] = int(tp.utils.count_ops_and_params(teacher, example)[0])
    steps = []
    targets = [int(t) for t in args.targets.split(",")]
    for step, target in enumerate(targets, start=1):
        student = prune_to(student, target, example, args.seed * 1000 + step, x, y)
        # Removing channels upstream changes what every later BatchNorm layer sees.
        recalibrate_batchnorm(student, bn_batches)
        temperature = max(T_MIN, T0 - T_STEP * (step - 1))
        distil(student, x, y, teacher_logits, temperature, args.seed * 100 + step,
               epochs=EPOCHS)
        # One epoch at momentum 0.01 leaves the running statistics lagging the weights.
        recalibrate_batchnorm(student, bn_batches)
        steps.append({"step": step, "target": target, "params": keras_params(student),
                      "test_accuracy": accuracy(student, x_test, y_test)})
        print(f"step {step}/{len(targets)}: {steps[-1]['params']:,} params (target "
              f"{target:,}), T={temperature:g}, test {100 * steps[-1]['test_accuracy']:.2f}%",
              flush=True)
    macs, _ = tp.utils.count_ops_and_params(student, example)
    result.update({"params": keras_params(student), "macs": int(macs),
                   "widths": widths(student), "test_accuracy": steps[-1]["test_accuracy"],
                   "steps": steps, "seconds": time.perf_counter() - start})
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
