"""Settings: one place for a setting's name, default, help and validation.

A settings class is a frozen dataclass derived from :class:`Settings`; every field is
declared with :func:`setting`, which holds its help text, its checks and the name of the
command-line flag that sets it. Everything else is derived:

* validation runs when an instance is made (types first, then each field's checks, then
  the class's cross-field ``validate``), and every error is a :class:`ConfigError` whose
  one-line message names the flag: ``--keep_ratio=1.5 is invalid: must lie in (0, 1).``;
* :func:`define_flags` turns a settings class (nested settings included) into absl flags
  whose defaults and help are the fields' own; :func:`from_flags` builds the instance back
  from parsed flags. Entry points call these two and nothing else, so a setting is written
  once (the approach of open_lth's ``hparams``).

This module imports nothing heavy (no TensorFlow): flags are parsed and validated before
TensorFlow loads, so a typo is answered at once.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple
from epkd_tf.errors import ConfigError  # noqa: F401


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return repr(",".join(str(v) for v in value))
    return repr(value)


@dataclasses.dataclass(frozen=True)
class Check:
    """A condition on one value and the reason shown when it fails."""

    ok: Callable[[Any], bool]
    reason: str

    def failure(self, value) -> Optional[str]:
        """None if ``value`` passes, else the reason."""
        try:
            good = bool(self.ok(value))
        except (TypeError, ValueError):
            good = False
        return None if good else self.reason


def at_least(lower, what: str = "") -> Check:
    return Check(lambda v: v >= lower, f"must be {what or 'a number'} >= {lower}")


def between(lower, upper, *, open_lower=False, open_upper=False, what="") -> Check:
    """``lower <= v <= upper`` (``<`` on an open side)."""
    lo = "(" if open_lower else "["
    hi = ")" if open_upper else "]"
    return Check(lambda v: (v > lower if open_lower else v >= lower)
                 and (v < upper if open_upper else v <= upper),
                 f"must lie in {lo}{lower:g}, {upper:g}{hi}{' (' + what + ')' if what else ''}")


POSITIVE = Check(lambda v: v > 0, "must be positive")
NON_NEGATIVE = Check(lambda v: v >= 0, "must be zero or positive")
NOT_BLANK = Check(lambda v: bool(str(v).strip()), "must not be empty")
NON_EMPTY = Check(lambda v: len(v) > 0, "name at least one")
DISTINCT = Check(lambda v: len(set(v)) == len(v), "a name is given twice")


@dataclasses.dataclass(frozen=True)
class OneOf(Check):
    """Each value (or the value) is one of ``names()``, resolved when checked so that
    plug-ins registered later count; the reason lists them and suggests the closest."""

    names: Callable[[], Sequence[str]] = lambda: ()
    what: str = "name"

    def failure(self, value) -> Optional[str]:
        values = value if isinstance(value, (tuple, list)) else (value,)
        known = list(self.names())
        bad = [v for v in values if v not in known]
        if not bad:
            return None
        close = difflib.get_close_matches(str(bad[0]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown {self.what} {bad[0]!r}; {hint}choose from {', '.join(known)}"


def one_of(names: Callable[[], Sequence[str]], what: str) -> Check:
    """See :class:`OneOf`."""
    return OneOf(ok=lambda v: True, reason="", names=names, what=what)


def setting(default, help: str, *, flag: Optional[str] = None,
            checks: Sequence[Check] = (), parse: Optional[Callable[[Any], Any]] = None,
            serialize: Optional[Callable[[Any], Any]] = None):
    """A field of a :class:`Settings` class.

    ``help`` is the flag's help; ``flag`` its name (default: the field's name);
    ``checks`` are applied to the value in order (None is always allowed for an Optional
    field); ``parse`` turns the flag's raw value into the field's (e.g. ``"1,3"`` into
    ``(1.0, 3.0)``) and may raise ValueError; ``serialize`` turns the field's value into
    the flag's default.
    """
    metadata = {"help": help, "flag": flag, "checks": tuple(checks), "parse": parse,
                "serialize": serialize}
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple (settings are immutable)")
    return dataclasses.field(default=default, metadata=metadata)


def nested(settings_class, *, default=None, flags: Optional[Dict[str, str]] = None):
    """A field holding a whole settings object; its settings become flags of the
    container. ``flags`` renames some of them (field name -> flag name) for this
    container; ``default``: a non-default instance."""
    value = default if default is not None else settings_class()
    return dataclasses.field(default=value, metadata={"nested": True,
                                                      "rename": dict(flags or {})})


class ByName(Mapping):
    """An immutable {name: settings object} mapping: the settings of every registered
    plug-in of one kind (e.g. each pruner's own settings)."""

    def __init__(self, items: Iterable[Tuple[str, Any]] = ()):
        self._items = dict(items)

    def __getitem__(self, name):
        return self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"ByName({self._items!r})"

    def replace(self, name: str, value) -> "ByName":
        return ByName({**self._items, name: value})


def per_name(entries: Callable[[], Iterable[Tuple[str, type]]]):
    """A field holding one settings object per registered plug-in: ``entries()`` gives
    (name, settings class) pairs, each made with its defaults. Their settings become flags
    of the container (each plug-in class names its own flags)."""
    return dataclasses.field(default_factory=lambda: ByName((n, cls()) for n, cls in entries()),
                             metadata={"per_name": True})


class Settings:
    """Base class of frozen settings dataclasses (see the module docstring).

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` and declare every field with
    :func:`setting` or :func:`nested`; they may override :meth:`validate` for checks that
    involve several fields (raise :meth:`invalid`).
    """

    def __post_init__(self):
        hints = _hints(type(self))
        for field in dataclasses.fields(self):
            if "help" not in field.metadata:
                if field.metadata.get("per_name"):
                    object.__setattr__(self, field.name, ByName(getattr(self, field.name)))
                continue
            value = getattr(self, field.name)
            value = _coerce(self, field, hints[field.name], value)
            for check in field.metadata["checks"]:
                reason = None if value is None else check.failure(value)
                if reason:
                    raise ConfigError(flag_name(field), value, reason)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise ``self.invalid(field_name, reason)``."""

    def invalid(self, field_name: str, reason: str) -> ConfigError:
        """A ConfigError naming the flag of ``field_name`` with its current value."""
        field = next(f for f in dataclasses.fields(self) if f.name == field_name)
        return ConfigError(flag_name(field), getattr(self, field_name), reason)

    def replace(self, **changes):
        """A validated copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def inactive(self) -> Tuple[str, ...]:
        """Names of fields that this instance does not use (left out of flags.txt), e.g.
        the teacher-training settings when a trained teacher is given."""
        return ()


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or field.name


_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls) -> Dict[str, Any]:
    if cls not in _HINTS:
        import sys
        module = sys.modules.get(cls.__module__)
        _HINTS[cls] = typing.get_type_hints(cls, vars(module) if module else None)
    return _HINTS[cls]


def _base_type(annotation) -> Tuple[Any, bool]:
    """(the type without Optional, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def _coerce(obj, field, annotation, value):
    """Checks the value's type (ints are accepted for floats, stored as float; a list for
    a tuple); raises ConfigError naming the flag."""
    base, optional = _base_type(annotation)
    flag = flag_name(field)
    if value is None:
        if optional:
            return None
        raise ConfigError(flag, value, "must be set")
    origin = typing.get_origin(base)
    if origin in (tuple, Tuple):
        if isinstance(value, str):
            # As the command line reads a list flag: "" is the empty list, blanks go.
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        elif isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple):
            raise ConfigError(flag, value, "must be a comma-separated list")
        item = typing.get_args(base)[0]
        value = tuple(_scalar(flag, item, v) for v in value)
    else:
        value = _scalar(flag, base, value)
    object.__setattr__(obj, field.name, value)
    return value


def _scalar(flag, kind, value):
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(flag, value, "must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(flag, value, "must be an integer")
        return int(value)
    if kind is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(flag, value, "must be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(flag, value, "must be a number")
        if not math.isfinite(value):
            raise ConfigError(flag, value, "must be a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(flag, value, "must be a string")
        return value.strip()
    return value


# -- flags -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Leaf:
    """One setting as a flag: where it lives in the settings tree and what it is."""

    path: Tuple[str, ...]           # field names from the root settings object
    flag: str
    field: dataclasses.Field
    annotation: Any
    default: Any                    # the field's value in the root's default instance


def leaves(settings, renames: Optional[Dict[str, str]] = None) -> Iterator[Leaf]:
    """Every setting of the settings object ``settings`` (nested ones included), with the
    flag that sets it, in declaration order."""
    renames = renames or {}
    hints = _hints(type(settings))
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.metadata.get("nested"):
            for leaf in leaves(value, {**field.metadata["rename"], **renames}):
                yield dataclasses.replace(leaf, path=(field.name,) + leaf.path)
        elif field.metadata.get("per_name"):
            for name, entry in value.items():
                for leaf in leaves(entry, renames):
                    yield dataclasses.replace(leaf, path=(field.name, name) + leaf.path)
        elif "help" in field.metadata:
            name = renames.get(field.name, flag_name(field))
            yield Leaf((field.name,), name, field, hints[field.name], value)


def _flag_default(leaf: Leaf):
    serialize = leaf.field.metadata.get("serialize")
    value = serialize(leaf.default) if serialize and leaf.default is not None else leaf.default
    if isinstance(value, tuple):
        return [str(v) for v in value]
    return value


def define_flags(defaults, flag_values) -> Tuple[str, ...]:
    """Defines one absl flag per setting of ``defaults`` (a settings instance whose values
    are the flags' defaults) in ``flag_values``; returns the flag names."""
    from absl import flags
    names = []
    for leaf in leaves(defaults):
        base, _ = _base_type(leaf.annotation)
        default, text = _flag_default(leaf), leaf.field.metadata["help"]
        kwargs = dict(flag_values=flag_values)
        if typing.get_origin(base) in (tuple, Tuple) or isinstance(default, list):
            flags.DEFINE_list(leaf.flag, default, text, **kwargs)
        elif base is bool:
            flags.DEFINE_bool(leaf.flag, default, text, **kwargs)
        elif base is int:
            flags.DEFINE_integer(leaf.flag, default, text, **kwargs)
        elif base is float and not leaf.field.metadata.get("parse"):
            flags.DEFINE_float(leaf.flag, default, text, **kwargs)
        else:
            flags.DEFINE_string(leaf.flag, None if default is None else str(default), text,
                                **kwargs)
        names.append(leaf.flag)
    return tuple(names)


def from_flags(defaults, flag_values, overrides: Optional[Dict[str, Any]] = None):
    """The settings object of ``type(defaults)`` that the parsed ``flag_values`` describe
    (``overrides``: flag name -> value used instead of the flag's). Raises ConfigError
    naming the flag of the first invalid value."""
    overrides = overrides or {}
    values: Dict[Tuple[str, ...], Any] = {}
    for leaf in leaves(defaults):
        raw = overrides.get(leaf.flag, flag_values[leaf.flag].value)
        parse = leaf.field.metadata.get("parse")
        if parse is not None and raw is not None:
            try:
                raw = parse(raw)
            except ValueError as err:
                raise ConfigError(leaf.flag, raw, str(err)) from None
        if isinstance(raw, list):
            raw = tuple(str(v).strip() for v in raw if str(v).strip())
        values[leaf.path] = raw
    return build(defaults, values)


def build(defaults, values: Dict[Tuple[str, ...], Any], renames=None):
    """``defaults`` with the settings at ``values``' paths replaced, validated bottom-up;
    a nested object's error is re-worded with the container's flag names."""
    renames = renames or {}
    changes = {}
    for field in dataclasses.fields(defaults):
        if field.metadata.get("nested"):
            inner = {path[1:]: v for path, v in values.items() if path[0] == field.name}
            rename = {**field.metadata["rename"], **renames}
            changes[field.name] = build(getattr(defaults, field.name), inner, rename)
        elif field.metadata.get("per_name"):
            entries = getattr(defaults, field.name)
            changes[field.name] = ByName(
                (name, build(entry, {path[2:]: v for path, v in values.items()
                                     if path[:2] == (field.name, name)}, renames))
                for name, entry in entries.items())
        elif (field.name,) in values:
            changes[field.name] = values[(field.name,)]
    try:
        return dataclasses.replace(defaults, **changes)
    except ConfigError as err:
        name = next((f.name for f in dataclasses.fields(defaults)
                     if flag_name(f) == err.flag), None)
        if name in renames:
            raise err.renamed(renames[name]) from None
        raise


def flag_values_of(settings) -> Dict[str, Any]:
    """{flag name: value} of every setting of a settings object (what its flags would be),
    skipping the settings its objects declare :meth:`Settings.inactive`."""
    result = {}

    def walk(obj, renames):
        inactive = set(obj.inactive())
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if field.metadata.get("nested"):
                walk(value, {**field.metadata["rename"], **renames})
            elif field.metadata.get("per_name"):
                for entry in value.values():
                    walk(entry, renames)
            elif "help" in field.metadata and field.name not in inactive:
                result[renames.get(field.name, flag_name(field))] = value

    walk(settings, {})
    return result


def with_flags(settings, **values):
    """A validated copy of ``settings`` with the settings named by their flags changed:
    the names a user knows from the command line, wherever the setting lives in the tree
    (``finetune_learning_rate`` is ``RunConfig().distill.learning_rate``, ``taylor_batches``
    the taylor criterion's ``batches``).

    Args:
      settings: a settings object (:class:`epkd_tf.RunConfig` or one of its parts).
      **values: new values by flag name (``keep_ratio=0.8``, ``pruners=("taylor",)``).

    Returns:
      A new settings object of the same class; ``settings`` is unchanged.

    Raises:
      ConfigError: a name is not a flag of ``settings`` (the message lists the known ones
        and suggests the closest), or a value is invalid (the message names its flag).

    Example::

        import epkd_tf

        config = epkd_tf.with_flags(epkd_tf.RunConfig(), keep_ratio=0.8, taylor_batches=2,
                                    finetune_learning_rate=1e-3)
        assert config.keep_ratio == 0.8 and config.distill.learning_rate == 1e-3
        assert config.pruning.criteria["taylor"].batches == 2
        try:
            epkd_tf.with_flags(config, keep_ration=0.5)
        except epkd_tf.ConfigError as err:
            print(err)      # --keep_ration=0.5 is invalid: no such setting; did you mean ...
    """
    by_flag = {leaf.flag: leaf for leaf in leaves(settings)}
    unknown = [name for name in values if name not in by_flag]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(by_flag), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(unknown[0], values[unknown[0]], f"no such setting; {hint}known: "
                                                          f"{', '.join(by_flag)}")
    return build(settings, {by_flag[name].path: value for name, value in values.items()})


def flags_markdown(defaults, extra=()) -> str:
    """The Markdown table of every flag of a settings object (name, default, help), as
    docs/flags.md shows it; ``extra``: (flag, default, help) rows of the command line alone.
    Generated, so docs/flags.md cannot drift from the settings (a test compares them)."""
    def shown(value) -> str:
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value) or "(empty)"
        return f"{value:g}" if isinstance(value, float) else str(value)

    rows = [(leaf.flag, shown(leaf.default), leaf.field.metadata["help"])
            for leaf in leaves(defaults)] + [(f, shown(d), h) for f, d, h in extra]
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    lines += [f"| `--{flag}` | `{default}` | {text.replace('|', '/')} |"
              for flag, default, text in rows]
    return "\n".join(lines)


def _shown_default(field: dataclasses.Field) -> str:
    if field.metadata.get("nested"):
        return f"a default :class:`{type(field.default).__name__}`"
    if field.default is None:
        return "unset (None)"
    return f"``{field.default!r}``"


def documented(cls):
    """Class decorator, outside ``@dataclasses.dataclass``: completes the docstring of a
    settings class with an ``Args:`` section generated from its fields (help, flag and
    default of each setting) and a ``Raises:`` section, placed before its ``Example::``
    section if it has one. ``help(RunConfig)`` then documents every setting, and the help
    text is still written once."""
    import inspect
    import textwrap
    lines = ["Args:"]
    for field in dataclasses.fields(cls):
        if field.metadata.get("nested"):
            text = (f"the {type(field.default).__name__} settings; "
                    f"default: {_shown_default(field)}.")
        elif field.metadata.get("per_name"):
            text = ("each registered pruner's own settings, by pruner name (``criteria"
                    "[name]``); set them by flag with :func:`epkd_tf.with_flags`.")
        elif "help" in field.metadata:
            text = (f"{field.metadata['help'].rstrip()} Flag ``--{flag_name(field)}``; "
                    f"default {_shown_default(field)}.")
        else:
            continue
        lines += textwrap.wrap(f"{field.name}: {text}", width=84, initial_indent="  ",
                               subsequent_indent="    ", break_on_hyphens=False)
    lines += ["", "Raises:"]
    lines += textwrap.wrap("ConfigError: a value is invalid (its type, its range, or "
                           "together with another setting); the one-line message names "
                           "the flag that sets it.", width=84, initial_indent="  ",
                           subsequent_indent="    ")
    doc = inspect.cleandoc(cls.__doc__ or "")
    head, example = (doc.split("Example::", 1) + [None])[:2]
    parts = [head.rstrip(), "\n".join(lines)]
    if example is not None:
        parts.append("Example::" + example.rstrip())
    cls.__doc__ = "\n\n".join(parts) + "\n"
    return cls


def default_of(settings_class, name: str):
    """The declared default of the setting ``name`` (a field name) of ``settings_class``:
    what a keyword of the Python API that stands for that setting defaults to, read from
    its one declaration rather than copied (``prune(learning_rate=...)`` defaults to
    ``default_of(DistillConfig, "learning_rate")``). KeyError for a name that is not a
    setting of the class."""
    for field in dataclasses.fields(settings_class):
        if field.name == name and "help" in field.metadata:
            return field.default
    raise KeyError(f"{settings_class.__name__} has no setting {name!r}")


def same_as(settings_class, name: str, **overrides):
    """A field that is the setting ``name`` of ``settings_class`` (its help, checks and
    flag name; its default unless ``default=`` is given): an entry point that takes the
    same setting declares it once. ``help=`` replaces the help, ``flag=`` the name."""
    source = next(f for f in dataclasses.fields(settings_class) if f.name == name)
    meta = dict(source.metadata)
    default = overrides.pop("default", source.default)
    for key in ("help", "flag"):
        if key in overrides:
            meta[key] = overrides.pop(key)
    if "checks" in overrides:
        meta["checks"] = tuple(overrides.pop("checks"))
    if overrides:
        raise TypeError(f"same_as: unknown overrides {sorted(overrides)}")
    return dataclasses.field(default=default, metadata=meta)
