"""Per-layer latency lookup tables: which widths of a layer are timed, how a width between
them is predicted (never slower when narrower), and the disk cache that keeps the timings
from one run to the next.

Why a table. LiteRT's XNNPACK kernels compute output channels in tiles, so a layer's
latency is a staircase (here a sawtooth) of its output width, not a smooth function of
its MACs. Measured on the x86-64 machine of the benchmarks (AVX-512, float32, one
thread), ``Dense(784 -> k)`` in microseconds:

    k    16   17-31  32   40   48   56   64   72   80   88   96
    us   1.4  2.2    1.4  2.9  2.9  2.2  2.2  4.5  4.5  3.0  3.0

Every width of a 16-unit tile costs the same, except that up to 32 an exact multiple of
16 runs faster; from 33 on an odd number of tiles is slower than the next even one (the
width scan of docs/benchmarks/budgets.md). A 3x3 ``Conv2D`` (16 -> k channels, 14x14) and
a ``DepthwiseConv2D`` behave alike (k = 17-25 as slow as 24, 32 faster); int8 kernels
change cost at multiples of 64 output or input channels. Input channels of float kernels
are not tiled (cost is linear in them: 3x3 ``Conv2D`` k -> 32 costs 5.1, 9.6, 14.2 ... us
for k = 8, 16, 24 ...). Hence:

* the widths timed below the current width are **multiples of** :data:`TILE` **(8)**:
  every tile boundary seen here (16, 32, 64) is one, and a multiple of 8 that is not one
  of 16 samples the slow remainder path of its tile. :data:`MAX_DENSE` of them are the
  consecutive multiples right below the current width (where one or two iterations go:
  the odd/even-tile sawtooth is only seen at this resolution); further down,
  :data:`MAX_SPREAD` whole periods of the sawtooth (:data:`PERIOD`, 32: four multiples of
  8) reach down to about a quarter of it, so that a width between timed ones is
  interpolated between timed widths of its own residue modulo 32 (its own tile parity);
  input widths get two columns (the current one and about a quarter), linearly
  interpolated;
* a query's output width is **rounded up to a multiple of 8** and read off the table
  either as measured (``exact``: the sawtooth included, what a plan picks its prefix by)
  or made non-decreasing (at each width, the largest time at or below it, never less:
  what tells the plan whether a target is reachable, and its binary search when no
  prefix's exact time reaches it, which needs a cost that falls with every removal);
* at most :data:`MAX_POINTS` points per layer (a conversion and timing takes 0.2-0.5 s),
  timed only when a plan asks about the layer, one column of input width at a time.

Tables are stored per layer *signature* (the layer's class and configuration without its
width, its input's spatial size, the TFLite format, the threads and the runtime: the
``ai-edge-litert`` and TensorFlow versions and the CPU), as absolute (kept_in, kept_out)
-> median ms points, so a later run, a later iteration with narrower layers or another
layer of the same kind reuses what was timed. A table measured on another runtime, format
or thread count has another signature and is never read; a file that does not parse or
whose signature differs from the one asked for is ignored (and measured again).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from epkd_tf import files

log = logging.getLogger("epkd_tf")

#: Output widths are rounded up to a multiple of this before the lookup, and timed widths
#: below the current one are multiples of it (the module docstring says why 8: every tile
#: boundary measured on LiteRT here, 16, 32 and 64 channels, is a multiple of it).
TILE = 8
#: The period of the sawtooth: two 16-wide tiles (an odd number of them runs slower than
#: the next even one). Widths are compared with timed widths of their own residue modulo
#: it; a period of 8 or 16 on another CPU divides it.
PERIOD = 32
#: Output widths timed right below the current one, every multiple of :data:`TILE` (the
#: widths a plan of one or two iterations chooses).
MAX_DENSE = 12
#: Further down, this many whole periods (every multiple of :data:`TILE` in them, one of
#: each residue) spread evenly to :data:`LOWEST_FRACTION` of the width.
MAX_SPREAD = 4
#: Output widths timed per input width (producers: Dense, convolutions): the current one,
#: the dense run and the spread periods.
MAX_OUT = 1 + MAX_DENSE + MAX_SPREAD * PERIOD // TILE
#: Input widths timed (each a column of ``MAX_OUT`` output widths). Float kernels do not
#: tile their input channels (time is linear in them), so two columns interpolate them.
MAX_IN = 2
#: The grid of one layer (input widths x output widths) has at most this many points.
MAX_POINTS = MAX_IN * MAX_OUT
#: The timed widths reach down to this fraction of the current width; narrower queries
#: fall back to the smooth fit (see ``epkd_tf.deploy.latency``).
LOWEST_FRACTION = 0.25
#: Version of the table's layout and of how its points are measured: bump it to stop
#: every stored table from being reused.
SCHEMA = 1

Point = Tuple[int, int]
#: Milliseconds of a list of points (timed if not known yet).
Lookup = Callable[[List[Point]], np.ndarray]


def ceil_to(width: int, tile: int = TILE) -> int:
    """``width`` rounded up to a multiple of ``tile``."""
    return int(-(-int(width) // tile) * tile)


def axis_widths(width: int, max_points: int, tile: int = TILE) -> List[int]:
    """The widths timed on one axis of a layer whose current width is ``width``.

    Args:
        width: the current width (timed as it is, whether or not a multiple of ``tile``).
        max_points: how many widths at most.
        tile: the widths below ``width`` are multiples of it.

    Returns:
        Descending widths: ``width``, then the multiples of ``tile`` below it down to the
        largest one at or below ``LOWEST_FRACTION * width`` (``tile`` itself for narrow
        layers). When there are more than ``max_points``, the first ``(max_points - 1)
        // 2`` are the multiples right below ``width`` (a plan mostly asks about widths
        near the current one) and the rest are spread evenly (on multiples of ``tile``)
        down to the lowest, which is always timed (with two points: ``width`` and the
        lowest, the input columns of :class:`LayerTable`).
    """
    width = int(width)
    lowest, below = _below(width, tile)
    if len(below) + 1 <= max_points:
        return [width] + below
    near = below[:(max_points - 1) // 2]
    rest = max_points - 1 - len(near)
    spread = np.linspace(near[-1] if near else width, lowest, rest + 1)[1:]
    picked = near + [int(round(w / tile)) * tile for w in spread]
    return [width] + sorted(set(picked), reverse=True)


def output_widths(width: int, tile: int = TILE) -> List[int]:
    """The output (or channel) widths timed for a layer whose current width is ``width``.

    Args:
        width: the current width.
        tile: the widths below ``width`` are multiples of it.

    Returns:
        Descending widths: ``width``; every multiple of ``tile`` below it if there are at
        most ``MAX_OUT - 1`` down to about a quarter of it; else the ``MAX_DENSE`` right
        below ``width``, then ``MAX_SPREAD`` whole periods (the ``PERIOD // tile``
        multiples of ``tile`` ending at a multiple of ``PERIOD``) spread evenly down to
        the lowest, so that a width between timed ones has timed neighbours of its own
        residue modulo ``PERIOD`` (see :meth:`LayerTable.predict`).
    """
    width = int(width)
    lowest, below = _below(width, tile)
    if len(below) + 1 <= MAX_OUT:
        return [width] + below
    near = below[:MAX_DENSE]
    per = max(1, PERIOD // tile)
    anchors = np.linspace(near[-1], lowest + (per - 1) * tile, MAX_SPREAD + 1)[1:]
    picked = set(near)
    for anchor in anchors:
        top = int(round(anchor / PERIOD)) * PERIOD
        top = min(top, near[-1] - tile)
        picked.update(w for w in range(top, top - per * tile, -tile) if w >= tile)
    return [width] + sorted(picked, reverse=True)


def _below(width: int, tile: int) -> Tuple[int, List[int]]:
    """The lowest width timed and the multiples of ``tile`` below ``width`` down to it."""
    lowest = max(tile, int(LOWEST_FRACTION * width) // tile * tile)
    return lowest, list(range((width - 1) // tile * tile, lowest - 1, -tile))


def _locate(axis: Sequence[int], x: float) -> List[Tuple[int, float]]:
    """(index, weight) pairs interpolating ``x`` linearly on a descending ``axis``
    (``x`` clamped into its range)."""
    if x >= axis[0]:
        return [(0, 1.0)]
    for j in range(len(axis) - 1):
        hi, lo = axis[j], axis[j + 1]
        if lo <= x <= hi:
            if x == lo:
                return [(j + 1, 1.0)]
            w = (x - lo) / (hi - lo)
            return [(j, w), (j + 1, 1.0 - w)]
    return [(len(axis) - 1, 1.0)]


def _locate_periodic(axis: Sequence[int], x: int) -> List[Tuple[int, float]]:
    """Like :func:`_locate`, but between the nearest timed widths of ``x``'s own residue
    modulo :data:`PERIOD` (the sawtooth repeats with it: interpolating an even-tile width
    between an odd and an even one predicts a time neither has); :func:`_locate` where
    ``x`` is timed or has no such neighbour on both sides."""
    if x in axis:
        return [(list(axis).index(x), 1.0)]
    same = [i for i, w in enumerate(axis) if (w - x) % PERIOD == 0]
    above = [i for i in same if axis[i] > x]
    below = [i for i in same if axis[i] < x]
    if not (above and below):
        return _locate(axis, x)
    hi, lo = above[-1], below[0]
    w = (x - axis[lo]) / (axis[hi] - axis[lo])
    return [(hi, w), (lo, 1.0 - w)]


class LayerTable:
    """The timed grid of one layer at its current widths and the monotone prediction
    from it.

    A producer's grid is ``ins`` (input widths) x ``outs`` (output widths); a per-channel
    layer's is ``outs`` alone (kept_in == kept_out). Every column (one input width, all
    output widths) is made non-decreasing in the output width by taking, at each width,
    the largest time at or below it (an upper envelope: LiteRT's sawtooth makes some
    narrower widths slower, and the plan's binary search needs a cost that never rises
    when a unit is removed). Columns are timed lazily from the current input width down,
    and each column is capped by the one above it, so timing a lower column later never
    changes a prediction already made. Bilinear interpolation of such a grid is
    non-decreasing in both widths. The measured times are kept too: the *exact*
    prediction interpolates them, sawtooth and all, for the plan to choose among the
    prefixes its monotone search bounds (``epkd_tf.pruning.plan``).
    """

    def __init__(self, width_in: int, width_out: int, per_channel: bool, tile: int = TILE):
        """
        Args:
            width_in: the layer's current input channels.
            width_out: its current output units (producers; ignored for per-channel
                layers, whose output follows the input).
            per_channel: a layer without its own output width (depthwise, BN).
            tile: output widths are rounded up to a multiple of it.
        """
        self.per_channel, self.tile = per_channel, tile
        if per_channel:
            self.ins = [int(width_in)]
            self.outs = output_widths(width_in, tile)
        else:
            self.outs = output_widths(width_out, tile)
            self.ins = axis_widths(width_in, MAX_IN, tile)
        self._columns: List[np.ndarray] = []      # monotone envelopes
        self._raw: List[np.ndarray] = []          # the times as measured

    def points(self) -> List[Point]:
        """Every (kept_in, kept_out) point of the grid."""
        return [pt for i in range(len(self.ins)) for pt in self._column_points(i)]

    def _column_points(self, index: int) -> List[Point]:
        if self.per_channel:
            return [(w, w) for w in self.outs]
        return [(self.ins[index], w) for w in self.outs]

    def column(self, index: int, lookup: Lookup, exact: bool = False) -> np.ndarray:
        """The monotone times of column ``index`` (``exact``: the measured ones), timing
        it (and those above it) with ``lookup`` if they are not known yet."""
        while len(self._columns) <= index:
            i = len(self._columns)
            raw = np.asarray(lookup(self._column_points(i)), dtype=np.float64)
            self._raw.append(raw)
            # outs descend: the largest time at or below each width is a suffix maximum.
            envelope = np.maximum.accumulate(raw[::-1])[::-1]
            if i:
                envelope = np.minimum(envelope, self._columns[i - 1])
            self._columns.append(envelope)
        return (self._raw if exact else self._columns)[index]

    def predict(self, kept_in: int, kept_out: int, lookup: Lookup,
                exact: bool = False) -> Tuple[float, bool]:
        """Milliseconds at these widths, clamped into the timed range.

        Args:
            kept_in: input channels (per-channel layers: their channels).
            kept_out: output units (ignored for per-channel layers).
            lookup: milliseconds of a list of (kept_in, kept_out) points, timing those
                not known yet (called only for columns not yet in the table).
            exact: interpolate the times as measured (a narrower width may be predicted
                slower, as LiteRT runs it) instead of their monotone envelope.

        Returns:
            (ms, inside): the table's time at the query clamped into the grid (output
            widths rounded up to the tile first), and whether no clamping from below was
            needed. Outside, the caller combines it with a smooth fit.
        """
        if self.per_channel:
            kept_out = kept_in
        out = min(ceil_to(kept_out, self.tile), self.outs[0])
        inside = out >= self.outs[-1] and (self.per_channel or kept_in >= self.ins[-1])
        out = max(out, self.outs[-1])
        total = 0.0
        for i, a in ([(0, 1.0)] if self.per_channel else _locate(self.ins, kept_in)):
            column = self.column(i, lookup, exact)
            for j, b in (_locate_periodic if exact else _locate)(self.outs, out):
                total += a * b * column[j]
        return float(total), bool(inside)

    def fit_points(self) -> List[Point]:
        """Points for the smooth fit that predicts narrower widths than the grid holds:
        the current input width's column, the current output width at every timed input
        width, and widths of about 1/8 (the narrow end the fit extrapolates to)."""
        low_out = max(1, int(round(self.outs[0] / 8)))
        if self.per_channel:
            found = self._column_points(0) + [(low_out, low_out)]
        else:
            low_in = max(1, int(round(self.ins[0] / 8)))
            found = (self._column_points(0) + [(kin, self.outs[0]) for kin in self.ins[1:]]
                     + [(self.ins[0], low_out), (low_in, low_out)])
        return list(dict.fromkeys(found))


# -- the signature and the disk cache ------------------------------------------------

@functools.lru_cache(maxsize=1)
def runtime() -> Dict[str, str]:
    """What a timing depends on besides the model: the ``ai-edge-litert`` and TensorFlow
    versions, the machine architecture and CPU model (a table is never reused across
    them)."""
    import importlib.metadata
    try:
        litert = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:  # tf.lite's interpreter is used then
        litert = "none"
    import tensorflow as tf
    return {"litert": litert, "tensorflow": tf.__version__, "machine": platform.machine(),
            "cpu": _cpu_model()}


@functools.lru_cache(maxsize=1)
def l2_cache_bytes() -> Optional[int]:
    """Bytes of the first CPU's level-2 cache (Linux sysfs), or None where unknown."""
    root = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return None
    for entry in entries:
        try:
            level = files.read_text(os.path.join(root, entry, "level")).strip()
            kind = files.read_text(os.path.join(root, entry, "type")).strip()
            size = files.read_text(os.path.join(root, entry, "size")).strip()
        except (OSError, ValueError):
            continue
        if level == "2" and kind in ("Unified", "Data"):
            units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
            try:
                if size[-1:].upper() in units:
                    return int(size[:-1]) * units[size[-1:].upper()]
                return int(size)
            except ValueError:
                return None
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Processor", "cpu model")):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def signature_key(signature: dict) -> str:
    """The file name stem of a signature: SHA-256 of its canonical JSON."""
    text = json.dumps(signature, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> str:
    """``$EPKD_TF_CACHE/latency`` if that variable is set, else
    ``~/.cache/epkd_tf/latency``."""
    root = os.environ.get("EPKD_TF_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "epkd_tf")
    return os.path.join(root, "latency")


def resolve_cache_dir(cache_dir) -> Optional[str]:
    """The directory tables are stored in: ``None`` (or True) gives
    :func:`default_cache_dir`, ``False`` none (no disk cache), a path itself."""
    if cache_dir is None or cache_dir is True:
        return default_cache_dir()
    if cache_dir is False:
        return None
    return os.fspath(cache_dir)


class TableCache:
    """Latency tables on disk: one JSON file per signature, ``<sha256>.json``, holding
    the full signature (checked on load) and the measured points."""

    def __init__(self, directory: str):
        self.directory = directory
        self._warned = False

    def path(self, signature: dict) -> str:
        """The file of ``signature``'s table."""
        return os.path.join(self.directory, signature_key(signature) + ".json")

    def load(self, signature: dict) -> Dict[Point, float]:
        """The points stored for ``signature``.

        Args:
            signature: the full signature (the file must hold exactly it).

        Returns:
            {(kept_in, kept_out): ms}; empty when there is no file, it cannot be read or
            parsed, or it holds another signature or a malformed point (it is then
            ignored, never trusted: the points are measured again and the file replaced).
        """
        path = self.path(signature)
        if not os.path.lexists(path):
            return {}
        try:
            content = json.loads(files.read_text(path))     # a FIFO would block open()
        except ValueError as error:
            log.debug("latency table %s ignored: %s", path, error)
            return {}
        points = _parse(content, signature)
        if points is None:
            log.debug("latency table %s ignored: not the table of this signature", path)
            return {}
        return points

    def save(self, signature: dict, points: Dict[Point, float]) -> None:
        """Stores ``points`` (merged with what the file holds now: another process may
        have added some) atomically. A failing write (read-only or full disk) is logged
        once and otherwise ignored: the cache only saves time.

        Args:
            signature: the full signature.
            points: {(kept_in, kept_out): ms}; these win over stored ones.
        """
        merged = {**self.load(signature), **points}
        content = {"schema": SCHEMA, "signature": signature,
                   "points": [[kin, kout, ms] for (kin, kout), ms in sorted(merged.items())]}
        text = json.dumps(content, indent=1, sort_keys=True) + "\n"

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

        try:
            files.atomic_write(self.path(signature), write)
        except OSError as error:
            if not self._warned:
                log.warning("Cannot store latency tables in %s (%s); they will be measured "
                            "again next run.", self.directory, error)
                self._warned = True


def _parse(content, signature: dict) -> Optional[Dict[Point, float]]:
    """The points of a table file's content, or None if it is not ``signature``'s table
    or anything in it is malformed."""
    if not isinstance(content, dict) or content.get("schema") != SCHEMA:
        return None
    if content.get("signature") != signature:
        return None
    rows = content.get("points")
    if not isinstance(rows, list):
        return None
    points = {}
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3):
            return None
        kin, kout, ms = row
        if not (_is_width(kin) and _is_width(kout)) or isinstance(ms, bool) \
                or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
            return None
        points[(kin, kout)] = float(ms)
    return points


def _is_width(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
