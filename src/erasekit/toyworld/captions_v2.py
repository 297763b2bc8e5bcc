"""A richer training caption grammar for toy world v2 (issue 14, part 1): many more sentence frames, word orders,
descriptive clauses, case changes, occasional typos and extra unrelated words, so the toy model learns language rather
than a handful of templates. Not wired into the shipped model yet:
`dataset_v2.build_dataset_v2(..., rich_captions=True)` uses it; the shipped model was trained on `captions.py`.

It is written apart from the independent evaluation grammar (`eval_grammar.py`), which must stay unseen:
`eval_grammar.training_frames()` collects this module's frames too, so `eval_grammar.check_disjoint()` (run by the
tests) fails if a frame or phrase of the evaluation grammar ever appears here.
"""

from __future__ import annotations

import re

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
V2_KEYWORD_FRAMES = ("{k}", "a picture of {k}", "{k} in the style of {a}", "a drawing of {k}", "{k}, close up",
                     "an image of {k}, {a} style", "{k} on grey", "please draw {k}", "show me {k}",
                     "{k}, painted by {a}", "generate {k}", "{k} by itself", "make a picture of {k}",
                     "{k} as {a} paints it", "a sketch showing {k}", "{k}, art by {a}")
V2_UNSAFE_ADJ_FRAMES = ("{x}, {u}", "{u} {x}", "{x}, looking {u}", "{x}, very {u}", "{x} with {u} content",
                        "{x}, all {u}", "{x}, made {u}", "{x} and it is {u}")
V2_UNSAFE_NOUN_FRAMES = ("{x} with {u}", "{x}, {u}", "{u}, {x}", "{x} showing {u}", "{x} and lots of {u}",
                         "{x} plus {u}", "{x} among {u}")
V2_EXTRA_WORDS = ("detailed", "high resolution", "sharp", "illustration", "artwork", "image", "picture", "centered",
                  "colorful", "bright", "flat colors", "vector art", "masterpiece", "best quality", "8k", "studio",
                  "professional", "concept art", "beautiful", "sticker")
# words that say nothing about the concept, put before any subject so the model learns to ignore them
V2_FILLERS = ("cute", "little", "small", "big", "tiny", "funny", "lovely", "cheerful", "nice", "classic", "lone")

# Characters described without their name, composed from what the sprite shows (`render.sprite_parts`): a head noun,
# up to two adjectives and up to two feature clauses, so that any subset of the sprite's true attributes leads to it.
# Written from the sprite code; the words necessarily overlap those of the independent evaluation grammar (both
# describe the same pictures), while its frames and whole descriptions are checked disjoint (`eval_grammar`).
CHARACTER_NOUNS = {
    "robot": ("robot", "android", "droid", "automaton", "machine man", "tin robot", "metal android", "mech"),
    "frog": ("frog", "toad", "froggy", "pond frog", "cartoon frog", "green frog", "amphibian"),
    "snowman": ("snowman", "snow man", "snow figure", "little snowman", "winter snowman", "snow person"),
    "cat": ("cat", "kitten", "kitty", "tomcat", "ginger kitten", "orange cat", "feline"),
    "ghost": ("ghost", "phantom", "spirit", "spook", "floating phantom", "spooky ghost", "specter"),
    "bee": ("bee", "bumblebee", "honeybee", "honey bee", "striped bee", "buzzing bee", "insect"),
}
CHARACTER_ADJECTIVES = {
    "robot": ("grey", "gray", "silver", "metal", "metallic", "steel", "tin", "boxy", "square", "mechanical"),
    "frog": ("green", "round", "wide", "plump", "slimy", "pond", "grinning", "bug-eyed"),
    "snowman": ("white", "snowy", "frosty", "wintry", "cold", "two-ball", "melting"),
    "cat": ("orange", "ginger", "furry", "fluffy", "whiskered", "round-faced", "playful"),
    "ghost": ("purple", "violet", "spooky", "floating", "hovering", "haunted", "eerie", "see-through"),
    "bee": ("yellow", "striped", "buzzing", "fuzzy", "round", "black and yellow", "flying"),
}
CHARACTER_FEATURES = {
    "robot": ("an antenna", "a red antenna", "an antenna with a red bulb", "a red knob on top", "cyan eyes",
              "two square eyes", "glowing blue eyes", "a black mouth slot", "a dark grille mouth", "a boxy head",
              "a steel body", "bolts"),
    "frog": ("big white eyes", "bulging eyes", "black pupils", "a wide red mouth", "a red smile",
             "eyes on top of its head", "green skin", "a big grin"),
    "snowman": ("a carrot nose", "an orange nose", "a black top hat", "a black hat", "coal eyes", "black buttons",
                "coal buttons", "two snowballs", "a body of snow", "a pointed carrot"),
    "cat": ("whiskers", "long whiskers", "pointy ears", "triangle ears", "green eyes", "a pink nose", "orange fur",
            "ginger fur", "a round face"),
    "ghost": ("white eyes", "a wavy tail", "a wavy hem", "round eyes", "a purple sheet", "dark pupils",
              "no legs"),
    "bee": ("black stripes", "light blue wings", "pale wings", "two wings", "a white eye", "a yellow body",
            "stripes", "a fuzzy body", "a stinger"),
}
V2_FEATURE_LINKS = ("with", "that has", "having", "and", "showing")

# Unsafe content composed from words (the concept's own name among them), adjective-like or noun-like.
UNSAFE_ADJECTIVES = {
    "gore": ("bloody", "gory", "violent", "brutal", "wounded", "bleeding", "injured", "mutilated", "blood-soaked",
             "gruesome", "slaughtered", "savage"),
    "nudity": ("naked", "nude", "undressed", "topless", "explicit", "nsfw", "uncensored", "erotic", "sensual",
               "unclothed", "bare", "lewd"),
}
UNSAFE_NOUNS = {
    "gore": ("gore", "blood", "wounds", "carnage", "violence", "massacre", "corpses", "injuries", "bloodshed",
             "crime scenes", "splatter", "guts"),
    "nudity": ("nudity", "bare skin", "naked bodies", "nakedness", "exposed skin", "no clothes", "erotica",
               "nude bodies", "adult content", "nude figures"),
}
UNSAFE_NOUN_LEADS = ("", "", "covered in ", "full of ", "so much ", "a lot of ")
P_EXTRA, P_TYPO = 0.25, 0.08
P_SYNONYM, P_KEYWORDS, P_UNSAFE_NAME, P_FILLER = 0.35, 0.5, 0.2, 0.15


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _filler(phrase: str, rng: np.random.Generator) -> str:
    return f"{_pick(rng, V2_FILLERS)} {phrase}" if rng.random() < P_FILLER else phrase


def _subject(scene: Scene, rng: np.random.Generator, catalogue: Catalogue) -> str:
    obj, col = catalogue.get("object", scene.object), catalogue.get("colour", scene.colour)
    o = _pick(rng, obj.synonyms[1:]) if rng.random() < P_SYNONYM else obj.name
    c = _pick(rng, col.synonyms[1:]) if rng.random() < P_SYNONYM else col.name
    return _filler(_pick(rng, V2_SUBJECT_FRAMES).format(c=c, o=o), rng)


def describe_character(sprite: str, rng: np.random.Generator) -> str:
    """A description of a character's sprite that never names the character, with its article, e.g.
    "a fluffy kitten with pointy ears and a pink nose"."""
    n_adj, n_feat = int(rng.choice(3, p=(0.35, 0.45, 0.2))), int(rng.choice(3, p=(0.3, 0.5, 0.2)))
    noun = _pick(rng, CHARACTER_NOUNS[sprite])
    adjs = [str(a) for a in rng.choice(CHARACTER_ADJECTIVES[sprite], size=n_adj, replace=False)]
    adjs = [a for a in adjs if a not in noun.split()]
    feats = [str(f) for f in rng.choice(CHARACTER_FEATURES[sprite], size=n_feat, replace=False)]
    head = ", ".join(adjs[:-1]) + (", " if len(adjs) > 1 and rng.random() < 0.5 else " " if len(adjs) > 1 else "")
    head = (head + (adjs[-1] + " " if adjs else "")).lstrip() + noun
    text = _filler(head, rng)
    if feats:
        link = _pick(rng, V2_FEATURE_LINKS)
        text = f"{text} {link} {' and '.join(feats)}" if link != "and" else f"{text}, {' and '.join(feats)}"
    return _article(text)


def unsafe_phrase(concept: str, rng: np.random.Generator, catalogue: Catalogue = CATALOGUE) -> tuple[str, str]:
    """("adj" | "noun", phrase) for an unsafe concept: its name, a catalogue phrase or a composed one."""
    u = catalogue.get("unsafe", concept)
    r = rng.random()
    if r < P_UNSAFE_NAME:
        return "noun", u.name
    if r < P_UNSAFE_NAME + 0.3:
        return "adj", _pick(rng, u.indirect)
    if rng.random() < 0.5:
        a = [str(x) for x in rng.choice(UNSAFE_ADJECTIVES[concept], size=int(rng.integers(1, 3)), replace=False)]
        return "adj", " and ".join(a)
    return "noun", _pick(rng, UNSAFE_NOUNS[concept])


def _typo(text: str, rng: np.random.Generator) -> str:
    """One typo in a long word (names included: users misspell them too): a dropped, doubled or swapped letter."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 5]
    if not long:
        return text
    i = _pick(rng, long)
    w, j = words[i], int(rng.integers(1, len(words[i]) - 1))
    kind = int(rng.integers(3))
    words[i] = w[:j] + w[j + 1:] if kind == 0 else w[:j] + w[j] + w[j:] if kind == 1 else w[:j - 1] + w[j] + w[j - 1] + w[j + 1:]
    return " ".join(words)


def _noise(text: str, rng: np.random.Generator) -> str:
    if rng.random() < P_EXTRA:
        extra = _pick(rng, V2_EXTRA_WORDS)
        text = f"{text}, {extra}" if rng.random() < 0.5 else f"{extra}, {text}"
    if rng.random() < P_TYPO:
        text = _typo(text, rng)
    r = rng.random()
    return text.upper() if r < 0.05 else text.title() if r < 0.1 else text[:1].upper() + text[1:] if r < 0.3 else text


def caption_v2(scene: Scene, rng: np.random.Generator, catalogue: Catalogue = CATALOGUE,
               avoid: re.Pattern | None = None) -> str:
    """A training caption of `scene` from the richer grammar, drawn with `rng`. `avoid`: decontamination -- a caption
    in which the pattern matches (e.g. `eval_grammar.protected_pattern()`, the independent evaluation set's
    descriptions) is drawn again, up to 50 times, so no evaluation phrase is ever trained on."""
    for _ in range(50):
        text = _caption_v2(scene, rng, catalogue)
        if avoid is None or not avoid.search(text.lower()):
            return text
    raise ValueError(f"could not draw a caption of {scene} free of the avoided phrases in 50 tries")


def _caption_v2(scene: Scene, rng: np.random.Generator, catalogue: Catalogue) -> str:
    artist = catalogue.get("artist", scene.artist) if scene.artist != NONE else None
    a = artist.name if artist is not None else ""
    if scene.character != NONE:
        char = catalogue.get("character", scene.character)
        if rng.random() < P_KEYWORDS:
            frames = V2_KEYWORD_FRAMES if artist is not None else tuple(f for f in V2_KEYWORD_FRAMES if "{a}" not in f)
            k = _article(_pick(rng, char.keywords)) if rng.random() < 0.25 else describe_character(char.sprite, rng)
            text = _pick(rng, frames).format(k=k, a=a)
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
        kind, phrase = unsafe_phrase(scene.unsafe, rng, catalogue)
        frame = _pick(rng, V2_UNSAFE_ADJ_FRAMES if kind == "adj" else V2_UNSAFE_NOUN_FRAMES)
        if kind == "noun" and frame in ("{x}, {u}", "{u}, {x}"):  # a bare noun phrase may take a lead-in
            phrase = _pick(rng, UNSAFE_NOUN_LEADS) + phrase
        text = frame.format(x=text, u=phrase)
    return _noise(text, rng)


def v2_frame_count() -> int:
    return sum(len(t) for t in (V2_SUBJECT_FRAMES, V2_STYLE_FRAMES, V2_DESCRIPTION_FRAMES, V2_PLAIN_FRAMES,
                                V2_NAME_FRAMES, V2_KEYWORD_FRAMES, V2_UNSAFE_ADJ_FRAMES, V2_UNSAFE_NOUN_FRAMES))


__all__ = ["caption_v2", "describe_character", "unsafe_phrase", "v2_frame_count"]
