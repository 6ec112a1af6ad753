"""``python -m epkd_tf.report``: the command line of :mod:`epkd_tf.cli.report` (kept at this
name, so the documented commands keep working)."""
from epkd_tf.cli.report import run

if __name__ == "__main__":
    run()
