"""The run directory writes whole files and drops the rows of unfinished stages."""
import os

import pandas as pd
import pytest

from epkd_tf.records import TABLES, RunDir, safe_name


@pytest.mark.unit
def test_append_keeps_documented_column_order(tmp_path):
    run = RunDir(str(tmp_path))
    run.tables.append("timings", pd.DataFrame([{"seconds": 1.5, "phase": "a", "iteration": 1,
                                                "pruner": "x"}]))
    run.tables.append("timings", pd.DataFrame([{"phase": "b", "iteration": 2, "pruner": "",
                                                "seconds": 2.0}]))
    frame = run.tables.read("timings")
    assert list(frame.columns) == TABLES["timings"]
    assert frame.phase.tolist() == ["a", "b"]


@pytest.mark.unit
def test_failed_write_leaves_previous_file_and_no_temporaries(tmp_path):
    run = RunDir(str(tmp_path))
    run.tables.append("timings", pd.DataFrame([{"phase": "a", "iteration": 1, "pruner": "",
                                                "seconds": 1}]))

    class Boom(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise RuntimeError("disk full")

    original = pd.DataFrame.to_csv
    pd.DataFrame.to_csv = Boom.to_csv
    try:
        with pytest.raises(RuntimeError):
            run.tables.append("timings", pd.DataFrame([{"phase": "b", "iteration": 2,
                                                        "pruner": "", "seconds": 1}]))
    finally:
        pd.DataFrame.to_csv = original
    assert run.tables.read("timings").phase.tolist() == ["a"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


@pytest.mark.unit
def test_drop_unfinished_removes_rows_after_the_last_completed_iteration(tmp_path):
    run = RunDir(str(tmp_path))
    # As the recorder writes: a stage's rows, then its mark.
    run.tables.append("teacher_history", pd.DataFrame({"epoch": [1, 2]}))
    run.stages.mark(teacher_done=True)
    run.tables.append("students", pd.DataFrame({"iteration": [1], "pruner": ["a"]}))
    run.tables.append("criteria_correlation", pd.DataFrame({"iteration": [1]}))
    run.stages.mark(iterations_done=1)
    # Iteration 2 and the end stage, killed before their marks.
    run.tables.append("students", pd.DataFrame({"iteration": [2], "pruner": ["b"]}))
    run.tables.append("criteria_correlation", pd.DataFrame({"iteration": [2, 2]}))
    run.tables.append("final", pd.DataFrame({"iteration": [1], "pruner": ["a"]}))
    run.stages.drop_unfinished()
    assert run.tables.read("students").iteration.tolist() == [1]
    assert run.tables.read("criteria_correlation").iteration.tolist() == [1]
    assert run.tables.read("teacher_history").epoch.tolist() == [1, 2]
    # A table no completed stage recorded is the unfinished stage's alone, whatever
    # iteration its rows name (issue 25: final.csv's row was kept and written again).
    assert not os.path.exists(run.tables.path("final"))


@pytest.mark.unit
def test_drop_unfinished_before_teacher_done_clears_teacher_history(tmp_path):
    run = RunDir(str(tmp_path))
    run.tables.append("teacher_history", pd.DataFrame({"epoch": [1]}))
    run.stages.drop_unfinished()
    assert run.tables.read("teacher_history").empty


@pytest.mark.unit
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


@pytest.mark.unit
def test_unknown_table_is_named(tmp_path):
    with pytest.raises(KeyError, match="nope"):
        RunDir(str(tmp_path)).tables.read("nope")


@pytest.mark.unit
def test_drop_unfinished_removes_files_of_unfinished_stages_and_temporaries(tmp_path):
    run = RunDir(str(tmp_path))
    run.stages.mark(teacher_done=True, iterations_done=1)
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
    run.stages.drop_unfinished()
    left = sorted(os.path.relpath(os.path.join(r, f), tmp_path)
                  for r, _, files in os.walk(tmp_path) for f in files)
    assert left == ["checkpoints/student_1.keras", "checkpoints/teacher.keras",
                    "keras3/student_1.keras", "keras3/teacher.keras", "progress.json", "serving/student/1/saved_model.pb",
                    "serving/teacher/1/saved_model.pb", "tensorboard/finetune_1/train/e",
                    "tflite/student_1_int8.tflite", "tflite/teacher.tflite"]
    # Before the teacher completed, nothing stays but progress.json.
    run.stages.mark(teacher_done=False, iterations_done=0)
    run.stages.drop_unfinished()
    assert [f for _, _, files in os.walk(tmp_path) for f in files] == ["progress.json"]


@pytest.mark.unit
def test_paths_never_leave_the_run_directory(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert run.path("plots", "a.png") == str(tmp_path / "run" / "plots" / "a.png")
    for parts in [("..", "x"), ("plots", "..", "..", "x"), ("/etc/passwd",)]:
        with pytest.raises(ValueError, match="outside the run directory"):
            run.path(*parts)
    assert run.plot_path("../../evil name") == str(tmp_path / "run" / "plots" / "-..-evil-name.png")


@pytest.mark.unit
def test_safe_name_is_one_harmless_path_component():
    assert safe_name("mnist_applications.ResNet50_20250101-120000") == \
        "mnist_applications.ResNet50_20250101-120000"
    assert safe_name("a/b c:d") == "a-b-c-d"
    assert safe_name("../..") == "-.."
    assert safe_name("..") == "run" and safe_name("", fallback="model") == "model"
    assert safe_name(".tmp-x") == "tmp-x"


@pytest.mark.unit
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


# -- reliability: links, locking, output directories, verified progress ---------------------
import json
import subprocess
import sys

from epkd_tf.records.locking import DirectoryBusyError
from epkd_tf.records import (LOCK_NAME, DamagedRunError, RunDirError, check_output_dir)


@pytest.mark.unit
def test_paths_through_a_link_out_of_the_run_are_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.root)
    os.symlink(outside, run.path("tflite"))
    with pytest.raises(ValueError, match=r"outside the run directory .*symbolic link"):
        run.tflite_path("student_3")
    with pytest.raises(RunDirError, match="tflite is a link to .*elsewhere, outside the run"):
        run.stages.check_links()
    os.makedirs(run.path("plots"))
    os.symlink(run.path("plots"), run.path("figures"))       # a link inside is fine
    assert run.path("figures", "a.png").endswith("figures/a.png")


@pytest.mark.e2e
def test_one_process_holds_a_directory_and_a_dead_holder_is_taken_over(tmp_path):
    run = RunDir(str(tmp_path / "new"))
    with run.lock("--output_dir=new"):
        assert open(run.path(LOCK_NAME)).read().strip() == str(os.getpid())
        assert run.entries() == []
        # flock conflicts between open files, also within one process; another process:
        code = ("from epkd_tf.records import RunDir\n"
                f"with RunDir({run.root!r}).lock('--output_dir=new'): pass\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode != 0
        assert f"--output_dir=new is in use by another epkd_tf process (PID {os.getpid()})" \
            in result.stderr
        with pytest.raises(DirectoryBusyError, match=f"PID {os.getpid()}"):
            with run.lock("--output_dir=new"):
                pass
    assert not os.path.exists(run.root)      # created for the lock, left empty: removed
    # A lock file left by a process that died (SIGKILL) holds no lock: it is taken over.
    os.makedirs(run.root)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    with open(run.path(LOCK_NAME), "w") as f:
        f.write(dead + "\n")
    with run.lock():
        assert open(run.path(LOCK_NAME)).read().strip() == str(os.getpid())
    assert os.listdir(run.root) == []


@pytest.mark.unit
def test_clear_keeps_the_lock(tmp_path):
    run = RunDir(str(tmp_path))
    with run.lock():
        run.write_text("flags.txt", "x")
        run.write_bytes("tflite/a.tflite", b"x")
        run.clear()
        assert os.listdir(tmp_path) == [LOCK_NAME]


@pytest.mark.unit
def test_output_dirs_no_run_could_write_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    for path, message in [("/", "the file system's root"),
                          (str(tmp_path / "file" / "run"), "which is a file"),
                          (str(tmp_path / "file"), "exists and is not a directory"),
                          (str(tmp_path / ("x" * 300)), "too long"),
                          ("/proc/self/run", "lies in /proc, a virtual file system")]:
        with pytest.raises(RunDirError, match=message):
            check_output_dir(path)
        assert not os.path.exists(os.path.join(path, "flags.txt"))
    check_output_dir(str(tmp_path / "new" / "run"))         # fine: nothing written
    assert not (tmp_path / "new").exists()
    if make_read_only(read_only):
        try:
            with pytest.raises(RunDirError, match="cannot be written"):
                check_output_dir(str(read_only / "run"))
        finally:
            make_writable(read_only)


def make_read_only(path) -> bool:
    """chmod for a user; root ignores modes, so the immutable attribute (ext4); False if
    neither is possible here."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        return True
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def make_writable(path) -> None:
    if os.geteuid() != 0:
        os.chmod(path, 0o755)
    else:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "{not json", "[]", "{}", "null",
                                  '{"teacher_done": "yes", "iterations_done": 1, '
                                  '"finished": false}'])
def test_a_damaged_progress_file_is_named(text, tmp_path):
    run = RunDir(str(tmp_path))
    (tmp_path / "progress.json").write_text(text)
    with pytest.raises(DamagedRunError, match=r"progress.json is damaged"):
        run.stages.progress()


def committed_run(tmp_path):
    """A run directory whose teacher and iteration 1 and 2 completed (synthetic files)."""
    run = RunDir(str(tmp_path / "run"))
    for stage, name in enumerate(["teacher", "student_1", "student_2"]):
        run.write_bytes(f"checkpoints/{name}.keras", f"weights of {name}".encode())
        run.tables.append("students" if stage else "teacher_history",
                          pd.DataFrame([{"iteration": stage, "pruner": "l1", "epoch": 1}]))
        run.stages.mark(**({"iterations_done": stage} if stage else {"teacher_done": True}))
    return run


@pytest.mark.unit
def test_tables_only_grow_so_each_stage_s_record_stays_checkable(tmp_path):
    run = committed_run(tmp_path)
    state = json.load(open(run.path("progress.json")))
    assert [s["name"] for s in state["stages"]] == ["teacher", "iteration 1", "iteration 2"]
    sizes = [s["tables"]["students"]["bytes"] for s in state["stages"][1:]]
    data = open(run.tables.path("students"), "rb").read()
    assert len(data) == sizes[1] > sizes[0] and data[:sizes[0]].count(b"\n") == 2
    assert run.stages.verify() is None and run.stages.prepare_resume() is None


@pytest.mark.unit
def test_damage_to_the_last_stage_is_redone_and_to_an_earlier_one_refused(tmp_path):
    run = committed_run(tmp_path)
    with open(run.student_checkpoint(2), "ab") as f:
        f.write(b"!")
    assert run.stages.verify()["path"] == "checkpoints/student_2.keras"
    warning = run.stages.prepare_resume()
    assert "checkpoints/student_2.keras" in warning and "iteration 2 stage" in warning
    assert run.stages.progress()["iterations_done"] == 1
    run.stages.drop_unfinished()
    assert not os.path.exists(run.student_checkpoint(2))
    assert run.tables.read("students").iteration.tolist() == [1]

    run = committed_run(tmp_path / "again")
    rows = open(run.tables.path("students")).read().splitlines()
    open(run.tables.path("students"), "w").write("\n".join(rows[:1] + rows[2:]) + "\n")
    before = open(run.path("progress.json")).read()
    with pytest.raises(DamagedRunError, match=r"students.csv .* not what the iteration 1 "
                                              r"stage wrote.*--overwrite"):
        run.stages.prepare_resume("--output_dir=x")
    assert open(run.path("progress.json")).read() == before
    # progress.json that claims more than it recorded
    state = json.loads(before)
    state["iterations_done"] = 5
    open(run.path("progress.json"), "w").write(json.dumps(state))
    with pytest.raises(DamagedRunError, match="claims 6 completed stages .* records what 3"):
        run.stages.verify()


@pytest.mark.unit
def test_a_cut_row_or_a_lost_header_is_refused_on_reading(tmp_path):
    run = RunDir(str(tmp_path))
    run.tables.append("students", pd.DataFrame([{"iteration": 1, "total_params": 266610}]))
    text = open(run.tables.path("students")).read()
    open(run.tables.path("students"), "w").write(text[:-4])
    with pytest.raises(DamagedRunError, match="students.csv is damaged: its last row is cut"):
        run.tables.read("students")
    open(run.tables.path("students"), "w").write(text.split("\n", 1)[1])
    with pytest.raises(DamagedRunError, match="students.csv is damaged: its first line"):
        run.tables.append("students", pd.DataFrame([{"iteration": 2}]))


@pytest.mark.unit
def test_a_timings_table_of_an_older_run_stays_readable_and_resumable(tmp_path):
    """timings.csv of a run written before peak memory was measured (four columns) is read
    with the new columns empty, appended to under its own header (so the bytes each
    completed stage recorded stay valid) and its stages still verify."""
    from epkd_tf.records.tables import LEGACY_COLUMNS
    run = RunDir(str(tmp_path / "run"))
    old = LEGACY_COLUMNS["timings"][0]
    run.write_bytes("timings.csv", (",".join(old) + "\nteacher_training,0,,2.5\n").encode())
    run.stages.mark(teacher_done=True)
    frame = run.tables.read("timings")
    assert list(frame.columns) == TABLES["timings"]
    assert frame.seconds.tolist() == [2.5] and frame.peak_rss_mb.isna().all()
    run.tables.append("timings", pd.DataFrame([{"phase": "scoring", "iteration": 1,
                                                "pruner": "taylor", "seconds": 1.0,
                                                "peak_rss_mb": 512.0}]))
    run.stages.mark(iterations_done=1)
    lines = open(run.tables.path("timings")).read().splitlines()
    assert lines == [",".join(old), "teacher_training,0,,2.5", "scoring,1,taylor,1.0"]
    assert run.stages.verify() is None
    completed = run.tables.read_completed("timings")
    assert list(completed.columns) == TABLES["timings"]
    assert completed.phase.tolist() == ["teacher_training", "scoring"]
    # Any other header is still refused as damage.
    open(run.tables.path("timings"), "w").write("phase,seconds\na,1\n")
    with pytest.raises(DamagedRunError, match="timings.csv is damaged: its first line"):
        run.tables.read("timings")


@pytest.mark.unit
def test_recorded_settings_reads_back_what_flags_txt_records():
    """A RunConfig written as flags.txt reads back as its DataConfig (tuples, booleans,
    numbers, strings); a setting the text does not name keeps its default."""
    from epkd_tf.config import DataConfig, RunConfig
    from epkd_tf.records.settings_record import recorded_settings, settings_text
    data = DataConfig(dataset="fashion_mnist", batch_size=7, seed=3, validation_split="0.25",
                      train_split="train[:20%]", download=False)
    text = settings_text(RunConfig(data=data))
    assert recorded_settings(text, DataConfig()) == data
    without = "".join(line + "\n" for line in text.splitlines()
                      if not line.startswith("--batch_size="))
    assert recorded_settings(without, DataConfig()).batch_size == DataConfig().batch_size
