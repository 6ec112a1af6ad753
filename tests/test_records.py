"""The run directory writes whole files and drops the rows of unfinished stages."""
import os

import pandas as pd
import pytest

from epkd_tf.records import TABLES, RunDir, safe_name


def test_append_keeps_documented_column_order(tmp_path):
    run = RunDir(str(tmp_path))
    run.append("timings", pd.DataFrame([{"seconds": 1.5, "phase": "a", "iteration": 1,
                                         "pruner": "x"}]))
    run.append("timings", pd.DataFrame([{"phase": "b", "iteration": 2, "pruner": "",
                                         "seconds": 2.0}]))
    frame = run.read("timings")
    assert list(frame.columns) == TABLES["timings"]
    assert frame.phase.tolist() == ["a", "b"]


def test_failed_write_leaves_previous_file_and_no_temporaries(tmp_path):
    run = RunDir(str(tmp_path))
    run.append("timings", pd.DataFrame([{"phase": "a", "iteration": 1, "pruner": "", "seconds": 1}]))

    class Boom(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("disk full")

    original = pd.DataFrame.to_csv
    pd.DataFrame.to_csv = Boom.to_csv
    try:
        with pytest.raises(RuntimeError):
            run.append("timings", pd.DataFrame([{"phase": "b", "iteration": 2, "pruner": "",
                                                 "seconds": 1}]))
    finally:
        pd.DataFrame.to_csv = original
    assert run.read("timings").phase.tolist() == ["a"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


def test_drop_unfinished_removes_rows_after_the_last_completed_iteration(tmp_path):
    run = RunDir(str(tmp_path))
    run.mark(teacher_done=True, iterations_done=1)
    run.append("students", pd.DataFrame({"iteration": [1, 2], "pruner": ["a", "b"]}))
    run.append("criteria_correlation", pd.DataFrame({"iteration": [1, 2, 2]}))
    run.append("teacher_history", pd.DataFrame({"epoch": [1, 2]}))
    run.drop_unfinished()
    assert run.read("students").iteration.tolist() == [1]
    assert run.read("criteria_correlation").iteration.tolist() == [1]
    assert run.read("teacher_history").epoch.tolist() == [1, 2]


def test_drop_unfinished_before_teacher_done_clears_teacher_history(tmp_path):
    run = RunDir(str(tmp_path))
    run.append("teacher_history", pd.DataFrame({"epoch": [1]}))
    run.drop_unfinished()
    assert run.read("teacher_history").empty


def test_write_directory_is_all_or_nothing(tmp_path):
    run = RunDir(str(tmp_path))
    target = run.serving_dir("student", 3)

    def half_written(tmp):
        os.makedirs(tmp)
        open(os.path.join(tmp, "partial"), "w").close()
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run.write_directory(target, half_written)
    assert not os.path.exists(target)
    assert os.listdir(os.path.dirname(target)) == []

    def whole(tmp):
        os.makedirs(tmp)
        open(os.path.join(tmp, "saved_model.pb"), "w").close()

    run.write_directory(target, whole)
    assert os.listdir(target) == ["saved_model.pb"]


def test_unknown_table_is_named(tmp_path):
    with pytest.raises(KeyError, match="nope"):
        RunDir(str(tmp_path)).read("nope")


def test_drop_unfinished_removes_files_of_unfinished_stages_and_temporaries(tmp_path):
    run = RunDir(str(tmp_path))
    run.mark(teacher_done=True, iterations_done=1)
    paths = ["checkpoints/teacher.keras", "checkpoints/student_1.keras",
             "checkpoints/student_2.keras", "checkpoints/student_12.keras",
             "tflite/teacher.tflite", "tflite/student_1_int8.tflite",
             "tflite/student_2.tflite", "tflite/student_2_int8_dynamic.tflite",
             "serving/teacher/1/saved_model.pb", "serving/student/1/saved_model.pb",
             "serving/student/2/saved_model.pb", "serving/student/.tmp-abc/out/x",
             "candidates/2/taylor/saved_model.pb", "tensorboard/finetune_1/train/e",
             "tensorboard/finetune_2/train/e", "tflite/.tmp-xyz", ".tmp-progress",
             "keras3/teacher.keras", "keras3/student_1.keras", "keras3/student_2.keras",
             "keras3/.tmp-student_3.keras"]
    for p in paths:
        os.makedirs(os.path.dirname(run.path(p)), exist_ok=True)
        open(run.path(p), "w").close()
    run.drop_unfinished()
    left = sorted(os.path.relpath(os.path.join(r, f), tmp_path)
                  for r, _, files in os.walk(tmp_path) for f in files)
    assert left == ["checkpoints/student_1.keras", "checkpoints/teacher.keras",
                    "keras3/student_1.keras", "keras3/teacher.keras", "progress.json", "serving/student/1/saved_model.pb",
                    "serving/teacher/1/saved_model.pb", "tensorboard/finetune_1/train/e",
                    "tflite/student_1_int8.tflite", "tflite/teacher.tflite"]
    # Before the teacher completed, nothing stays but progress.json.
    run.mark(teacher_done=False, iterations_done=0)
    run.drop_unfinished()
    assert [f for _, _, files in os.walk(tmp_path) for f in files] == ["progress.json"]


def test_paths_never_leave_the_run_directory(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert run.path("plots", "a.png") == str(tmp_path / "run" / "plots" / "a.png")
    for parts in [("..", "x"), ("plots", "..", "..", "x"), ("/etc/passwd",)]:
        with pytest.raises(ValueError, match="outside the run directory"):
            run.path(*parts)
    assert run.plot_path("../../evil name") == str(tmp_path / "run" / "plots" / "-..-evil-name.png")


def test_safe_name_is_one_harmless_path_component():
    assert safe_name("mnist_applications.ResNet50_20250101-120000") == \
        "mnist_applications.ResNet50_20250101-120000"
    assert safe_name("a/b c:d") == "a-b-c-d"
    assert safe_name("../..") == "-.."
    assert safe_name("..") == "run" and safe_name("", fallback="model") == "model"
    assert safe_name(".tmp-x") == "tmp-x"


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    from epkd_tf.records import RunDir
    run = RunDir(str(tmp_path))
    mask = os.umask(0o022)
    try:
        path = run.write_bytes("tflite/x.tflite", b"abc")
        assert os.stat(path).st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)
