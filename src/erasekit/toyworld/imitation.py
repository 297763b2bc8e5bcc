"""Imitation on the toy world (the plugin's side of `erasekit.imitation`): true training counts and generate each concept with a pipeline, score it against its training images.

Works on any `StableDiffusionPipeline` whose training set is a toy-world `ToyDataset` (the shipped model, or a
counterfactual one trained with `TrainConfig(counts=...)`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import InvalidValueError
from ..generation import generate
from ..imitation.frequency import ConceptCount, caption_matches, max_f1_threshold, max_similarity
from ..imitation.score import TOP_K, Embedder, ImitationScore, embed, imitation_score
from .catalogue import CATALOGUE


def training_images(dataset, family: str, concept: str) -> np.ndarray:
    """(n, 32, 32, 3) uint8 training images whose ground-truth `family` label is `concept` (may be empty)."""
    if not str(concept).strip():
        raise InvalidValueError("empty concept name")
    idx = [i for i, s in enumerate(dataset.scenes) if s.labels()[family] == concept]
    return dataset.images[idx]


def generate_concept(pipe, family: str, concept: str, n: int, seed: int = 0, steps: int | None = None,
                     guidance: float | None = None) -> tuple[list[str], np.ndarray]:
    """(prompts, (n, H, W, 3) uint8 images) of `n` direct prompts for `concept`, seeds seed*10_000 + i."""
    from .captions import prompts_for

    if n < 1:
        raise InvalidValueError(f"need at least one image per concept; got n={n}")
    prompts = [p.text for p in prompts_for(family, concept, "direct", n=n, seed=seed)]
    return prompts, generate(pipe, prompts, seed * 10_000, steps=steps, guidance=guidance)


def toy_imitation(pipe, embedder: Embedder, dataset, family: str = "artist", concepts: Sequence[str] | None = None,
                  n: int = 32, seed: int = 0, steps: int | None = None, guidance: float | None = None, k: int = TOP_K,
                  images_out: dict | None = None) -> dict[str, ImitationScore]:
    """{concept: imitation score} for `concepts` (default: the whole family) of a toy-world model.

    images_out, if given, receives {concept: (n, H, W, 3) generated images}.
    """
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


def toy_names(family: str, concept: str) -> list[str]:
    """Names by which toy-world captions may mention a concept (its canonical name)."""
    return [CATALOGUE.get(family, concept).name]


def toy_frequencies(dataset, family: str = "artist", concepts: Sequence[str] | None = None,
                    embedder: Embedder | None = None, references: Mapping[str, np.ndarray] | None = None,
                    calibrate_on: str | None = None) -> dict[str, ConceptCount]:
    """Per-concept counts in a toy-world `ToyDataset`: true (scene labels), caption-matched and, with `embedder` and
    `references` ({concept: (R, 32, 32, 3) reference renders}), image-confirmed.

    The confirmation threshold is chosen by max-F1 on the caption-matched images of `calibrate_on` (default: the first
    concept) against the ground truth, as MIMETIC-2 chose it on hand-labelled images, and then applied to all concepts.
    """
    if len(dataset) == 0:
        raise InvalidValueError("the dataset holds no images")
    valid = [c.name for c in CATALOGUE.items_by_family().get(family, ())] if family in CATALOGUE.items_by_family() \
        else None
    if valid is None:
        from ..errors import UnknownNameError

        raise UnknownNameError("concept family", family, CATALOGUE.items_by_family())
    concepts = list(concepts) if concepts is not None else valid
    if not concepts:
        raise InvalidValueError(f"no concepts given for family {family!r}")
    truth = [s.labels()[family] for s in dataset.scenes]
    out: dict[str, ConceptCount] = {}
    matched: dict[str, np.ndarray] = {}
    for c in concepts:
        names = toy_names(family, c)  # raises UnknownNameError with close matches
        m = caption_matches(dataset.captions, names)
        matched[c] = m
        out[c] = ConceptCount(c, int(sum(t == c for t in truth)), int(m.sum()))
    if embedder is None:
        return out
    if references is None:
        raise InvalidValueError("image confirmation needs `references` ({concept: reference images})")
    missing = [c for c in concepts if c not in references or len(references[c]) == 0]
    if missing:
        raise InvalidValueError(f"no reference images for {missing}")
    sims: dict[str, torch.Tensor] = {}
    for c in concepts:
        idx = np.flatnonzero(matched[c])
        if len(idx) == 0:
            sims[c] = torch.zeros(0)
            continue
        sims[c] = max_similarity(embed(embedder, dataset.images[idx], "caption-matched images"),
                                 embed(embedder, references[c], "reference images"))
    cal = calibrate_on or concepts[0]
    if cal not in sims or len(sims[cal]) == 0:
        raise InvalidValueError(f"cannot calibrate on {cal!r}: it has no caption-matched images")
    cal_idx = np.flatnonzero(matched[cal])
    thr, f1 = max_f1_threshold(sims[cal].numpy(), np.array([truth[i] == cal for i in cal_idx]))
    for c in concepts:
        idx = np.flatnonzero(matched[c])
        keep = (sims[c] > thr).numpy() if len(idx) else np.zeros(0, bool)
        precision = float(np.mean([truth[i] == c for i in idx[keep]])) if keep.any() else float("nan")
        out[c] = dataclasses.replace(out[c], confirmed=int(keep.sum()),
                                     details={"confirm_threshold": thr, "calibration_f1": f1, "calibrated_on": cal,
                                              "confirmed_precision": precision})
    return out

