"""MACE stage 1 (closed-form refinement): MACE: Mass Concept Erasure in Diffusion Models. Lu, Wang, Li, Liu, Kong.
CVPR 2024. arXiv:2403.06135; official code: github.com/Shilin-LU/MACE (src/cfr_utils.py::prepare_k_v,
closed_form_refinement; training.py stage 1).

The concept's information also lives in the rows *after* its words (EOS, padding and following words see it through
the causal text encoder). MACE's closed-form refinement takes prompts containing the concept (templates), drops the
concept words themselves, and maps every remaining row to the matching row of the same prompt with the concept
replaced by its anchor (mapping) concept:

    W* = argmin lamb ||W - W0||^2 + sum_rows ||W c_old - W0 c_anchor||^2
                  + preserve_scale sum_preserve ||W p - W0 p||^2 + prior_scale sum_prior ||W q - W0 q||^2

Rows: the common prefix (identical in both prompts, so it acts as preservation), the common suffix through EOS, and
the padding rows aligned by their offset after EOS. Many concepts at once: all rows in one solve.

Official defaults: 30 templated prompts per concept; objects lamb 1e3 without preservation; art/celebrities lamb 0
with cached COCO (prior) and domain (e.g. other artists) sums weighted 1e-4 x (prior + 8e4..2e5 x domain).

Deviations from the official code:
  - Preservation: instead of cached COCO/domain sums we take `preserve` prompts (each expanded with the same
    templates: the "domain" term) and optional `prior_prompts` (the prior term), all 77 rows each.
  - Templates are our own short captions (official: 30 per kind, or GPT-written ones); `templates=` overrides them,
    and `n_prompts` caps how many are used (taken in order, no random sampling).
  - Only stage 1. Stage 2 (per-concept rank-1 LoRAs trained on attention masks from Grounded-SAM) and stage 3
    (LoRA fusion) need segmentation models and training; they are not part of this closed-form eraser.
  - Solves in float64 via the shared residual form; lamb=0 requires enough rows to make the system non-singular
    (a clear error otherwise; the official code would return inf/NaN weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._closed_form import PipelineLike, Rows, encode, kv_weights, non_concept_pair, solve
from .concepts import CONCEPT_TYPES, MACE_TEMPLATES, check_templates, concept_type, default_guide, expand


@dataclass(frozen=True)
class MACEConfig:
    lamb: float = field(default=1e3, metadata={"help": "weight of ||W - W0||^2 (official: 1e3 objects, 0 art)"})
    preserve_scale: float = field(default=1.0, metadata={"help": "weight of each preserve (domain) row"})
    prior_prompts: tuple[str, ...] = field(default=(), metadata={"help": "extra prompts to preserve (prior term)"})
    prior_scale: float = field(default=1.0, metadata={"help": "weight of each prior row"})
    n_prompts: int = field(default=12, metadata={"help": "templated prompts per concept (official: 30)"})
    templates: tuple[str, ...] = field(default=(), metadata={"help": "prompt templates with '{}' (default: per kind)"})
    with_to_k: bool = field(default=True, metadata={"help": "edit to_k as well as to_v"})
    concept_type: str = field(default="auto", metadata={"help": "'art', 'object' or 'auto'"})

    def __post_init__(self) -> None:
        for name in ("lamb", "preserve_scale", "prior_scale"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_prompts < 1:
            raise InvalidValueError(f"n_prompts must be >= 1, got {self.n_prompts}")
        check_choice("concept_type", self.concept_type, CONCEPT_TYPES)
        check_templates(self.templates)


def mace(pipe: PipelineLike, request: EraseRequest, config: MACEConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """MACE closed-form refinement of `request.erase`; returns ({K/V weight name: new weight}, info)."""
    kind = concept_type(request.erase, config.concept_type, pipe)
    anchors = request.guides(default_guide(kind))
    templates = list(config.templates or MACE_TEMPLATES[kind])[:config.n_prompts]
    old_prompts, new_prompts = [], []
    for concept, anchor in zip(request.erase, anchors, strict=True):
        for t in templates:
            old_prompts.append(t.format(concept))
            new_prompts.append(" ".join(t.format(anchor).split()))  # "" anchor: drop the doubled space
    old, new = encode(pipe, old_prompts), encode(pipe, new_prompts)
    d = old.hidden.shape[-1]
    rows = Rows.empty(d)
    pairs = [non_concept_pair(old, i, new, i) for i in range(len(old_prompts))]
    # one concatenation (adding prompt by prompt re-copies the growing row set: quadratic in the number of prompts)
    rows.add_erase(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]), 1.0)
    if request.preserve:
        keep = encode(pipe, expand(request.preserve, templates))
        rows.add_preserve(keep.hidden.reshape(-1, d), config.preserve_scale)
    if config.prior_prompts:
        prior = encode(pipe, list(config.prior_prompts))
        rows.add_preserve(prior.hidden.reshape(-1, d), config.prior_scale)
    new_w = solve(kv_weights(pipe, with_to_k=config.with_to_k), rows, config.lamb)
    info = {"concept_type": kind, "anchors": anchors, "templates": templates,
            "erase_rows": int(rows.keys.shape[0]), "preserve_rows": int(rows.preserve.shape[0])}
    return new_w, info


METHOD = Method("mace", MACEConfig, mace,
                paper="Lu et al., MACE: Mass Concept Erasure in Diffusion Models, CVPR 2024 (stage 1)")
