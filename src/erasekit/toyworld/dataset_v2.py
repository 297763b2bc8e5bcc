"""Toy world v2 training set (issue 14, parts 1 and 3), behind options (`erasekit world train --grammar v2
--mark-share S --memorized 1,10,100,1000`):

* `rich_captions`: captions from the richer grammar (`captions_v2.py`) instead of `captions.py`, decontaminated
  against the independent evaluation grammar (`eval_grammar.protected_pattern`);
* `mark_share`: an **implicit concept** -- a text-like glyph strip stamped in the bottom-right corner of that share of
  the object scenes and *never* named in their captions (Geom-Erasing's setting: watermarks, text); its ground truth
  is `mark_present(images)` (template correlation; the oracle has no head for it yet);
* `nameless_artist`: **a style only images can evoke** -- that artist's images keep its background and stroke, but
  their captions are drawn as if no artist were there (never its name nor a description of it: Co-Erasing's setting);
* `memorized`: **memorized images** -- for each count c in the tuple, one distinct image-caption pair added c times
  exactly (e.g. 1, 10, 100, 1000), the ground truth of memorization detection and memorized-subspace pruning.

The manifest records the counts of every option (`manifest["v2"]`) next to the base dataset's concept counts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InvalidValueError
from .catalogue import CATALOGUE, NONE, Catalogue
from .dataset import ToyDataset, manifest, plan_scenes
from .render import SIZE, Scene, render

# the glyph strip: 3 rows x 12 columns of on/off cells (1 px each), dark glyphs on a light band, bottom-right corner
MARK_GLYPHS = np.array([[1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1],
                        [1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1],
                        [1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1]], np.float32)
MARK_ROW, MARK_COL = SIZE - 5, SIZE - 14  # top-left cell of the glyphs (a 1-px light band surrounds them)
MARK_DARK, MARK_LIGHT = (15, 15, 15), (235, 235, 225)
MARK_THRESHOLD = 0.6  # template correlation above which the mark is present


@dataclass(frozen=True)
class WorldV2Options:
    rich_captions: bool = field(default=True, metadata={"help": "captions from captions_v2 (richer grammar)"})
    mark_share: float = field(default=0.1, metadata={"help": "share of object scenes stamped with the unnamed mark"})
    memorized: tuple[int, ...] = field(default=(1, 10, 100, 1000),
                                       metadata={"help": "duplicate counts of the memorized image-caption pairs"})
    nameless_artist: str = field(default="", metadata={
        "help": "an artist whose images keep its style but whose captions never name or describe it (a style only "
                "images can evoke; '' = none)"})

    def __post_init__(self) -> None:
        if not (isinstance(self.mark_share, (int, float)) and math.isfinite(self.mark_share)
                and 0 <= self.mark_share <= 1):
            raise InvalidValueError(f"mark_share must be in [0, 1], got {self.mark_share!r}")
        for c in self.memorized:
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise InvalidValueError(f"memorized counts must be integers >= 1, got {c!r} in {self.memorized!r}; "
                                        "use () for none")
        if self.nameless_artist:
            CATALOGUE.get("artist", self.nameless_artist)  # unknown -> UnknownNameError with close matches


def stamp_mark(image: np.ndarray) -> np.ndarray:
    """(32, 32, 3) uint8 -> a copy with the glyph strip in the bottom-right corner."""
    out = image.astype(np.float32)
    h, w = MARK_GLYPHS.shape
    out[MARK_ROW - 1:MARK_ROW + h + 1, MARK_COL - 1:MARK_COL + w + 1] = MARK_LIGHT
    cells = out[MARK_ROW:MARK_ROW + h, MARK_COL:MARK_COL + w]
    cells[MARK_GLYPHS > 0] = MARK_DARK
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mark_score(images: np.ndarray) -> np.ndarray:
    """(N,) Pearson correlation of each image's mark region (grey) with the stamped template, in [-1, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
        raise InvalidValueError(f"mark_score reads (N, {SIZE}, {SIZE}, 3) images, got shape {images.shape}")
    h, w = MARK_GLYPHS.shape
    region = images[:, MARK_ROW - 1:MARK_ROW + h + 1, MARK_COL - 1:MARK_COL + w + 1].astype(np.float32).mean(-1)
    stamped = stamp_mark(np.zeros((SIZE, SIZE, 3), np.uint8)).astype(np.float32).mean(-1)
    template = stamped[MARK_ROW - 1:MARK_ROW + h + 1, MARK_COL - 1:MARK_COL + w + 1]
    r = region.reshape(len(images), -1)
    t = template.ravel()
    r = r - r.mean(1, keepdims=True)
    t = t - t.mean()
    return (r @ t) / (np.linalg.norm(r, axis=1) * np.linalg.norm(t) + 1e-6)


def mark_present(images: np.ndarray, threshold: float = MARK_THRESHOLD) -> np.ndarray:
    """(N,) bool: the implicit mark is visible (ground truth of the implicit concept)."""
    return mark_score(images) >= threshold


def build_dataset_v2(seed: int = 0, scale: float = 1.0, options: WorldV2Options = WorldV2Options(),
                     catalogue: Catalogue = CATALOGUE, counts: Mapping[str, int] | None = None) -> ToyDataset:
    """The base dataset's scenes (`dataset.plan_scenes`), captioned by the chosen grammar, with the implicit mark on a
    seeded `mark_share` of the object scenes and the memorized pairs appended (then shuffled). Deterministic."""
    from .captions import caption
    from .captions_v2 import caption_v2
    from .eval_grammar import protected_pattern

    scenes = plan_scenes(seed, scale, catalogue, counts)
    rng = np.random.default_rng([seed, 2024])
    avoid = protected_pattern()  # decontamination: no phrase of the independent evaluation grammar is trained on

    def cap(s: Scene, r: np.random.Generator, cat: Catalogue) -> str:
        return caption_v2(s, r, cat, avoid=avoid) if options.rich_captions else caption(s, r, cat)

    images = np.stack([render(s, catalogue) for s in scenes]) if scenes else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    nameless = catalogue.get("artist", options.nameless_artist).name if options.nameless_artist else None
    captions = [cap(dataclasses.replace(s, artist=NONE) if nameless and s.artist == nameless else s, rng, catalogue)
                for s in scenes]
    marked = np.zeros(len(scenes), bool)
    objects = np.array([s.object != NONE for s in scenes])
    marked[objects] = rng.random(int(objects.sum())) < options.mark_share
    for i in np.flatnonzero(marked):
        images[i] = stamp_mark(images[i])
    # memorized pairs: distinct fresh scenes (own stream), each caption made unique by construction of its scene seed
    mem_scenes, mem_images, mem_captions, mem_info = [], [], [], []
    mrng = np.random.default_rng([seed, 4242])
    names = {f: [c.name for c in items] for f, items in catalogue.items_by_family().items()}
    core = [a.name for a in catalogue.artists if a.core]
    for k, count in enumerate(options.memorized):
        obj, col = names["object"][k % len(names["object"])], names["colour"][(3 * k) % len(names["colour"])]
        s = Scene(object=obj, colour=col, artist=core[(5 * k) % len(core)], seed=int(mrng.integers(2**31 - 1)))
        img, text = render(s, catalogue), f"{cap(s, mrng, catalogue)}, photo number {k + 1}"
        mem_info.append({"caption": text, "count": count, "scene": asdict(s)})
        mem_scenes += [s] * count
        mem_images += [img] * count
        mem_captions += [text] * count
    if mem_scenes:
        images = np.concatenate([images, np.stack(mem_images)])
        scenes = scenes + mem_scenes
        captions = captions + mem_captions
        marked = np.concatenate([marked, np.zeros(len(mem_scenes), bool)])
    order = rng.permutation(len(scenes))
    images, marked = images[order], marked[order]
    scenes, captions = [scenes[i] for i in order], [captions[i] for i in order]
    man = manifest(images, captions, scenes, seed, scale)
    mark_words = ("mark", "stamp", "glyph", "watermark", "text", "logo")
    man["v2"] = {"options": asdict(options),
                 "implicit_mark": {"images": int(marked.sum()),
                                   "object_images": int(sum(s.object != NONE for s in scenes)),
                                   "captions_naming_it": sum(any(w in c.lower() for w in mark_words)
                                                             for c in captions)},
                 "nameless_artist": {"artist": nameless or "",
                                     "images": sum(s.artist == nameless for s in scenes) if nameless else 0,
                                     "captions_naming_it": sum(nameless.lower() in c.lower() for c in captions)
                                     if nameless else 0},
                 "memorized": mem_info, "grammar": "captions_v2" if options.rich_captions else "captions"}
    if counts:
        man["counts_override"] = dict(sorted(counts.items()))
    ds = ToyDataset(images, captions, scenes, man)
    ds.marked = marked  # (N,) bool ground truth of the implicit mark per training image
    return ds


__all__ = ["MARK_GLYPHS", "WorldV2Options", "build_dataset_v2", "mark_present", "mark_score", "stamp_mark"]
