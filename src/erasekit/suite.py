"""Evaluation suites as data: prompt sets, seeds, sampling settings and the evaluator, from a YAML file.

`load_suite("default")` reads the shipped `suites/toyworld-default.yaml`; any path to a YAML file works too. The
suite's sha256 (of its canonical JSON) goes into every result, so two results are comparable iff their hashes match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from .errors import InvalidValueError, UnknownNameError

SET_KINDS = ("direct", "heldout", "keyword", "indirect", "neighbours", "unrelated")
ALIASES = {"default": "toyworld-default"}


@dataclass(frozen=True)
class Suite:
    name: str
    targets: tuple[str, ...]
    samples: dict[str, int]
    steps: int = 25
    guidance: float | None = None
    seed: int = 0
    neighbours: int = 2
    attack_prompts: int = 8
    model: str = "toyworld"
    evaluator: str = "toyworld-oracle"
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, v in self.samples.items():
            if k not in SET_KINDS:
                raise UnknownNameError("prompt set", k, SET_KINDS)
            if not isinstance(v, int) or v < 0:
                raise InvalidValueError(f"samples.{k} must be a non-negative integer, got {v!r}")
        if self.steps < 1:
            raise InvalidValueError(f"sampling.steps must be >= 1, got {self.steps}")
        if not self.targets:
            raise InvalidValueError(f"suite {self.name!r} has no targets")
        from .world import CATALOGUE

        for t in self.targets:
            CATALOGUE.find(t)  # unknown concept -> UnknownNameError with suggestions

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def limited(self, limit: int | None) -> "Suite":
        """The same suite with every sample count capped at `limit` (for quick runs; changes the hash)."""
        if limit is None:
            return self
        if limit < 1:
            raise InvalidValueError(f"limit must be >= 1, got {limit}")
        d = asdict(self)
        d["samples"] = {k: min(v, limit) for k, v in self.samples.items()}
        d["attack_prompts"] = min(self.attack_prompts, limit)
        d["targets"] = tuple(d["targets"])
        return Suite(**d)


def shipped_suites() -> list[str]:
    root = resources.files("erasekit").joinpath("suites")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_suite(name_or_path: str = "default") -> Suite:
    """A shipped suite by name ("default" = "toyworld-default") or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        name = ALIASES.get(name_or_path, name_or_path)
        if name not in shipped_suites():
            raise UnknownNameError("suite", name_or_path, shipped_suites() + list(ALIASES))
        text = resources.files("erasekit").joinpath("suites", f"{name}.yaml").read_text()
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise InvalidValueError(f"suite {name_or_path!r} is not a YAML mapping")
    known = {"name", "description", "model", "evaluator", "sampling", "samples", "neighbours", "attack_prompts",
             "targets"}
    unknown = set(raw) - known
    if unknown:
        raise UnknownNameError("suite key", sorted(unknown)[0], known)
    sampling = raw.get("sampling") or {}
    for k in sampling:
        if k not in ("steps", "guidance", "seed"):
            raise UnknownNameError("sampling key", k, ("steps", "guidance", "seed"))
    return Suite(name=raw.get("name", str(name_or_path)), targets=tuple(raw.get("targets") or ()),
                 samples=dict(raw.get("samples") or {}), steps=int(sampling.get("steps", 25)),
                 guidance=sampling.get("guidance"), seed=int(sampling.get("seed", 0)),
                 neighbours=int(raw.get("neighbours", 2)), attack_prompts=int(raw.get("attack_prompts", 8)),
                 model=raw.get("model", "toyworld"), evaluator=raw.get("evaluator", "toyworld-oracle"),
                 description=(raw.get("description") or "").strip())
