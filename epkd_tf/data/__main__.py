"""``python -m epkd_tf.data``: see :mod:`epkd_tf.data.cli`."""
from epkd_tf.data.cli import run

if __name__ == "__main__":
    run()
