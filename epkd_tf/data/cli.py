"""``python -m epkd_tf.data``: import arrays as a TFDS dataset.

    python -m epkd_tf.data --import_npz=PATH.npz --name=NAME --data_dir=DIR [--overwrite]

prints the directory of the written dataset, which then loads with ``--dataset=NAME
--data_dir=DIR``. Bad input prints one line ``error: ...`` naming the flag, exits with
status 2 and writes nothing.

The flags live in their own ``FlagValues`` so that this module can be imported next to the
other entry points (whose --data_dir has other help).
"""
from __future__ import annotations

import sys

from absl import flags

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.cli import fail, parse_module_flags

FLAGS = flags.FlagValues()

flags.DEFINE_string("import_npz", None, "Path of an .npz file (x_train, y_train, x_test, "
                    "y_test) to import as a TFDS dataset.", flag_values=FLAGS)
flags.DEFINE_string("name", None, "TFDS name to give the imported dataset (e.g. mnist).",
                    flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "TFDS data directory to write the dataset into.",
                    flag_values=FLAGS)
flags.DEFINE_boolean("overwrite", False, "Replace an already prepared dataset.",
                     flag_values=FLAGS)

USAGE = "--import_npz=PATH.npz --name=NAME --data_dir=DIR [--overwrite]"


def main(argv) -> int:
    """Imports --import_npz as --name into --data_dir; prints the dataset directory; one
    ``error:`` line and status 2 on bad input."""
    from epkd_tf.data.source import DataError
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])}; use {USAGE}.")
    try:
        for flag in ("import_npz", "name", "data_dir"):
            if not FLAGS[flag].value:
                raise DataError(f"--{flag} is required: use {USAGE}.")
        from epkd_tf.data.npz import import_npz
        path = import_npz(FLAGS.import_npz, FLAGS.name, FLAGS.data_dir,
                          overwrite=FLAGS.overwrite)
    except DataError as e:
        return fail(str(e))
    print(path)
    return 0


def parse_flags(argv):
    """Parses this module's flags; see :func:`epkd_tf.cli.parse_module_flags`."""
    return parse_module_flags(FLAGS, argv, __doc__.split("\n\n")[1])


def run() -> None:
    """Console entry point."""
    sys.exit(main(parse_flags(sys.argv)))
