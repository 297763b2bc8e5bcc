"""Imitation on the toy world: generate each concept with a pipeline, score it against its training images.

Works on any `StableDiffusionPipeline` whose training set is a toy-world `ToyDataset` (the shipped model, or a
counterfactual one trained with `TrainConfig(counts=...)`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidValueError
from ..generation import generate
from .score import TOP_K, Embedder, ImitationScore, embed, imitation_score


def training_images(dataset, family: str, concept: str) -> np.ndarray:
    """(n, 32, 32, 3) uint8 training images whose ground-truth `family` label is `concept` (may be empty)."""
    if not str(concept).strip():
        raise InvalidValueError("empty concept name")
    idx = [i for i, s in enumerate(dataset.scenes) if s.labels()[family] == concept]
    return dataset.images[idx]


def generate_concept(pipe, family: str, concept: str, n: int, seed: int = 0, steps: int = 25,
                     guidance: float = 5.0) -> tuple[list[str], np.ndarray]:
    """(prompts, (n, H, W, 3) uint8 images) of `n` direct prompts for `concept`, seeds seed*10_000 + i."""
    from ..world import prompts_for

    if n < 1:
        raise InvalidValueError(f"need at least one image per concept; got n={n}")
    prompts = [p.text for p in prompts_for(family, concept, "direct", n=n, seed=seed)]
    return prompts, generate(pipe, prompts, seed * 10_000, steps=steps, guidance=guidance)


def toy_imitation(pipe, embedder: Embedder, dataset, family: str = "artist", concepts: Sequence[str] | None = None,
                  n: int = 32, seed: int = 0, steps: int = 25, guidance: float = 5.0, k: int = TOP_K,
                  images_out: dict | None = None) -> dict[str, ImitationScore]:
    """{concept: imitation score} for `concepts` (default: the whole family) of a toy-world model.

    images_out, if given, receives {concept: (n, H, W, 3) generated images}.
    """
    from ..world.catalogue import CATALOGUE

    names = list(concepts) if concepts is not None else [c.name for c in CATALOGUE.items_by_family()[family]]
    if not names:
        raise InvalidValueError(f"no concepts given for family {family!r}")
    out: dict[str, ImitationScore] = {}
    for c in names:
        canonical = CATALOGUE.get(family, c).name  # unknown names raise with close matches
        train = training_images(dataset, family, canonical)
        if len(train) == 0:
            raise InvalidValueError(f"concept {canonical!r} has no training images in this dataset; "
                                    f"its imitation score is undefined")
        _, gen = generate_concept(pipe, family, canonical, n, seed, steps, guidance)
        if images_out is not None:
            images_out[canonical] = gen
        out[canonical] = imitation_score(embed(embedder, gen, "generated images"),
                                         embed(embedder, train, "training images"), k)
    return out
