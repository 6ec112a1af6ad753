"""Whether a run can finish, decided before it starts.

Two kinds of run used to fail only after training had started: targets that pruning can
never reach, and models too large for the machine's memory.

* :func:`check_targets` — each iteration keeps ``--keep_ratio`` of the previous student's
  nonzero parameters, so the last one asks for ``keep_ratio^iterations × P`` of the
  teacher's ``P``. Refused: fewer than one parameter; with a structured pruner, a first
  target below what structured pruning can leave in one plan (every layer keeps
  ``--layer_floor`` of its units, at least one: ``pruning.plan.minimum_nonzero``), and a
  last one below one unit per layer (unless ``--max_accuracy_drop`` makes ``--iterations``
  an upper bound: such a run stops, with its final student, where the floors are reached).
* :func:`check_memory` — a lower bound of what training the teacher needs: 16 bytes per
  parameter (weights, gradients and Adam's two moments, float32) plus one float32 copy of
  every layer's output for a batch of ``--batch_size``; on a machine without GPUs it must
  fit in the memory available (``MemAvailable``, and a cgroup limit if lower), with GPUs
  two copies of the weights must fit on the host (saving, TFLite conversion). Main
  computes it on the teacher built inside a ``tf.Graph`` (no weights allocated), so even a
  teacher of billions of parameters is refused at once.

Every refusal is a :class:`epkd_tf.errors.UsageError` naming the flags to change.
"""
from __future__ import annotations

from typing import Optional

from epkd_tf.activations import activation_values  # noqa: F401  (re-exported)
from epkd_tf.errors import UsageError

BYTES_PER_PARAM = 16         # float32 weight + gradient + Adam's m and v
GIB = 1024 ** 3


def available_memory() -> Optional[int]:
    """Bytes of memory this process can still use (None where unknown)."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                limit = int(f.read().strip())
        except (OSError, ValueError):        # absent, or "max" (no limit)
            continue
        available = limit if available is None else min(available, limit)
    return available


def check_memory(model, batch_size: int, flags: str, gpus: bool = False,
                 available: Optional[int] = None) -> None:
    """Refuses ``model`` (``flags``: how the user made it, named in the message) when its
    training cannot fit in memory (see the module docstring)."""
    available = available_memory() if available is None else available
    if available is None:
        return
    params = model.count_params()
    if gpus:
        needed, what = 8 * params, "two copies of its weights on the host"
    else:
        activations = 4 * batch_size * activation_values(model)
        needed = BYTES_PER_PARAM * params + activations
        what = (f"{BYTES_PER_PARAM * params / GIB:.1f} GiB for its weights, gradients and "
                f"Adam's moments and {activations / GIB:.1f} GiB for the layer outputs of "
                f"a batch of {batch_size}")
    if needed > available:
        raise UsageError(f"{flags} makes a teacher of {params:,} parameters that needs at "
                         f"least {needed / GIB:.1f} GiB ({what}), but {available / GIB:.1f} "
                         f"GiB of memory is available; lower --teacher_width, --image_size "
                         f"or --batch_size.")


def check_targets(keep_ratio: float, iterations: int, layer_floor: float, model,
                  graph=None, width_flag: str = "", goal: float = 0.0,
                  floor_of_teacher: bool = True, upper_bound: bool = False) -> None:
    """Refuses parameter targets the pruners cannot reach (see the module docstring);
    ``graph``: the teacher's channel graph when a structured pruner runs, else None.
    ``width_flag`` (e.g. ``--teacher_width=1e-09``) is named when the teacher is small.
    ``goal``: a --target_params stop rule (iterations stop there); ``floor_of_teacher``:
    the per-layer floor is a fraction of the teacher's widths, so it bounds every
    iteration, not only the first. ``upper_bound``: a stop rule makes --iterations an
    upper bound, so a last target below the floors is not refused (the run stops there)."""
    from epkd_tf.graph import ParamCounter, nonzero_params
    from epkd_tf.pruning.plan import minimum_nonzero
    teacher = nonzero_params(model)
    first = int(round(max(keep_ratio * teacher, goal)))
    last = max(keep_ratio ** iterations * teacher, goal)
    asked = (f"--keep_ratio={keep_ratio:g} with --iterations={iterations} asks for "
             f"{keep_ratio:g}^{iterations} x {teacher:,} nonzero parameters of the teacher"
             f"{' (' + width_flag + ')' if width_flag else ''}")
    if first < 1 or last < 0.5:
        raise UsageError(f"{asked}, fewer than one in the end; raise --keep_ratio or "
                         f"lower --iterations.")
    if graph is None:
        return
    counter = ParamCounter(graph)
    floor = minimum_nonzero(graph, layer_floor, counter)
    if first < floor:
        raise UsageError(
            f"--keep_ratio={keep_ratio:g} asks iteration 1 for {first:,} nonzero parameters "
            f"of the teacher's {teacher:,}{' (' + width_flag + ')' if width_flag else ''}, "
            f"but structured pruning leaves at least {floor:,} (each layer keeps "
            f"--layer_floor={layer_floor:g} of its units, at least one); raise "
            f"--keep_ratio{' or ' + width_flag.split('=')[0] if width_flag else ''} or "
            f"lower --layer_floor.")
    smallest = floor if floor_of_teacher else minimum_nonzero(graph, 0.0, counter)
    if last < smallest and not upper_bound:
        what = (f"each layer keeps --layer_floor={layer_floor:g} of its teacher width"
                if floor_of_teacher else "one unit per layer")
        raise UsageError(f"{asked}: {last:,.0f} in the end, but structured pruning cannot "
                         f"leave fewer than {smallest:,} ({what}); raise --keep_ratio, lower "
                         f"--iterations or --layer_floor, or stop earlier with "
                         f"--target_params.")
