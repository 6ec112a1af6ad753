"""The study directory: every file name lives here; every write is atomic.

Layout of ``<output_dir>``::

    flags.txt                       the study's flags (usable with --flagfile)
    study.csv                       one row per finished cell (method, fraction, seed)
    comparisons.csv                 one row per compared pair of models at a fraction
    teacher_history.csv             epoch, loss, train_accuracy, test_accuracy
    study.md                        the tables of the study (see report.py)
    plots/accuracy_vs_fraction.png  test accuracy vs fraction removed, seed spread
    plots/misclassified.png         test examples each method gets wrong
    test_images.npz                 index, x (stored uint8 images), y of those examples
    teacher/teacher.keras           the trained teacher; initial.keras: its weights
                                    before training (the lottery ticket's reset point)
    teacher/test_probabilities.npy  its softmax outputs on the test split
    cells/<method>/f<fraction>_s<seed>.keras / .npy   each cell's model and test softmax

A cell's model and outputs are written before its ``study.csv`` row, so a study killed at
any moment resumes with the cells listed in ``study.csv`` and redoes only the one that was
running.
"""
from __future__ import annotations

from epkd_tf.records import RunDir

STUDY_TABLES = {
    "study": ["method", "fraction_removed", "seed", "nonzero_params", "test_accuracy",
              "train_accuracy", "agreement_with_teacher", "total_params", "epochs",
              "seconds"],
    "comparisons": ["fraction_removed", "model_a", "model_b", "n_differ", "l2_distance",
                    "weight_l2_distance"],
    "teacher_history": ["epoch", "loss", "train_accuracy", "test_accuracy"],
}


def cell_name(method: str, fraction: float, seed: int) -> str:
    """``distill/f0.900_s1``: how a cell's model is named in files and comparisons."""
    return f"{method}/f{fraction:.3f}_s{seed}"


class StudyDir(RunDir):
    """One study's output directory (see the module docstring)."""

    table_schemas = STUDY_TABLES

    # -- models and outputs --------------------------------------------------------------
    def teacher_checkpoint(self) -> str:
        return self.path("teacher", "teacher.keras")

    def teacher_initial_checkpoint(self) -> str:
        return self.path("teacher", "initial.keras")

    def teacher_probabilities(self) -> str:
        return self.path("teacher", "test_probabilities.npy")

    def cell_checkpoint(self, method: str, fraction: float, seed: int) -> str:
        return self.path("cells", cell_name(method, fraction, seed) + ".keras")

    def cell_probabilities(self, method: str, fraction: float, seed: int) -> str:
        return self.path("cells", cell_name(method, fraction, seed) + ".npy")

    def test_images(self) -> str:
        return self.path("test_images.npz")

    def plot_path(self, name: str) -> str:
        return self.path("plots", f"{name}.png")

    # -- progress ------------------------------------------------------------------------
    def teacher_done(self) -> bool:
        return self.stages.progress().get("teacher_done", False)

    def finished_cells(self) -> set:
        """(method, fraction rounded to 6 places, seed) of every cell in study.csv."""
        table = self.tables.read("study")
        return {(m, round(float(f), 6), int(s)) for m, f, s in
                zip(table.method, table.fraction_removed, table.seed)}
