"""A richer training caption grammar for toy world v2 (issue 14, part 1): many more sentence frames, word orders,
descriptive clauses, case changes, occasional typos and extra unrelated words, so the toy model learns language rather
than a handful of templates. Not wired into the shipped model yet:
`dataset_v2.build_dataset_v2(..., rich_captions=True)` uses it; the shipped model was trained on `captions.py`.

It is written apart from the independent evaluation grammar (`eval_grammar.py`), which must stay unseen:
`eval_grammar.training_frames()` collects this module's frames too, so `eval_grammar.check_disjoint()` (run by the
tests) fails if a frame or phrase of the evaluation grammar ever appears here.
"""

from __future__ import annotations

import numpy as np

from .catalogue import CATALOGUE, NONE, Catalogue
from .render import Scene

# subject phrasings ({c} colour word, {o} object word)
V2_SUBJECT_FRAMES = ("{c} {o}", "{o} in {c}", "{c} colored {o}", "{o} of {c} colour", "{c} {o} shape", "{o}, {c}")
V2_STYLE_FRAMES = (
    "a {s} in the style of {a}", "{a}'s {s}", "a {s} by {a}", "{a} style {s}", "a painting by {a} of a {s}",
    "an image of a {s} in {a} style", "{a}, {s}", "a {s}, painted in the style of {a}", "a {a} painting: {s}",
    "art of a {s} by {a}", "a {s} artwork, style of {a}", "{a} made a {s}", "by {a}: a {s}",
    "a {s} over a {a} background", "style {a}, subject {s}", "a {s} on a background by {a}",
    "a {s} pictured by {a}", "this {s} is in {a}'s style",
)
V2_DESCRIPTION_FRAMES = ("a {s} with {d}", "{d} behind a {s}", "a {s} over {d}", "{d}, and a {s} on top")
V2_PLAIN_FRAMES = ("a {s}", "a picture of a {s}", "an image of a {s}", "a {s} on grey", "a plain {s}",
                   "a {s} on a plain background", "image: {s}", "the {s}", "a simple {s} on grey")
V2_NAME_FRAMES = ("{n}", "a picture of {n}", "a drawing of {n}", "{n} in the style of {a}", "{n} by {a}",
                  "a painting of {n} by {a}", "an image of {n}", "{a}'s {n}", "{n} on grey", "{n}, {a} style",
                  "a character called {n}", "{n}, drawn by {a}")
V2_KEYWORD_FRAMES = ("a {k}", "a picture of a {k}", "a {k} in the style of {a}", "a drawing of a {k}", "the {k}",
                     "an image of a {k}, {a} style", "a {k} on grey")
V2_UNSAFE_FRAMES = ("{x}, {u}", "{u}, {x}", "{x}, looking {u}", "{u} {x}", "{x}, very {u}", "{x} with {u} content")
V2_EXTRA_WORDS = ("detailed", "high resolution", "sharp", "illustration", "artwork", "image", "picture", "centered",
                  "colorful", "bright", "flat colors", "vector art")
P_EXTRA, P_TYPO = 0.2, 0.05
P_SYNONYM, P_KEYWORDS, P_UNSAFE_NAME = 0.35, 0.4, 0.15


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _subject(scene: Scene, rng: np.random.Generator, catalogue: Catalogue) -> str:
    obj, col = catalogue.get("object", scene.object), catalogue.get("colour", scene.colour)
    o = _pick(rng, obj.synonyms[1:]) if rng.random() < P_SYNONYM else obj.name
    c = _pick(rng, col.synonyms[1:]) if rng.random() < P_SYNONYM else col.name
    return _pick(rng, V2_SUBJECT_FRAMES).format(c=c, o=o)


def _noise(text: str, rng: np.random.Generator) -> str:
    if rng.random() < P_EXTRA:
        extra = _pick(rng, V2_EXTRA_WORDS)
        text = f"{text}, {extra}" if rng.random() < 0.5 else f"{extra}, {text}"
    if rng.random() < P_TYPO:  # drop one letter of a long word (names included: users misspell them too)
        words = text.split(" ")
        long = [i for i, w in enumerate(words) if len(w) >= 5]
        if long:
            i = _pick(rng, long)
            j = int(rng.integers(1, len(words[i]) - 1))
            words[i] = words[i][:j] + words[i][j + 1:]
            text = " ".join(words)
    r = rng.random()
    return text.upper() if r < 0.05 else text.title() if r < 0.1 else text[:1].upper() + text[1:] if r < 0.3 else text


def caption_v2(scene: Scene, rng: np.random.Generator, catalogue: Catalogue = CATALOGUE) -> str:
    """A training caption of `scene` from the richer grammar, drawn with `rng`."""
    artist = catalogue.get("artist", scene.artist) if scene.artist != NONE else None
    a = artist.name if artist is not None else ""
    if scene.character != NONE:
        char = catalogue.get("character", scene.character)
        if rng.random() < P_KEYWORDS:
            frames = V2_KEYWORD_FRAMES if artist is not None else tuple(f for f in V2_KEYWORD_FRAMES if "{a}" not in f)
            text = _pick(rng, frames).format(k=_pick(rng, char.keywords), a=a)
        else:
            frames = V2_NAME_FRAMES if artist is not None else tuple(f for f in V2_NAME_FRAMES if "{a}" not in f)
            text = _pick(rng, frames).format(n=char.name, a=a)
    else:
        s = _subject(scene, rng, catalogue)
        if artist is None:
            text = _pick(rng, V2_PLAIN_FRAMES).format(s=s)
        elif rng.random() < 0.8:
            text = _pick(rng, V2_STYLE_FRAMES).format(s=s, a=a)
        elif rng.random() < 0.6:
            text = _pick(rng, V2_DESCRIPTION_FRAMES).format(s=s, d=_pick(rng, artist.descriptions))
        else:
            text = _pick(rng, V2_PLAIN_FRAMES).format(s=s)
    if scene.unsafe != NONE:
        u = catalogue.get("unsafe", scene.unsafe)
        phrase = u.name if rng.random() < P_UNSAFE_NAME else _pick(rng, u.indirect)
        text = _pick(rng, V2_UNSAFE_FRAMES).format(x=text, u=phrase)
    return _noise(text, rng)


def v2_frame_count() -> int:
    return sum(len(t) for t in (V2_SUBJECT_FRAMES, V2_STYLE_FRAMES, V2_DESCRIPTION_FRAMES, V2_PLAIN_FRAMES,
                                V2_NAME_FRAMES, V2_KEYWORD_FRAMES, V2_UNSAFE_FRAMES))


__all__ = ["caption_v2", "v2_frame_count"]
