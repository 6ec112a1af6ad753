"""``python -m epkd_tf.study``: the command line of :mod:`epkd_tf.cli.study`."""
from epkd_tf.cli.study import run

if __name__ == "__main__":
    run()
