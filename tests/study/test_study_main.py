"""``python -m epkd_tf.study`` end to end on a slice of real MNIST; bad input; resuming."""
import importlib
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from cli_helpers import error_lines, run_in_process
from epkd_tf.study import compare
from epkd_tf.study.layout import STUDY_TABLES, StudyDir, cell_name

study_main = importlib.import_module("epkd_tf.cli.study")

METHODS = ["prune", "lottery", "distill", "prune_distill", "epkd", "scratch"]
SLICE = ["--train_split=train[:1000]", "--test_split=test[:500]", "--teacher_epochs=3",
         "--epochs=1", "--fractions_removed=0.5,0.9", "--seeds=2", "--prune_rate=0.7",
         "--epkd_pruners=l1_filter", "--batch_size=100"]


@pytest.fixture(scope="module")
def study(mnist_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("study") / "run")
    args = [f"--data_dir={mnist_dir}", f"--output_dir={out}", *SLICE]
    assert run_in_process(study_main, args) == 0
    return out, args


def read(out, table):
    return pd.read_csv(os.path.join(out, f"{table}.csv"))


@pytest.mark.e2e
def test_every_cell_is_recorded_with_documented_columns(study):
    out, _ = study
    table = read(out, "study")
    assert list(table.columns) == STUDY_TABLES["study"]
    assert len(table) == len(METHODS) * 2 * 2
    assert set(table.method) == set(METHODS) and set(table.seed) == {0, 1}
    assert not table.duplicated(["method", "fraction_removed", "seed"]).any()
    teacher_params = 266_610
    for row in table.itertuples():
        target = round((1 - row.fraction_removed) * teacher_params)
        assert row.nonzero_params <= target * 1.02 and row.nonzero_params >= target * 0.9
        assert 0.1 < row.test_accuracy <= 1 and 0 <= row.agreement_with_teacher <= 1
        if row.method in ("prune", "prune_distill", "epkd") and row.fraction_removed == 0.5:
            assert row.agreement_with_teacher > 0.8   # half the teacher pruned, retrained
    # Seeds differ (initialisation and data order), so the spread is real.
    distill = table[(table.method == "distill") & (table.fraction_removed == 0.9)]
    assert distill.test_accuracy.nunique() == 2 or distill.train_accuracy.nunique() == 2


@pytest.mark.e2e
def test_comparisons_match_the_saved_outputs(study):
    out, _ = study
    d = StudyDir(out)
    comparisons = read(out, "comparisons")
    assert list(comparisons.columns) == STUDY_TABLES["comparisons"]
    models = 1 + len(METHODS) * 2                    # the teacher and every cell
    assert len(comparisons) == 2 * models * (models - 1) // 2
    row = comparisons[(comparisons.model_a == cell_name("distill", 0.9, 0))
                      & (comparisons.model_b == cell_name("prune_distill", 0.9, 0))]
    if row.empty:
        row = comparisons[(comparisons.model_b == cell_name("distill", 0.9, 0))
                          & (comparisons.model_a == cell_name("prune_distill", 0.9, 0))]
    p_a = np.load(d.cell_probabilities("distill", 0.9, 0))
    p_b = np.load(d.cell_probabilities("prune_distill", 0.9, 0))
    assert int(row.n_differ.iloc[0]) == int((p_a.argmax(1) != p_b.argmax(1)).sum())
    assert np.isclose(row.l2_distance.iloc[0], np.sqrt(((p_a - p_b) ** 2).sum()))
    # Weight distances exist exactly for equal architectures.
    pair = lambda a, b: comparisons[(comparisons.model_a == a) & (comparisons.model_b == b)]
    assert np.isfinite(pair("teacher", cell_name("prune", 0.5, 0)).weight_l2_distance).all()
    assert np.isfinite(pair(cell_name("distill", 0.5, 0),
                            cell_name("distill", 0.5, 1)).weight_l2_distance).all()
    assert pair("teacher", cell_name("distill", 0.5, 0)).weight_l2_distance.isna().all()
    # Agreement in study.csv is the teacher comparison's n_differ.
    table = read(out, "study")
    cell = table[(table.method == "prune") & (table.fraction_removed == 0.5)
                 & (table.seed == 0)].iloc[0]
    differ = pair("teacher", cell_name("prune", 0.5, 0)).n_differ.iloc[0]
    assert np.isclose(cell.agreement_with_teacher, 1 - differ / 500)


@pytest.mark.e2e
def test_study_md_and_plots(study):
    out, _ = study
    text = open(os.path.join(out, "study.md")).read()
    table = read(out, "study")
    mean = table[(table.method == "lottery") & (table.fraction_removed == 0.9)].test_accuracy
    half = (mean.max() - mean.min()) / 2
    assert re.search(rf"\| lottery \|[^\n]*{100 * mean.mean():.2f} ± {100 * half:.2f} \|", text)
    assert "Distillation vs pruning+distillation (prune_distill)" in text
    assert "two distill models: n differ" in text
    for name in ("accuracy_vs_fraction", "misclassified"):
        path = os.path.join(out, "plots", f"{name}.png")
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}.png" in text


@pytest.mark.e2e
def test_an_interrupted_study_redoes_only_missing_cells(study, tmp_path):
    out, args = study
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    d = StudyDir(copy)
    full = d.tables.read("study")
    # As if killed while the last two cells ran: their rows were never committed.
    d.tables.replace("study", full.iloc[:-2])
    d.stages.mark(finished=False)
    before = d.tables.read("study")
    args = [a if not a.startswith("--output_dir") else f"--output_dir={copy}" for a in args]
    flags_file = os.path.join(copy, "flags.txt")
    with open(flags_file) as f:
        text = f.read().replace(out, copy)
    with open(flags_file, "w") as f:
        f.write(text)
    assert run_in_process(study_main, args) == 0
    after = d.tables.read("study")
    assert len(after) == len(full) and not after.duplicated(
        ["method", "fraction_removed", "seed"]).any()
    pd.testing.assert_frame_equal(after.iloc[:-2], before)   # finished cells untouched
    assert not [f for f in os.listdir(copy) if f.startswith(".tmp")]


@pytest.mark.e2e
def test_a_finished_study_is_not_overwritten(study, capsys):
    out, args = study
    assert run_in_process(study_main, args) == 2
    assert "finished study" in error_lines(capsys.readouterr().err)[0]
    assert run_in_process(study_main, args + ["--epochs=2"]) == 2
    assert "different flags (epochs)" in error_lines(capsys.readouterr().err)[0]


BAD = [
    (["--methods=prune,magic"], "--methods"),
    (["--methods=prune,prune"], "--methods"),
    (["--fractions_removed=0.9,0.5"], "--fractions_removed"),
    (["--fractions_removed=1.2"], "--fractions_removed"),
    (["--fractions_removed=abc"], "--fractions_removed"),
    (["--fractions_removed=0.99999"], "--fractions_removed"),
    (["--seeds=0"], "--seeds"),
    (["--epochs=0"], "--epochs"),
    (["--prune_rate=1"], "--prune_rate"),
    (["--label_noise=1.5"], "--label_noise"),
    (["--alpha=2"], "--alpha"),
    (["--temperature=0"], "--temperature"),
    (["--teacher=nope"], "--teacher"),
    (["--epkd_pruners=l1_filter,magic"], "--epkd_pruners"),
    (["--dataset=nope"], "nope"),
    (["--train_split=nope"], "nope"),
    (["--teacher=lenet5"], "--teacher=lenet5"),      # 12x12 is too small for LeNet-5
    (["--unknown_flag=1"], "unknown_flag"),
]


@pytest.mark.unit
@pytest.mark.parametrize("args,named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_stops_before_any_work(args, named, tiny_dir, tmp_path, capsys):
    out = tmp_path / "never"
    code = run_in_process(study_main, [f"--data_dir={tiny_dir}", "--dataset=tiny_digits",
                                       f"--output_dir={out}", *args])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2
    assert len(lines) == 1 and named in lines[0], lines
    assert not out.exists()


@pytest.mark.unit
def test_flagfiles_parse(tmp_path, capsys):
    # Every shipped study recipe is valid (it fails only at the missing data_dir; downloads
    # are off: this machine may have no network). In this process: the real command's exit
    # status is test_benchmark_scripts.py's test_seed_protocol_flagfile.
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("study_mnist_lenet300", "study_mnist_lenet5", "study_cifar10_resnet34",
                 "study_cifar10_resnet34_seed"):
        code = run_in_process(study_main, [
            f"--flagfile={os.path.join(repo, 'flags', name + '.cfg')}",
            f"--data_dir={tmp_path / 'none'}", f"--output_dir={tmp_path / name}",
            "--nodownload"])
        lines = error_lines(capsys.readouterr().err)
        assert code == 2 and len(lines) == 1 and "--data_dir" in lines[0], (name, lines)


@pytest.mark.unit
@pytest.mark.parametrize("dataset,split", [("mnist", "test"), ("imagenet", "validation")])
def test_the_study_records_the_split_it_tests_on(dataset, split):
    """--test_split unset: flags.txt records the split tested on (test, as studies before
    recorded it, so they still resume; validation for ImageNet)."""
    values = study_main.FLAGS
    values.unparse_flags()
    try:
        values(["study", f"--dataset={dataset}", "--output_dir=unused"])
        cfg = study_main.build_config()
        text = study_main.flags_text(cfg)
    finally:
        values.unparse_flags()
    assert cfg.data.test_split == split and f"--test_split={split}\n" in text
