"""``python -m epkd_tf.data``: import arrays or image folders as TFDS datasets.

    python -m epkd_tf.data --import_npz=PATH.npz --name=NAME --data_dir=DIR [--overwrite]
    python -m epkd_tf.data --import_folder=DIR --name=NAME --data_dir=OUT [--overwrite]

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
from epkd_tf.cli.common import fail, parse_module_flags

FLAGS = flags.FlagValues()

flags.DEFINE_string("import_npz", None, "Path of an .npz file (x_train, y_train, x_test, "
                    "y_test) to import as a TFDS dataset.", flag_values=FLAGS)
flags.DEFINE_string("import_folder", None, "Directory with train/<class>/*.png|jpg and "
                    "test/<class>/*.png|jpg to import as a TFDS dataset.", flag_values=FLAGS)
flags.DEFINE_string("name", None, "TFDS name to give the imported dataset (e.g. mnist).",
                    flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "TFDS data directory to write the dataset into.",
                    flag_values=FLAGS)
flags.DEFINE_boolean("overwrite", False, "Replace an already prepared dataset.",
                     flag_values=FLAGS)

USAGE = ("--import_npz=PATH.npz (or --import_folder=DIR) --name=NAME --data_dir=DIR "
         "[--overwrite]")


def main(argv) -> int:
    """Imports --import_npz or --import_folder as --name into --data_dir; prints the
    dataset directory; one ``error:`` line and status 2 on bad input."""
    from epkd_tf.data.source import DataError
    if len(argv) > 1:
        return fail(f"unexpected arguments {' '.join(argv[1:])}; use {USAGE}.")
    try:
        sources = [f for f in ("import_npz", "import_folder") if FLAGS[f].value is not None]
        if len(sources) != 1:
            what = "both" if sources else "neither"
            raise DataError(f"give exactly one of --import_npz and --import_folder ({what} "
                            f"given): use {USAGE}.")
        for flag in ("name", "data_dir", sources[0]):
            if not FLAGS[flag].value:
                raise DataError(f"--{flag} is required: use {USAGE}.")
        if sources[0] == "import_npz":
            from epkd_tf.data.npz import import_npz as write
        else:
            from epkd_tf.data.folders import import_folder as write
        path = write(FLAGS[sources[0]].value, FLAGS.name, FLAGS.data_dir,
                     overwrite=FLAGS.overwrite)
    except DataError as e:
        return fail(e)
    print(path)
    return 0


def parse_flags(argv):
    """Parses this module's flags; see :func:`epkd_tf.cli.common.parse_module_flags`."""
    return parse_module_flags(FLAGS, argv, __doc__.split("\n\n")[1])


def run() -> None:
    """Console entry point."""
    sys.exit(main(parse_flags(sys.argv)))
