"""``python -m epkd_tf.export``: the command line of :mod:`epkd_tf.cli.export` (kept at this
name, so the documented commands keep working)."""
from epkd_tf.cli.export import run

if __name__ == "__main__":
    run()
