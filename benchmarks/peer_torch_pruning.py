"""The peer side of ``benchmarks/peers.py``: Torch-Pruning on the same LeNet-5 teacher.

Runs inside the peer's own virtual environment (PyTorch CPU + torch-pruning; never a
dependency of epkd_tf), started by peers.py:

    python peer_torch_pruning.py --teacher=teacher.npz --mnist=mnist.npz \\
        --ratio=10 --seed=0 --out=result.json

(``benchmarks/frontier.py`` instead gives ``--target_macs`` and ``--steps``: the same
MACs, in epkd_tf's count, and the same number of distillation rounds as an epkd_tf
student; ``--mnist`` may hold Fashion-MNIST, the same npz keys.)

The protocol is the one epkd_tf runs (``compression_setup.py``): training examples
0..53,999 (the TFDS ``train[:90%]`` of the same file), 5 pruning steps to the same
parameter counts, each followed by 2 epochs of distillation from the original teacher
(alpha 0.1, T = 50, 45, 40, 35, 30 (never below 1), loss alpha·CE + (1 − alpha)·T²·KL, Adam 5e-4 constant,
batch 128, cached teacher logits). Pruning: ``tp.pruner.MetaPruner`` with global ranking,
``TaylorImportance`` (or ``MagnitudeImportance``), the logits layer not pruned, no
per-layer floor (``max_pruning_ratio=1.0``). Each step's channel ratio is found by
bisection so that the model lands on the step's parameter target. Writes a JSON with the
final parameters, MACs (``tp.utils.count_ops_and_params``), widths, test accuracy and wall
time.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

TRAIN_EXAMPLES = 54_000
STEPS, EPOCHS, BATCH = 5, 2, 128
ALPHA, T0, T_STEP, T_MIN, RATE = 0.1, 50.0, 5.0, 1.0, 5e-4
TAYLOR_BATCHES = 8


class LeNet5(nn.Module):
    """The same LeNet-5 as epkd_tf's zoo (conv 20, pool, conv 50, pool, fc 500, fc 10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.logits = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.logits(F.relu(self.fc1(x)))


def load_teacher(path: str) -> LeNet5:
    """The Keras teacher's weights: conv kernels HWIO -> OIHW; fc1's input rows reordered
    from Keras' flatten order (H, W, C) to PyTorch's (C, H, W)."""
    w = np.load(path)
    model = LeNet5()
    with torch.no_grad():
        model.conv1.weight.copy_(torch.tensor(w["conv1_kernel"].transpose(3, 2, 0, 1)))
        model.conv1.bias.copy_(torch.tensor(w["conv1_bias"]))
        model.conv2.weight.copy_(torch.tensor(w["conv2_kernel"].transpose(3, 2, 0, 1)))
        model.conv2.bias.copy_(torch.tensor(w["conv2_bias"]))
        kernel = w["fc1_kernel"].reshape(4, 4, 50, 500).transpose(2, 0, 1, 3).reshape(800, 500)
        model.fc1.weight.copy_(torch.tensor(kernel.T))
        model.fc1.bias.copy_(torch.tensor(w["fc1_bias"]))
        model.logits.weight.copy_(torch.tensor(w["logits_kernel"].T))
        model.logits.bias.copy_(torch.tensor(w["logits_bias"]))
    return model


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def accuracy(model, x, y) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), 1000):
            correct += (model(x[start:start + 1000]).argmax(1) == y[start:start + 1000]).sum()
    return float(correct) / len(x)


def distil(student, x, y, teacher_logits, temperature, seed, epochs=EPOCHS):
    """``epochs`` of Hinton distillation from the cached teacher logits (Adam at RATE,
    batches of BATCH, ALPHA on the hard labels); also the ResNet peer's."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=RATE)
    for _ in range(epochs):
        student.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            logits = student(x[idx])
            hard = F.cross_entropy(logits, y[idx])
            soft = F.kl_div(F.log_softmax(logits / temperature, 1),
                            F.log_softmax(teacher_logits[idx] / temperature, 1),
                            reduction="batchmean", log_target=True)
            loss = ALPHA * hard + (1 - ALPHA) * temperature ** 2 * soft
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def lenet_macs(model) -> int:
    """Multiply-accumulates per example as epkd_tf counts them (convolutions and dense
    layers only): conv1 at 24x24 positions, conv2 at 8x8, both 5x5 kernels."""
    c1, c2 = model.conv1.out_channels, model.conv2.out_channels
    f1 = model.fc1.out_features
    return 24 * 24 * 25 * c1 + 8 * 8 * 25 * c1 * c2 + 16 * c2 * f1 + f1 * 10


def prune_to(model, target, importance, x, y, example, measure=params):
    """Prunes ``model`` (in place) with one MetaPruner step whose global channel ratio
    lands closest to ``target`` in ``measure`` (parameters by default; bisection on
    copies)."""
    def pruned(ratio):
        candidate = copy.deepcopy(model)
        if isinstance(importance, tp.importance.TaylorImportance):
            candidate.zero_grad()
            for start in range(0, TAYLOR_BATCHES * BATCH, BATCH):
                F.cross_entropy(candidate(x[start:start + BATCH]), y[start:start + BATCH]).backward()
        pruner = tp.pruner.MetaPruner(candidate, example, importance=importance,
                                      global_pruning=True, pruning_ratio=ratio,
                                      max_pruning_ratio=1.0, ignored_layers=[candidate.logits])
        pruner.step()
        return candidate

    lo, hi = 0.0, 0.99
    best = model
    for _ in range(20):
        mid = (lo + hi) / 2
        candidate = pruned(mid)
        if measure(candidate) > target:
            lo = mid
        else:
            hi, best = mid, candidate
        if abs(measure(candidate) - target) / target < 0.002:
            best = candidate
            break
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--mnist", required=True)
    parser.add_argument("--ratio", type=float, default=None,
                        help="prune to this many times fewer parameters")
    parser.add_argument("--target_macs", type=int, default=None,
                        help="prune to this many MACs (epkd_tf's count) instead")
    parser.add_argument("--steps", type=int, default=STEPS,
                        help="pruning steps, each followed by distillation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--importance", choices=["taylor", "magnitude"], default="taylor")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    data = np.load(args.mnist)
    x = torch.tensor(data["x_train"][:TRAIN_EXAMPLES, None] / 255.0, dtype=torch.float32)
    y = torch.tensor(data["y_train"][:TRAIN_EXAMPLES], dtype=torch.long)
    x_test = torch.tensor(data["x_test"][:, None] / 255.0, dtype=torch.float32)
    y_test = torch.tensor(data["y_test"], dtype=torch.long)
    teacher = load_teacher(args.teacher).eval()
    with torch.no_grad():
        teacher_logits = torch.cat([teacher(x[s:s + 1000]) for s in range(0, len(x), 1000)])
    start = time.perf_counter()
    student = copy.deepcopy(teacher)
    example = torch.zeros(1, 1, 28, 28)
    if (args.ratio is None) == (args.target_macs is None):
        parser.error("give one of --ratio and --target_macs")
    measure = params if args.target_macs is None else lenet_macs
    total = measure(teacher)
    ratio = args.ratio if args.target_macs is None else total / args.target_macs
    importance = (tp.importance.TaylorImportance() if args.importance == "taylor"
                  else tp.importance.MagnitudeImportance(p=1))
    for step in range(1, args.steps + 1):
        target = int(round(total / ratio ** (step / args.steps)))
        student = prune_to(student, target, importance, x, y, example, measure)
        # epkd_tf's schedule, floor included (--temperature_min=1): from the 11th step on
        # the plain line would reach T = 0 and divide the logits by it.
        temperature = max(T_MIN, T0 - T_STEP * (step - 1))
        distil(student, x, y, teacher_logits, temperature, args.seed * 100 + step)
    macs, counted = tp.utils.count_ops_and_params(student, example)
    result = {"importance": args.importance, "ratio": ratio, "seed": args.seed,
              "steps": args.steps, "lenet_macs": lenet_macs(student),
              "teacher_params": total, "teacher_test_accuracy": accuracy(teacher, x_test, y_test),
              "params": params(student), "macs": int(macs),
              "widths": f"{student.conv1.out_channels}, {student.conv2.out_channels}, "
                        f"{student.fc1.out_features}",
              "test_accuracy": accuracy(student, x_test, y_test),
              "seconds": time.perf_counter() - start, "torch": torch.__version__,
              "torch_pruning": getattr(tp, "__version__", "?")}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
