"""The toy world's training set: a controlled long-tail of concepts, rendered and captioned deterministically.

`build_dataset(seed)` returns images (N, 32, 32, 3) uint8, captions, labels and a manifest (counts per concept, seed,
content hash). The per-concept counts come from the catalogue and are recorded exactly as drawn.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidValueError
from .captions import caption
from .catalogue import CATALOGUE, FAMILIES, NONE, Catalogue
from .render import Scene, render

PLAIN_COUNT = 4000  # unstyled object scenes
P_NO_ARTIST = 0.3  # characters and unsafe scenes drawn without an artist


@dataclass
class ToyDataset:
    images: np.ndarray  # (N, 32, 32, 3) uint8
    captions: list[str]
    scenes: list[Scene]
    manifest: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)

    def labels(self, family: str, catalogue: Catalogue = CATALOGUE) -> np.ndarray:
        """(N,) int64 class indices of `family` (0 = none), in `catalogue.classes(family)` order."""
        classes = {c: i for i, c in enumerate(catalogue.classes(family))}
        return np.array([classes[s.labels()[family]] for s in self.scenes], np.int64)


def plan_scenes(seed: int = 0, scale: float = 1.0, catalogue: Catalogue = CATALOGUE,
                counts: Mapping[str, int] | None = None) -> list[Scene]:
    """The scenes of the dataset, in a shuffled deterministic order. `scale` multiplies every count (>= 1 image each).

    `counts` ({artist or character name: images}) overrides the catalogue count of those concepts with an exact,
    unscaled number (>= 0), for counterfactual training sets; None or {} gives the default dataset unchanged.
    """
    if not (0 < scale <= 10):
        raise InvalidValueError(f"scale must be in (0, 10], got {scale!r}")
    overrides = _check_counts(counts, catalogue)
    rng = np.random.default_rng(seed)
    core = [a.name for a in catalogue.artists if a.core]
    objects, colours = [o.name for o in catalogue.objects], [c.name for c in catalogue.colours]

    def n(count: int) -> int:
        return max(1, int(round(count * scale)))

    def obj_scene(artist: str, unsafe: str = NONE, r: np.random.Generator = rng) -> dict:
        return dict(object=objects[r.integers(len(objects))], colour=colours[r.integers(len(colours))],
                    artist=artist, unsafe=unsafe)

    def maybe_core_artist(r: np.random.Generator = rng) -> str:
        return NONE if r.random() < P_NO_ARTIST else core[r.integers(len(core))]

    def own_rng(i: int) -> np.random.Generator:
        return np.random.default_rng([seed, 7919, i])

    # an overridden concept still consumes its default draws from the shared stream (then discarded) and draws its
    # own scenes from a stream of its own, so every other concept's scenes are exactly those of the default dataset
    specs: list[dict] = []
    for i, artist in enumerate(catalogue.artists):
        drawn = [obj_scene(artist.name) for _ in range(n(artist.count))]
        if artist.name in overrides:
            drawn = [obj_scene(artist.name, r=own_rng(i)) for _ in range(overrides[artist.name])]
        specs += drawn
    specs += [obj_scene(NONE) for _ in range(n(PLAIN_COUNT))]
    for i, char in enumerate(catalogue.characters):
        drawn = [dict(character=char.name, artist=maybe_core_artist()) for _ in range(n(char.count))]
        if char.name in overrides:
            r = own_rng(100 + i)
            drawn = [dict(character=char.name, artist=maybe_core_artist(r)) for _ in range(overrides[char.name])]
        specs += drawn
    for unsafe in catalogue.unsafe:
        specs += [obj_scene(maybe_core_artist(), unsafe.name) for _ in range(n(unsafe.count))]
    order = rng.permutation(len(specs))
    seeds = rng.integers(0, 2**31 - 1, size=len(specs))
    return [Scene(**specs[j], seed=int(seeds[i])) for i, j in enumerate(order)]


def build_dataset(seed: int = 0, scale: float = 1.0, catalogue: Catalogue = CATALOGUE,
                  counts: Mapping[str, int] | None = None) -> ToyDataset:
    """Render and caption the planned scenes; the manifest records counts per concept and a content hash.
    `counts` overrides concept counts exactly (see `plan_scenes`) and is then recorded in the manifest."""
    scenes = plan_scenes(seed, scale, catalogue, counts)
    rng = np.random.default_rng(seed + 1)
    images = np.empty((len(scenes), 32, 32, 3), np.uint8)
    captions = []
    for i, s in enumerate(scenes):
        images[i] = render(s, catalogue)
        captions.append(caption(s, rng, catalogue))
    man = manifest(images, captions, scenes, seed, scale)
    if counts:
        man["counts_override"] = dict(sorted(counts.items()))
    return ToyDataset(images, captions, scenes, man)


def _check_counts(counts: Mapping[str, int] | None, catalogue: Catalogue) -> dict[str, int]:
    """Validated {canonical artist/character name: count} from a `counts` override."""
    if not counts:
        return {}
    names = [a.name for a in catalogue.artists] + [c.name for c in catalogue.characters]
    out: dict[str, int] = {}
    for name, value in counts.items():
        canonical = next((x for x in names if x.lower() == str(name).strip().lower()), None)
        if canonical is None:
            from ..errors import UnknownNameError

            raise UnknownNameError("artist or character", str(name), names)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InvalidValueError(f"count of {name!r} must be an integer >= 0; got {value!r}")
        out[canonical] = int(value)
    return out


def content_hash(images: np.ndarray, captions: list[str]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update("\n".join(captions).encode("utf-8"))
    return h.hexdigest()


def manifest(images: np.ndarray, captions: list[str], scenes: list[Scene], seed: int, scale: float) -> dict:
    counts = {f: dict(sorted(Counter(s.labels()[f] for s in scenes).items())) for f in FAMILIES}
    mentions = Counter()
    for c in captions:
        mentions.update(w for w in set(c.lower().replace(",", " ").replace("'s", " ").split()))
    return {"seed": seed, "scale": scale, "size": len(scenes), "counts": counts,
            "content_sha256": content_hash(images, captions)}
