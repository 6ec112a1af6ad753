"""Ranking and the algorithm's invariants on a tiny synthetic dataset."""
import os

import numpy as np
import pandas as pd
import pytest

import tf_keras

from epkd_tf.config import DataConfig, DistillConfig, PruningConfig, RunConfig, TeacherConfig
from epkd_tf.data import load_data
from epkd_tf.loop import EPKD
from epkd_tf.selection import rank_candidates
from epkd_tf.records import RunDir
from epkd_tf.timing import Clock
from epkd_tf.settings import with_flags


@pytest.mark.unit
def test_rank_uses_weighted_score_and_breaks_ties_by_pruner_order():
    table = pd.DataFrame({"pruner": ["a", "b", "c", "d"],
                          "train_sample_accuracy": [0.9, 1.0, 0.5, 0.6],
                          "test_accuracy": [0.8, 0.7, 0.9, 0.8]})
    ranked = rank_candidates(table, (1.0, 3.0))
    expected = [(0.9 + 2.4) / 4, (1.0 + 2.1) / 4, (0.5 + 2.7) / 4, (0.6 + 2.4) / 4]
    np.testing.assert_allclose(ranked.weighted_score, expected)
    # a: .825, b: .775, c: .8, d: .75
    assert ranked["rank"].tolist() == [1, 3, 2, 4]
    tied = rank_candidates(table.assign(train_sample_accuracy=0.5, test_accuracy=0.5), (1, 3))
    assert tied["rank"].tolist() == [1, 2, 3, 4]


@pytest.mark.unit
def test_rank_weights_change_the_winner():
    table = pd.DataFrame({"pruner": ["a", "b"], "train_sample_accuracy": [1.0, 0.5],
                          "test_accuracy": [0.5, 0.6]})
    assert rank_candidates(table, (1, 0))["rank"].tolist() == [1, 2]
    assert rank_candidates(table, (0, 1))["rank"].tolist() == [2, 1]


@pytest.fixture(scope="module")
def tiny_run(tiny_dir, tmp_path_factory):
    import epkd_tf.distill.finetune as finetune_module
    teachers = []
    real = finetune_module.Distiller

    def spy(student, teacher, **kwargs):
        teachers.append(teacher)
        return real(student=student, teacher=teacher, **kwargs)

    finetune_module.Distiller = spy
    cfg = RunConfig(
        data=DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=32),
        teacher=TeacherConfig(teacher="lenet300_100", teacher_epochs=2),
        pruning=with_flags(PruningConfig(), oracle_examples=64, taylor_batches=2,
                           pruners=("l1_filter", "taylor", "oracle", "poly_magnitude")),
        keep_ratio=0.8,
        distill=DistillConfig(finetune_epochs=1, temperature_start=8, temperature_step=3),
        iterations=3, output_dir=str(tmp_path_factory.mktemp("tiny") / "run"),
        latency_runs=2)
    run = RunDir(cfg.output_dir)
    import time
    data = load_data(cfg.data)      # start-up, not part of the run's timings (README)
    started = time.perf_counter()
    epkd = EPKD(cfg, data, run)
    try:
        students = epkd()
    finally:
        finetune_module.Distiller = real
    run.teachers_seen, run.epkd = teachers, epkd
    run.seconds = time.perf_counter() - started
    return cfg, run, students


@pytest.mark.integration
def test_every_iteration_shrinks_by_keep_ratio(tiny_run):
    cfg, run, students = tiny_run
    teacher = tf_keras.models.load_model(run.teacher_checkpoint(), compile=False)
    previous = sum(int(np.count_nonzero(w)) for w in teacher.get_weights())
    for row in students.itertuples():
        target = round(0.8 * previous)
        # one fc1 unit of this 12x12 LeNet-300-100 holds 144 + 1 + 100 weights
        assert abs(row.nonzero_params - target) <= max(0.01 * target, 245)
        previous = row.nonzero_params


@pytest.mark.integration
def test_temperature_follows_the_schedule(tiny_run):
    _, run, students = tiny_run
    assert students.temperature.tolist() == [8.0, 5.0, 2.0]
    history = run.tables.read("finetune_history")
    assert history.groupby("iteration").temperature.first().tolist() == [8.0, 5.0, 2.0]


@pytest.mark.integration
def test_distillation_uses_the_original_teacher_unchanged(tiny_run):
    _, run, _ = tiny_run
    # Every iteration distils from the one original teacher, never from a student ...
    assert len(run.teachers_seen) == 3
    assert all(t is run.epkd.teacher_model for t in run.teachers_seen)
    # ... which after three distillations still has the weights it was saved with.
    saved = tf_keras.models.load_model(run.teacher_checkpoint(), compile=False)
    for a, b in zip(run.epkd.teacher_model.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.integration
def test_magnitude_students_keep_their_zeros_through_distillation(tiny_run):
    _, run, students = tiny_run
    for row in students.itertuples():
        model = tf_keras.models.load_model(run.student_checkpoint(row.iteration), compile=False)
        nonzero = sum(int(np.count_nonzero(w)) for w in model.get_weights())
        assert nonzero == row.nonzero_params


@pytest.mark.integration
def test_students_keep_exactly_the_size_their_candidate_was_ranked_at(tiny_run):
    """Distillation keeps every zero (biases of dead units included), so a student has
    exactly its winning candidate's nonzero count; magnitude candidates hit the target
    exactly."""
    cfg, run, students = tiny_run
    candidates = run.tables.read("candidates")
    teacher = tf_keras.models.load_model(run.teacher_checkpoint(), compile=False)
    previous = sum(int(np.count_nonzero(w)) for w in teacher.get_weights())
    for row in students.itertuples():
        group = candidates[candidates.iteration == row.iteration]
        winner = group[group["rank"] == 1].iloc[0]
        assert winner.pruner == row.pruner and not row.kept_previous
        assert row.nonzero_params == winner.nonzero_params
        target = int(round(cfg.keep_ratio * previous))
        magnitude = group[group.pruner == "poly_magnitude"].iloc[0]
        assert magnitude.nonzero_params == target
        previous = row.nonzero_params


@pytest.mark.integration
def test_epochs_count_every_epoch_the_iteration_trained(tiny_run):
    cfg, run, students = tiny_run
    # poly_magnitude's fine-tune (1 epoch) + the distillation (1 epoch)
    assert students.epochs.tolist() == [2, 2, 2]


@pytest.mark.integration
def test_candidates_are_never_changed_after_they_are_evaluated(tiny_run, tiny_dir):
    """The winner is distilled as a copy: the candidate objects still compute the
    accuracies and sizes of their candidates.csv rows after the run."""
    from epkd_tf import training
    from epkd_tf.graph import dense_params, nonzero_params
    cfg, run, _ = tiny_run
    last = run.epkd.last_result
    rows = (run.tables.read("candidates").query(f"iteration == {last.iteration}")
            .set_index("pruner"))
    data = load_data(cfg.data)
    # The run keeps only the winner's model once the candidates are ranked (no
    # --export_candidates): the losers' memory is freed before distillation.
    assert [c.model is not None for c in last.candidates] == \
        [c is last.winner for c in last.candidates]
    for c in [last.winner]:
        row = rows.loc[c.pruner]
        assert nonzero_params(c.model) == row.nonzero_params
        assert dense_params(c.model) == row.total_params
        assert training.accuracy(c.model, data.test()) == pytest.approx(row.test_accuracy,
                                                                         abs=1e-4)
    assert last.winner.model is not last.student


@pytest.mark.integration
def test_once_ranked_only_the_winner_s_model_is_still_referenced(tiny_run):
    """step(keep_candidates=False), as the run calls it: after the ranking every losing
    candidate's model object is gone (weak references), the winner's is kept."""
    import gc
    import weakref
    cfg, run, _ = tiny_run
    epkd = run.epkd
    made = []
    real = epkd.make_candidates

    def spy(*args, **kwargs):
        candidates = real(*args, **kwargs)
        made.extend((c.pruner, weakref.ref(c.model)) for c in candidates)
        return candidates

    epkd.make_candidates = spy
    try:
        student = epkd.load_student(1)
        result = epkd.step(student, 2, 0.8 * epkd.cost_of(student), keep_candidates=False)
    finally:
        del epkd.make_candidates
    gc.collect()
    alive = sorted(pruner for pruner, ref in made if ref() is not None)
    assert len(made) == len(cfg.pruning.pruners) and alive == [result.winner.pruner]
    assert made and result.winner.model is not None


@pytest.mark.integration
def test_timings_cover_every_phase(tiny_run):
    _, run, _ = tiny_run
    timings = run.tables.read("timings")
    phases = set(timings.phase)
    assert {"teacher_training", "teacher_logits", "scoring", "surgery", "magnitude_finetune",
            "candidate_evaluation", "distillation", "student_evaluation", "export",
            "deployment_evaluation", "logging", "other"} <= phases
    # Every phase's peak memory (resident set; no GPU here), none for "other".
    measured = timings[timings.phase != "other"]
    assert (measured.peak_rss_mb > 0).all() and measured.peak_device_mb.isna().all()
    assert timings[timings.phase == "other"].peak_rss_mb.isna().all()
    # The rows add up to the whole run: "other" holds what no phase covered.
    assert timings.seconds.sum() == pytest.approx(run.seconds, abs=0.25)
    assert sorted(timings[timings.phase == "other"].iteration) == [0, 0, 1, 2, 3]
    scoring = timings[timings.phase == "scoring"]
    assert set(scoring.pruner) == {"l1_filter", "taylor", "oracle"}
    # poly_magnitude's wrapping and stripping are its surgery
    assert set(timings[timings.phase == "surgery"].pruner) == {"l1_filter", "taylor", "oracle",
                                                               "poly_magnitude"}
    # Every stage saves its checkpoint; only the final student is exported and measured
    # (no --export_every_student), in the run's last stage.
    exported = timings[timings.phase == "export"]
    assert sorted(zip(exported.iteration, exported.pruner)) == [
        (0, "final"), (0, "teacher"), (1, "student"), (2, "student"), (3, "student")]
    measured = timings[timings.phase == "deployment_evaluation"]
    assert set(zip(measured.iteration, measured.pruner)) == {(0, "final")}
    assert sorted(scoring.iteration.unique()) == [1, 2, 3]
    assert (timings.seconds >= 0).all()


@pytest.mark.integration
def test_only_the_final_student_is_exported_by_default(tiny_run):
    """Without --export_every_student every student keeps its checkpoint, and the final
    one alone is exported in every --export_formats format (deployment.csv holds its rows
    only); the teacher's TFLite files are still timed side by side with it."""
    from epkd_tf.records.report import headline
    cfg, run, _ = tiny_run
    deployment = run.tables.read("deployment")
    final = run.tables.read("final").iloc[0]
    assert set(deployment.model) == {"final"}
    assert (deployment.iteration == final.iteration).all()
    expected = ["saved_model", "tflite", "tflite_sparse", "tflite_int8_dynamic",
                "tflite_int8", "keras3"]
    assert set(deployment.format) <= set(expected) and \
        set(expected) - set(deployment.format) <= {"tflite_sparse"}
    assert all(os.path.exists(run.path(p)) for p in deployment.path)
    students = run.tables.read("students").set_index("iteration")
    saved = deployment.set_index("format").loc["saved_model"]
    assert saved.test_accuracy == pytest.approx(students.test_accuracy[final.iteration])
    for k in (1, 2, 3):
        assert os.path.exists(run.student_checkpoint(k))
    assert os.path.exists(run.teacher_checkpoint())
    for name in ("teacher", "student_1", "student_2", "student_3"):
        assert not any(os.path.exists(run.export_path(name, fmt)) for fmt in expected), name
    assert not os.path.exists(run.path("serving", "student"))
    assert not os.path.exists(run.path("serving", "teacher"))
    for column in ("teacher_float_latency_ms", "float_latency_ms",
                   "teacher_int8_latency_ms", "int8_latency_ms"):
        assert final[column] > 0, column
    text = "\n".join(headline(run))
    assert "float32 TFLite size" in text and "int8 TFLite latency" in text
    assert "timed side by side" in text


@pytest.mark.integration
def test_export_every_student_exports_each_stage(tiny_dir, tmp_path):
    """--export_every_student: the teacher and each student are exported as they are made
    (today's files and deployment.csv rows), the final student as copies of its own."""
    cfg = RunConfig(
        data=DataConfig(dataset="tiny_digits", data_dir=tiny_dir, batch_size=32),
        teacher=TeacherConfig(teacher="lenet300_100", teacher_epochs=1),
        pruning=PruningConfig(pruners=("l1_filter",)), iterations=1, latency_runs=2,
        distill=DistillConfig(finetune_epochs=1), export_formats=("saved_model", "tflite"),
        export_every_student=True, output_dir=str(tmp_path / "run"))
    run = RunDir(cfg.output_dir)
    EPKD(cfg, load_data(cfg.data), run)()
    deployment = run.tables.read("deployment")
    assert deployment.model.tolist() == ["teacher"] * 2 + ["student_1"] * 2 + ["final"] * 2
    assert os.path.isdir(run.serving_dir("student", 1))
    assert os.path.isdir(run.serving_dir("teacher", 1))
    assert open(run.tflite_path("final", "tflite"), "rb").read() == \
        open(run.tflite_path("student_1", "tflite"), "rb").read()
    measured = run.tables.read("timings")
    measured = measured[measured.phase == "deployment_evaluation"]
    assert set(zip(measured.iteration, measured.pruner)) == {(0, "teacher"), (1, "student")}


@pytest.mark.unit
def test_clock_phases_are_exclusive(monkeypatch):
    """A phase inside another gets its own row and is left out of the outer one's."""
    import epkd_tf.loop as loop_module
    now = [0.0]
    monkeypatch.setattr(loop_module.time, "perf_counter", lambda: now[0])
    clock = Clock()
    with clock.phase("export", 2, "student"):
        now[0] += 1.0
        with clock.phase("deployment_evaluation", 2, "student"):
            now[0] += 4.0
            with clock.phase("inner", 2):
                now[0] += 0.5
        now[0] += 2.0
    with pytest.raises(RuntimeError):
        with clock.phase("logging", 2):
            now[0] += 3.0
            raise RuntimeError("a failing phase is still counted")
    now[0] += 0.25                     # between phases: counted as "other" at the flush
    rows = clock.flush(2)[["phase", "iteration", "pruner", "seconds"]]
    assert rows.values.tolist() == [["inner", 2, "", 0.5],
                                    ["deployment_evaluation", 2, "student", 4.0],
                                    ["export", 2, "student", 3.0],
                                    ["logging", 2, "", 3.0],
                                    ["other", 2, "", 0.25]]
    assert rows.seconds.sum() == now[0] == 10.75
    now[0] += 1.0
    assert clock.flush(3).iloc[:, :4].values.tolist() == [["other", 3, "", 1.0]]


@pytest.mark.integration
def test_distillation_reads_cached_teacher_logits(tiny_run):
    _, run, _ = tiny_run
    logits = run.epkd.samples.teacher_logits()          # computed once, during iteration 1
    assert logits.shape == (256, 4)
    assert len(run.tables.read("timings").query("phase == 'teacher_logits'")) == 1


@pytest.mark.unit
def test_loss_guard_reads_the_loss_rarely_but_never_misses_a_nan():
    import math
    from epkd_tf.training import LossGuard

    class Loss:
        """A loss whose reading is counted (reading a tensor loss syncs the host)."""
        reads = 0

        def __init__(self, value):
            self.value = value

        def __float__(self):
            Loss.reads += 1
            return self.value

    class Model:
        stop_training = False

    guard = LossGuard("test")
    guard.set_model(Model())
    guard.on_epoch_begin(0)
    for batch in range(120):
        guard.on_train_batch_end(batch, {"loss": Loss(1.0 if batch < 70 else math.nan)})
    assert Loss.reads == 3                       # batches 1, 51 and 101
    assert guard.problem == "loss nan at epoch 1, batch 101" and guard.model.stop_training
    late = LossGuard("test")
    late.set_model(Model())
    late.on_epoch_begin(1)
    late.on_train_batch_end(7, {"loss": Loss(math.inf)})
    assert late.problem is None
    late.on_epoch_end(1, {"loss": Loss(math.inf)})
    assert late.problem == "loss inf at epoch 2, end of the epoch"


# -- --selection_examples: candidates on bounded subsets, students on whole splits ------
def _examples(ds) -> int:
    return sum(int(x.shape[0]) for x, _ in ds)


@pytest.mark.integration
def test_candidates_use_selection_examples_and_students_the_whole_splits(tiny_run):
    from epkd_tf import training
    from epkd_tf.evaluation import Evaluator
    from epkd_tf.pruning import Candidate
    cfg, run, _ = tiny_run
    epkd, data = run.epkd, run.epkd.data
    bounded = Evaluator(cfg.replace(selection_examples=50), data, Clock(), epkd.measure,
                        epkd.measure_context, epkd.rules, epkd.samples.ranking_examples)
    assert _examples(bounded.subset("test")) == 50 and not bounded.subset_is_whole
    # The default (10,000) covers this split: the run is as before.
    assert epkd.evaluator.subset_is_whole
    assert _examples(epkd.evaluator.subset("test")) == data.spec.num_test == 128
    model = epkd.load_student(1)
    pruner = cfg.pruning.make_pruners()[0]
    clock = bounded.clock
    table = bounded.candidates_table([Candidate(pruner.name, model)], [pruner], 1)
    on_subset = training.accuracy(model, data.evaluation_subset("test", 50, cfg.data.seed))
    assert table.test_accuracy.iloc[0] == pytest.approx(on_subset, abs=1e-6)
    assert bounded.selection_accuracy(model, 1) == pytest.approx(on_subset, abs=1e-6)
    test_acc, _ = bounded.test_and_validation_accuracy(model, 1)
    assert test_acc == pytest.approx(training.accuracy(model, data.test()), abs=1e-6)
    assert "candidate_evaluation" in set(clock.flush(1).phase)
