"""Shared fixtures: small TFDS datasets and one tiny reference run, each made once per test
session (shared by the xdist workers); the tier check every test passes (pytest.ini)."""
import fcntl
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

REPO = Path(__file__).resolve().parents[1]
MNIST_NPZ = REPO.parent / "shared" / "data" / "mnist.npz"
sys.path.insert(0, str(Path(__file__).resolve().parent))


TIERS = ("unit", "integration", "e2e")


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector, name, obj):
    """A collection error for a test without exactly one tier marker (pytest.ini), or one
    that is both slow and unit."""
    made = yield
    if made is not None and not isinstance(made, pytest.Collector | pytest.Item):
        made = list(made)
    for item in made if isinstance(made, list) else [made]:
        if isinstance(item, pytest.Function):
            names = [mark.name for mark in item.iter_markers()]
            tiers = [name for name in names if name in TIERS]
            if len(tiers) != 1 or ("slow" in names and tiers == ["unit"]):
                raise collector.CollectError(
                    f"{item.name} has {' and '.join(tiers) or 'no'} tier marker: each test "
                    f"needs exactly one of {', '.join(TIERS)} (pytestmark = pytest.mark.unit "
                    f"at the top of its module, or one on the test); slow tests are never "
                    f"unit.")
    return made


def pytest_collection_modifyitems(config, items):
    """Slow tests run only when the -m expression names them: ``-m e2e`` leaves them out,
    as the default ``-m "not slow"`` does. Then the modules run heaviest tier first."""
    if "slow" not in (config.option.markexpr or ""):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]
    items[:] = heaviest_modules_first(items)


def heaviest_modules_first(items):
    """``items`` with whole modules reordered by their heaviest tier (e2e, integration, then
    unit; the collection order otherwise), each module's own order kept.

    The xdist workers take a module at a time in this order (pytest.ini turns off xdist's
    own reordering, by number of tests, which queued the few long e2e tests last): the
    long modules start first, and the many short unit modules even out the end, where one
    worker would otherwise run a long module alone."""
    rank = {}
    for item in items:
        heavier = [len(TIERS) - 1 - TIERS.index(mark.name) for mark in item.iter_markers()
                   if mark.name in TIERS]          # e2e 0, integration 1, unit 2
        module = item.nodeid.split("::", 1)[0]
        rank[module] = min([rank.get(module, len(TIERS)), *heavier])
    return sorted(items, key=lambda item: rank[item.nodeid.split("::", 1)[0]])


@pytest.fixture(scope="session", autouse=True)
def latency_cache(tmp_path_factory):
    """The latency model's tables (epkd_tf.deploy.latency_table) go to the session's
    temporary directory, never to the user's ~/.cache or $EPKD_TF_CACHE: every
    LatencyModel made without a cache_dir, and every run started in a subprocess (they
    inherit the environment), reads and writes there."""
    path = tmp_path_factory.mktemp("epkd_tf_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EPKD_TF_CACHE", str(path))
        yield path


def shared_once(tmp_path_factory, name: str, make) -> Path:
    """``make(path)`` once per test session, by whichever xdist worker asks first: the
    others wait for it (a lock file) and get the same ``path``. What it made is shared:
    tests treat it as read-only and copy it to change it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent          # the session's directory, above every worker's own
    path, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():
            pytest.fail(f"making the shared {name} failed in another worker:\n"
                        f"{failed.read_text()}", pytrace=False)
        if not done.exists():
            shutil.rmtree(path, ignore_errors=True)       # a killed worker's leftovers
            path.mkdir()
            try:
                make(path)
            except Exception:
                failed.write_text(traceback.format_exc()[-5000:])
                raise
            done.touch()
    return path


@pytest.fixture
def forward_passes(monkeypatch):
    """The number of examples of every pass the criteria's GraphExecutor makes (the
    list fills as ``GraphExecutor.forward`` runs; the passes themselves are unchanged)."""
    import epkd_tf.graph.executor as executor_mod
    seen = []
    original = executor_mod.GraphExecutor.forward

    def forward(self, xb):
        seen.append(len(xb))
        return original(self, xb)
    monkeypatch.setattr(executor_mod.GraphExecutor, "forward", forward)
    return seen


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A TFDS data_dir holding the real MNIST (from ../shared/data/mnist.npz) as `mnist`."""
    if not MNIST_NPZ.exists():
        pytest.skip(f"real MNIST not found at {MNIST_NPZ} (see ../shared/data/README.md)")
    from epkd_tf.data import import_npz
    return str(shared_once(tmp_path_factory, "tfds_mnist",
                           lambda path: import_npz(str(MNIST_NPZ), "mnist", str(path))))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A TFDS data_dir with `tiny_digits`: 256 train / 128 test 12×12 images, 4 classes,
    learnable (each class is a bright quadrant plus noise)."""
    def make(root):
        from epkd_tf.data import import_npz
        from tiny_data import quadrant_digits
        rng = np.random.default_rng(0)
        x_train, y_train = quadrant_digits(rng, 256)
        x_test, y_test = quadrant_digits(rng, 128)
        npz = root / "tiny.npz"
        np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        (root / "data").mkdir()
        import_npz(str(npz), "tiny_digits", str(root / "data"))
    return str(shared_once(tmp_path_factory, "tfds_tiny", make) / "data")


class ReferenceRun(NamedTuple):
    """An uninterrupted run of ``python -m epkd_tf.main --data_dir=<tiny_dir>
    *TINY_RUN_ARGS`` started in ``cwd`` as from a user's shell (no --output_dir, no
    EPKD_VERBOSE or TF_CPP_MIN_LOG_LEVEL): its directory ``out`` (under cwd/saved_models)
    and what the command printed."""
    cwd: str
    out: str
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def reference_run(tiny_dir, tmp_path_factory) -> ReferenceRun:
    """The one tiny reference run of the session, shared by every worker (read-only: copy
    ``cwd`` or ``out`` to change anything)."""
    from cli_helpers import TINY_RUN_ARGS, user_env

    def make(cwd):
        result = subprocess.run([sys.executable, "-m", "epkd_tf.main", f"--data_dir={tiny_dir}",
                                 *TINY_RUN_ARGS], cwd=cwd, env=user_env(),
                                capture_output=True, text=True, timeout=900)
        (cwd / "stdout.txt").write_text(result.stdout)
        (cwd / "stderr.txt").write_text(result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
    cwd = shared_once(tmp_path_factory, "reference_run", make)
    (name,) = os.listdir(cwd / "saved_models")
    return ReferenceRun(str(cwd), str(cwd / "saved_models" / name),
                        (cwd / "stdout.txt").read_text(), (cwd / "stderr.txt").read_text())
