"""``python -m epkd_tf.data``: the command line of :mod:`epkd_tf.cli.data`."""
from epkd_tf.cli.data import run

if __name__ == "__main__":
    run()
