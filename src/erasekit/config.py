"""Method configs (frozen dataclasses with `field(metadata={"help": ...})`): build them from keyword options, list
them, and parse CLI "key=value" strings — one implementation for erasers, attacks and shields."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InvalidValueError, UnknownNameError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def make_config(label: str, config_cls: type, options: Mapping[str, Any]) -> Any:
    """`config_cls(**options)`; an unknown key raises UnknownNameError("<label> option", ...) with close matches."""
    names = [f.name for f in dataclasses.fields(config_cls)]
    for key in options:
        if key not in names:
            raise UnknownNameError(f"{label} option", key, names)
    hints = typing.get_type_hints(config_cls)
    clean = {k: tuple(v) if typing.get_origin(hints[k]) is tuple and isinstance(v, list) else v
             for k, v in options.items()}  # JSON/YAML give lists where the config wants tuples
    for k, v in clean.items():
        for x in (v if isinstance(v, tuple) else (v,)):
            if isinstance(x, float) and not math.isfinite(x):
                raise InvalidValueError(f"{label} option {k}={x!r} is not a finite number")
    return config_cls(**clean)


def config_options(config_cls: type) -> list[tuple[str, str, str]]:
    """(name, default, help) of each option of a config dataclass."""
    return [(f.name, repr(f.default), f.metadata.get("help", "")) for f in dataclasses.fields(config_cls)]


def check_choice(name: str, value: Any, valid: Sequence[Any]) -> None:
    """Raise InvalidValueError naming `value` and the close valid ones when it is not one of `valid`."""
    if value not in valid:
        from .errors import suggest

        raise InvalidValueError(f"{name}={value!r} is not one of {tuple(valid)}.{suggest(str(value), valid)}")


def check_min(config: Any, minimum: float, *names: str, strict: bool = False) -> None:
    """Raise InvalidValueError for the first option of `config` below `minimum` (at or below it when `strict`)."""
    for name in names:
        value = getattr(config, name)
        if value is None or (value <= minimum if strict else value < minimum):
            raise InvalidValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


class Configurable:
    """Mixin of registered methods (erasers, attacks) that have a `name` and a `config_cls`."""

    name: str
    config_cls: type

    def make_config(self, options: Mapping[str, Any]) -> Any:
        """The config with `options` applied; unknown keys raise UnknownNameError with close matches."""
        return make_config(self.name, self.config_cls, options)

    def options(self) -> list[tuple[str, str, str]]:
        """(name, default, help) of each config option."""
        return config_options(self.config_cls)


def _scalar(tp: Any, text: str, key: str) -> Any:
    if tp is bool:
        low = text.strip().lower()
        if low in TRUE or low in FALSE:
            return low in TRUE
        raise InvalidValueError(f"option {key}={text!r} is not a boolean (true/false)")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise InvalidValueError(f"option {key}={text!r} is not a{'n' if tp is int else ''} {tp.__name__}") from None
    return text


def parse_options(label: str, config_cls: type, pairs: Sequence[str], tuple_sep: str = ",") -> dict[str, Any]:
    """CLI "key=value" strings -> typed options of `config_cls` (tuples: `tuple_sep`-separated; "none" for
    optionals). A key given twice is an error."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise InvalidValueError(f"option {pair!r} is not of the form key=value")
        if key not in names:
            raise UnknownNameError(f"{label} option", key, names)
        if key in out:
            raise InvalidValueError(f"{label}: option {key!r} given twice")
        tp = hints[key]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            if value.strip().lower() in ("none", "null", ""):
                out[key] = None
                continue
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if typing.get_origin(tp) is tuple:
            item = (typing.get_args(tp) or (str,))[0]
            out[key] = tuple(_scalar(item, p.strip(), key) for p in value.split(tuple_sep) if p.strip())
        else:
            out[key] = _scalar(tp, value, key)
    return out


def parse_spec_options(label: str, config_cls: type, opts: str, primary: str | None = None) -> dict[str, Any]:
    """The option part of a spec string ("strong,warmup_steps=3" in "sld:strong,warmup_steps=3") -> typed options.

    Options are comma-separated key=value pairs (tuples: ";"-separated); a bare first value sets `primary`."""
    pairs = []
    for part in [p.strip() for p in opts.split(",") if p.strip()] if opts else []:
        if "=" not in part:
            if primary is None or any(q.partition("=")[0].strip() == primary for q in pairs):
                names = [f.name for f in dataclasses.fields(config_cls)]
                raise InvalidValueError(f"{label}: option {part!r} needs the form key=value (options: "
                                        f"{', '.join(names)})")
            part = f"{primary}={part}"
        pairs.append(part)
    return parse_options(label, config_cls, pairs, tuple_sep=";")
