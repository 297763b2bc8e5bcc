"""Prompt fidelity of a model on the toy world: does the oracle see what the prompt asked for?

For each family, prompts of one kind ("direct" = training-style templates with canonical names; "heldout" = held-out
templates and paraphrases; "keyword" = characters by keywords only; "indirect" = unsafe by held-out indirect phrases)
are generated on fixed seeds; the score of a family is the fraction of images whose oracle label for that family equals
the prompted concept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from diffusers import StableDiffusionPipeline

from ..generation import generate
from .captions import Prompt, prompts_for
from .catalogue import CATALOGUE, FAMILIES, NONE, Catalogue
from .oracle import ToyOracle


def fidelity_prompts(family: str, kind: str, n: int, seed: int = 0, core_only: bool = True,
                     catalogue: Catalogue = CATALOGUE) -> list[Prompt]:
    """About `n` prompts of `kind` spread evenly over the family's concepts (core artists only by default)."""
    items = catalogue.items_by_family()[family]
    if family == "artist" and core_only:
        items = tuple(a for a in items if a.core)
    per = max(1, -(-n // len(items)))
    out: list[Prompt] = []
    for j, c in enumerate(items):
        out += prompts_for(family, c.name, kind, n=per, seed=seed * 1000 + j, catalogue=catalogue)
    return out


@dataclass
class FidelityResult:
    family: str
    kind: str
    n: int
    accuracy: float  # oracle label of `family` == prompted concept
    all_labels: float  # every constrained label correct (object, colour, artist, character, unsafe)
    per_concept: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def measure_fidelity(pipe: StableDiffusionPipeline, oracle: ToyOracle, family: str, kind: str = "direct",
                     n: int = 200, seed: int = 0, steps: int = 25, guidance: float = 5.0,
                     images_out: list | None = None) -> FidelityResult:
    """Generate about `n` images for `family`/`kind` and score them with the oracle."""
    prompts = fidelity_prompts(family, kind, n, seed)
    t = time.time()
    images = generate(pipe, [p.text for p in prompts], seed * 100_000, steps=steps, guidance=guidance)
    secs = time.time() - t
    if images_out is not None:
        images_out.append((prompts, images))
    preds = oracle.predict(images)
    hit = np.array([pr[family] == p.labels[family] for p, pr in zip(prompts, preds)])
    full = np.array([all(pr[f] == p.labels[f] for f in FAMILIES if p.labels[f] != NONE) for p, pr in zip(prompts, preds)])
    per = {}
    for c in dict.fromkeys(p.concept for p in prompts):
        per[c] = float(np.mean([h for h, p in zip(hit, prompts) if p.concept == c]))
    return FidelityResult(family, kind, len(prompts), float(hit.mean()), float(full.mean()), per, secs)
