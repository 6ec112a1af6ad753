"""The benchmark scripts: their pages (``docs/benchmarks/<script>.md``, indexed by
BENCHMARKS.md), ``benchmarks/residual.py`` end to end on a tiny slice (``--smoke``, slow: a
few minutes on 2 cores) and the PyTorch port its peer relies on (fast).

The smoke run writes into a temporary page (``--page``), never the repository's. It needs the real MNIST (``../shared/data/mnist.npz``); the peer parts need
the peer's virtual environment (``benchmarks/.peer-venv``, made by
``benchmarks/peers.py:peer_python()`` with PyTorch and torch-pruning) and are skipped
without it rather than installing PyTorch from a test.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
MNIST_NPZ = REPO.parent / "shared" / "data" / "mnist.npz"
PEER_PYTHON = BENCHMARKS / ".peer-venv" / "bin" / "python"
NO_PEER = (f"the peer's virtual environment {PEER_PYTHON.parent.parent} does not exist "
           "(python benchmarks/peers.py makes it: PyTorch CPU + torch-pruning)")


def load_benchmarks_md(monkeypatch):
    """benchmarks/benchmarks_md.py, the pages' writer, as a module."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("benchmarks_md", BENCHMARKS / "benchmarks_md.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_residual(monkeypatch):
    """benchmarks/residual.py as a module (its sibling modules importable)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("residual_benchmark", BENCHMARKS / "residual.py")
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up while being defined.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- fast
def test_a_script_replaces_only_its_own_sections_of_its_own_page(tmp_path, monkeypatch):
    md = load_benchmarks_md(monkeypatch)
    monkeypatch.setattr(md, "PAGES", tmp_path / "docs" / "benchmarks")
    monkeypatch.setattr(md, "INDEX", tmp_path / "BENCHMARKS.md")
    md.INDEX.write_text("# Benchmarks\n\n<!-- pages:start -->\n<!-- pages:end -->\n\nkept\n")
    budgets, speed = md.page("benchmarks/budgets.py"), md.page("speed")
    assert budgets == md.PAGES / "budgets.md"
    md.replace_section("budgets", "## Budgets\n\nMeasured 2026-01-01: one.", budgets)
    md.replace_section("budgets_4", "## Budgets, 4 epochs\n\nMeasured 2026-01-02.", budgets)
    md.replace_section("speed", "## Speed\n\nMeasured 2026-01-03.", speed)
    with budgets.open("a") as f:
        f.write("\n*A dated note by hand.*\n")
    md.replace_section("budgets", "## Budgets\n\nMeasured 2026-02-01: two.", budgets)
    text = budgets.read_text()
    assert text.startswith("# `benchmarks/budgets.py`\n")
    assert "two." in text and "one." not in text and "Measured 2026-01-02." in text
    assert text.index("<!-- budgets:end -->") < text.index("<!-- budgets_4:start -->")
    assert text.rstrip().endswith("*A dated note by hand.*")
    assert "budgets" not in speed.read_text()
    index = md.INDEX.read_text()
    assert index.startswith("# Benchmarks\n") and index.endswith("\n\nkept\n")
    assert ("- [`benchmarks/budgets.py`](docs/benchmarks/budgets.md), `benchmarks/budgets.py`: "
            "measured 2026-02-01 (Budgets); 2026-01-02 (Budgets, 4 epochs)") in index
    assert "(docs/benchmarks/speed.md), `benchmarks/speed.py`: measured 2026-01-03" in index
    outside = tmp_path / "elsewhere.md"            # a page elsewhere leaves the index alone
    md.replace_section("speed", "## Speed\n\nMeasured 2026-03-03.", outside)
    assert md.INDEX.read_text() == index


def test_every_script_has_its_page_and_benchmarks_md_indexes_them(monkeypatch):
    """Each script that writes sections has its page under docs/benchmarks/ holding them,
    and BENCHMARKS.md's list of pages is the one generated from the pages."""
    md = load_benchmarks_md(monkeypatch)
    writers = [path for path in sorted(BENCHMARKS.glob("*.py"))
               if "replace_section(" in path.read_text() and path.name != "benchmarks_md.py"]
    assert len(writers) >= 10
    for script in writers:
        page = md.page(script)
        assert page.exists(), f"{script.name} has no page {page.relative_to(REPO)}"
        assert re.search(r"<!-- \w+:start -->", page.read_text()), page
    assert {path.stem for path in md.PAGES.glob("*.md")} == {path.stem for path in writers}
    start, end = md.INDEX_MARKERS
    listed = md.INDEX.read_text().split(start + "\n", 1)[1].split("\n" + end, 1)[0]
    assert listed == md.index_markdown(), ("BENCHMARKS.md's list of pages is stale: run "
                                           "python -c 'import benchmarks_md; "
                                           "benchmarks_md.write_index()' in benchmarks/")


def test_cifar10_is_only_for_the_resnet34_protocol():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "residual.py"),
                             "--dataset=cifar10"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--protocol=resnet34" in result.stderr


def test_seed_protocol_flagfile(tmp_path):
    """The seed's ResNet-34 grid: 20/40/60/80% removed, the five methods, ResNet-34 on
    CIFAR-10 (the distill/scratch students are the study's plain convnets); the study
    accepts the recipe (it stops only at the missing data, downloads off)."""
    flagfile = REPO / "flags" / "study_cifar10_resnet34_seed.cfg"
    flags = dict(line.split("=", 1) for line in flagfile.read_text().splitlines()
                 if line.startswith("--"))
    assert flags["--dataset"] == "cifar10" and flags["--teacher"] == "resnet34"
    assert flags["--fractions_removed"] == "0.2,0.4,0.6,0.8"
    assert set(flags["--methods"].split(",")) == {"prune", "distill", "prune_distill", "epkd",
                                                  "scratch"}
    from epkd_tf.study.students import student_family
    assert student_family("resnet34") == "plain_convnet"
    result = subprocess.run([sys.executable, "-m", "epkd_tf.study", f"--flagfile={flagfile}",
                             f"--data_dir={tmp_path / 'none'}", "--nodownload",
                             f"--output_dir={tmp_path / 'study'}"],
                            cwd=REPO, capture_output=True, text=True)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "--data_dir" in errors[0], \
        result.stderr[-2000:]
    assert not (tmp_path / "study").exists()


@pytest.mark.skipif(not PEER_PYTHON.exists(), reason=NO_PEER)
@pytest.mark.parametrize("name,width", [("resnet18", 0.25)])
def test_pytorch_port_computes_the_keras_function(tmp_path, monkeypatch, name, width):
    """The peer's ResNet port loaded with a Keras zoo ResNet's weights (random BatchNorm
    statistics, so that eps and every moving statistic matter; 32x32 inputs, so that the
    stride-2 'same' padding matters) gives the same logits and counts the same parameters;
    a Keras accuracy the port does not reproduce is refused (exit 3, no pruning). (A port
    padding the stride-2 convs symmetrically scores the same accuracy on these inputs but
    differs by ~0.1 in its logits: the logit bound is what catches it.)"""
    residual = load_residual(monkeypatch)
    import tf_keras
    from epkd_tf.models import build_model
    rng = np.random.default_rng(0)
    model = build_model(name, (32, 32, 1), 10, width=width)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights([rng.uniform(0.5, 1.5, shapes[0]), rng.normal(0, 0.2, shapes[1]),
                               rng.normal(0, 0.2, shapes[2]), rng.uniform(0.5, 2.0, shapes[3])])
    weights = tmp_path / "weights.npz"
    np.savez(weights, **residual.keras_weights(model))
    x = rng.uniform(0, 1, (64, 32, 32, 1)).astype("float32")
    logits = model.predict(x, verbose=0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=x, y_train=logits.argmax(1), x_test=x, y_test=logits.argmax(1),
             keras_test_logits=logits)

    def port(keras_accuracy):
        out = tmp_path / f"port_{keras_accuracy}.json"
        result = subprocess.run([str(PEER_PYTHON), str(BENCHMARKS / "peer_torch_resnet.py"),
                                 f"--teacher={weights}", f"--data={data}",
                                 f"--keras_test_accuracy={keras_accuracy}", f"--out={out}"],
                                capture_output=True, text=True)
        return result, json.loads(out.read_text())

    result, same = port(1.0)
    assert result.returncode == 0, result.stderr[-2000:]
    assert same["port_ok"] and same["teacher_test_accuracy"] == 1.0
    assert same["port_max_logit_diff"] < 1e-4
    assert same["teacher_params"] == model.count_params()
    result, refused = port(0.5)
    assert result.returncode == 3 and not refused["port_ok"] and "params" not in refused
    assert "DIFFERS" in result.stdout


# ----------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One ``residual.py --smoke`` run (every part; the peer when its environment exists):
    the written page's text, the real page and BENCHMARKS.md before and after."""
    if not MNIST_NPZ.exists():
        pytest.skip(f"real MNIST not found at {MNIST_NPZ} (see ../shared/data/README.md)")
    work = tmp_path_factory.mktemp("residual_smoke")
    out = work / "residual.md"
    real = [REPO / "docs" / "benchmarks" / "residual.md", REPO / "BENCHMARKS.md"]
    before = [path.read_text() for path in real]
    command = [sys.executable, str(BENCHMARKS / "residual.py"), "--smoke",
               f"--npz={MNIST_NPZ}", f"--keep_runs={work / 'runs'}", f"--page={out}"]
    if not PEER_PYTHON.exists():
        command.append("--skip_peer")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    after = [path.read_text() for path in real]
    return {"text": out.read_text(), "real_before": before, "real_after": after,
            "stdout": result.stdout}


def section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"section {name} missing"
    return match.group(1)


@pytest.mark.slow
def test_smoke_writes_the_zoo_section(smoke):
    body = section(smoke["text"], "residual")
    assert "`--smoke` run" in body        # never mistaken for a measurement
    number = r"[\d,]+"
    for title in ("ResNet-18 (0.25)", "MobileNetV2 (0.35)"):
        row = re.search(rf"\| {re.escape(title)} \| epkd_tf \| {number} -> {number} "
                        rf"\([\d.]+x\) \| {number} -> {number} \([\d.]+x\) \| "
                        rf"[\d.]+ -> [\d.]+ \([+-][\d.]+\) \| [\d.]+ -> [\d.]+ "
                        rf"\(\*\*[\d.]+x\*\*\)", body)
        assert row, f"no epkd_tf row with numbers for {title}:\n{body}"
    assert smoke["real_after"] == smoke["real_before"], "the real pages were changed"


@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.exists(), reason=NO_PEER)
def test_smoke_reports_the_peer_after_its_port_check(smoke):
    body = section(smoke["text"], "residual")
    assert "port check: test accuracy" in body, body
    assert re.search(r"\| ResNet-18 \(0\.25\) \| Torch-Pruning Taylor \+ KD \| [\d,]+ -> "
                     r"[\d,]+ \([\d.]+x\) \| [\d,]+ -> [\d,]+ \([\d.]+x\) \| [\d.]+ -> "
                     r"[\d.]+", body), body


@pytest.mark.slow
def test_smoke_runs_the_resnet34_protocol(smoke):
    body = section(smoke["text"], "residual_resnet34_mnist")
    assert "not a measurement of the protocol" in body
    assert "python benchmarks/residual.py --protocol=resnet34 --dataset=cifar10" in body
    for method in ("prune", "distill", "prune_distill", "epkd", "scratch"):
        assert re.search(rf"\| {method} \| [\d.]+% \([\d,]+\) \|", body), (method, body)


# ------------------------------------------------------------------------ scale.py
def test_scale_refuses_a_work_dir_inside_the_repository():
    """The synthetic images are scratch: never written into the repository."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "scale.py"),
                             f"--work_dir={REPO / 'scratch_images'}"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "--work_dir" in result.stderr.splitlines()[-1]
    assert not (REPO / "scratch_images").exists()


@pytest.mark.slow
def test_scale_runs_end_to_end_at_a_tiny_size(tmp_path):
    """benchmarks/scale.py on 4 classes of 28 px images with LeNet-5 (every step: images
    written, the folder import, an EPKD run sampled for memory, the plain fit, the page):
    a check that the script works, whose figures mean nothing."""
    out = tmp_path / "scale.md"
    real = [REPO / "docs" / "benchmarks" / "scale.md", REPO / "BENCHMARKS.md"]
    before = [path.read_text() if path.exists() else None for path in real]
    command = [sys.executable, str(BENCHMARKS / "scale.py"), "--networks=lenet5",
               "--images=8", "--classes=4", "--image_size=28", "--teacher_width=0.5",
               "--batch_size=4", "--eval_images=4", "--pruners=l1_filter", "--rounds=2",
               f"--work_dir={tmp_path / 'work'}", f"--page={out}", "--section=tiny",
               "--extra_flags=--export_formats=tflite --latency_runs=1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    body = section(out.read_text(), "tiny")
    assert "--networks=lenet5 --images=8 --classes=4 --image_size=28" in body
    assert "--extra_flags='--export_formats=tflite --latency_runs=1'" in body
    assert "16 synthetic JPEGs (4 classes" in body            # 8 + 4 test + 4 validation
    for target in ("peak resident memory <= 8 GB", "exports + scoring <= 25% of the run",
                   "distillation >= 0.9x plain fit images/s"):
        assert re.search(rf"\| {re.escape(target)} \| \*\*(met|not met)\*\*: [\d.,]+",
                         body), (target, body)
    for phase in ("teacher_training", "distillation", "export", "scoring"):
        assert re.search(rf"\| {phase} \| [\d.]+ \| [\d.]+% \|", body), (phase, body)
    assert re.search(r"\| teacher_training \| [\d.]+ \| [\d.]+% \| [\d,]+ \|", body), body
    for how in ("distillation of the first student", "plain `fit` of the first student"):
        assert re.search(rf"\| {re.escape(how)}, side by side \(2 epochs, median of 2\) \| "
                         r"[\d.]+ \|", body), (how, body)
    assert re.search(r"\| the teacher's forward pass alone on the same batches, side by side "
                     r"\(median of 2\) \| [\d.]+ \|", body), body
    assert re.search(r"rounds \(s\): fit [\d.]+, [\d.]+; distillation [\d.]+, [\d.]+; "
                     r"teacher forward [\d.]+, [\d.]+\.", body), body
    assert re.search(r"Distillation cannot beat a fit plus the teacher's forward pass "
                     r"\([\d]+ \+ [\d]+ s: [\d.]+x the fit's images/s", body), body
    assert re.search(r"Peak resident memory: \*\*[\d,]+ MB\*\*", body)
    assert not list(REPO.glob("scratch*"))
    assert [path.read_text() if path.exists() else None for path in real] == before


def test_scale_passes_epkd_tf_s_own_precision_flag(monkeypatch):
    """Mixed precision is epkd_tf's --precision (no global policy set from outside), and
    the GPU script asks for it with XLA."""
    import argparse
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("scale_benchmark", BENCHMARKS / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    assert scale.run_command(argparse.Namespace(precision="float32"))[1:] == [
        "-m", "epkd_tf.main"]
    assert scale.run_command(argparse.Namespace(precision="mixed_float16"))[1:] == [
        "-m", "epkd_tf.main", "--precision=mixed_float16"]
    script = (BENCHMARKS / "gpu_check.sh").read_text()
    assert script.count("--precision=mixed_float16 --jit_compile") == 2


def test_gpu_check_refuses_a_machine_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.sh measures GPUs only: without one it stops at once with one
    error line (exit 2) and writes nothing."""
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: the refusal cannot be checked here")
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / "w")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "no GPU" in errors[0], result.stderr
    assert not (tmp_path / "w").exists()


def test_scale_reports_a_run_that_did_not_finish(tmp_path):
    """A run that stops (here the CLI refuses a flag; at scale, the kernel's out-of-memory
    killer) still gets its section: how it stopped, its last console line and its peak
    memory; the targets it did not reach are not measured, and the benchmark goes on."""
    out = tmp_path / "scale.md"
    command = [sys.executable, str(BENCHMARKS / "scale.py"), "--networks=lenet5",
               "--images=4", "--classes=2", "--image_size=28", "--eval_images=2",
               f"--work_dir={tmp_path / 'work'}", f"--page={out}", "--section=tiny",
               "--extra_flags=--keep_ratio=7"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    body = section(out.read_text(), "tiny")
    assert "the run did not finish" in body and "exit status 2" in body, body
    assert re.search(r"last console line: `error: --keep_ratio", body), body
    assert re.search(r"\| exports \+ scoring <= 25% of the run \| not measured: the run did "
                     r"not finish \|", body), body
    assert re.search(r"Peak resident memory until then: \*\*[\d,]+ MB\*\*", body), body
