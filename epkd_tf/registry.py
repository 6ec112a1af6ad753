"""One small registry implementation for every pluggable part (pruners, models, dataset
recipes, temperature schedules, study methods, layer rules...).

A registry maps names to objects (usually classes or builder functions); a name is
registered once (a second registration is refused, so two plug-ins cannot silently
shadow each other), ``names()`` is sorted, and an unknown name gets one line that lists
the known ones and suggests the closest. It imports nothing heavy.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterator, List, Optional, Tuple, TypeVar
from epkd_tf.errors import ApiError, UnknownNameError  # noqa: F401

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plug-ins of one ``kind`` (e.g. "pruner")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str, obj: Optional[T] = None):
        """Registers ``obj`` as ``name``; without ``obj`` a decorator that does so.
        Raises ApiError (a ValueError) for an empty or already registered name."""
        if not isinstance(name, str) or not name.strip():
            raise ApiError(f"A {self.kind} name must be a non-empty string, got {name!r}.")

        def add(value: T) -> T:
            if name in self._entries:
                raise ApiError(f"{self.kind.capitalize()} {name!r} is registered twice.")
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Removes ``name`` (tests and interactive sessions re-registering a plug-in)."""
        self._entries.pop(name, None)

    def names(self) -> List[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def items(self) -> List[Tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> T:
        """The object registered as ``name``; UnknownNameError (one line) otherwise."""
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return (f"unknown {self.kind} {name!r}; {hint}choose from "
                f"{', '.join(self.names()) or '(none registered)'}")

    def name_of(self, obj: T) -> Optional[str]:
        """The name ``obj`` is registered under, if any."""
        return next((n for n, v in self._entries.items() if v is obj), None)


def registered_names(registry: "Registry") -> Callable[[], List[str]]:
    """A callable returning the registry's names when called (for settings checks that
    must see plug-ins registered after the settings class was defined)."""
    return registry.names
