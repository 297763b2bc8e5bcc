"""Concept names -> erase prompts, guides and preserve sets (official defaults, and the toy world's catalogue).

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


def concept_type(concepts: Sequence[str], declared: str = "auto") -> str:
    """"art" or "object": `declared` unless "auto", then "art" iff every concept is a toy-world artist."""
    if declared not in CONCEPT_TYPES:
        from ..errors import UnknownNameError

        raise UnknownNameError("concept type", declared, CONCEPT_TYPES)
    if declared != "auto":
        return declared
    from ..world import CATALOGUE

    families = []
    for c in concepts:
        try:
            families.append(CATALOGUE.find(c)[0])
        except KeyError:
            families.append(None)
    return "art" if families and all(f == "artist" for f in families) else "object"


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


def toyworld_request(concept: str) -> dict:
    """Toy-world defaults for erasing `concept` (a catalogue name): erase prompts, guide, preserve prompts.

    artist -> erase the name, guide "art", preserve the other core artists; character -> guide "", preserve the other
    characters; object/colour -> guide "", preserve the other members of the family; unsafe -> erase the name and its
    training phrases (an I2P-style list), guide "", preserve nothing.
    """
    from ..world import CATALOGUE

    family, c = CATALOGUE.find(concept)
    table = CATALOGUE.items_by_family()[family]
    if family == "artist":
        others = [a.name for a in table if a.core and a.name != c.name]
        return {"erase": [c.name], "guide": "art", "preserve": others}
    if family == "unsafe":
        return {"erase": [c.name, *c.indirect], "guide": "", "preserve": []}
    return {"erase": [c.name], "guide": "", "preserve": [x.name for x in table if x.name != c.name]}


def toyworld_templates(concept: str, n: int = 8, seed: int = 0) -> tuple[str, ...]:
    """`n` prompt templates ("{}" = the concept) drawn from the toy world's *training* caption grammar for the
    concept's family, other slots filled at random (seeded). Held-out templates are never used, so generality can
    still be measured on them."""
    import numpy as np

    from ..world import CATALOGUE
    from ..world.captions import ARTIST_TEMPLATES, CHARACTER_ARTIST_TEMPLATES, CHARACTER_TEMPLATES, UNSAFE_TEMPLATES

    family, _ = CATALOGUE.find(concept)
    rng = np.random.default_rng(seed)
    core = [a.name for a in CATALOGUE.artists if a.core]

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def subject() -> str:
        return f"{pick(CATALOGUE.colours).name} {pick(CATALOGUE.objects).name}"

    out: list[str] = []
    for i in range(n):
        if family == "artist":
            out.append(ARTIST_TEMPLATES[i % len(ARTIST_TEMPLATES)].format(subject=subject(), artist="{}"))
        elif family == "character":
            table = CHARACTER_TEMPLATES + CHARACTER_ARTIST_TEMPLATES
            out.append(table[i % len(table)].format(name="{}", artist=pick(core)))
        elif family == "unsafe":
            scene = f"a {subject()}" + (f" in the style of {pick(core)}" if i % 2 else "")
            out.append(UNSAFE_TEMPLATES[i % len(UNSAFE_TEMPLATES)].format(scene=scene, phrase="{}"))
        elif family == "object":
            colour = pick(CATALOGUE.colours).name
            out.append(f"a {colour} {{}}" + (f" in the style of {pick(core)}" if i % 2 else ""))
        else:  # colour
            obj = pick(CATALOGUE.objects).name
            out.append(f"a {{}} {obj}" + (f" in the style of {pick(core)}" if i % 2 else ""))
    return tuple(dict.fromkeys(out))


def toyworld_hooks(concept: str, oracle: Any, n_prompts: int = 4, seeds: Sequence[int] = (0, 1), **kw: Any) -> Any:
    """`TrainHooks` whose early-stop check is "the toy oracle sees `concept`" on `n_prompts` direct toy-world prompts
    x `seeds` (sampling settings of the toy model's manifest); `kw` sets other hook fields (progress, ...)."""
    from ..attacks import default_prompts, oracle_check
    from ..sampling import default_guidance
    from ..world import CATALOGUE
    from ._training import TrainHooks

    family, c = CATALOGUE.find(concept)
    _, prompts = default_prompts(c.name, n_prompts, 0)
    kw.setdefault("guidance", default_guidance("toyworld"))
    return TrainHooks(check=oracle_check(oracle, family, c.name), check_prompts=tuple(prompts),
                      check_seeds=tuple(seeds), **kw)
