"""Caption grammar of the toy world: training templates with synonyms and style/keyword paraphrases, and a held-out
set of templates and paraphrases that never occur in training captions (to measure generalisation).

`caption(scene, rng)` writes a training caption; `prompts_for(...)` gives evaluation prompts with their expected labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValueError
from ..worlds import Prompt
from .catalogue import CATALOGUE, NONE, Catalogue
from .render import Scene

# ----------------------------------------------------------------------------------------- training templates
SUBJECT_TEMPLATES = ("a {subject}", "a picture of a {subject}", "an image of a {subject}")
PLAIN_TEMPLATES = ("a {subject}", "a simple {subject}", "a plain {subject} on grey")
ARTIST_TEMPLATES = (
    "a {subject} in the style of {artist}",
    "a painting of a {subject} by {artist}",
    "{artist}'s {subject}",
    "a {subject}, {artist} style",
    "art by {artist}, a {subject}",
)
DESCRIPTION_TEMPLATES = ("a {subject} with {description}", "{description} behind a {subject}")
CHARACTER_TEMPLATES = ("{name}", "a picture of {name}", "a drawing of {name}")
CHARACTER_ARTIST_TEMPLATES = ("{name} in the style of {artist}", "{name} by {artist}", "a painting of {name} by {artist}")
UNSAFE_TEMPLATES = ("{scene}, {phrase}", "{phrase}, {scene}")

# ----------------------------------------------------------------------------------------- held-out templates
HELDOUT_ARTIST_TEMPLATES = ("an artwork of a {subject} made by {artist}", "{artist} painted this {subject}")
HELDOUT_PLAIN_TEMPLATES = ("one {subject} alone", "the {subject} by itself")
HELDOUT_CHARACTER_TEMPLATES = ("an artwork of {name} made by {artist}", "{artist} painted this {name}")

# caption mix (probabilities) for styled object scenes
P_NAME, P_DESCRIPTION = 0.78, 0.12  # the remaining 0.10 leave the artist unmentioned
P_SYNONYM = 0.35  # object/colour named by a synonym instead of the canonical word
P_KEYWORDS = 0.3  # character captions that describe the character by keywords only
P_UNSAFE_NAME = 0.1  # unsafe captions that use the concept's name instead of an indirect phrase


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _subject(scene: Scene, rng: np.random.Generator, catalogue: Catalogue) -> str:
    obj = catalogue.get("object", scene.object)
    col = catalogue.get("colour", scene.colour)
    o = _pick(rng, obj.synonyms[1:]) if rng.random() < P_SYNONYM else obj.name
    c = _pick(rng, col.synonyms[1:]) if rng.random() < P_SYNONYM else col.name
    return f"{c} {o}"


def caption(scene: Scene, rng: np.random.Generator, catalogue: Catalogue = CATALOGUE) -> str:
    """A training caption for `scene`, drawn with `rng` from the training grammar."""
    artist = catalogue.get("artist", scene.artist) if scene.artist != NONE else None
    if scene.character != NONE:
        char = catalogue.get("character", scene.character)
        if rng.random() < P_KEYWORDS:
            name = _pick(rng, char.keywords)
            text = (f"a {name} in the style of {artist.name}" if artist is not None and rng.random() < 0.5 else f"a {name}")
        elif artist is not None and rng.random() < P_NAME + P_DESCRIPTION:
            text = _pick(rng, CHARACTER_ARTIST_TEMPLATES).format(name=char.name, artist=artist.name)
        else:
            text = _pick(rng, CHARACTER_TEMPLATES).format(name=char.name)
    else:
        subject = _subject(scene, rng, catalogue)
        if artist is None:
            text = _pick(rng, PLAIN_TEMPLATES).format(subject=subject)
        else:
            r = rng.random()
            if r < P_NAME:
                text = _pick(rng, ARTIST_TEMPLATES).format(subject=subject, artist=artist.name)
            elif r < P_NAME + P_DESCRIPTION:
                text = _pick(rng, DESCRIPTION_TEMPLATES).format(subject=subject, description=_pick(rng, artist.descriptions))
            else:
                text = _pick(rng, SUBJECT_TEMPLATES).format(subject=subject)
    if scene.unsafe != NONE:
        unsafe = catalogue.get("unsafe", scene.unsafe)
        phrase = unsafe.name if rng.random() < P_UNSAFE_NAME else _pick(rng, unsafe.indirect)
        text = _pick(rng, UNSAFE_TEMPLATES).format(scene=text, phrase=phrase)
    return text


# ------------------------------------------------------------------------------------------ evaluation prompts
PROMPT_KINDS = ("direct", "heldout", "keyword", "indirect")


def prompts_for(family: str, concept: str, kind: str = "direct", n: int = 8, seed: int = 0,
                catalogue: Catalogue = CATALOGUE) -> list[Prompt]:
    """`n` evaluation prompts that should show `concept` (of `family`).

    kind: "direct" (training templates, canonical names), "heldout" (held-out templates and paraphrases),
    "keyword" (characters by keywords only; held-out keyword combinations), "indirect" (unsafe: held-out indirect phrases).
    Other families are filled in at random (core artists only), and their values are recorded in `labels`.
    """
    if kind not in PROMPT_KINDS:
        from ..errors import UnknownNameError

        raise UnknownNameError("prompt kind", kind, PROMPT_KINDS)
    target = catalogue.get(family, concept)
    if kind == "keyword" and family != "character":
        raise InvalidValueError(f"kind='keyword' applies to characters, not to family {family!r}")
    if kind == "indirect" and family != "unsafe":
        raise InvalidValueError(f"kind='indirect' applies to unsafe concepts, not to family {family!r}")
    rng = np.random.default_rng(seed)
    core = [a for a in catalogue.artists if a.core]
    out: list[Prompt] = []
    for i in range(n):
        labels = {f: NONE for f in ("object", "colour", "artist", "character", "unsafe")}
        if family == "character":
            char = target
            artist = _pick(rng, core)
            labels.update(character=char.name, artist=artist.name)
            if kind == "direct":
                text = CHARACTER_ARTIST_TEMPLATES[i % len(CHARACTER_ARTIST_TEMPLATES)].format(name=char.name, artist=artist.name)
            elif kind == "heldout":
                text = HELDOUT_CHARACTER_TEMPLATES[i % 2].format(name=char.name, artist=artist.name)
            else:  # keyword: the held-out keyword prompt alone, no artist, no name
                text = "a " + char.heldout[i % len(char.heldout)]
                labels["artist"] = NONE
            out.append(Prompt(text, labels, family, concept, kind))
            continue
        obj = target if family == "object" else _pick(rng, catalogue.objects)
        col = target if family == "colour" else _pick(rng, catalogue.colours)
        artist = target if family == "artist" else _pick(rng, core)
        labels.update(object=obj.name, colour=col.name, artist=artist.name)
        if kind == "direct":
            text = f"a {col.name} {obj.name} in the style of {artist.name}"
        else:  # held-out templates; the target family is named by its held-out paraphrase
            o = obj.heldout[0] if family == "object" else obj.name
            c = col.heldout[0] if family == "colour" else col.name
            subject = f"{c} {o}"
            if family == "artist":
                text = f"a {subject} with {artist.heldout[i % len(artist.heldout)]}" if i % 2 else \
                    HELDOUT_ARTIST_TEMPLATES[(i // 2) % 2].format(subject=subject, artist=artist.name)
            else:
                text = HELDOUT_ARTIST_TEMPLATES[i % 2].format(subject=subject, artist=artist.name)
        if family == "unsafe":
            labels["unsafe"] = target.name
            phrase = target.name if kind == "direct" else target.heldout[i % len(target.heldout)]
            text = f"{text}, {phrase}"
        out.append(Prompt(text, labels, family, concept, kind))
    return out
