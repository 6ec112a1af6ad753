"""The stage ledger of a run: which stages completed (``progress.json``) and what each of
them wrote, and everything a resume needs from that record (:class:`StageLedger`, a run
directory's ``run.stages``).

A run is a sequence of stages: the teacher, iteration 1, 2, ..., and the end (the final
student's exports). A stage's files are written first and ``progress.json`` last
(:meth:`StageLedger.mark`), so a run killed at any moment resumes after its last
completed stage; rows and files of a stage that did not complete (and temporaries of
interrupted writes) are dropped on resume (:meth:`StageLedger.drop_unfinished`), so no CSV
row is duplicated or missing and no half-written export survives. Tables only ever grow
by appending bytes, so what a stage recorded of a table (its size and the SHA-256 of that
many bytes) stays checkable as the run goes on. Before resuming,
:meth:`StageLedger.prepare_resume` checks every completed stage against its record: a
damaged last stage is redone, damage to an earlier one (which later stages build on) is
refused naming the file. Checkpoints are reloaded by :meth:`StageLedger.load_checkpoint`
only: verified against their record, then loaded without running code stored in them
(``epkd_tf.models.user.load_user_model``).

Kept apart from the directory's paths and atomic writes (``run_dir.py``) and from the
tables themselves (``tables.py``): this module decides what is complete, those store it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import List, Optional

from epkd_tf.config import EXPORT_FORMATS
from epkd_tf.errors import DamagedRunError, ModelFileError, RunDirError
from epkd_tf.files import (TMP_PREFIX, digest_mismatch, file_digest, files_under, inside,
                           read_text)

PROGRESS = "progress.json"
# checkpoints/<PARTIAL>/: unfinished trainings' checkpoints (RunDir.partial_checkpoint).
PARTIAL = "partial"

# The model name the final student's exports carry (serving/final/1, tflite/final*.tflite):
# the files of the run's end stage.
FINAL = "final"


class StageLedger:
    """The completed stages of one run directory and what each wrote.

    progress.json: ``{"teacher_done", "iterations_done", "finished", "stages": [record...]}``
    with one record per completed stage, in order (``"teacher"``, ``"iteration 1"``, ...,
    ``"end"``): ``{"name", "files": {relative path: digest}, "tables": {table: digest of
    its first bytes when the stage completed}}``. Runs written before records existed
    have no ``"stages"`` and are resumed with lighter checks.

    Args:
        run: the :class:`~epkd_tf.records.run_dir.RunDir` (its paths, atomic writes and
            ``tables``; a :class:`~epkd_tf.study.layout.StudyDir` brings its own).
    """

    def __init__(self, run):
        self.run = run

    def progress(self) -> dict:
        """The state of the run (nothing done if there is no progress.json yet).

        Raises:
            DamagedRunError: naming progress.json if it is not one.
        """
        path = self.run.path(PROGRESS)
        if not os.path.exists(path):
            return {"teacher_done": False, "iterations_done": 0, "finished": False,
                    "stages": []}
        try:
            text = read_text(path)      # a FIFO would block a plain open()
        except ValueError as err:
            raise DamagedRunError(f"{path} is damaged: it {err}.") from None
        try:
            state = json.loads(text)
        except ValueError as err:
            raise DamagedRunError(f"{path} is damaged (not JSON: "
                                  f"{' '.join(str(err).split())[:120]}).") from None
        kinds = {"teacher_done": bool, "iterations_done": int, "finished": bool}
        if not (isinstance(state, dict) and all(isinstance(state.get(k), t)
                                                for k, t in kinds.items())
                and state["iterations_done"] >= 0
                and isinstance(state.get("stages", []), list)):
            raise DamagedRunError(f"{path} is damaged: not a progress record (it needs "
                                  f"teacher_done, iterations_done and finished).")
        return state

    @staticmethod
    def stage_names(state: dict) -> List[str]:
        """The completed stages ``state`` (a :meth:`progress`) claims, in order."""
        if not state["teacher_done"]:
            return []
        names = ["teacher"] + [f"iteration {k}" for k in range(1, state["iterations_done"] + 1)]
        return names + (["end"] if state["finished"] else [])

    def records(self, state: dict) -> Optional[List[dict]]:
        """The records of the stages ``state`` (a :meth:`progress`) claims.

        Returns:
            One record per completed stage, in order; None for a run written before
            records existed.

        Raises:
            DamagedRunError: it claims stages it has no records of.
        """
        if "stages" not in state:
            return None
        names = self.stage_names(state)
        records = state["stages"][:len(names)]
        valid = all(isinstance(r, dict) and r.get("name") == n
                    and isinstance(r.get("files"), dict) and isinstance(r.get("tables"), dict)
                    for r, n in zip(records, names))
        if len(records) < len(names) or not valid:
            raise DamagedRunError(
                f"{self.run.path(PROGRESS)} is damaged: it claims {len(names)} completed "
                f"stages ({', '.join(names) or 'none'}) but records what "
                f"{sum(1 for _ in records)} of them wrote.")
        return records

    def mark(self, **progress) -> None:
        """Records completed stages (``teacher_done=True``, ``iterations_done=k``,
        ``finished=True``) with what each wrote; written after the stage's files, so it
        is the commit.

        Raises:
            DamagedRunError: progress.json is damaged.
        """
        state = self.progress()
        new = {**state, **progress}
        records = list(self.records(state) or [])
        names = self.stage_names(new)
        keep = 0
        while keep < min(len(records), len(names)) and records[keep]["name"] == names[keep]:
            keep += 1
        new["stages"] = records[:keep] + [self._snapshot(n) for n in names[keep:]]
        self.run.write_text(PROGRESS, json.dumps(new, indent=1))
        self.drop_partial(new)

    def drop_partial(self, state: dict) -> None:
        """Removes the checkpoints of unfinished trainings (``checkpoints/partial``,
        ``epkd_tf.epochs``) whose stage ``state`` (a :meth:`progress`) has completed:
        scratch, never a completed stage's file. The folder goes once empty."""
        folder = self.run.path("checkpoints", PARTIAL)
        done = ({"teacher"} if state["teacher_done"] else set()) | {
            f"finetune_{k}" for k in range(1, state["iterations_done"] + 1)}
        for entry in self._partial_entries():
            if os.path.splitext(entry)[0] in done:
                os.remove(os.path.join(folder, entry))
        if os.path.isdir(folder) and not os.path.islink(folder) and not os.listdir(folder):
            os.rmdir(folder)

    def _partial_entries(self) -> List[str]:
        """The files in ``checkpoints/partial`` (none when it is no directory)."""
        folder = self.run.path("checkpoints", PARTIAL)
        if not os.path.isdir(folder) or os.path.islink(folder):
            return []
        return sorted(os.listdir(folder))

    def _snapshot(self, name: str) -> dict:
        """What the stage ``name`` wrote, as it is now: its files and every table."""
        run, tables = self.run, self.run.tables
        stage = {"teacher": 0, "end": None}.get(name)
        if stage is None and name.startswith("iteration "):
            stage = int(name.split()[1])
        files = {}
        paths = self.final_files() if name == "end" else (
            [] if stage is None else self.stage_files(stage))
        for path in paths:
            if inside(path, run.path("tensorboard")):
                continue     # logs for TensorBoard: not results, not checked
            for file in files_under(path):
                files[os.path.relpath(file, run.root)] = file_digest(file)
        recorded = {t: file_digest(tables.path(t)) for t in tables.schemas
                    if os.path.isfile(tables.path(t))}
        return {"name": name, "files": files, "tables": recorded}

    def verify(self) -> Optional[dict]:
        """The first damage of :meth:`damages`, or None when every stage checks out.

        Raises:
            DamagedRunError: progress.json is damaged.
        """
        found = self.damages(first=True)
        return found[0] if found else None

    def damages(self, first: bool = False) -> List[dict]:
        """Every file or table of a completed stage that is not what the stage wrote, in
        stage order. A run written before records existed is checked for its checkpoints
        only.

        Args:
            first: stop at the first one.

        Returns:
            ``{"index", "name" (the stage), "path" (relative), "problem", "table"
            (whether it is a table)}`` for each.

        Raises:
            DamagedRunError: progress.json itself is damaged.
        """
        run, tables = self.run, self.run.tables
        state = self.progress()
        records = self.records(state)
        if records is None:
            return self._damages_legacy(state)
        found = []
        for index, record in enumerate(records):
            checks = [(path, digest, False) for path, digest in record["files"].items()]
            checks += [(os.path.relpath(tables.path(t), run.root), digest, True)
                       for t, digest in record["tables"].items() if t in tables.schemas]
            for relative, digest, table in checks:
                if any(d["path"] == relative for d in found):
                    continue       # a table damaged for one stage is for the next too
                problem = digest_mismatch(run.path(relative), digest, prefix=table)
                if problem:
                    found.append({"index": index, "name": record["name"], "path": relative,
                                  "problem": problem, "table": table})
                    if first:
                        return found
        return found

    def _damages_legacy(self, state: dict) -> List[dict]:
        run = self.run
        names = self.stage_names(state)
        for index, name in enumerate(n for n in names if n != "end"):
            path = (run.teacher_checkpoint() if name == "teacher"
                    else run.student_checkpoint(int(name.split()[1])))
            if not os.path.isfile(path):
                return [{"index": index, "name": name, "problem": "missing", "table": False,
                         "path": os.path.relpath(path, run.root)}]
        return []

    def prepare_resume(self, what: Optional[str] = None,
                       remedy: str = "rerun with --overwrite or another --output_dir"
                       ) -> Optional[str]:
        """Checks the run before it is resumed. The last completed stage, if damaged, is
        redone instead: its record is dropped here, and :meth:`drop_unfinished` then
        removes its files and rows like those of an interrupted stage.

        Args:
            what: how refusals name the directory (default ``--output_dir=<root>``).
            remedy: what a refusal tells to do (the Python API names its arguments).

        Returns:
            A warning line when the last completed stage was damaged and will be redone,
            None when all is well.

        Raises:
            RunDirError: a symbolic link inside the run leads out of it.
            DamagedRunError: progress.json is damaged, or a stage that later stages build
                on is (naming the file).
        """
        what = what or f"--output_dir={self.run.root}"
        self.check_links(what)
        damage = self.verify()
        if damage is None:
            return None
        state = self.progress()
        names = self.stage_names(state)
        found = f"{damage['path']} ({damage['problem']})"
        if damage["index"] != len(names) - 1 or "stages" not in state:
            raise DamagedRunError(
                f"{what}: {found} is not what the {damage['name']} stage wrote, and the "
                f"stages after it build on it; the run cannot be resumed: {remedy}.")
        name = damage["name"]
        rolled = dict(state, finished=False)
        if name == "teacher":
            rolled["teacher_done"] = False
        elif name.startswith("iteration "):
            rolled["iterations_done"] = int(name.split()[1]) - 1
        rolled["stages"] = state["stages"][:damage["index"]]
        self.run.write_text(PROGRESS, json.dumps(rolled, indent=1))
        return (f"warning: {found} is not what the {name} stage wrote; that stage is "
                f"redone.")

    def check_links(self, what: Optional[str] = None) -> None:
        """Checks that no symbolic link in the run leads out of it.

        Args:
            what: how the refusal names the directory (default: its path).

        Raises:
            RunDirError: naming the first such link.
        """
        root = self.run.root
        real_root = os.path.realpath(root)
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                if os.path.islink(path) and not inside(os.path.realpath(path), real_root):
                    raise RunDirError(
                        f"{what or root}: {os.path.relpath(path, root)} is a link "
                        f"to {os.path.realpath(path)}, outside the run directory; epkd_tf "
                        f"writes only inside it (remove the link).")

    def load_checkpoint(self, path: str):
        """The model of one of the run's checkpoints: checked against what its stage
        recorded, then loaded without running code stored in it.

        Args:
            path: the checkpoint (e.g. ``run.teacher_checkpoint()``).

        Returns:
            The tf_keras model.

        Raises:
            DamagedRunError: naming the file if it is not what its stage wrote or cannot
                be loaded safely.
        """
        from epkd_tf.models.user import load_user_model
        relative = os.path.relpath(path, self.run.root)
        state = self.progress()
        for record in self.records(state) or []:
            if relative in record["files"]:
                problem = digest_mismatch(path, record["files"][relative])
                if problem:
                    raise DamagedRunError(f"{path} is damaged ({problem}); the run cannot "
                                          f"use it.")
        try:
            return load_user_model(path, None)
        except ModelFileError as err:
            raise DamagedRunError(str(err)) from None

    def drop_unfinished(self) -> None:
        """Removes what stages after the last completed one left (an interrupted run):
        their CSV rows (each table is cut back to the size the last completed stage
        recorded, a table it did not record yet is removed; a run written before records
        existed loses the rows of later iterations), their
        checkpoints, exports and TensorBoard logs, and the temporaries of writes that never
        reached their rename.

        Raises:
            DamagedRunError: progress.json or a table is damaged.
        """
        run, tables = self.run, self.run.tables
        state = self.progress()
        records = self.records(state)
        if records:
            recorded = records[-1]["tables"]
            for table in tables.schemas:
                if table in recorded:
                    tables.truncate(table, recorded[table]["bytes"])
                elif os.path.exists(tables.path(table)):
                    # Made after the last completed stage (final.csv by the end stage):
                    # all its rows are unfinished ones, whatever iteration they name.
                    os.remove(tables.path(table))
        done = state["iterations_done"]
        for table in tables.schemas:
            if not os.path.exists(tables.path(table)):
                continue
            df = tables.read(table)
            keep = df
            if "iteration" in df.columns:
                keep = df[df["iteration"].fillna(0) <= done]
            if not state["teacher_done"]:
                # Nothing is complete before the teacher: this also drops rows without an
                # iteration (teacher_history) and the teacher's own (iteration 0) rows.
                keep = df.iloc[0:0]
            if len(keep) != len(df):
                tables.replace(table, keep)
        done = done if state["teacher_done"] else -1     # stage 0 is the teacher
        leftovers = [p for stage in sorted(self._stages_on_disk() | {0}) if stage > done
                     for p in self.stage_files(stage)]
        # A training that resumes from its checkpoint (epkd_tf.epochs) keeps the
        # TensorBoard logs of its epochs so far (removed if the checkpoint proves unusable).
        resuming = {run.tensorboard_dir(os.path.splitext(n)[0])
                    for n in self._partial_entries() if n.endswith(".json")}
        leftovers = [p for p in leftovers if p not in resuming]
        for folder, dirs, files in os.walk(run.root):
            leftovers += [os.path.join(folder, n) for n in dirs + files
                          if n.startswith(TMP_PREFIX)]
            dirs[:] = [d for d in dirs if not d.startswith(TMP_PREFIX)]
        for path in leftovers:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        self.drop_partial(state)

    def final_files(self) -> List[str]:
        """The final student's exports (written at the end of a run): checked like a
        stage's files."""
        return [self.run.export_path(FINAL, fmt) for fmt in EXPORT_FORMATS]

    def stage_files(self, stage: int) -> List[str]:
        """Checkpoint, exports and TensorBoard logs of a stage (0: the teacher, k: the
        student of iteration k) — what :meth:`drop_unfinished` removes of an unfinished
        one."""
        run = self.run
        name = "teacher" if stage == 0 else f"student_{stage}"
        paths = [run.teacher_checkpoint() if stage == 0 else run.student_checkpoint(stage),
                 run.serving_dir("teacher", 1) if stage == 0 else run.serving_dir("student", stage),
                 run.tensorboard_dir("teacher" if stage == 0 else f"finetune_{stage}")]
        paths += [run.tflite_path(name, fmt) for fmt in EXPORT_FORMATS if fmt.startswith("tflite")]
        paths.append(run.keras3_path(name))
        if stage:
            paths.append(run.path("candidates", str(stage)))
        return paths

    def _stages_on_disk(self) -> set:
        """Iteration numbers any checkpoint, export or log on disk belongs to."""
        stages = set()
        for folder, regex in ((("checkpoints",), r"student_(\d+)\.keras"),
                              (("serving", "student"), r"(\d+)"),
                              (("candidates",), r"(\d+)"),
                              (("tensorboard",), r"finetune_(\d+)"),
                              (("tflite",), r"student_(\d+)(?:_[a-z0-9]+)*\.tflite"),
                              (("keras3",), r"student_(\d+)\.keras")):
            path = self.run.path(*folder)
            for entry in os.listdir(path) if os.path.isdir(path) else []:
                match = re.fullmatch(regex, entry)
                if match:
                    stages.add(int(match.group(1)))
        return stages
