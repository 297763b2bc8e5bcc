"""One small registry: `register(name)`, `get(name)` with close-match suggestions, `names()`.

Entries may be objects or lazy "module:attr" strings, resolved on first `get` (so `erasekit ls` imports nothing heavy).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ErasekitError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of methods of one kind ("eraser", "attack", "shield", "model", ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        """Decorator: add `obj` under `name`; refuses duplicates."""

        def deco(obj: T) -> T:
            self.add(name, obj, help=help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0])
            return obj

        return deco

    def add(self, name: str, obj: T | str, help: str = "") -> None:
        if name in self._entries and self._entries[name] is not obj:
            existing = self._entries[name]
            if not (isinstance(existing, str) and not isinstance(obj, str)):
                raise ErasekitError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        if help or name not in self._help:
            self._help[name] = help

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self._entries)
        obj = self._entries[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
        return obj  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def describe(registry: Registry[Any]) -> list[tuple[str, str]]:
    """(name, one-line help) for every entry, for `erasekit ls`."""
    return [(n, registry.help(n)) for n in registry.names()]
