"""The CLI on ImageNet (mocked TFDS, see mock_tfds.py): an end-to-end ResNet-50 run, the
--image_size / --teacher_width flags, and every recipe in flags/ parsing."""
import epkd_tf  # noqa: F401

import glob
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from absl import flags

from cli_helpers import error_lines, run_in_process
from epkd_tf.cli import main as epkd_main
from mock_tfds import mocked, write_metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Recipes of epkd_tf.main (the study's flags/study_*.cfg are tested in tests/study/).
FLAGFILES = sorted(p for p in glob.glob(os.path.join(REPO, "flags", "*.cfg"))
                   if not os.path.basename(p).startswith("study_"))
N = 16  # mock examples per split

QUICK = ["--dataset=imagenet", "--test_split=validation", "--teacher=resnet50",
         "--image_size=64", "--teacher_width=0.25", "--iterations=1", "--teacher_epochs=1",
         "--finetune_epochs=1", "--pruners=l1_filter,taylor", "--batch_size=8",
         "--latency_runs=2", "--taylor_batches=1",
         # int8 calibration runs TFLite reference kernels (~20 s here); tested elsewhere
         "--export_formats=saved_model,tflite,tflite_int8_dynamic"]


@pytest.fixture(scope="module")
def meta_dir(tmp_path_factory):
    return write_metadata(tmp_path_factory.mktemp("tfds_meta"), N)


def read(out, table):
    return pd.read_csv(os.path.join(out, f"{table}.csv"))


@pytest.mark.integration
@pytest.mark.slow
def test_imagenet_resnet50_end_to_end(meta_dir, tmp_path):
    out = str(tmp_path / "run")
    with mocked(meta_dir, N):
        code = run_in_process(epkd_main, [f"--data_dir={meta_dir}", f"--output_dir={out}",
                                          *QUICK])
    assert code == 0
    students, candidates = read(out, "students"), read(out, "candidates")
    assert len(students) == 1
    assert sorted(candidates.pruner) == ["l1_filter", "taylor"]
    params = candidates.nonzero_params.to_numpy()
    assert abs(params[0] - params[1]) <= 0.02 * params.max(), candidates
    teacher = tf.keras.models.load_model(os.path.join(out, "checkpoints", "teacher.keras"),
                                         compile=False)
    assert teacher.input_shape == (None, 64, 64, 3) and teacher.output_shape == (None, 1000)
    teacher_params = sum(int(np.count_nonzero(w)) for w in teacher.get_weights())
    assert students.nonzero_params.iloc[0] < teacher_params
    assert abs(params.mean() - 0.9 * teacher_params) <= 0.02 * teacher_params
    text = open(os.path.join(out, "flags.txt")).read()
    assert "--image_size=64" in text and "--teacher_width=0.25" in text


@pytest.mark.unit
@pytest.mark.parametrize("args,named", [
    (["--image_size=3"], "--image_size"),
    (["--image_size=abc"], "--image_size"),
    (["--teacher_width=0"], "--teacher_width"),
    (["--teacher_width=-1"], "--teacher_width"),
    (["--test_split=test"], "--test_split"),
])
def test_bad_imagenet_flags_stop_before_any_work(args, named, meta_dir, tmp_path, capsys):
    out = tmp_path / "never"
    with mocked(meta_dir, N):
        code = run_in_process(epkd_main, [f"--data_dir={meta_dir}", f"--output_dir={out}",
                                          *QUICK, *args])
    lines = error_lines(capsys.readouterr().err)
    assert code == 2
    assert len(lines) == 1 and named in lines[0], lines
    assert not out.exists()


@pytest.mark.unit
def test_flag_files_exist():
    names = {os.path.basename(p) for p in FLAGFILES}
    assert {"cifar10_resnet34.cfg", "cifar10_vgg16.cfg", "imagenet_resnet50.cfg"} <= names


@pytest.mark.unit
@pytest.mark.parametrize("path", FLAGFILES, ids=[os.path.basename(p) for p in FLAGFILES])
def test_every_flag_file_parses(path):
    from epkd_tf.models import model_names
    from epkd_tf.pruning import pruner_names
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["epkd", f"--flagfile={path}", "--output_dir=unused"])
        cfg = epkd_main.build_config()
    finally:
        flags.FLAGS.unparse_flags()
    assert cfg.teacher.teacher in model_names()
    assert set(cfg.pruning.pruners) <= set(pruner_names())
    if "imagenet" in os.path.basename(path):
        assert cfg.data.dataset == "imagenet" and cfg.data.image_size == 224
        assert cfg.data.test_split == "validation"


@pytest.mark.unit
def test_bare_imagenet_command_tests_on_validation(meta_dir, tmp_path, monkeypatch):
    """`python -m epkd_tf.main --dataset=imagenet` as promised: the labelled validation
    split is tested on (one log line says so), with the recipe's 224 px images and a
    ResNet-50 teacher, recorded in flags.txt. The run stops right after data loading."""
    import logging
    seen = {}
    monkeypatch.setattr(epkd_main, "check_teacher",
                        lambda cfg, spec: seen.update(cfg=cfg, spec=spec))

    def stop(cfg, data, run, strategy, verbose=0):
        seen["names"] = data.cfg.evaluation_split, data.spec.num_test
        return 0

    monkeypatch.setattr(epkd_main, "_run", stop)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("epkd_tf")
    logger.addHandler(handler)
    out = tmp_path / "run"
    try:
        with mocked(meta_dir, N):
            code = run_in_process(epkd_main, [f"--data_dir={meta_dir}",
                                              f"--output_dir={out}", "--dataset=imagenet"])
    finally:
        logger.removeHandler(handler)
    assert code == 0
    cfg = seen["cfg"]
    assert cfg.data.test_split == "validation" and seen["names"] == ("validation", N)
    assert cfg.teacher.teacher == "resnet50"
    # The oracle (one re-evaluation per channel group) is left out, as in the flagfile.
    assert cfg.pruning.pruners == ("l1_filter", "taylor", "poly_magnitude")
    assert any(line.startswith("--dataset=imagenet: pruners l1_filter,taylor,poly_magnitude")
               for line in lines), lines
    assert seen["spec"].input_shape == (224, 224, 3) and seen["spec"].num_classes == 1000
    said = [line for line in lines if "test split has no labels" in line]
    assert said == ["--dataset=imagenet: its test split has no labels; testing on "
                    "'validation' (give --test_split to choose)"], lines
    text = (out / "flags.txt").read_text()
    assert "--test_split=validation\n" in text and "--teacher=resnet50\n" in text
    assert "--pruners=l1_filter,taylor,poly_magnitude\n" in text


@pytest.mark.unit
def test_dataset_defaults_leave_given_flags_and_other_datasets_alone():
    """--test_split / --teacher given keep their values; datasets with a labelled test
    split keep test and the general default teacher."""
    from epkd_tf.config import DataConfig, default_test_split
    assert default_test_split("imagenet") == default_test_split(" imagenet2012") == \
        "validation"
    assert default_test_split("cifar10") == "test"
    assert DataConfig().test_split is None and DataConfig().evaluation_split == "test"
    assert DataConfig(dataset="imagenet").evaluation_split == "validation"
    assert DataConfig(dataset="imagenet", test_split="validation[:10%]").evaluation_split \
        == "validation[:10%]"
    from epkd_tf.config import PruningConfig
    general = PruningConfig().pruners
    for args, split, teacher, pruners in [
            (["--dataset=imagenet", "--test_split=validation[:50%]", "--teacher=resnet18",
              "--pruners=oracle,taylor"], "validation[:50%]", "resnet18", ("oracle", "taylor")),
            (["--dataset=cifar10"], "test", "lenet300_100", general),
            (["--dataset=imagenet", "--teacher_path=t.keras"], "validation", None,
             ("l1_filter", "taylor", "poly_magnitude"))]:
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["epkd", *args, "--output_dir=unused"])
            cfg = epkd_main.build_config()
        finally:
            flags.FLAGS.unparse_flags()
        assert cfg.data.test_split == split
        assert cfg.pruning.pruners == pruners
        if teacher:
            assert cfg.teacher.teacher == teacher
