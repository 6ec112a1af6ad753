"""The Python API: compress a model you have on data you have, or prune it once.

    import epkd_tf
    result = epkd_tf.compress(teacher, (x_train, y_train), (x_test, y_test),
                              iterations=3, budget="latency", max_accuracy_drop=0.5)
    result.final                    # the final student, a tf_keras model
    result.export("student_dir")    # SavedModel + TFLite files, measured

    smaller = epkd_tf.prune(model, 0.5, criterion="taylor", data=(x, y))

Settings are the run's settings (``epkd_tf.config``), named as on the command line
(``keep_ratio=0.8``, ``taylor_batches=4``, ``validation_split="0.1"``); every value is
validated before any work, and a bad one raises ``ConfigError`` naming it. ``compress`` runs
the same EPKD as ``python -m epkd_tf.main`` (``epkd_tf.loop.EPKD``): the command line is a
thin layer over the same run.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import epkd_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from epkd_tf.config import BudgetConfig, DataConfig, DistillConfig, PruningConfig, RunConfig
from epkd_tf.errors import (RESUME_API, ApiError, RunFailure,  # noqa: F401
                            failure_message, is_environment_failure)
from epkd_tf.settings import default_of

__all__ = ["compress", "prune", "analyze", "load_model", "CompressionResult", "as_data",
           "as_teacher"]


@dataclasses.dataclass
class CompressionResult:
    """What :func:`compress` made: the models and the run's tables (pandas DataFrames).

    :func:`compress` makes it; users read its fields and call :meth:`export`.

    The models are of the teacher's Keras: tf_keras models for a tf_keras teacher, Keras 3
    (``keras``) models for a Keras 3 teacher (a model in memory or a Keras 3 ``.keras``
    file), so ``result.final.save("student.keras")`` loads with the user's own Keras;
    :meth:`to_keras3` gives a Keras 3 copy of any of them.

    Args:
      teacher: the teacher the run distilled from.
      students: the student of every iteration, in order.
      final: the final student: the last one, or with ``max_accuracy_drop`` the last one
        within it (the teacher itself when no student is).
      final_iteration: the iteration that made ``final`` (0: the teacher).
      tables: every CSV a run writes, by name (``students``, ``candidates``, ``teacher``,
        ``finetune_history``, ``criteria_correlation``, ``timings``, ``deployment``, ...;
        see docs/outputs.md).
      headline: the run's summary lines (teacher -> final student).
      output_dir: the run directory, or None when the run was kept in memory only.
      data: the loaded data the run used (for :meth:`export`'s measurements).
      keras: ``"tf_keras"`` or ``"keras3"``: which Keras the models above are.
      tf_keras_models: with ``keras="keras3"``, the run's own tf_keras models
        (``teacher``, ``students``, ``final``), which :meth:`export` writes.

    Raises:
      ApiError, ConfigError: from :meth:`export`, for a bad name or format.

    Example::

        import numpy as np
        import tf_keras
        import epkd_tf

        rng = np.random.default_rng(0)                # class 1: a brighter top half
        y = rng.integers(0, 2, 256)
        x = rng.normal(0.0, 0.3, (256, 8, 8, 1)).astype("float32")
        x[y == 1, :4] += 1.0
        inputs = tf_keras.Input((8, 8, 1))
        conv = tf_keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        logits = tf_keras.layers.Dense(2)(tf_keras.layers.Flatten()(conv))     # no softmax
        teacher = tf_keras.Model(inputs, logits)
        teacher.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(x, y, epochs=2, verbose=0)
        result = epkd_tf.compress(teacher, (x[:192], y[:192]), (x[192:], y[192:]),
                                  iterations=1, keep_ratio=0.5, pruners=("l1_filter",),
                                  finetune_epochs=1, batch_size=32)
        print(result.tables["students"][["iteration", "nonzero_params", "test_accuracy"]])
        rows = result.export("exported", formats=("tflite",))   # exported/tflite/final.tflite
        print(rows[["format", "bytes", "test_accuracy"]])
    """

    teacher: object
    students: List[object]
    final: object
    final_iteration: int
    tables: Dict[str, object]
    headline: str
    output_dir: Optional[str]
    data: object = dataclasses.field(repr=False, default=None)
    keras: str = "tf_keras"
    tf_keras_models: Optional[dict] = dataclasses.field(repr=False, default=None)

    def to_keras3(self, model=None):
        """A Keras 3 (``keras``) copy of the final student (or of ``model``, a tf_keras or
        Keras 3 model), weights copied: ``keras.models.load_model`` of a plain
        TensorFlow reads what its ``save`` writes.

        Args:
          model: the model to convert instead of the final student.

        Returns:
          A Keras 3 functional model computing the same outputs.

        Raises:
          ApiError: a layer has no Keras 3 equivalent (the message names it).
        """
        from epkd_tf.errors import Keras3ConversionError
        from epkd_tf.models.keras3 import to_keras3
        source = self._tf_keras("final") if model is None else model
        if _is_keras3_model(source):
            return source
        try:
            return to_keras3(source)
        except Keras3ConversionError as err:
            raise ApiError(str(err)) from None

    def _tf_keras(self, name: str):
        """The run's tf_keras ``teacher``/``final`` (what export and conversion read)."""
        if self.tf_keras_models is not None:
            return self.tf_keras_models[name]
        return getattr(self, name)

    def export(self, directory: str, formats: Sequence[str] = ("saved_model", "tflite"),
               name: str = "final", model=None):
        """Writes the final student (or ``model``) in ``formats`` into ``directory``
        (``serving/<name>/1``, ``tflite/<name>*.tflite``, ...) and returns its
        deployment.csv rows: size, gzip size, test accuracy and latency of each file.

        Args:
          directory: where to write (created if missing; a ``deployment.csv`` there gets
            the rows appended).
          formats: deployment formats, of ``epkd_tf.config.EXPORT_FORMATS``.
          name: the files' name (letters, digits, ``_ . -``).
          model: the model to export instead of the final student (tf_keras or Keras 3).

        Returns:
          A pandas DataFrame, one row per format.

        Raises:
          ConfigError: an unknown or repeated format.
          ApiError: an invalid ``name``.
          RunDirError: ``directory`` cannot be written.
        """
        from epkd_tf.deploy import exports as deploy
        from epkd_tf.config import check_export_formats
        from epkd_tf.records import RunDir, safe_name
        check_export_formats(tuple(formats), "formats")
        if safe_name(name) != name:
            raise ApiError(f"name={name!r} is invalid: use letters, digits, _ . -")
        run = RunDir(directory)
        source = self._tf_keras("final") if model is None else as_teacher(model, "model")
        rows, _ = deploy.export_model(run, source, name,
                                      tuple(formats), serving_name=name, version=1,
                                      data=self.data)
        run.tables.append("deployment", rows)
        return rows


def as_teacher(teacher, argument: str = "teacher"):
    """A tf_keras model from ``teacher``: a tf_keras model as it is; a Keras 3 model or a
    model file (.keras of either Keras, .h5, SavedModel directory) converted/loaded
    safely (``epkd_tf.models.user``). Raises ApiError naming ``argument``."""
    import tf_keras
    if isinstance(teacher, tf_keras.Model):
        _check_built(teacher, argument)
        return teacher
    from epkd_tf.errors import ModelFileError
    from epkd_tf.models.user import load_user_model
    if isinstance(teacher, (str, os.PathLike)):
        try:
            return load_user_model(os.fspath(teacher), argument)
        except ModelFileError as err:
            raise ApiError(_api_message(err, argument)) from None
    if _is_keras3_model(teacher):                       # a Keras 3 model in memory
        _check_built(teacher, argument)
        with tempfile.TemporaryDirectory(prefix="epkd_keras3_") as tmp:
            path = os.path.join(tmp, "model.keras")
            teacher.save(path)
            try:
                return load_user_model(path, argument)
            except ModelFileError as err:
                raise ApiError(_api_message(err, argument).replace(
                    path, "<your Keras 3 model>")) from None
    raise ApiError(f"{argument} is a {type(teacher).__name__}: give a tf_keras model, a Keras 3 "
                   "model or the path of a saved model.")


def _is_keras3_model(value) -> bool:
    """A Keras 3 (``keras``) model object; tf_keras' modules start with ``tf_keras``."""
    module = type(value).__module__
    return (module == "keras" or module.startswith("keras.")) and hasattr(value, "save")


def _is_keras3_source(teacher) -> bool:
    """Whether the user's teacher is Keras 3: a model in memory or a Keras 3 ``.keras``
    file (the result then holds Keras 3 models)."""
    if isinstance(teacher, (str, os.PathLike)):
        from epkd_tf.models.keras3 import is_keras3_file
        try:
            return is_keras3_file(os.fspath(teacher))
        except Exception:      # unreadable: as_teacher has already refused it
            return False
    return _is_keras3_model(teacher)


def _check_built(model, argument: str) -> None:
    """A model without weights yet (a Sequential without an Input) has no shapes to prune
    or measure; ApiError naming ``argument``."""
    if not getattr(model, "built", True) or not getattr(model, "weights", None) \
            and not getattr(model, "inputs", None):
        raise ApiError(f"{argument} is not built (it has no input shape or weights yet): "
                       "give it an Input layer, or call model.build(input_shape) first.")


def _api_message(err: BaseException, argument: str) -> str:
    """A model loader's message for the API: the file is named as the argument
    (``path=...``), not as a command-line flag (``--path=...``)."""
    return str(err).replace(f"--{argument}=", f"{argument}=", 1)


def as_data(train, test, data_config, argument: str = "train"):
    """A loaded dataset from ``train``/``test``: ``(x, y)`` arrays or tf.data.Datasets of
    ``(image, label)`` examples or batches (``epkd_tf.data.from_arrays`` /
    ``from_datasets``), or an already loaded ``epkd_tf.data.Data`` (``test`` then None)."""
    from epkd_tf.data import DataSource, from_arrays, from_datasets
    if isinstance(train, DataSource):
        return train
    kwargs = dict(batch_size=data_config.batch_size, seed=data_config.seed,
                  validation_split=_fraction(data_config.validation_split),
                  label_noise=data_config.label_noise,
                  shuffle_buffer=data_config.shuffle_buffer)
    if test is None:
        raise ApiError("test is missing: give the test data, (x_test, y_test) or a "
                       "tf.data.Dataset, on which students are measured.")
    if isinstance(train, (tuple, list)) and isinstance(test, (tuple, list)):
        for arg, value in (("train", train), ("test", test)):
            if len(value) != 2:
                raise ApiError(f"{arg} has {len(value)} parts: give (x, y).")
        return from_arrays(train[0], train[1], test[0], test[1], **kwargs)
    return from_datasets(train, test, **kwargs)


def _fraction(split):
    from epkd_tf.config import validation_fraction
    if split is None:
        return None
    fraction = validation_fraction(split)
    if fraction is None:
        raise ApiError(f"validation_split={split!r} is invalid for in-memory data: give a "
                       "fraction such as 0.1 of the training examples.")
    return fraction


def compress(teacher, train, test=None, *, output_dir: Optional[str] = None, config=None,
             overwrite: bool = False, progress: bool = True, verbose: int = 0,
             **settings) -> CompressionResult:
    """Runs EPKD on ``teacher`` (a trained model that outputs logits) and returns the
    students, the final one and every table: the same run as ``python -m epkd_tf.main``.

    Every setting is validated before any work starts.

    Args:
      teacher: a trained tf_keras model that outputs logits, a Keras 3 model, or the path
        of a saved model (.keras of either Keras, .h5, Keras SavedModel directory),
        loaded safely (:func:`load_model`).
      train: ``(x, y)`` NumPy arrays (images N x H x W (x C) as the model takes them,
        integer labels) or a ``tf.data.Dataset`` of ``(image, label)`` examples or
        batches; or a loaded ``epkd_tf.data.Data`` (:func:`load_data`,
        :func:`from_arrays`), then ``test`` is left out.
      test: the test data, as ``train``; students are measured on it.
      output_dir: the run directory to keep; None runs in a temporary directory and
        keeps everything in memory. As on the command line: a new or empty directory is
        run in; an unfinished run with the same settings is resumed (its completed
        stages checked first); a finished one with the same settings is not run again:
        its results are returned; a run with other settings, another teacher or other
        arrays is refused (``overwrite``). The settings are recorded in its flags.txt
        (the command line's format, with fingerprints of the teacher's weights and of
        ``(x, y)`` arrays as ``#`` notes). One process or call at a time: the
        directory's lock is held for the whole call.
      config: a :class:`RunConfig` the ``settings`` apply over; default: the command
        line's defaults, except that nothing is exported unless ``export_formats`` is
        given.
      overwrite: empty ``output_dir`` and run again when it holds a run (finished, or
        with other settings), like ``--overwrite``.
      progress: log epkd_tf's progress lines (teacher, iterations, candidates,
        distillation epochs, ETA) on stderr, as the command line does; False: only its
        warnings. The native libraries' log lines are filtered out either way (unless
        ``verbose``); the console is restored when the call returns.
      verbose: Keras' verbosity of training (0: silent); 1 also keeps the libraries'
        (TensorFlow's) own log lines.
      **settings: any run setting by its flag name (``iterations=3``,
        ``keep_ratio=0.8``, ``pruners=("taylor",)``, ``budget="latency"``,
        ``max_accuracy_drop=0.5``, ``validation_split="0.1"``, ``taylor_batches=2``...).

    Returns:
      A :class:`CompressionResult`: the teacher, every student, the final one and the
      run's tables; Keras 3 models when ``teacher`` is a Keras 3 model or file.

    Raises:
      ConfigError: a setting is unknown or invalid (the message names its flag), or
        ``output_dir`` holds a run with other settings, teacher or arrays (the message
        names them; ``overwrite=True`` runs again).
      ApiError: ``config`` is not a RunConfig, ``test`` is missing, the teacher cannot be
        loaded, does not fit the data (shape, classes, a softmax output) or cannot be
        traced by the structured pruners asked for.
      DataError: the arrays or datasets are unusable (the message names the argument).
      RunDirError: ``output_dir`` cannot be used (a file, a non-empty directory that holds
        no run, one that cannot be written); DamagedRunError: a file of the run is not
        what the run wrote and later stages build on it.
      DirectoryBusyError: another process (or call) holds ``output_dir``'s lock; the
        message names its PID.
      NoCandidateError: no pruner can reach an iteration's target (all at their floors).
      NonFiniteLossError: a distillation loss became NaN or Inf with
        ``fail_on_nan=True``.
      RunFailure: the machine failed the run on the way (a full or read-only disk,
        memory, a TensorFlow runtime error): one line, as the command line prints it;
        the finished stages are kept and the same call resumes. The original error is
        its ``__cause__``.

    Example::

        import numpy as np
        import tf_keras
        import epkd_tf

        rng = np.random.default_rng(0)                # class 1: a brighter top half
        y = rng.integers(0, 2, 256)
        x = rng.normal(0.0, 0.3, (256, 8, 8, 1)).astype("float32")
        x[y == 1, :4] += 1.0
        inputs = tf_keras.Input((8, 8, 1))
        conv = tf_keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        logits = tf_keras.layers.Dense(2)(tf_keras.layers.Flatten()(conv))     # no softmax
        teacher = tf_keras.Model(inputs, logits)
        teacher.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        teacher.fit(x, y, epochs=2, verbose=0)
        result = epkd_tf.compress(teacher, (x[:192], y[:192]), (x[192:], y[192:]),
                                  iterations=1, keep_ratio=0.5, pruners=("l1_filter",),
                                  finetune_epochs=1, batch_size=32)
        print(result.headline)                        # Teacher → final student ...
        student = result.final                        # a smaller tf_keras model
    """
    from epkd_tf.console import api_console
    from epkd_tf.seeds import xla_determinism
    from epkd_tf.settings import with_flags
    base = config if config is not None else RunConfig(export_formats=())
    if not isinstance(base, RunConfig):
        raise ApiError(f"config is a {type(base).__name__}: give an epkd_tf.config.RunConfig.")
    for name, value in (("overwrite", overwrite), ("progress", progress)):
        if not isinstance(value, bool):
            raise ApiError(f"{name}={value!r} is invalid: give True or False.")
    temporary = output_dir is None
    if not temporary:
        from epkd_tf.records import check_output_dir
        if not isinstance(output_dir, (str, os.PathLike)):
            raise ApiError(f"output_dir is a {type(output_dir).__name__}: give a directory "
                           f"path or None.")
        check_output_dir(os.fspath(output_dir))
    root = tempfile.mkdtemp(prefix="epkd_run_") if temporary else os.fspath(output_dir)
    try:
        with api_console(progress, verbose):
            cfg = with_flags(base, output_dir=root, **settings)
            if cfg.data.test_split is None:     # recorded as resolved, as the CLI does
                cfg = cfg.replace(data=cfg.data.replace(test_split=cfg.data.evaluation_split))
            model = as_teacher(teacher)
            data = as_data(train, test, cfg.data)
            _check_teacher(model, data, cfg.pruning)
            notes = _fingerprints(model, train, test)
            with xla_determinism(cfg.jit_compile):
                try:
                    result = _run(cfg, data, model, root, verbose, keep=not temporary,
                                  overwrite=overwrite, notes=notes)
                except Exception as err:
                    # A full disk, a vanished directory, memory: one line under the
                    # package's error base, as the command line prints it.
                    if not is_environment_failure(err):
                        raise
                    resume = ("call again with an output_dir to keep what finishes"
                              if temporary else RESUME_API)
                    where = "a temporary directory" if temporary else f"output_dir={root}"
                    raise RunFailure(failure_message(err, where, resume)) from err
            # Keras 3 in, Keras 3 out: the user gets models of the Keras they work with.
            return _in_keras3(result) if _is_keras3_source(teacher) else result
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def _in_keras3(result: CompressionResult) -> CompressionResult:
    """``result`` with Keras 3 copies of its models (the tf_keras ones kept in
    ``tf_keras_models`` for exports). The teacher converted in, and students keep its layer
    classes, so they convert back; should one not, the tf_keras models are returned with a
    warning rather than losing the finished run."""
    import logging
    from epkd_tf.errors import Keras3ConversionError
    from epkd_tf.models.keras3 import to_keras3
    originals = {"teacher": result.teacher, "students": list(result.students),
                 "final": result.final}
    try:
        converted = {id(m): to_keras3(m) for m in [result.teacher, *result.students]}
        if id(result.final) not in converted:
            converted[id(result.final)] = to_keras3(result.final)
    except Keras3ConversionError as err:
        logging.getLogger("epkd_tf").warning(
            "warning: the results stay tf_keras models: %s", err)
        return result
    return dataclasses.replace(
        result, teacher=converted[id(result.teacher)],
        students=[converted[id(m)] for m in result.students],
        final=converted[id(result.final)], keras="keras3", tf_keras_models=originals)


def _fingerprints(model, train, test) -> Dict[str, str]:
    """The notes flags.txt keeps of what an API run was given in memory: SHA-256 of the
    teacher's weights (shapes and values; not its layer names, which Keras numbers per
    session) and of ``(x, y)`` arrays (dtypes, shapes and values). tf.data pipelines and
    loaded ``Data`` are not fingerprinted (reading them would cost a pass)."""
    import hashlib
    import numpy as np

    def digest(arrays) -> str:
        sha = hashlib.sha256()
        for array in arrays:
            array = np.ascontiguousarray(np.asarray(array))
            sha.update(f"{array.dtype.str}{array.shape};".encode())
            sha.update(array.data if array.size else b"")
        return sha.hexdigest()

    notes = {"written by": "epkd_tf.compress (teacher and data given in memory, not by "
                           "--dataset or --teacher)",
             TEACHER_NOTE: digest(model.get_weights())}
    if isinstance(train, (tuple, list)) and isinstance(test, (tuple, list)):
        notes[DATA_NOTE] = digest(list(train) + list(test))
    return notes


# The notes of flags.txt that fingerprint an API run's teacher and data (_fingerprints).
TEACHER_NOTE, DATA_NOTE = "teacher weights sha256", "train and test arrays sha256"


def _check_teacher(model, data, pruning) -> None:
    """The teacher maps the data's images to logits of its classes, and structured pruners
    can trace it, and TFLite can convert it; ApiError naming the problem otherwise."""
    from epkd_tf.graph import UnsupportedLayerError, analyze as analyze_graph
    from epkd_tf.errors import ModelFileError
    from epkd_tf.models.user import check_fits
    try:
        check_fits(model, data.spec, "teacher", data.spec.name)
    except ModelFileError as err:
        message = str(err).replace("--teacher", "teacher").replace(
            f"--dataset={data.spec.name}", "the data")
        raise ApiError(message) from None
    if any(p.structured for p in pruning.make_pruners()):
        try:
            analyze_graph(model)
        except UnsupportedLayerError as err:
            raise ApiError(f"teacher: {err}") from None
    # Every run converts its models to TFLite (latencies, timing): a recurrent layer that
    # cannot convert is refused now, not after the teacher stage (as the command line).
    from epkd_tf.deploy.tflite import check_tflite_convertible
    try:
        check_tflite_convertible(model, "teacher")
    except ModelFileError as err:
        raise ApiError(str(err)) from None


def _differing(old_text: str, cfg, notes: Dict[str, str]) -> List[str]:
    """What differs between a run's flags.txt and this call: settings by flag name (the
    command line's rule: ``epkd_tf.records.settings_record.differing_settings``), and the
    teacher or the arrays when both the record and this call fingerprint them."""
    from epkd_tf.records import settings_record as record
    names = record.differing_settings(old_text, cfg)
    old = record.notes_of(old_text)
    for key, label in ((TEACHER_NOTE, "the teacher's weights"),
                       (DATA_NOTE, "the train/test arrays")):
        if key in old and key in notes and old[key] != notes[key]:
            names.append(label)
    return names


def _run(cfg, data, teacher, root: str, verbose: int, keep: bool, overwrite: bool,
         notes: Dict[str, str]) -> CompressionResult:
    """Runs, resumes or reports the run in ``root`` as the command line would, holding
    the directory's lock for the whole call (see :func:`compress`)."""
    import logging
    from epkd_tf.errors import ConfigError, RunDirError
    from epkd_tf.loop import EPKD
    from epkd_tf.records import RunDir
    from epkd_tf.records import settings_record as record
    from epkd_tf.training import copy_model
    log = logging.getLogger("epkd_tf")
    run = RunDir(root)
    what = f"output_dir={root}"
    with run.lock(what):
        if overwrite and os.path.exists(run.flags_file):
            run.clear()         # everything but the lock this call holds
        found, differing = record.examine(run, lambda old: _differing(old, cfg, notes))
        if found == record.FOREIGN:
            raise RunDirError(f"{what} is a non-empty directory that holds no epkd_tf run "
                              f"(no flags.txt, the record of a run's settings); choose a "
                              f"new or empty directory.")
        if found == record.DIFFERENT:
            raise ConfigError("output_dir", root, f"it holds a run with different settings "
                              f"({', '.join(differing)}); pass overwrite=True to run it "
                              f"again with these, or choose another output_dir")
        warning = run.stages.prepare_resume(
            what, remedy="pass overwrite=True or choose another output_dir")
        if warning:
            log.warning("%s", warning)
        epkd = None
        if run.stages.progress()["finished"]:
            log.info("%s holds a finished run with these settings: its results are "
                     "returned (overwrite=True runs it again).", root)
        else:
            run.write_text("flags.txt", record.settings_text(cfg, notes))
            log.info("Run directory: %s (%s)", root if keep else "temporary", data.spec)
            teacher_done = run.stages.progress()["teacher_done"]
            epkd = EPKD(cfg, data, run, verbose=verbose,
                        teacher=None if teacher_done else copy_model(teacher))
            epkd()
        return _result(run, data, epkd.teacher_model if epkd else None,
                       root if keep else None)


def _result(run, data, teacher, output_dir) -> CompressionResult:
    """The result of the run in ``run`` (finished): every model through the run's
    verified, safe loader (``StageLedger.load_checkpoint``), every completed table."""
    from epkd_tf.records.report import completed_tables, headline
    tables = completed_tables(run)
    for name in run.tables.schemas:
        tables.setdefault(name, run.tables.read_completed(name))
    load = run.stages.load_checkpoint
    students = [load(run.student_checkpoint(k))
                for k in sorted(set(tables["students"]["iteration"].astype(int)))]
    if teacher is None:
        teacher = load(run.teacher_checkpoint())
    final_iteration = int(tables["final"].iloc[-1]["iteration"])
    final = teacher if final_iteration == 0 else students[final_iteration - 1]
    return CompressionResult(teacher=teacher, students=students, final=final,
                             final_iteration=final_iteration, tables=tables,
                             headline="\n".join(headline(run, files=output_dir is not None)),
                             output_dir=output_dir, data=data)


def prune(model, target, *, criterion: str = "taylor", data=None,
          budget: str = default_of(BudgetConfig, "budget"),
          layer_floor: float = default_of(PruningConfig, "layer_floor"),
          flops_weight: float = default_of(PruningConfig, "flops_weight"),
          allocation: str = default_of(PruningConfig, "allocation"),
          channel_multiple: int = default_of(PruningConfig, "channel_multiple"),
          batch_size: int = default_of(DataConfig, "batch_size"),
          seed: int = default_of(DataConfig, "seed"),
          learning_rate: float = default_of(DistillConfig, "learning_rate"),
          bn_recalibration_batches: Optional[int] = default_of(RunConfig,
                                                                "bn_recalibration_batches"),
          **criterion_settings):
    """One-shot pruning of ``model`` to ``target`` in the ``budget`` measure with any
    registered criterion. ``model`` is not changed.

    The keywords that are run settings default to those settings' defaults
    (``epkd_tf.config``; e.g. ``learning_rate`` is ``--finetune_learning_rate``'s).

    Args:
      model: a functional (or Sequential) tf_keras model, a Keras 3 model or a model
        file's path (:func:`load_model`).
      target: the cost to reach in the ``budget`` measure (nonzero parameters by
        default); a float in (0, 1) is that fraction of the model's current cost.
      criterion: a registered pruner (``l1_filter``, ``taylor``, ``oracle``,
        ``poly_magnitude`` or your own, :func:`register_pruner`).
      data: ``(x, y)`` arrays (or a loaded ``epkd_tf.data.Data``) that the data-driven
        criteria (taylor, oracle, poly_magnitude) score and fine-tune on; ``l1_filter``
        needs none. With data, the pruned model's BatchNormalization statistics are
        re-estimated on ``bn_recalibration_batches`` batches of it.
      budget: the measure of ``target``: ``params``, ``macs``, ``latency`` or ``size``
        (``--budget``).
      layer_floor: fraction of each layer's units never removed (``--layer_floor``).
      flops_weight: FLOPs regularisation of the structured ranking (``--flops_weight``).
      allocation: how the structured plan chooses units: ``importance`` or ``cost``
        (importance per unit of the ``budget``'s cost, ``--allocation``).
      channel_multiple: pruned layers keep a multiple of this many channels
        (``--channel_multiple``).
      batch_size: batch size of scoring and fine-tuning (``--batch_size``).
      seed: seed of the scoring subsets (``--seed``).
      learning_rate: Adam rate of poly_magnitude's fine-tune
        (``--finetune_learning_rate``).
      bn_recalibration_batches: batches re-estimating BatchNormalization statistics;
        0: kept as surgery left them; None: the setting's default
        (``--bn_recalibration_batches``).
      **criterion_settings: the criterion's own settings by field name (``batches=4``
        for taylor, ``examples=512`` for oracle, ``epochs=2`` for poly_magnitude).

    Returns:
      A new tf_keras model, physically smaller (``poly_magnitude``: the same shapes with
      exact zeros).

    Raises:
      ApiError: an unknown criterion or budget, settings the criterion does not have, an
        invalid ``target`` or one the criterion cannot reach, a criterion that cannot
        lower the budget's measure, missing ``data``, or an unusable ``model``.
      ConfigError: a setting is invalid (the message names its flag).
      DataError: ``data`` is unusable.
      UnsupportedLayerError: a structured criterion cannot trace a layer of ``model``.

    Example::

        import numpy as np
        import tf_keras
        import epkd_tf

        rng = np.random.default_rng(0)                # class 1: a brighter top half
        y = rng.integers(0, 2, 256)
        x = rng.normal(0.0, 0.3, (256, 8, 8, 1)).astype("float32")
        x[y == 1, :4] += 1.0
        inputs = tf_keras.Input((8, 8, 1))
        conv = tf_keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        logits = tf_keras.layers.Dense(2)(tf_keras.layers.Flatten()(conv))     # no softmax
        model = tf_keras.Model(inputs, logits)
        model.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=2, verbose=0)
        smaller = epkd_tf.prune(model, 0.5, criterion="taylor", data=(x, y), batches=2)
        print(model.count_params(), "->", smaller.count_params())     # about half
        no_data = epkd_tf.prune(model, 0.5, criterion="l1_filter", budget="macs")
    """
    from epkd_tf.config import default_bn_batches
    from epkd_tf.distill import batchnorm
    from epkd_tf.budget import MeasureContext, make_measure
    from epkd_tf.pruning import PruningContext
    from epkd_tf.pruning.base import producer_widths
    from epkd_tf.pruning.registry import PRUNERS
    from epkd_tf.registry import UnknownNameError
    from epkd_tf.settings import ConfigError
    model = as_teacher(model, "model")
    try:
        pruner_class = PRUNERS.get(criterion)
        pruner = pruner_class(**criterion_settings)
        measure = make_measure(budget)
    except UnknownNameError as err:
        raise ApiError(f"{err}.") from None
    except TypeError as err:
        raise ApiError(f"criterion_settings {sorted(criterion_settings)} are not settings of "
                       f"{criterion!r}: {err}") from None
    config = PruningConfig(pruners=(criterion,), layer_floor=layer_floor,
                           flops_weight=flops_weight, allocation=allocation,
                           channel_multiple=channel_multiple)
    context = MeasureContext(seed=seed)
    current = measure.of(model, context)
    if isinstance(target, float) and 0.0 < target < 1.0:
        target = target * current
    if not isinstance(target, (int, float)) or isinstance(target, bool) or target <= 0:
        raise ApiError(f"target={target!r} is invalid: give the {measure.name} to reach "
                       f"(the model has {measure.format(current)}) or a fraction in (0, 1).")
    if not measure.lowered_by(pruner):
        raise ApiError(f"criterion={criterion!r}: {measure.why_not(pruner)}.")
    loaded = None
    if data is not None:
        train = tuple(data) if isinstance(data, (tuple, list)) else data
        loaded = as_data(train, train, DataConfig(batch_size=batch_size, seed=seed))
    elif pruner.needs_data:
        raise ApiError(f"criterion={criterion!r} scores on data: pass data=(x, y).")
    widths = producer_widths(model) if pruner.structured else None
    ctx = PruningContext(loaded, config, seed=seed, batch_size=batch_size,
                         learning_rate=learning_rate, measure=measure,
                         measure_context=context, current_cost=current,
                         teacher_widths=widths)
    try:
        value = int(round(target)) if measure.name == "params" else float(target)
        pruned = pruner.make_candidate(model, value, ctx).model
    except ConfigError:
        raise
    except ValueError as err:
        raise ApiError(" ".join(str(err).split())) from None
    if loaded is not None and batchnorm.batchnorm_layers(pruned):
        wanted = (default_bn_batches() if bn_recalibration_batches is None
                  else bn_recalibration_batches)
        batches = batchnorm.sample_batches(loaded, wanted, seed=seed)
        batchnorm.recalibrate(pruned, batches, len(batches))
    return pruned


def analyze(model):
    """The channel dependency graph of a model (``epkd_tf.graph.analyze``): its prunable
    units, the groups that merges couple and the blocks, as structured pruning sees them.

    Args:
      model: a functional (or Sequential) tf_keras model, a Keras 3 model or a model
        file's path (:func:`load_model`).

    Returns:
      An ``epkd_tf.graph.ChannelGraph`` (``num_units``, ``num_groups``, ``blocks``,
      ``layers``...).

    Raises:
      UnsupportedLayerError: a layer cannot be traced (the message names it and says how
        to declare a rule: :func:`register_rule`).
      ApiError: ``model`` is not a model, or its file cannot be loaded.

    Example::

        import tf_keras
        import epkd_tf

        inputs = tf_keras.Input((8, 8, 3))
        a = tf_keras.layers.Conv2D(16, 3, padding="same", name="a")(inputs)
        b = tf_keras.layers.Conv2D(16, 3, padding="same", name="b")(a)
        merged = tf_keras.layers.Add()([a, b])        # couples a's and b's channels
        pooled = tf_keras.layers.GlobalAveragePooling2D()(merged)
        graph = epkd_tf.analyze(tf_keras.Model(inputs, tf_keras.layers.Dense(10)(pooled)))
        print(graph.num_units, graph.num_groups)      # 42 16: a's and b's 32 units in 16
                                                      # coupled groups; the logits fixed
        print([block.layers for block in graph.blocks])   # [('a', 'b')]
    """
    from epkd_tf.graph import analyze as analyze_graph
    return analyze_graph(as_teacher(model, "model"))


def load_model(path: str):
    """A model file as a tf_keras model, loaded safely: no code stored in the file runs
    (its configuration is checked against an allow-list first; docs/outputs.md).

    Args:
      path: a .keras file of tf_keras or Keras 3 (converted), an .h5 file or a Keras
        SavedModel directory; one input, one output.

    Returns:
      The uncompiled tf_keras model.

    Raises:
      ApiError: the file is missing, unreadable, not a Keras model, has several inputs or
        outputs, or holds something that would run code (a Lambda layer, a custom
        object); the one-line message says which.

    Example::

        import tf_keras
        import epkd_tf

        inputs = tf_keras.Input((4,))
        tf_keras.Model(inputs, tf_keras.layers.Dense(2)(inputs)).save("model.keras")
        model = epkd_tf.load_model("model.keras")
        try:
            epkd_tf.load_model("missing.keras")
        except epkd_tf.ApiError as err:
            print(err)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ApiError(f"path is a {type(path).__name__}: give the path of a model file "
                       "(.keras, .h5 or a Keras SavedModel directory).")
    return as_teacher(os.fspath(path), "path")
