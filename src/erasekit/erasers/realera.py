"""RealEra (closed-form part): RealEra: Semantic-level Concept Erasure via Neighbor-Concept Mining. Liu et al., 2024.
arXiv:2410.09140; project page realerasing.github.io/RealEra.

RealEra fights "concept residue" (related inputs still producing the erased concept):
  - neighbour-concept mining: random perturbations of the erased concept's embedding stand for associated concepts
    and are erased together with it (mapped to the guide, like the concept itself);
  - beyond-concept regularisation: perturbations *farther* from the concept stand for unrelated concepts and are
    kept where they were (their keys/values, hence their attention maps, are preserved);
  - both enter a UCE-style closed form over all cross-attention to_k/to_v, followed in the paper by a LoRA stage
    aligning predicted noise (not implemented here: training, not closed form).

Neighbours are sampled at a controlled cosine similarity to the concept row c: n = |c| (cos t c_hat + sin t u) with u a
random unit vector orthogonal to c and cos t uniform in `neighbour_cos` (beyond rows: in `beyond_cos`), so every
sample keeps the concept's norm. Seeded (`seed`), so an edit is reproducible.

Deviations / caveats:
  - The official code was not available to us: this follows the paper's description. The sampling rule (cosine bands
    on the sphere of radius |c|), the band defaults and the weights are our choices [unverified against the official
    implementation]; the closed form itself is UCE's (see erasekit.erasers.uce), with its token selection "last".
  - Empty guides follow `empty_guide` (see erasekit.erasers.uce; default 'aligned', 'bos' = UCE's official quirk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._closed_form import PipelineLike, kv_weights, solve
from .concepts import CONCEPT_TYPES, UCE_TEMPLATES, concept_type, default_guide, expanded_pairs
from .uce import EMPTY_GUIDE, build


@dataclass(frozen=True)
class RealEraConfig:
    lamb: float = field(default=0.5, metadata={"help": "weight of ||W - W0||^2"})
    erase_scale: float = field(default=1.0, metadata={"help": "weight of the concept rows"})
    preserve_scale: float = field(default=1.0, metadata={"help": "weight of the preserve prompts' rows"})
    n_neighbours: int = field(default=16, metadata={"help": "neighbour concepts mined per erase row"})
    neighbour_cos: tuple[float, float] = field(default=(0.8, 0.95), metadata={
        "help": "cosine band of neighbours to the concept row"})
    neighbour_scale: float = field(default=0.25, metadata={"help": "weight of each neighbour row"})
    n_beyond: int = field(default=16, metadata={"help": "beyond-concept rows per erase row (kept as they are)"})
    beyond_cos: tuple[float, float] = field(default=(0.3, 0.6), metadata={"help": "cosine band of beyond rows"})
    beyond_scale: float = field(default=0.25, metadata={"help": "weight of each beyond row"})
    seed: int = field(default=0, metadata={"help": "seed of the perturbations"})
    with_to_k: bool = field(default=True, metadata={"help": "edit to_k as well as to_v"})
    concept_type: str = field(default="auto", metadata={"help": "'art', 'object' or 'auto'"})
    expand_prompts: bool = field(default=False, metadata={"help": "add UCE's 5 templates per erase concept"})
    templates: tuple[str, ...] = field(default=(), metadata={"help": "templates for expand_prompts (with '{}')"})
    empty_guide: str = field(default="aligned", metadata={"help": "empty-guide row: 'aligned' or 'bos'"})

    def __post_init__(self) -> None:
        for name in ("lamb", "erase_scale", "preserve_scale", "neighbour_scale", "beyond_scale"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("n_neighbours", "n_beyond"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("neighbour_cos", "beyond_cos"):
            band = getattr(self, name)
            if len(band) != 2 or not (-1.0 <= band[0] <= band[1] <= 1.0):
                raise InvalidValueError(f"{name}={band!r} must be two cosines lo <= hi within [-1, 1]")
        if self.beyond_cos[1] > self.neighbour_cos[0]:
            raise InvalidValueError(f"beyond_cos={self.beyond_cos!r} overlaps neighbour_cos={self.neighbour_cos!r}: "
                                    "beyond rows must be farther from the concept than neighbours")
        for name, valid in (("empty_guide", EMPTY_GUIDE), ("concept_type", CONCEPT_TYPES)):
            check_choice(name, getattr(self, name), valid)


def perturb(rows: torch.Tensor, n: int, band: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """(len(rows) * n, d) samples around each row (d,) at cosine similarity uniform in `band`, same norm."""
    if n == 0 or len(rows) == 0:
        return rows.new_zeros(0, rows.shape[-1])
    base = rows.repeat_interleave(n, dim=0)  # (m, d)
    norm = base.norm(dim=1, keepdim=True).clamp_min(1e-12)
    c_hat = base / norm
    u = torch.randn(base.shape, generator=gen, dtype=base.dtype)
    u = u - (u * c_hat).sum(1, keepdim=True) * c_hat
    u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = band[0] + (band[1] - band[0]) * torch.rand(len(base), 1, generator=gen, dtype=base.dtype)
    sin = (1 - cos**2).clamp_min(0).sqrt()
    return norm * (cos * c_hat + sin * u)


def realera(pipe: PipelineLike, request: EraseRequest, config: RealEraConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """RealEra closed-form erasure of `request.erase`; returns ({K/V weight name: new weight}, info)."""
    kind = concept_type(request.erase, config.concept_type, pipe)
    guides = request.guides(default_guide(kind))
    erase_prompts, guide_prompts = expanded_pairs(
        request.erase, guides, (config.templates or UCE_TEMPLATES[kind]) if config.expand_prompts else None)
    rows, pairs = build(pipe, erase_prompts, guide_prompts, list(request.preserve), "last", config.empty_guide,
                        config.erase_scale, config.preserve_scale)
    gen = torch.Generator().manual_seed(config.seed)
    concept_rows = torch.cat([c for c, _ in pairs])  # (n, d)
    guide_rows = torch.cat([g for _, g in pairs])
    neighbours = perturb(concept_rows, config.n_neighbours, config.neighbour_cos, gen)
    rows.add_erase(neighbours, guide_rows.repeat_interleave(config.n_neighbours, dim=0), config.neighbour_scale)
    beyond = perturb(concept_rows, config.n_beyond, config.beyond_cos, gen)
    rows.add_preserve(beyond, config.beyond_scale)
    new = solve(kv_weights(pipe, with_to_k=config.with_to_k), rows, config.lamb)
    info = {"concept_type": kind, "guides": guides, "neighbour_rows": int(len(neighbours)),
            "beyond_rows": int(len(beyond)), "prompts": erase_prompts}
    return new, info


METHOD = Method("realera", RealEraConfig, realera,
                paper="Liu et al., RealEra: Semantic-level Concept Erasure via Neighbor-Concept Mining, 2024")
