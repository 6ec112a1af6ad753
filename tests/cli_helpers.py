"""Runs the absl entry points in-process (fast) or as a subprocess (exit codes, stderr)."""
import os
import subprocess
import sys

from absl import flags

# A short real run on tiny_digits (tests/conftest.py): every stage, three pruners with the
# oracle, two export formats; conftest's reference_run runs it once per session.
TINY_RUN_ARGS = ["--dataset=tiny_digits", "--teacher_epochs=2", "--iterations=2",
                 "--finetune_epochs=1", "--latency_runs=2", "--oracle_examples=64",
                 "--taylor_batches=2", "--batch_size=32", "--pruners=l1_filter,taylor,oracle",
                 "--export_formats=saved_model,tflite",
                 # every stage's exports: what the kill, damage and resume tests examine
                 "--export_every_student"]


def run_in_process(module, args):
    """Parses ``args`` with the module's flags and calls its ``main``; returns the exit code."""
    flags.FLAGS.unparse_flags()
    argv = [module.__name__] + list(args)
    try:
        module.parse_flags(argv)
    except SystemExit as exit_:
        return exit_.code
    return module.main([argv[0]])


def run_subprocess(module_name, args, cwd=None, timeout=300, env=None):
    """Runs ``python -m module_name args`` (``env``: extra environment variables)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, "-m", module_name, *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def user_env(**extra):
    """The environment a user's shell has (no EPKD_VERBOSE, no TF_CPP_MIN_LOG_LEVEL), plus
    ``extra``."""
    env = dict(os.environ)
    env.pop("EPKD_VERBOSE", None)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return dict(env, **extra)


def error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("error:")]
