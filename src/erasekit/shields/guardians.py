"""Guardians of Generation-style adaptive shielding without an LLM (Roy et al., "Guardians of Generation: Dynamic
Inference-Time Copyright Shielding with Adaptive Guidance for AI Image Generation", 2025; sohambuilds/gogpipeline).

Per prompt p: detect a protected concept (token match + calibrated text-embedding similarity, `ConceptDetector`);
if one is found, rewrite p toward the concept's anchor (its name and keyword phrases, then the remaining words of their
vocabulary are removed, then - the stand-in for GoG's second LLM pass when detection still fires - the word whose
removal lowers the similarity most is dropped, up to `max_ablations` times), and condition on

    c_i = (1 - w_i) E(p) + w_i E(p_rewrite),    w_i = w_start + (w_end - w_start) i / (steps - 1)

in the conditional slot of classifier-free guidance. Undetected prompts pass through unchanged (bit for bit).

Official code (Models/CFG.py): c = (1 - w) E(p) + w E(p_rewrite) with a constant w (0.5 from the CLI; 0.1 default of
`generate`), unconditional = the negative prompt; detection = cosine >= 0.8 on OpenAI ada-002 embeddings of the prompt
vs. each concept name/synonym, confirmed by a GPT-4o-mini YES/NO; rewriting = GPT-4o-mini with a second pass if the
detector still fires. Deviations: no LLM anywhere (deterministic rewrite above; detection by the pipeline's CLIP text
encoder with a threshold calibrated to a target false-positive rate instead of 0.8); w may vary linearly over steps;
mixing applies only to detected prompts (the official code mixes every prompt with its rewrite, which is the identity
up to float rounding when nothing was detected); the abstract's monitoring of intermediate generation steps is not in
the official code and not implemented.
"""

from __future__ import annotations

from typing import Any

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError
from ..sampling import encode_prompts
from . import Plan, ProtectedConcept, Shield
from .detector import ConceptDetector, build_detector, check_detection_fields, drop_terms, tidy


@dataclass(frozen=True)
class GuardiansConfig:
    mix_weight: float = field(default=0.5, metadata={"help": "w at the first step (official CLI default 0.5)"})
    mix_weight_end: float | None = field(default=None, metadata={
        "help": "w at the last step (linear); None = constant"})
    max_ablations: int = field(default=3, metadata={"help": "words dropped by similarity if detection still fires"})
    threshold: float | None = field(default=None, metadata={"help": "fixed cosine threshold; None calibrates it"})
    target_fpr: float = field(default=0.05, metadata={"help": "false-positive rate on unprotected prompts"})
    tokens: bool = field(default=True, metadata={"help": "detect whole-word matches of names/keywords"})
    embedding: bool = field(default=True, metadata={"help": "detect text-embedding similarity above the threshold"})
    spans: bool = field(default=False, metadata={"help": "compare every word span of the prompt"})
    pooling: str = field(default="eos", metadata={"help": "mean or eos pooling of the text states"})
    n_calibration: int = field(default=400, metadata={
        "help": "calibration prompts drawn from the world (World.calibration_prompts)"})
    calibration_seed: int = field(default=1234, metadata={"help": "seed of the calibration prompts"})

    def __post_init__(self) -> None:
        for name in ("mix_weight", "mix_weight_end"):
            w = getattr(self, name)
            if w is not None and not 0.0 <= w <= 1.0:
                raise InvalidValueError(f"{name} must be in [0, 1], got {w}")
        if self.max_ablations < 0:
            raise InvalidValueError(f"max_ablations must be >= 0, got {self.max_ablations}")
        check_detection_fields(self)


def mix_weights(config: GuardiansConfig, steps: int) -> list[float]:
    """w_i for i = 0..steps-1."""
    w0 = config.mix_weight
    w1 = w0 if config.mix_weight_end is None else config.mix_weight_end
    if steps == 1:
        return [w0]
    return [w0 + (w1 - w0) * i / (steps - 1) for i in range(steps)]


def rewrite_prompt(prompt: str, concept: ProtectedConcept, detector: ConceptDetector, max_ablations: int = 3) -> str:
    """Remove the concept's phrases and vocabulary from `prompt`, then drop up to `max_ablations` words that keep
    the detector firing (greedy: the word whose removal lowers the concept's similarity most). Inserts the anchor."""
    out = drop_terms(prompt, concept.terms, anchor=concept.anchor, words=True)
    ci = detector.concepts.index(concept)
    anchor_words = set(concept.anchor.lower().split())
    for _ in range(max_ablations):
        if not detector.embedding or not detector.detect([out]).flagged[0]:
            break
        words = re.findall(r"\S+", out)
        cands = [(j, w) for j, w in enumerate(words) if w.lower().strip(",.;") not in anchor_words]
        if not cands:
            break
        options = [tidy(" ".join(words[:j] + words[j + 1:])) for j, _ in cands]
        sims = detector.detect(options).scores[:, ci]
        out = options[int(np.argmin(sims))]
    return out


class Guardians(Shield):
    """Guardians of Generation without an LLM: detect, rewrite toward an anchor, mix conditional embeddings."""

    name = "guardians"
    config_cls = GuardiansConfig
    primary = "mix_weight"
    needs_pipe = True

    def __init__(self, config: GuardiansConfig | None = None, concepts: Sequence[str | ProtectedConcept] = (),
                 pipe: StableDiffusionPipeline | None = None, negatives: Sequence[str] | None = None,
                 world: Any = None):
        super().__init__(config, concepts)
        self.detector = build_detector(self.config, self.concepts, pipe, negatives, world)

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        det = self.detector.detect(plan.prompts)
        rows = np.flatnonzero(det.flagged)
        rewrites: list[str | None] = [None] * len(plan.prompts)
        for r in rows:
            rewrites[r] = rewrite_prompt(plan.prompts[r], self.concepts[det.concept[r]], self.detector,
                                         self.config.max_ablations)
        details = {"detected": det.flagged.tolist(), "score": det.score.tolist(), "rewrite": rewrites}
        if len(rows) == 0:
            return plan, details
        target = plan.cond.clone()
        target[rows] = encode_prompts(pipe, [rewrites[r] for r in rows])
        mask = torch.zeros(len(plan.prompts), 1, 1, dtype=torch.bool, device=plan.cond.device)
        mask[rows] = True
        weights = mix_weights(self.config, plan.steps)

        def hook(i: int, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            w = weights[min(i, len(weights) - 1)]
            return torch.where(mask, (1 - w) * cond + w * target, cond)

        plan.cond_hooks = [*plan.cond_hooks, hook]
        return plan, details

    def identity(self) -> dict:
        return {**super().identity(), "detector": self.detector.identity()}


__all__ = ["Guardians", "GuardiansConfig", "mix_weights", "rewrite_prompt"]
