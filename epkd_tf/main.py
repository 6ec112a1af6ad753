"""``python -m epkd_tf.main``: the command line of :mod:`epkd_tf.cli.main` (kept at this
name, so the documented commands keep working)."""
from epkd_tf.cli.main import run

if __name__ == "__main__":
    run()
