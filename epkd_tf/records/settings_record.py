"""A run's record of its settings (``flags.txt``) and what a new run or call may do with a
directory that holds one: the decision the command line (``epkd_tf.cli``) and the Python
API (:func:`epkd_tf.compress`) share.

``flags.txt`` holds one ``--name=value`` line per setting the run uses (``--flag`` /
``--noflag`` for booleans, comma-separated lists), so it works with ``--flagfile``; the
command line writes the flags as given, :func:`settings_text` writes the same lines from
a :class:`~epkd_tf.config.RunConfig`. Lines starting with ``#`` are notes (the Python API
records there fingerprints of the teacher and the data it was given); ``--flagfile``
skips them.

:func:`examine` says what a directory is to a run (new, not a run, a run with other
settings, an unfinished or a finished one); :func:`differing_settings` compares a record
with settings: a setting absent from an old record (added to epkd_tf after the run was
written) counts as its default, and ``output_dir`` never differs (it names the run's own
directory however it is spelt).
"""
from __future__ import annotations

import os
import typing
from typing import Callable, Dict, List, Optional, Tuple

NOTE_PREFIX = "# "


def flag_lines(text: str, names) -> Dict[str, str]:
    """A flags.txt → {flag name: its line}; ``--nofoo`` and ``--foo`` share the name foo
    (``names``: the known flag names). Notes (``#`` lines) are left out."""
    result = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name = line.split("=", 1)[0].lstrip("-")
            if "=" not in line and name.startswith("no") and name[2:] in names:
                name = name[2:]
            result[name] = line
    return result


def notes_of(text: str) -> Dict[str, str]:
    """The ``# key: value`` notes of a flags.txt, by key."""
    notes = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(NOTE_PREFIX) and ": " in line:
            key, value = line[len(NOTE_PREFIX):].split(": ", 1)
            notes[key.strip()] = value.strip()
    return notes


def _line(name: str, value) -> str:
    """One flags.txt line, as absl serialises the flag."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    if isinstance(value, tuple):
        return f"--{name}=" + ",".join(str(v) for v in value)
    return f"--{name}={value}"


def settings_text(cfg, notes: Optional[Dict[str, str]] = None) -> str:
    """flags.txt of the settings ``cfg``: a line for every setting it uses (not those it
    declares unused) whose value is not None, in the command line's order and format.

    Args:
      cfg: a :class:`~epkd_tf.config.RunConfig`.
      notes: ``{key: value}`` written first as ``# key: value`` lines.

    Returns:
      The text, one line each.
    """
    from epkd_tf.settings import flag_values_of, leaves
    used = flag_values_of(cfg)
    lines = [f"{NOTE_PREFIX}{key}: {value}" for key, value in (notes or {}).items()]
    lines += [_line(leaf.flag, used[leaf.flag]) for leaf in leaves(cfg)
              if leaf.flag in used and used[leaf.flag] is not None]
    return "".join(line + "\n" for line in lines)


def recorded_settings(text: str, cfg):
    """``cfg`` (a settings dataclass, e.g. ``DataConfig()``) with the values a flags.txt
    ``text`` records for its own fields; a field the text does not name keeps its value
    in ``cfg`` (its default: what epkd_tf assumes for a missing line).

    Args:
        text: the content of a run's flags.txt.
        cfg: the dataclass whose fields to read (only its top-level leaves).

    Returns:
        A copy of ``cfg`` (``cfg.replace``).
    """
    from epkd_tf.settings import leaves
    by_flag = {leaf.flag: leaf for leaf in leaves(cfg) if len(leaf.path) == 1}
    lines = flag_lines(text, by_flag)
    return cfg.replace(**{leaf.path[0]: _value_of(lines[flag], leaf)
                          for flag, leaf in by_flag.items() if flag in lines})


def _value_of(line: str, leaf):
    """The value a flags.txt line gives the setting ``leaf`` (as its field holds it);
    the line's own text when it cannot be read as one."""
    from epkd_tf.settings import _base_type
    base, _ = _base_type(leaf.annotation)
    name, _, text = line.lstrip("-").partition("=")
    try:
        if base is bool:
            if "=" not in line:
                return not name.startswith("no") or name == leaf.flag
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
        if typing.get_origin(base) in (tuple, Tuple):
            item = typing.get_args(base)[0]
            parts = [p.strip() for p in text.split(",") if p.strip()]
            return tuple(item(p) if item in (int, float) else p for p in parts)
        if base in (int, float):
            return base(text)
        return text.strip()
    except (ValueError, KeyError):
        return line


def differing_settings(old_text: str, cfg) -> List[str]:
    """Names of the settings whose value differs between a run's flags.txt (``old_text``,
    written by the command line or the API) and ``cfg``, compared as values (``1`` and
    ``1.0`` are the same float). A setting absent from the record, or unused by ``cfg``,
    counts as its default.

    Args:
      old_text: the run's flags.txt.
      cfg: the settings of the new run or call (a :class:`~epkd_tf.config.RunConfig`).

    Returns:
      The names, sorted (empty: the same settings).
    """
    from epkd_tf.settings import flag_values_of, leaves
    by_flag = {leaf.flag: leaf for leaf in leaves(type(cfg)())}
    old = flag_lines(old_text, by_flag)
    new = {name: value for name, value in flag_values_of(cfg).items() if value is not None}
    differing = []
    for name in set(old) | set(new):
        if name == "output_dir":
            continue
        leaf = by_flag.get(name)
        if name not in old:
            if new[name] != leaf.default:
                differing.append(name)
        elif leaf is None:
            differing.append(name)
        elif name not in new:
            # Not used by the new settings (inactive, e.g. --drop_patience without
            # --max_accuracy_drop): only a recorded value other than its default differs.
            if _value_of(old[name], leaf) != leaf.default:
                differing.append(name)
        elif _value_of(old[name], leaf) != new[name]:
            differing.append(name)
    return sorted(differing)


#: What :func:`examine` finds in a directory.
NEW, FOREIGN, DIFFERENT, UNFINISHED, FINISHED = ("new", "foreign", "different",
                                                 "unfinished", "finished")


def examine(run, differing: Callable[[str], List[str]]) -> Tuple[str, List[str]]:
    """What ``run``'s directory is to a run that would write it (read only; the caller
    holds its lock).

    Args:
      run: the :class:`~epkd_tf.records.RunDir` (or a study's directory).
      differing: ``flags.txt text -> names of the settings that differ`` for the new run
        (:func:`differing_settings`, or the command line's comparison of its flags).

    Returns:
      ``(what, names)``: ``NEW`` (missing or empty: the lock file does not count),
      ``FOREIGN`` (not empty, but no flags.txt: no epkd_tf run, or one that recorded no
      settings), ``DIFFERENT`` (a run with other settings; ``names`` lists them),
      ``UNFINISHED`` or ``FINISHED`` (a run with the same settings).

    Raises:
      RunDirError: the path is a file.
      DamagedRunError: progress.json or flags.txt is damaged (flags.txt not UTF-8 text,
        a FIFO...).
    """
    from epkd_tf.errors import RunDirError
    if not os.path.exists(run.root):
        return NEW, []
    if not os.path.isdir(run.root):
        raise RunDirError(f"{run.root} exists and is not a directory.")
    old = run.read_flags()          # never blocks, never a UnicodeDecodeError
    if old is None:
        return (FOREIGN if run.entries() else NEW), []
    names = differing(old)
    if names:
        return DIFFERENT, names
    return (FINISHED if run.stages.progress().get("finished") else UNFINISHED), []
