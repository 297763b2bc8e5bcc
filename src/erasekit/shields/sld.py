"""Safe Latent Diffusion (Schramowski et al., "Safe Latent Diffusion: Mitigating Inappropriate Degeneration in
Diffusion Models", CVPR 2023), as a guidance term of the explicit loop.

With conditionings [uncond, cond, safety] and eps_u, eps_c, eps_S their noise predictions, per step i:

    g       = eps_c - eps_u
    s       = min(1, s_S |eps_c - eps_S|)                       (element-wise)
    mu      = 0 where eps_c - eps_S >= lambda, else s
    gamma_S = mu (eps_S - eps_u) + s_m nu
    nu     <- b_m nu + (1 - b_m) gamma_S                          (momentum, built during warm-up too)
    g      <- g - gamma_S   if i >= delta (warm-up steps)
    eps     = eps_u + w g

Read from diffusers' `StableDiffusionPipelineSafe.__call__` (diffusers 0.42.1, pipelines/deprecated/
stable_diffusion_safe); same operation order, so outputs equal that pipeline's on the same components, prompt and seed
(tested). Presets are diffusers' `SafetyConfig` (WEAK / MEDIUM / STRONG / MAX).

Deviations from the official code: the safety concept is any text, by default built from the protected concepts
("name, keyword, ...") instead of only the fixed unsafe-content list (which stays the default when no concept is given);
guidance <= 1 or sld_guidance_scale <= 1 raise an error instead of silently disabling SLD; warm-up counts absolute steps
as diffusers does (the paper's defaults assume 50 steps; at 25 steps the MEDIUM warm-up of 10 covers 40% of sampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError, UnknownNameError
from ..sampling import encode_prompts
from . import GuidanceTerm, Plan, ProtectedConcept, Shield

# diffusers' SafetyConfig presets: (warmup steps, guidance scale, threshold, momentum scale, momentum beta)
PRESETS: dict[str, dict[str, float]] = {
    "weak": {"warmup_steps": 15, "guidance_scale": 20.0, "threshold": 0.0, "momentum_scale": 0.0, "mom_beta": 0.0},
    "medium": {"warmup_steps": 10, "guidance_scale": 1000.0, "threshold": 0.01, "momentum_scale": 0.3, "mom_beta": 0.4},
    "strong": {"warmup_steps": 7, "guidance_scale": 2000.0, "threshold": 0.025, "momentum_scale": 0.5, "mom_beta": 0.7},
    "max": {"warmup_steps": 0, "guidance_scale": 5000.0, "threshold": 1.0, "momentum_scale": 0.5, "mom_beta": 0.7},
}

# diffusers' default safety concept (StableDiffusionPipelineSafe.__init__)
DEFAULT_SAFETY_CONCEPT = (
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity,"
    " bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child"
    " abuse, brutality, cruelty"
)


@dataclass(frozen=True)
class SLDConfig:
    """SLD parameters; any left as None are filled from `preset` (SLDConfig(preset="strong") is diffusers' STRONG)."""

    preset: str = field(default="medium", metadata={"help": "weak / medium / strong / max (fills unset parameters)"})
    guidance_scale: float | None = field(default=None, metadata={"help": "s_S: scale of the safety direction (> 1)"})
    warmup_steps: int | None = field(default=None, metadata={"help": "delta: steps before safety guidance is applied"})
    threshold: float | None = field(default=None, metadata={
        "help": "lambda: where eps_c - eps_S >= lambda, no correction"})
    momentum_scale: float | None = field(default=None, metadata={"help": "s_m: weight of the momentum"})
    mom_beta: float | None = field(default=None, metadata={"help": "b_m: how much momentum is kept per step"})
    safety_concept: str = field(default="", metadata={
        "help": "text steered away from; '' = the protected concepts, or diffusers' unsafe list if none"})
    max_keywords: int = field(default=5, metadata={"help": "keywords per concept in the derived safety concept"})

    def __post_init__(self) -> None:
        key = self.preset.lower()
        if key not in PRESETS:
            raise UnknownNameError("SLD preset", self.preset, PRESETS)
        object.__setattr__(self, "preset", key)
        for name, value in PRESETS[key].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, type(value)(value))
        if self.guidance_scale <= 1.0:
            raise InvalidValueError(f"SLD guidance_scale must be > 1 (diffusers disables SLD otherwise), "
                                    f"got {self.guidance_scale}")
        if self.warmup_steps < 0:
            raise InvalidValueError(f"SLD warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.mom_beta < 1.0:
            raise InvalidValueError(f"SLD mom_beta must be in [0, 1), got {self.mom_beta}")
        if self.momentum_scale < 0:
            raise InvalidValueError(f"SLD momentum_scale must be >= 0, got {self.momentum_scale}")
        if self.max_keywords < 0:
            raise InvalidValueError(f"max_keywords must be >= 0, got {self.max_keywords}")


def safety_text(concepts: Sequence[ProtectedConcept], max_keywords: int = 5) -> str:
    """"name, kw1, kw2, ..." for every protected concept (the safety concept SLD steers away from)."""
    return ", ".join(", ".join((c.name, *c.keywords[:max_keywords])) for c in concepts)


class SLDTerm(GuidanceTerm):
    """SLD's safety guidance for one batch: holds the safety conditioning (1, 77, D) and the momentum state."""

    def __init__(self, safety: torch.Tensor, config: SLDConfig):
        self.conds = [safety]
        self.cfg = config
        self.momentum: torch.Tensor | None = None

    def __call__(self, i: int, t: torch.Tensor, eps_u: torch.Tensor, eps_c: torch.Tensor,
                 eps_extra: list[torch.Tensor]) -> torch.Tensor | None:
        cfg, eps_s = self.cfg, eps_extra[0]
        if self.momentum is None:
            self.momentum = torch.zeros_like(eps_c)
        scale = torch.clamp(torch.abs(eps_c - eps_s) * cfg.guidance_scale, max=1.0)  # eq. 6
        scale = torch.where((eps_c - eps_s) >= cfg.threshold, torch.zeros_like(scale), scale)  # eq. 6
        gamma = torch.mul(eps_s - eps_u, scale)  # eq. 4
        gamma = gamma + cfg.momentum_scale * self.momentum  # eq. 7
        self.momentum = cfg.mom_beta * self.momentum + (1 - cfg.mom_beta) * gamma  # eq. 8
        return gamma if i >= cfg.warmup_steps else None  # eq. 3 after warm-up


class SLD(Shield):
    """Safe Latent Diffusion (Schramowski et al., CVPR 2023): steer the guidance away from a safety concept."""

    name = "sld"
    config_cls = SLDConfig
    primary = "preset"

    def __init__(self, config: SLDConfig | None = None, concepts: Sequence[str | ProtectedConcept] = ()):
        super().__init__(config, concepts)
        self.text = self.config.safety_concept or (safety_text(self.concepts, self.config.max_keywords)
                                                   if self.concepts else DEFAULT_SAFETY_CONCEPT)

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        if plan.guidance <= 1.0:
            raise InvalidValueError(f"SLD needs classifier-free guidance > 1, got {plan.guidance}")
        safety = encode_prompts(pipe, [self.text])  # (1, 77, D), as the Safe pipeline encodes it
        plan.terms = [*plan.terms, SLDTerm(safety, self.config)]
        return plan, {}

    def identity(self) -> dict:
        return {**super().identity(), "safety_concept": self.text}


__all__ = ["DEFAULT_SAFETY_CONCEPT", "PRESETS", "SLD", "SLDConfig", "SLDTerm", "safety_text"]
