"""Runs the absl entry points in-process (fast) or as a subprocess (exit codes, stderr)."""
import os
import subprocess
import sys

from absl import flags


def run_in_process(module, args):
    """Parses ``args`` with the module's flags and calls its ``main``; returns the exit code."""
    flags.FLAGS.unparse_flags()
    argv = [module.__name__] + list(args)
    try:
        module.parse_flags(argv)
    except SystemExit as exit_:
        return exit_.code
    return module.main([argv[0]])


def run_subprocess(module_name, args, cwd=None, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module_name, *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("error:")]
