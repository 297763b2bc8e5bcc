"""Errors that name the bad value and, where possible, the close valid ones."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ErasekitError(Exception):
    """Base class of every error erasekit raises on purpose."""


def suggest(value: str, valid: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of `value` among `valid`, or ''."""
    valid = list(valid)
    lowered = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(str(value).lower(), list(lowered), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean: " + ", ".join(repr(lowered[c]) for c in close) + "?"


def first_line(e: BaseException, limit: int = 400) -> str:
    """The first line of an exception's message (its type name when empty), cut at `limit` characters: what a
    one-line error report quotes of an underlying library's message."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return first if len(first) <= limit else first[:limit] + "..."


class UnknownNameError(ErasekitError, KeyError, ValueError):
    """A name (method, concept, model, suite...) that is not known; lists close matches."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        self.kind, self.name, self.valid = kind, name, valid
        shown = ", ".join(valid[:20]) + (" ..." if len(valid) > 20 else "")
        msg = f"unknown {kind} {name!r}.{suggest(name, valid)} Known {kind}s: {shown}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class InvalidValueError(ErasekitError, ValueError):
    """A value out of range or of the wrong shape; the message names it."""


class IntegrityError(ErasekitError, ValueError):
    """A file or tensor whose hash does not match what was recorded."""
