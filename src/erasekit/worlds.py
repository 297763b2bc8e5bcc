"""Concept worlds: what the core asks about a concept, answered by a plugin.

This module (`erasekit.worlds`) is the core's protocol and registry; it names no particular world. The toy world is the
separate plugin package (`world/` beside this module), reached only through the lazy registration string below.

The core (erasers, attacks, shields, sampling, generation, evaluation, metrics, edits, report) never names a toy world.
Everything it needs to know about a concept comes through a `World`:

    world = get_world("toyworld")                  # a registered plugin (the shipped toy world is one)
    info = world.concept("zorbo")                  # ConceptInfo: canonical name, family, kind, keywords, defaults
    world.prompts("Zorbo", "direct", n=8, seed=0)  # evaluation prompts with the labels an evaluator should see
    world.evaluator                                # registered name of the judge of this world's images

A user's real model gets the same through `PromptListWorld`: a suite YAML's targets with their own prompt lists, a
registered evaluator (NudeNet, a callable), and defaults given as data. Third-party packages add worlds (and their
models and evaluators) through the entry-point group `erasekit.plugins`: each entry point is a callable run once,
before the first lookup, that registers what the package provides.

Optional capabilities return None / raise `UnsupportedError` when a world cannot provide them (a prompt list cannot
render images of a concept); callers then ask the user for them (e.g. few-shot erasing asks for `images=`).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ErasekitError, InvalidValueError, UnknownNameError
from .registry import Registry

NONE = "none"  # the label of "not shown"
# prompt kinds whose images should show the concept ("independent*": a world's evaluation grammar written apart from
# its training captions; appended last so the seeds of the earlier kinds stay as they were)
SHOWING_KINDS = ("direct", "heldout", "keyword", "indirect", "independent", "independent_keyword")
OTHER_KINDS = ("neighbours", "unrelated")  # prompt kinds of other concepts (specificity)
PROMPT_KINDS = SHOWING_KINDS + OTHER_KINDS
CONCEPT_KINDS = ("art", "object")  # the closed forms' official split: styles vs everything else


class UnsupportedError(ErasekitError):
    """A world cannot provide something (e.g. images of a concept from a prompt list); the message says what to pass."""


@dataclass(frozen=True)
class Prompt:
    """An evaluation prompt and the labels an evaluator should see in its images ({family: label}; NONE = not shown;
    an empty dict = nothing is known about what it shows)."""

    text: str
    labels: dict[str, str]
    family: str
    concept: str
    kind: str


@dataclass(frozen=True)
class ConceptInfo:
    """What a world knows about one concept.

    name: canonical name; family: the evaluator's family (head) that sees it; kind: "art" or "object" (the closed
    forms' official split); keywords: training-side phrases that evoke it without naming it (negative prompts,
    detectors, CopyCat); erase / guide / preserve: a world's default erase request (erase prompts, anchor, prompts to
    keep)."""

    name: str
    family: str
    kind: str = "object"
    keywords: tuple[str, ...] = ()
    erase: tuple[str, ...] = ()
    guide: str = ""
    preserve: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CONCEPT_KINDS:
            raise UnknownNameError("concept kind", self.kind, CONCEPT_KINDS)

    def request(self) -> dict[str, Any]:
        """The default erase request {"erase": [...], "guide": str, "preserve": [...]}."""
        return {"erase": list(self.erase or (self.name,)), "guide": self.guide, "preserve": list(self.preserve)}


@dataclass(frozen=True, eq=False)
class MemorizedPair:
    """A training image-caption pair its model saw `count` times (the ground truth of memorization): the caption, the
    image (H, W, 3) uint8, what it shows ({family: label}) and `references` (R, H, W, 3) uint8, other renderings of
    the same content (`erasekit.memorization.verbatim_copies` counts a generation as a copy only when it is closer to
    the image than all of them)."""

    caption: str
    image: np.ndarray
    count: int
    labels: dict[str, str]
    references: np.ndarray


class World:
    """A source of concepts, prompts and defaults. Subclasses implement `concept`, `concepts` and `prompts`;
    the rest have honest defaults (raise `UnsupportedError` or return nothing)."""

    name: str = ""
    model: str = ""  # registered model name or folder this world's suites run by default ("" = the user gives one)
    evaluator: str = ""  # registered evaluator name that judges this world's images

    # ---- required
    def concept(self, name: str) -> ConceptInfo:
        """The concept called `name` (case-insensitive); unknown names raise UnknownNameError with close matches."""
        raise NotImplementedError

    def concepts(self) -> dict[str, list[str]]:
        """{family: [concept names]} of every concept this world knows (for `erasekit ls concepts`)."""
        raise NotImplementedError

    def prompts(self, concept: str, kind: str, n: int, seed: int) -> list[Prompt]:
        """`n` prompts of `kind` (one of SHOWING_KINDS) for `concept`, deterministic in `seed`. Kinds that do not
        apply to the concept (e.g. "keyword" for an object) return []."""
        raise NotImplementedError

    # ---- optional
    def neighbours(self, concept: str, k: int, pipe: Any = None) -> list[str]:
        """Up to `k` concepts of the same family closest to `concept` (specificity). Default: none."""
        return []

    def unrelated(self, concept: str, n: int, seed: int) -> list[Prompt]:
        """`n` prompts of concepts of other families (specificity, image drift). Default: none."""
        return []

    def templates(self, concept: str, n: int, seed: int = 0) -> tuple[str, ...]:
        """`n` training-style prompt templates ("{}" = the concept) for erasers that expand prompts."""
        raise UnsupportedError(f"world {self.name!r} has no prompt templates for {concept!r}; pass templates=...")

    def retain_prompts(self, concept: str) -> list[str]:
        """Prompts an eraser should keep working (regularisers). Default: none (callers use their own default)."""
        return []

    def calibration_prompts(self, exclude: Sequence[str], n: int, seed: int) -> list[str]:
        """`n` prompts showing none of `exclude` (detector calibration), never the evaluation wording."""
        raise UnsupportedError(f"world {self.name!r} cannot draw calibration prompts; pass negatives=[...] or a "
                               "fixed threshold")

    def vocabulary(self, exclude: str = "") -> list[str]:
        """Candidate words for trigger searches (without the words of `exclude`)."""
        raise UnsupportedError(f"world {self.name!r} has no vocabulary; pass candidates=(...)")

    def images(self, concept: str, n: int, seed: int) -> np.ndarray:
        """(n, H, W, 3) uint8 images that show `concept` (few-shot erasers, inversion attacks)."""
        raise UnsupportedError(f"world {self.name!r} cannot draw images of {concept!r}; pass images=FOLDER_OR_NPY")

    def captioned_images(self, model: Any, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
        """`n` (n, H, W, 3) uint8 images of `model`'s training set with their training captions (a seeded draw):
        the data that methods re-captioning a model's training set fine-tune on (Geom-Erasing adds a detector's
        geometric tokens to them)."""
        raise UnsupportedError(f"world {self.name!r} does not know its model's training set; pass data=FILE.npz "
                               "(arrays images (N, H, W, 3) uint8 and captions (N,) str)")

    def caption(self, images: np.ndarray) -> list[str]:
        """One text per image ((N, H, W, 3) uint8) saying what it shows, in the wording this world's model was trained
        on: the captioner a watermark detector conditions its inversion on when the generation prompt is unknown
        (`erasekit.marks`, inversion_prompt="caption"). Default: none."""
        raise UnsupportedError(f"world {self.name!r} has no captioner; give the inversion prompts yourself "
                               "(detect(..., prompts=[...]) with inversion_prompt='given')")

    def training_counts(self, model: Any = None) -> dict[str, dict[str, int]] | None:
        """{family: {concept: training images}} when the world knows how `model` (a name, folder or pipeline; None =
        the world's own model) was trained, else None."""
        return None

    def training_images(self, concept: str, model: Any = None) -> np.ndarray | None:
        """(n, H, W, 3) uint8: the images of `concept` that `model` (None = the world's own model) was trained on (the
        imitation score compares generations with them), or None when the world does not know them."""
        return None

    def membership_pairs(self, concept: str, n: int, seed: int,
                         model: Any = None) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """Membership-inference ground truth for `concept`: (members (m, H, W, 3) uint8: up to `n` of `model`'s
        training images (None = the world's own model), non-members (m, H, W, 3) uint8: the same content drawn anew,
        never trained on, captions: the m training captions, used for both), deterministic in `seed`; None when the
        world does not know that model's training set."""
        return None

    def key_characteristics(self, concept: str) -> list[dict[str, str]]:
        """CopyCat's "key entity" of `concept` (He et al. 2024: a character's type of animal, or a human's age or
        occupation; Mario -> plumber) as evaluator labels: alternatives, each a {family: label} set that an image
        consistent with a prompt for the concept shows even when the protected concept itself is absent. The
        consistency metric (CONS) accepts the concept itself too. Default: none known (CONS then checks only the
        prompt's other requested labels)."""
        return []

    def memorized_pairs(self, model: Any = None, references: int = 16) -> list[MemorizedPair]:
        """The image-caption pairs `model` (a model folder, name or pipeline; None = the world's default model) was
        trained on many times, each with `references` other renderings of its content. Default: none known."""
        return []

    def identity(self) -> dict[str, Any]:
        """Recorded in every result that used this world."""
        return {"name": self.name}

    # ---- shared helpers
    def find(self, name: str) -> tuple[str, str]:
        """(family, canonical name) of a concept."""
        info = self.concept(name)
        return info.family, info.name

    def knows(self, name: str) -> bool:
        try:
            self.concept(name)
        except UnknownNameError:
            return False
        return True


# ------------------------------------------------------------------------------------------------ prompt lists
class PromptListWorld(World):
    """A world made of data: each target's own prompt lists ({target: {kind: [prompt, ...]}}, from a suite YAML),
    judged by the evaluator `evaluator` (whose `target(concept)` gives the family/label a showing prompt expects).

    Prompts are cycled to the requested count; showing kinds carry the label {family: label}; neighbours and
    unrelated prompts carry none (nothing is known about what they show, so they are scored by image drift).
    Concepts not listed fall back to `fallback` (a registered world) when given."""

    name = "prompt-lists"

    def __init__(self, prompts: Mapping[str, Mapping[str, Sequence[str]]], evaluator: Any = None,
                 fallback: World | None = None, defaults: Mapping[str, Mapping[str, Any]] | None = None):
        self._prompts = {t: {k: list(v) for k, v in sets.items()} for t, sets in prompts.items()}
        self._evaluator = evaluator
        self.fallback = fallback
        self.evaluator = getattr(evaluator, "name", "") or (fallback.evaluator if fallback else "")
        self.model = fallback.model if fallback else ""
        self._defaults = {k: dict(v) for k, v in (defaults or {}).items()}
        for t, d in self._defaults.items():
            unknown = set(d) - {"kind", "keywords", "erase", "guide", "preserve", "family"}
            if unknown:
                raise UnknownNameError(f"concept default of {t!r}", sorted(unknown)[0],
                                       ("kind", "keywords", "erase", "guide", "preserve", "family"))

    def _own(self, name: str) -> str | None:
        for t in self._prompts:
            if t.lower() == name.strip().lower():
                return t
        return None

    def concept(self, name: str) -> ConceptInfo:
        own = self._own(name)
        if own is None:
            if self.fallback is not None:
                return self.fallback.concept(name)
            raise UnknownNameError("concept", name, self._prompts)
        d = self._defaults.get(own, {})
        family = d.get("family")
        if family is None:
            family = self._evaluator.target(own)[0] if self._evaluator is not None else own
        return ConceptInfo(own, family, kind=d.get("kind", "object"), keywords=tuple(d.get("keywords", ())),
                           erase=tuple(d.get("erase", ())), guide=d.get("guide", ""),
                           preserve=tuple(d.get("preserve", ())))

    def concepts(self) -> dict[str, list[str]]:
        out = dict(self.fallback.concepts()) if self.fallback is not None else {}
        for t in self._prompts:
            out.setdefault(self.concept(t).family, []).append(t)
        return out

    def _label(self, concept: str) -> tuple[str, str]:
        if self._evaluator is not None:
            return self._evaluator.target(concept)
        return concept, concept

    def prompts(self, concept: str, kind: str, n: int, seed: int) -> list[Prompt]:
        own = self._own(concept)
        if own is None:
            if self.fallback is not None:
                return self.fallback.prompts(concept, kind, n, seed)
            raise UnknownNameError("concept", concept, self._prompts)
        return self._cycle(own, kind, n)

    def _cycle(self, own: str, kind: str, n: int) -> list[Prompt]:
        texts = self._prompts[own].get(kind) or []
        if not texts or n <= 0:
            return []
        family, label = self._label(own)
        labels = {family: label} if kind in SHOWING_KINDS else {}
        return [Prompt(texts[i % len(texts)], dict(labels), family, own, kind) for i in range(n)]

    def listed(self, concept: str, kind: str) -> int:
        """How many prompts of `kind` the target lists (0 if none; fallback concepts: 0)."""
        own = self._own(concept)
        return len(self._prompts[own].get(kind) or []) if own is not None else 0

    def own_prompts(self, concept: str, kind: str, n: int) -> list[Prompt]:
        """A listed target's `kind` prompts (neighbours/unrelated too), cycled to `n`."""
        own = self._own(concept)
        if own is None:
            raise UnknownNameError("target with prompts", concept, self._prompts)
        return self._cycle(own, kind, n)

    def templates(self, concept: str, n: int, seed: int = 0) -> tuple[str, ...]:
        if self._own(concept) is None and self.fallback is not None:
            return self.fallback.templates(concept, n, seed)
        return super().templates(concept, n, seed)

    def key_characteristics(self, concept: str) -> list[dict[str, str]]:
        if self._own(concept) is None and self.fallback is not None:
            return self.fallback.key_characteristics(concept)
        return []

    def memorized_pairs(self, model: Any = None, references: int = 16) -> list[MemorizedPair]:
        return self.fallback.memorized_pairs(model, references) if self.fallback is not None else []

    def caption(self, images: np.ndarray) -> list[str]:
        return self.fallback.caption(images) if self.fallback is not None else super().caption(images)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "targets": sorted(self._prompts),
                **({"fallback": self.fallback.identity()} if self.fallback is not None else {})}


class NoWorld(World):
    """The world of a model that comes with none: any text is its own concept (family = the text), with no prompts
    beyond the concept itself. Lets erasers, shields and attacks run on bare concept names."""

    name = "none"

    def concept(self, name: str) -> ConceptInfo:
        if not isinstance(name, str) or not name.strip():
            raise InvalidValueError(f"a concept must be a non-empty string, got {name!r}")
        return ConceptInfo(name.strip(), name.strip())

    def concepts(self) -> dict[str, list[str]]:
        return {}

    def prompts(self, concept: str, kind: str, n: int, seed: int) -> list[Prompt]:
        if kind != "direct" or n <= 0:
            return []
        c = self.concept(concept)
        return [Prompt(c.name, {c.family: c.name}, c.family, c.name, "direct") for _ in range(n)]


# ------------------------------------------------------------------------------------------------ registry
worlds: Registry[Any] = Registry("world")
# The built-in plugin's registration: the only place the core names it (lazy: nothing is imported until used).
worlds.add("toyworld", "erasekit.toyworld.plugin:ToyWorld",
           help="the shipped proving ground: shapes, colours, artists, characters, unsafe analogues, with an oracle")
worlds.add("none", NoWorld, help="no world: a concept is its own text (real models without a suite)")

_PLUGINS_LOADED: list[bool] = []  # entry points are loaded once per process


def load_plugins() -> None:
    """Run every `erasekit.plugins` entry point once (each registers its worlds, models and evaluators)."""
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED.append(True)
    for ep in importlib.metadata.entry_points(group="erasekit.plugins"):
        try:
            ep.load()()
        except Exception as e:  # a broken third-party plugin must not take the core down; say so
            import warnings

            warnings.warn(f"erasekit plugin {ep.name!r} ({ep.value}) failed to load: {e}", stacklevel=2)


def get_world(name: str | World | None = None) -> World:
    """A world by registered name (default "none"), or `name` itself when it already is one."""
    if isinstance(name, World):
        return name
    load_plugins()
    obj = worlds.get(name or "none")
    return obj() if isinstance(obj, type) else obj


WORLD_ATTRIBUTE = "_erasekit_world"  # set only by `attach_world`


def attach_world(pipe: Any, world: str) -> Any:
    """Declare which registered world an in-memory pipeline belongs to (a model loaded from a folder declares it in
    its erasekit.json instead); returns `pipe`. E.g. a test pipeline built in code that speaks the toy world."""
    worlds.get(world)  # unknown names raise with close matches
    setattr(pipe, WORLD_ATTRIBUTE, world)
    return pipe


def world_of_model(model: Any) -> World:
    """The world a model belongs to: `attach_world`'s declaration on a pipeline object, else the `world` of the
    model folder's erasekit.json (a name, folder or loaded pipeline), else "none"."""
    from .models import model_card

    declared = getattr(model, WORLD_ATTRIBUTE, None)
    if declared:
        return get_world(declared)
    card = model_card(model) if model is not None and model != "" else {}
    return get_world(card.get("world") or "none")


def resolve_concept(world: World, name: str) -> ConceptInfo:
    """`world.concept(name)`, or the bare text as its own concept when the world does not know it."""
    try:
        return world.concept(name)
    except UnknownNameError:
        return NoWorld().concept(name)


__all__ = ["CONCEPT_KINDS", "ConceptInfo", "MemorizedPair", "NONE", "NoWorld", "OTHER_KINDS", "PROMPT_KINDS", "Prompt",
           "PromptListWorld", "SHOWING_KINDS", "UnsupportedError", "World", "get_world", "load_plugins",
           "attach_world", "resolve_concept", "world_of_model", "worlds"]
