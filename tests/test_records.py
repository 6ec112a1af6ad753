"""The run directory writes whole files and drops the rows of unfinished stages."""
import os

import pandas as pd
import pytest

from epkd_tf.records import TABLES, RunDir


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
