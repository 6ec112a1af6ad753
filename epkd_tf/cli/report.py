"""``python -m epkd_tf.report RUN_DIR``: ``report.md`` and ``plots/*.png`` of a run.

    python -m epkd_tf.report saved_models/mnist_lenet300_100_20250101-120000

Everything comes from the run's CSV files (only the stages ``progress.json`` records as
completed), so a report can be written for a finished or an interrupted run; every run
writes its own at the end. ``report.md`` holds the students, the candidates' ranking per
iteration, the Spearman correlations of the criteria with the oracle and the deployment
table, and links the plots:

* ``plots/accuracy_vs_params.png`` — test accuracy vs nonzero parameters of every
  candidate (marker per pruner) and of each iteration's student (the line);
* ``plots/temperature.png`` — the distillation temperature per iteration;
* ``plots/criteria_correlation.png`` — global Spearman correlation of each criterion with
  the oracle per iteration (only when the oracle ran with another structured criterion);
* ``plots/size_latency.png`` — file size and TFLite latency per model and format
  (``deployment.csv``; ``students.csv`` when the run exported nothing).

A RUN_DIR that is not an epkd_tf run, or whose tables are not what its stages recorded in
``progress.json`` (a lost or cut row, a lost header), prints one line ``error: ...`` naming
the file and exits with status 2; other damaged files (a truncated export) are listed in
``report.md`` ("Damaged files") and warned about.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import flags

from epkd_tf.cli.common import fail, parse_module_flags, setup_logging
from epkd_tf.errors import RunDirError, UsageError
from epkd_tf.records import RunDir
from epkd_tf.records.report import write_report

FLAGS = flags.FlagValues()   # no flags: the run directory is the one argument


def check_run_dir(path: str) -> RunDir:
    """``path`` is an epkd_tf run directory whose tables are what its stages wrote;
    raises UsageError naming it (and a damaged file) otherwise."""
    if not os.path.exists(path):
        raise UsageError(f"RUN_DIR={path} does not exist; give the --output_dir of a run.")
    if not os.path.isdir(path):
        raise UsageError(f"RUN_DIR={path} is not a directory; give the --output_dir of a run.")
    run = RunDir(path)
    if not os.path.lexists(run.flags_file):
        # progress.json is written when the first stage completes: a run killed while
        # training its teacher has flags.txt alone, and is reported as such.
        raise UsageError(f"RUN_DIR={path} is not an epkd_tf run (it has no flags.txt); "
                         f"give the --output_dir of a run.")
    try:
        run.read_flags()
        tables = [d for d in run.stages.damages() if d["table"]]
        for name in run.tables.schemas:
            run.tables.read_completed(name)
    except RunDirError as err:
        raise UsageError(f"RUN_DIR={path}: {err}") from err
    if tables:
        raise UsageError(f"RUN_DIR={path}: {tables[0]['path']} is damaged "
                         f"({tables[0]['problem']}; not what the {tables[0]['name']} stage "
                         f"wrote); a report from it would be wrong.")
    return run


def main(argv) -> int:
    if len(argv) != 2:
        return fail("give one run directory: python -m epkd_tf.report RUN_DIR")
    try:
        run = check_run_dir(argv[1])
    except UsageError as err:
        return fail(err)
    setup_logging()
    path = write_report(run, check_files=True)
    for damage in run.stages.damages():
        logging.getLogger("epkd_tf").warning("warning: %s is damaged (%s)", damage["path"],
                                             damage["problem"])
    logging.getLogger("epkd_tf").info("Report: %s", path)
    return 0


def parse_flags(argv):
    """Parses this module's flags; see :func:`epkd_tf.cli.common.parse_module_flags`."""
    return parse_module_flags(FLAGS, argv, __doc__)


def run() -> None:
    """Console entry point."""
    sys.exit(main(parse_flags(sys.argv)))


if __name__ == "__main__":
    run()
