"""Plumbing shared by the absl entry points (``main``, ``export``, ``study``, ``report``):
errors, logging, flag parsing and comparing a run's flags with the ones it was written with."""
import contextlib
import os
import sys
from typing import Optional

from absl import flags
from epkd_tf.errors import (EXIT_BAD_INPUT, Terminated, UsageError, failure_message,  # noqa: F401,E501
                            exit_status)
# The console's plumbing lives in the library (the Python API uses it too); re-exported.
from epkd_tf.records.settings_record import flag_lines  # noqa: F401
from epkd_tf.console import (_NATIVE_LINE, VERBOSE_ENV, _StderrHandler,  # noqa: F401
                             native_log_filter, quiet_libraries, setup_logging, verbosity)


def fail(problem, status: Optional[int] = None) -> int:
    """Prints the one-line ``error: ...`` users see and returns the exit status:
    ``status`` if given, else the error's own (:func:`epkd_tf.errors.exit_status`; a
    message alone is bad input, 2)."""
    if isinstance(problem, BaseException):
        message, own = str(problem), exit_status(problem)
    else:
        message, own = str(problem), EXIT_BAD_INPUT
    print(f"error: {message}", file=sys.stderr)
    return own if status is None else status


# How absl names a flag file, on the command line and inside a flag file (nested).
_FLAGFILE_PREFIXES = ("--flagfile=", "-flagfile=")
_FLAGFILE_ALONE = ("--flagfile", "-flagfile")


def _flagfile_names(args) -> list:
    """The flag files ``args`` name as absl reads them (``--flagfile=F``, ``-flagfile=F``,
    ``--flagfile F``; nothing after ``--``), ``~`` expanded as absl expands it."""
    names = []
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith(_FLAGFILE_PREFIXES):
            names.append(os.path.expanduser(arg.split("=", 1)[1].strip()))
        elif arg in _FLAGFILE_ALONE and i + 1 < len(args):
            names.append(os.path.expanduser(args[i + 1].strip()))
    return names


def check_flagfiles(argv) -> Optional[str]:
    """The one-line problem with the first flag file ``argv`` names, directly or nested
    in another flag file, that absl could not read as text; None if all are readable.

    absl opens a flag file as it is named: a FIFO blocks it forever, another encoding ends
    it in a UnicodeDecodeError traceback, a device never ends. Each must be a regular
    UTF-8 text file of sane size (:func:`epkd_tf.files.read_text`); nested ones (a line
    ``--flagfile=F`` inside one) are checked the same way, each once."""
    from epkd_tf.files import read_text
    pending = [(name, None) for name in _flagfile_names(argv[1:])]
    seen = set()
    while pending:
        name, parent = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            text = read_text(name)
        except ValueError as err:
            where = f" (named in {parent})" if parent else ""
            return f"--flagfile={name}{where} {err}: give a text file of flags, one a line."
        lines = [line.strip() for line in text.splitlines()]
        pending += [(nested, name) for nested in _flagfile_names(lines)]
    return None


def parse_or_exit(flag_values: flags.FlagValues, argv):
    """absl parsing, but a malformed or unknown flag, or a flag file absl could not read
    (:func:`check_flagfiles`), is one ``error:`` line and exit 2."""
    problem = check_flagfiles(argv)
    if problem:
        sys.exit(fail(problem))
    try:
        return flag_values(argv)
    except flags.Error as err:
        sys.exit(fail(str(err)))


HELP_ARGS = ("--help", "-h", "--helpfull", "--helpshort")
#: The help argument that also lists absl's own flags (logging, pdb, profiling).
HELP_FULL = "--helpfull"


def _shown_default(flag) -> str:
    value = flag.default
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(empty)"
    return str(value)


def flag_help(flag) -> list:
    """One flag's help lines, as absl writes them: ``--name: help`` (``--[no]name`` for a
    boolean) wrapped at 80 columns, then its default when it has one.

    Args:
        flag: an absl ``Flag``.

    Returns:
        The lines (without newlines).
    """
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    lines = flags.text_wrap(f"{name}: {flags.doc_to_help(flag.help or '')}", length=80,
                            indent="    ", firstline_indent="  ").splitlines()
    default = _shown_default(flag)
    if default:
        lines += flags.text_wrap(f"(default: {default})", length=80, indent="    ",
                                 firstline_indent="    ").splitlines()
    return lines


def settings_topics(defaults, top: str) -> list:
    """The flags of a settings object grouped by topic, as (title, flag names): one topic
    per nested settings part in declaration order, titled by its class (``DataConfig`` ->
    ``Data``) and the first clause of its docstring, then the object's own settings under
    ``top``. Derived from the settings, so a new setting lands in its topic by itself.

    Args:
        defaults: a settings object (e.g. ``RunConfig()``).
        top: the title of the object's own (not nested) settings.

    Returns:
        [(title, [flag name, ...]), ...] in declaration order.
    """
    import dataclasses
    import inspect
    import re
    from epkd_tf.settings import leaves
    topics = {}
    for leaf in leaves(defaults):
        field = next(f for f in dataclasses.fields(defaults) if f.name == leaf.path[0])
        if field.metadata.get("nested"):
            part = type(getattr(defaults, field.name))
            doc = inspect.cleandoc(part.__doc__ or "").split("\n\n")[0].replace("\n", " ")
            clause = re.split(r" \(|:|\. ", doc, maxsplit=1)[0].rstrip(".")
            title = part.__name__[:-len("Config")] if part.__name__.endswith("Config") \
                else part.__name__
            title = f"{title}: {clause[:1].lower()}{clause[1:]}" if clause else title
        else:
            title = top
        topics.setdefault(title, []).append(leaf.flag)
    own = topics.pop(top, [])
    return list(topics.items()) + ([(top, own)] if own else [])


def help_text(flag_values: flags.FlagValues, usage: str, topics, examples=(),
              full: bool = False) -> str:
    """An entry point's ``--help``: ``usage``, the ``examples``, then its own flags by
    topic (``topics``: (title, flag names)); absl's own flags (logging, pdb, profiling) and
    any other flag defined in ``flag_values`` only with ``full`` (``--helpfull``), else a
    line saying how to see them. Each flag appears once.

    Args:
        flag_values: the entry point's flags.
        usage: the text that comes first (its reST double backquotes dropped).
        topics: (title, flag names) in order; a topic without names is left out.
        examples: command lines shown after the usage (long ones continued on a
            second line after a backslash).
        full: also list every other flag of ``flag_values`` (absl's own).

    Returns:
        The help text, ending with a newline.
    """
    import textwrap
    lines = [textwrap.dedent(usage).strip().replace("``", ""), ""]
    if examples:
        lines.append("Examples:")
        for example in examples:
            lines += flags.text_wrap(example, length=88, indent="      ",
                                     firstline_indent="  ").replace("\n", " \\\n").splitlines()
        lines.append("")
    shown = set()
    for title, names in topics:
        if not names:
            continue
        lines.append(f"{title}:")
        for name in names:
            lines += flag_help(flag_values[name])
            shown.add(name)
        lines.append("")
    if not shown:
        lines += ["No --flags: only the arguments the usage names.", ""]
    rest = [flag for module, module_flags in flag_values.flags_by_module_dict().items()
            for flag in module_flags if flag.name not in shown]
    rest = list({flag.name: flag for flag in rest}.values())
    if rest and full:
        lines.append("absl's own flags (logging, debugging, profiling):")
        for flag in sorted(rest, key=lambda f: f.name):
            lines += flag_help(flag)
        lines.append("")
    elif rest:
        lines += [f"absl's own flags (logging, debugging, profiling): {HELP_FULL}", ""]
    return "\n".join(lines).rstrip() + "\n"


def print_help_and_exit(flag_values: flags.FlagValues, argv, usage: str, topics,
                        examples=()) -> None:
    """If ``argv`` asks for help (:data:`HELP_ARGS`), prints :func:`help_text` (full with
    ``--helpfull``) and exits 0; otherwise returns.

    Args:
        flag_values, usage, topics, examples: as :func:`help_text` takes them.
        argv: the command line (its first item is the program).

    Raises:
        SystemExit: with status 0, after printing the help.
    """
    asked = [a for a in argv[1:] if a in HELP_ARGS]
    if asked:
        print(help_text(flag_values, usage, topics, examples, full=HELP_FULL in asked), end="")
        sys.exit(0)


def parse_module_flags(flag_values: flags.FlagValues, argv, usage: str, topics=None,
                       examples=()):
    """Parses an entry point's own ``FlagValues`` (reset first, so tests can call it
    repeatedly); ``--help`` prints ``usage``, ``examples`` and the flags by ``topics``
    (default: one topic, every flag) and exits 0 (:func:`help_text`); a malformed or
    unknown flag is one ``error:`` line and exit 2."""
    if topics is None:
        names = [flag.name for module_flags in flag_values.flags_by_module_dict().values()
                 for flag in module_flags]
        topics = [("Flags", list(dict.fromkeys(names)))]
    print_help_and_exit(flag_values, argv, usage, topics, examples)
    flag_values.unparse_flags()
    return parse_or_exit(flag_values, argv)


def apply_test_split_default(flag_values: flags.FlagValues) -> Optional[str]:
    """Sets ``--test_split``, when not given, to the split a run on ``--dataset`` tests on
    (:func:`epkd_tf.config.default_test_split`: ``test``, or ``validation`` for
    ImageNet, whose test split has no labels), so that flags.txt records it and a resume
    compares it as before.

    Args:
        flag_values: the parsed flags (``dataset``, ``test_split``).

    Returns:
        The line that says so when the split is not ``test``; None otherwise.
    """
    from epkd_tf.config import default_test_split
    if flag_values["test_split"].present:
        return None
    given = flag_values.dataset.strip()
    flag_values.test_split = default_test_split(given)
    if flag_values.test_split == "test":
        return None
    return (f"--dataset={given}: its test split has no labels; testing on "
            f"{flag_values.test_split!r} (give --test_split to choose)")


def differing_flags(old_text: str, new_text: str, flag_values: flags.FlagValues,
                    names) -> list:
    """Names of the flags whose value differs between a run's flags.txt (``old_text``) and
    now. A flag added after the run was written is absent from its flags.txt: the run used
    that flag's default, so only a non-default value differs. ``--output_dir`` names the
    run's own directory however it is spelt, so it never differs."""
    old, new = flag_lines(old_text, names), flag_lines(new_text, names)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)
                  and k != "output_dir"
                  and not (k not in old and flag_values[k].value == flag_values[k].default))


def prepare_output_dir(path: str, flags_text: str, flag_values: flags.FlagValues, names,
                       overwrite: bool, kind: str = "run", differing=None) -> None:
    """Before an entry point writes ``path`` (holding its lock): refuses a file, a
    non-empty directory that is not an epkd_tf ``kind`` (run, study), one written with
    different flags (naming them) and a finished one; with ``overwrite`` an existing one
    is emptied; an unfinished one with the same flags is left to resume. ``flags_text`` is
    what the entry point would write to flags.txt now; ``differing`` (old flags.txt ->
    names) compares them instead of :func:`differing_flags`. The decision is the
    library's (``epkd_tf.records.settings_record.examine``, shared with the Python API).
    Raises UsageError (or ``records.DamagedRunError`` for an unreadable progress.json or flags.txt)."""
    from epkd_tf.records import RunDir
    from epkd_tf.records import settings_record as record
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--output_dir={path} exists and is not a directory.")
    run = RunDir(path)
    if overwrite and os.path.exists(run.flags_file):
        run.clear()             # everything but the lock this process holds
        return
    differing = differing or (lambda old: differing_flags(old, flags_text, flag_values, names))
    found, differing = record.examine(run, differing)
    if found == record.FOREIGN:
        raise UsageError(f"--output_dir={path} is a non-empty directory that holds no "
                         f"epkd_tf {kind}; choose a new or empty directory.")
    if found == record.DIFFERENT:
        raise UsageError(f"--output_dir={path} holds a {kind} with different flags "
                         f"({', '.join(differing)}); use another --output_dir or --overwrite.")
    if found == record.FINISHED:
        raise UsageError(f"--output_dir={path} holds a finished {kind}; pass --overwrite to "
                         "run it again.")


# -- interruptions ---------------------------------------------------------------------
@contextlib.contextmanager
def interruptible():
    """While active, SIGTERM raises :class:`Terminated` (SIGINT raises KeyboardInterrupt,
    as always), so an entry point can end a run with one line instead of a traceback or a
    silent kill; the previous handler is restored afterwards."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_message(err: BaseException, kept: str, command: str) -> tuple:
    """(the one line, the exit status) after Ctrl-C (130) or SIGTERM (143)."""
    signal_name = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
    status = exit_status(err)
    return (f"interrupted ({signal_name}): {kept}; the same command resumes it: {command}",
            status)


def take_lock(held: contextlib.ExitStack, directory, flag_value: str) -> Optional[str]:
    """Takes ``directory``'s lock (a RunDir or StudyDir) into ``held``, for as long as the
    entry point runs (one process per directory); the one-line error (another process
    holds it, naming its PID; the directory cannot be written) or None."""
    from epkd_tf.records.locking import DirectoryBusyError
    try:
        held.enter_context(directory.lock())
    except DirectoryBusyError as err:
        return str(err)
    except OSError as err:
        return f"--output_dir={flag_value} cannot be written: {err.strerror}."
    return None


# -- what main and study check alike ------------------------------------------------------
def flags_text(cfg, flag_values: flags.FlagValues, names) -> str:
    """flags.txt: every flag of ``names`` the settings ``cfg`` use (not those they declare
    unused, e.g. the teacher-training flags with --teacher_path), as given."""
    from epkd_tf.settings import flag_values_of
    used = flag_values_of(cfg)
    return "".join(flag_values[name].serialize() + "\n" for name in names
                   if name in used and flag_values[name].value is not None)


def build_teacher(cfg, spec):
    """``--teacher`` (at ``--teacher_width``) built for the dataset's input shape and
    classes. Raises UsageError naming the teacher, the dataset and the reason."""
    from epkd_tf.models import build_model
    try:
        return build_model(cfg.teacher.teacher, spec.input_shape, spec.num_classes,
                           width=cfg.teacher.width)
    except (ValueError, TypeError) as err:
        # Keras shape errors span several lines; the user gets one.
        reason = " ".join(str(err).split())[:300]
        raise UsageError(f"--teacher={cfg.teacher.teacher} cannot be built for "
                         f"--dataset={cfg.data.dataset} with input shape {spec.input_shape}: "
                         f"{reason}") from err


def check_prunable(model, flag: str, pruners):
    """The channel graph of ``model`` when one of ``pruners`` is structured (else None).
    Raises UsageError naming ``flag`` and the layer structured pruning cannot handle."""
    from epkd_tf.graph import UnsupportedLayerError, analyze
    from epkd_tf.pruning import StructuredPruner
    if not any(isinstance(p, StructuredPruner) for p in pruners):
        return None
    try:
        return analyze(model)
    except UnsupportedLayerError as err:
        raise UsageError(f"{flag}: {err}") from err
