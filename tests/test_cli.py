"""The command line as a user meets it: Ctrl-C and SIGTERM end a run with one line and the
same command resumes it; the same command again reports a finished run; the console shows
epkd_tf's own lines; a typo is refused before TensorFlow loads; --help exits 0."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from cli_helpers import TINY_RUN_ARGS, error_lines, run_in_process, run_subprocess
from cli_helpers import user_env as _env

EPKD_LINE = r"^\d\d:\d\d:\d\d epkd_tf: "


def _command(tiny_dir):
    """The reference run's command (conftest.py): it writes into the default directory
    (./saved_models/...), as a user's would."""
    return [sys.executable, "-m", "epkd_tf.main", f"--data_dir={tiny_dir}", *TINY_RUN_ARGS]


def _as_from_a_terminal():
    # pytest-xdist's workers ignore SIGINT and a child inherits an ignored signal (the
    # run would then rightly not hear Ctrl-C, as under nohup): give it the disposition a
    # command started from a shell has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after(command, cwd, marker: str, signum) -> subprocess.CompletedProcess:
    """Runs ``command``, sends ``signum`` once a stderr line contains ``marker``."""
    process = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True,
                               env=_env(), preexec_fn=_as_from_a_terminal)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if marker in line:
            process.send_signal(signum)
            break
    rest = process.stderr.read()
    process.wait(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, "", "".join(lines) + rest)


def _run_dir(cwd):
    (name,) = os.listdir(os.path.join(cwd, "saved_models"))
    return os.path.join(cwd, "saved_models", name)


@pytest.mark.e2e
@pytest.mark.parametrize("signum, status, name", [(signal.SIGINT, 130, "Ctrl-C"),
                                                  pytest.param(signal.SIGTERM, 143, "SIGTERM",
                                                               marks=pytest.mark.slow)])
def test_an_interrupted_run_says_so_in_one_line_and_the_same_command_resumes_it(
        tiny_dir, tmp_path, reference_run, signum, status, name):
    cwd = tmp_path
    result = _interrupt_after(_command(tiny_dir), cwd, "Iteration 1/2 done", signum)
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"interrupted ({name}): the teacher and iteration")
    assert "the same command resumes it: python -m epkd_tf.main --data_dir=" in last
    # The very same command (no --output_dir) finds the run and resumes it ...
    again = subprocess.run(_command(tiny_dir), cwd=cwd, capture_output=True, text=True,
                           env=_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming saved_models/" in again.stderr
    assert len(os.listdir(cwd / "saved_models")) == 1
    # ... to the uninterrupted run's results.
    plain = pd.read_csv(os.path.join(reference_run.out, "students.csv"))
    resumed = pd.read_csv(os.path.join(_run_dir(cwd), "students.csv"))
    columns = ["iteration", "pruner", "nonzero_params", "test_accuracy", "train_accuracy"]
    pd.testing.assert_frame_equal(plain[columns], resumed[columns])


@pytest.mark.e2e
def test_the_same_command_on_a_finished_run_reports_it(tiny_dir, reference_run, tmp_path):
    import shutil
    cwd = tmp_path / "work"                     # a copy: the reference run stays as it is
    shutil.copytree(reference_run.cwd, cwd, symlinks=True)
    result = subprocess.run(_command(tiny_dir), cwd=cwd, capture_output=True, text=True,
                            env=_env(), timeout=120)
    assert result.returncode == 0
    assert "A finished run with these flags is in saved_models/" in result.stderr
    assert "Teacher → final student" in result.stderr
    assert len(os.listdir(cwd / "saved_models")) == 1          # nothing was redone


@pytest.mark.e2e
def test_the_console_shows_only_epkd_tf_lines_unless_verbose(reference_run):
    """The quiet half; with EPKD_VERBOSE=1 the native and Keras lines come back:
    test_a_run_killed_while_training_its_teacher_is_reported_and_resumed's resumed run."""
    import re
    lines = reference_run.stderr.strip().splitlines()
    foreign = [line for line in lines if not re.match(EPKD_LINE, line)]
    assert foreign == [], foreign[:5]
    # One line per teacher epoch as it ends, and the headline last.
    assert sum("Teacher epoch" in line for line in lines) == 2
    assert "final student" in "\n".join(lines[-9:]) and "nan" not in reference_run.stderr


@pytest.mark.e2e
def test_a_bad_flag_is_refused_before_tensorflow_loads():
    code = ("import sys\n"
            "from epkd_tf.cli import main\n"
            "argv = ['epkd', '--keep_ratio=1.5', '--output_dir=/tmp/never']\n"
            "main.parse_flags(argv)\n"
            "status = main.main(argv[:1])\n"
            "print(status, 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert error_lines(result.stderr) == ["error: --keep_ratio=1.5 is invalid: must lie in "
                                          "(0, 1)."]
    typo = run_subprocess("epkd_tf.main", ["--teacher=lenet", "--output_dir=/tmp/never"])
    lines = error_lines(typo.stderr)
    assert typo.returncode == 2 and len(lines) == 1 and "did you mean 'lenet5'" in lines[0]


def _runner(module):
    """The module whose ``run()`` ``python -m module`` calls."""
    import importlib
    entry = importlib.import_module(module)
    if not hasattr(entry, "run"):                   # a package: its __main__ runs
        entry = importlib.import_module(f"{module}.__main__")
    return importlib.import_module(entry.run.__module__)


@pytest.mark.unit
@pytest.mark.parametrize("module", ["epkd_tf.main", "epkd_tf.study", "epkd_tf.export",
                                    "epkd_tf.report", "epkd_tf.data"])
def test_help_exits_0(module, capsys):
    """``python -m module --help``, parsed in this process (the installed commands' --help:
    test_console_entry_points_are_installed_and_run_the_modules)."""
    assert run_in_process(_runner(module), ["--help"]) == 0
    assert "--" in capsys.readouterr().out


def _help(module, arg, capsys):
    assert run_in_process(_runner(module), [arg]) == 0
    return capsys.readouterr().out


def _listed(text: str, name: str) -> int:
    """How many times the help lists the flag ``name`` (``--name:`` or ``--[no]name:``)."""
    import re
    return len(re.findall(rf"^  --(?:\[no\])?{re.escape(name)}:", text, re.M))


ABSL_FLAGS = ("pdb", "logtostderr", "run_with_profiling", "verbosity", "only_check_args")


@pytest.mark.unit
def test_main_help_leads_with_epkd_tf_flags_by_topic_and_examples(capsys):
    """``--help`` (also -h, --helpshort): the usage, two or three examples whose flags are
    real, then epkd_tf's flags grouped by the settings' parts (Data first), each exactly
    once, and none of absl's own (pdb, logging, profiling), which ``--helpfull`` adds."""
    from epkd_tf.cli import main
    text = _help("epkd_tf.main", "--help", capsys)
    lines = text.splitlines()
    assert lines[0].startswith("python -m epkd_tf.main: run EPKD")
    assert lines[2].startswith("Usage: python -m epkd_tf.main")
    titles = [line for line in lines if line.endswith(":") and not line.startswith(" ")]
    assert titles[0] == "Examples:"
    assert [t.split(":")[0] for t in titles[1:]] == ["Data", "Teacher", "Pruning", "Distill",
                                                      "Budget", "Run", "Command line"]
    assert 2 <= len(main.EXAMPLES) <= 3
    examples = text.split("Examples:\n", 1)[1].split("\n\n", 1)[0]
    for example in main.EXAMPLES:
        assert " ".join(example.split()) in " ".join(examples.replace("\\\n", "").split())
        for token in example.split()[3:]:
            name = token.split("=", 1)[0].lstrip("-")
            assert name == "flagfile" or name in main.FLAGS, token
    for name in (*main.RUN_FLAGS, "overwrite", "verbose"):
        assert _listed(text, name) == 1, name
    for name in ABSL_FLAGS:
        assert _listed(text, name) == 0 and f"--{name}" not in text, name
    assert "--helpfull" in lines[-1]
    assert _help("epkd_tf.main", "--helpshort", capsys) == text
    assert _help("epkd_tf.main", "-h", capsys) == text
    full = _help("epkd_tf.main", "--helpfull", capsys)
    assert full.startswith(text.rsplit("absl's own flags", 1)[0])
    for name in (*main.RUN_FLAGS, *ABSL_FLAGS):
        assert _listed(full, name) == 1, name


@pytest.mark.unit
@pytest.mark.parametrize("module", ["epkd_tf.study", "epkd_tf.export", "epkd_tf.report",
                                    "epkd_tf.data"])
def test_the_other_entry_points_help_lists_their_own_flags_first(module, capsys):
    """Their --help opens with their usage (not a module name such as
    ``epkd_tf.settings:``), lists each of their flags once and none of absl's own."""
    entry = _runner(module)
    text = _help(module, "--help", capsys)
    assert text.splitlines()[0].startswith("python -m " + module), text[:200]
    assert "epkd_tf.settings:" not in text and "epkd_tf.cli" not in text
    for name in {flag.name for flags_ in entry.FLAGS.flags_by_module_dict().values()
                 for flag in flags_}:
        assert _listed(text, name) == 1, name
    for name in ABSL_FLAGS:
        assert f"--{name}" not in text, name


@pytest.mark.e2e
def test_the_reports_replay_command_works(reference_run, tmp_path):
    import re
    import shutil
    copy = str(tmp_path / "run")             # the replay writes beside the run it replays
    shutil.copytree(reference_run.out, copy, symlinks=True)
    report = open(os.path.join(copy, "report.md"), encoding="utf-8").read()
    command = re.search(r"`(python -m epkd_tf\.main --flagfile=[^`]+)`", report).group(1)
    assert command.count(reference_run.out) == 2, command       # --flagfile, --output_dir
    args = command.replace(reference_run.out, copy).split()[3:]
    result = run_subprocess("epkd_tf.main", args + ["--iterations=1"], cwd=str(tmp_path),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(os.path.join(f"{copy}-replay", "report.md"))


@pytest.mark.e2e
def test_a_run_killed_while_training_its_teacher_is_reported_and_resumed(tiny_dir, tmp_path):
    """... and resumed with EPKD_VERBOSE=1: Keras' progress bars and the native libraries'
    lines are back on the console (what test_the_console_shows_only_epkd_tf_lines_unless_
    verbose's quiet run leaves out)."""
    import re
    killed = subprocess.run(_command(tiny_dir) + ["--iterations=1", "--pruners=l1_filter"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env=_env(EPKD_TEST_KILL_AT="teacher_epoch_1"))
    assert killed.returncode == -signal.SIGKILL
    run_dir = _run_dir(tmp_path)
    report = run_subprocess("epkd_tf.report", [run_dir], timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    text = open(os.path.join(run_dir, "report.md"), encoding="utf-8").read()
    assert "The teacher has not completed yet." in text and "no flags.txt" not in text
    resumed = subprocess.run(_command(tiny_dir) + ["--iterations=1", "--pruners=l1_filter"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=600,
                             env=_env(EPKD_VERBOSE="1"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming {os.path.relpath(run_dir, tmp_path)}" in resumed.stderr
    assert len(os.listdir(tmp_path / "saved_models")) == 1
    assert "/step" in resumed.stdout                 # Keras' own progress bars are back
    assert [line for line in resumed.stderr.splitlines() if not re.match(EPKD_LINE, line)]


@pytest.mark.e2e
@pytest.mark.parametrize("script, module", [("epkd", "epkd_tf.main"),
                                            ("epkd-study", "epkd_tf.study"),
                                            ("epkd-export", "epkd_tf.export"),
                                            ("epkd-report", "epkd_tf.report"),
                                            ("epkd-data", "epkd_tf.data")])
def test_console_entry_points_are_installed_and_run_the_modules(script, module):
    """`pip install` puts the tools on PATH; each is its `python -m` module: it calls the
    same run(), and its --help exits 0."""
    import shutil
    from importlib.metadata import entry_points
    path = shutil.which(script) or os.path.join(os.path.dirname(sys.executable), script)
    assert os.path.exists(path), f"{script} is not installed (pip install -e .)"
    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == script]
    assert entry.value == f"{_runner(module).__name__}:run", entry
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--" in result.stdout


@pytest.mark.unit
@pytest.mark.parametrize("line, native", [
    ("I0000 00:00:1796037825.486877   21171 port.cc:153] oneDNN custom operations are on.",
     True),
    ("E0000 00:00:1796037829.291528   21171 cuda_platform.cc:52] failed call to cuInit", True),
    ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
     True),
    ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", True),
    ("fully_quantize: 0, inference_type: 6, input_inference_type: INT8, "
     "output_inference_type: INT8", True),
    ("12:08:08 epkd_tf: Iteration 7/14 done; elapsed 378 s", False),
    ("error: --keep_ratio=1.5 is invalid: must lie in (0, 1).", False),
    ("Traceback (most recent call last):", False),
])
def test_the_native_log_filter_drops_only_native_library_lines(line, native):
    from epkd_tf.cli.common import _NATIVE_LINE
    assert bool(_NATIVE_LINE.match(line)) is native


# -- flag files and flags.txt are read as text, never blocking ---------------------------
ENTRY_POINTS = ["epkd_tf.main", "epkd_tf.study", "epkd_tf.export", "epkd_tf.report",
                "epkd_tf.data"]


@pytest.mark.unit
@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_unreadable_flagfile_is_one_line_and_exit_2(module, tmp_path, capsys):
    """absl would end in a UnicodeDecodeError traceback (or read a directory); a nested
    flag file is checked as the one naming it."""
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("--dataset=caf\xe9\n".encode("latin-1"))
    outer = tmp_path / "outer.txt"
    outer.write_text(f"# flags\n--flagfile={latin}\n", encoding="utf-8")
    cases = [(latin, f"--flagfile={latin} is not UTF-8 text"),
             (outer, f"--flagfile={latin} (named in {outer}) is not UTF-8 text"),
             (tmp_path, f"--flagfile={tmp_path} is a directory"),
             (tmp_path / "missing.txt", "missing.txt does not exist")]
    for path, message in cases:
        assert run_in_process(_runner(module), [f"--flagfile={path}"]) == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and message in lines[0], (path, lines)


@pytest.mark.e2e
@pytest.mark.parametrize("module", ["epkd_tf.main", "epkd_tf.report"])
def test_a_fifo_flagfile_is_refused_without_waiting(module, tmp_path):
    fifo = tmp_path / "flags.fifo"
    os.mkfifo(fifo)
    result = run_subprocess(module, ["--flagfile", str(fifo)], timeout=60)  # absl blocked
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"--flagfile={fifo} is not a regular file" in lines[0]


def _bad_flags_txt(directory, kind):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "flags.txt")
    if kind == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.write(b"--dataset=tiny_digits\n--teacher=caf\xe9\n")
    return path


@pytest.mark.unit
def test_a_non_utf8_flags_txt_is_a_damaged_run_for_resume_and_report(tiny_dir, tmp_path,
                                                                      capsys):
    from epkd_tf.cli import main as epkd_main
    from epkd_tf.cli import report
    from epkd_tf.records import DamagedRunError, RunDir
    from epkd_tf.study.layout import StudyDir
    from epkd_tf.study.report import write_report
    out = str(tmp_path / "run")
    path = _bad_flags_txt(out, "latin1")
    status = run_in_process(epkd_main, [f"--data_dir={tiny_dir}", "--dataset=tiny_digits",
                                        f"--output_dir={out}"])
    lines = error_lines(capsys.readouterr().err)
    assert status == 2 and len(lines) == 1 and f"{path} is not UTF-8 text" in lines[0], lines
    assert report.main(["report", out]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"{path} is not UTF-8 text" in lines[0], lines
    with pytest.raises(DamagedRunError, match=r"flags.txt is not UTF-8 text"):
        RunDir(out).read_flags()
    with pytest.raises(DamagedRunError, match=r"flags.txt is not UTF-8 text"):
        write_report(StudyDir(out))


@pytest.mark.e2e
@pytest.mark.parametrize("module, name", [("epkd_tf.main", "flags.txt"),
                                          ("epkd_tf.report", "flags.txt"),
                                          ("epkd_tf.report", "progress.json")])
def test_a_fifo_in_a_run_directory_is_refused_without_waiting(module, name, tiny_dir,
                                                              tmp_path):
    out = str(tmp_path / "run")
    if name == "flags.txt":
        path = _bad_flags_txt(out, "fifo")
    else:
        os.makedirs(out)
        with open(os.path.join(out, "flags.txt"), "w", encoding="utf-8") as f:
            f.write("--dataset=tiny_digits\n")
        path = os.path.join(out, name)
        os.mkfifo(path)
    args = [f"--data_dir={tiny_dir}", "--dataset=tiny_digits", f"--output_dir={out}"] \
        if module == "epkd_tf.main" else [out]
    result = run_subprocess(module, args, timeout=120)      # opening it blocked forever
    lines = error_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert path in lines[0] and "is not a regular file" in lines[0]
