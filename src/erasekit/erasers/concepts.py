"""Concept names -> erase prompts, guides and templates (official defaults; a world's defaults come from
`erasekit.worlds.World.concept(name).request()` and `World.templates`).

The official closed-form recipes distinguish two kinds of concept: "art" (artists/styles: guide "art", art prompt
templates) and "object" (everything else: guide "" = the unconditional prompt, object templates).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidValueError

CONCEPT_TYPES = ("auto", "art", "object")

# UCE prompt expansion (5 templates per kind, as in the UCE paper-era scripts)
UCE_TEMPLATES = {
    "art": ("painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}"),
    "object": ("image of {}", "photo of {}", "portrait of {}", "picture of {}", "painting of {}"),
}

# MACE-style augmentation: short captions that contain the concept (our own wording of the paper's idea)
MACE_TEMPLATES = {
    "art": ("an artwork by {}", "a painting by {}", "art by {}", "a picture in the style of {}", "{}'s famous art",
            "a drawing by {}", "an illustration by {}", "a digital painting by {}", "a sketch in {}'s style",
            "a canvas by {}", "an image in the style of {}", "a famous work of {}"),
    "object": ("{}", "a picture of {}", "an image of {}", "a photo of {}", "a drawing of {}", "a painting of {}",
               "a sketch of {}", "an illustration of {}", "{} in a picture", "a close-up of {}",
               "a simple image of {}", "a detailed picture of {}"),
}


def concept_type(concepts: Sequence[str], declared: str = "auto", pipe: Any = None) -> str:
    """"art" or "object": `declared` unless "auto", then "art" iff the pipeline's world (its model card) says every
    concept is of kind "art" (a concept the world does not know is an "object")."""
    if declared not in CONCEPT_TYPES:
        from ..errors import UnknownNameError

        raise UnknownNameError("concept type", declared, CONCEPT_TYPES)
    if declared != "auto":
        return declared
    from ..worlds import get_world, resolve_concept, world_of_model

    world = world_of_model(pipe) if pipe is not None else get_world()
    kinds = [resolve_concept(world, c).kind for c in concepts]
    return "art" if kinds and all(k == "art" for k in kinds) else "object"


def default_guide(kind: str) -> str:
    """Official default guide: "art" for art, "" (the unconditional prompt) otherwise."""
    return "art" if kind == "art" else ""


def check_templates(templates: Sequence[str]) -> None:
    """Raise naming the first template without a "{}" placeholder for the concept."""
    for t in templates:
        if "{}" not in t:
            raise InvalidValueError(f"template {t!r} has no '{{}}' placeholder for the concept")


def expand(concepts: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Each concept followed by its templated prompts ("{}" is replaced by the concept)."""
    check_templates(templates)
    return [p for c in concepts for p in [c] + [t.format(c) for t in templates]]


def expanded_pairs(erase: Sequence[str], guides: Sequence[str], templates: Sequence[str] | None
                   ) -> tuple[list[str], list[str]]:
    """(erase prompts, guide prompts) with each erase prompt also inside every template (None: no expansion);
    each guide is repeated for its concept's templated prompts."""
    if templates is None:
        return list(erase), list(guides)
    return expand(erase, templates), [g for g in guides for _ in range(1 + len(templates))]
