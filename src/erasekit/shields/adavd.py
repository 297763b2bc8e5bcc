"""AdaVD: Precise, Fast, and Low-cost Concept Erasure in Value Space: Orthogonal Complement Matters. Wang et al.
CVPR 2025. arXiv:2412.06143; official code: github.com/WYuan1001/AdaVD (src/main.py::AttnProcessor,
cal_ortho_decomp; src/utils.py::get_spread_embedding).

Training-free and weight-free: at inference every cross-attention's values v = W_v c (per token l, all heads
concatenated, C = inner dim) lose their component along the target concept's value t = W_v e:

    v'_l = v_l - s(cos(v_l, t_l)) <v_l, t_l> / ||t_l||^2 t_l          (l >= 1; BOS is left as it is)
    s(x) = shift_c / (1 + exp(-shift_a (x - shift_b)))                (adaptive shift; s = 1 when adaptive=False)

The target rows e are the concept's text embedding "spread": every row after BOS is the row of its last word token
(the token before the first [EoT]). Several concepts: the component in the span of their values (per token, an
orthonormal basis), each basis direction weighted by the shift of its concept's cosine. Keys, queries and the rest of
the UNet are untouched; the projection applies to every cross-attention call of the denoising loop (conditional and
unconditional halves, as the official processor does). It is a shield (`erasekit eval --shield adavd`); the processors
are installed only for the duration of one denoising loop (`Plan.wraps`) and the previous ones restored.

Defaults (official `--token_sim` run): adaptive shift on with a = 100, b = 0.93, c = 2.

Deviations from the official code:
  - Many concepts: QR-orthonormal basis of the target values per token with per-direction shift (official: its own
    Gram-Schmidt with the cosine folded into the basis coefficients); one concept is identical.
  - The official `decomp_timestep` (skip the first timesteps) is not implemented (official default 0: never skip).
  - Values are recomputed from the current model's W_v (official: recorded in a first pass at every timestep; the
    values do not depend on the timestep, so the result is the same).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError
from . import Plan, ProtectedConcept, Shield


@dataclass(frozen=True)
class AdaVDConfig:
    adaptive: bool = field(default=True, metadata={"help": "adaptive shift s(cos) (False: plain projection, s = 1)"})
    shift_a: float = field(default=100.0, metadata={"help": "steepness a of the shift sigmoid"})
    shift_b: float = field(default=0.93, metadata={"help": "cosine b at the sigmoid's midpoint"})
    shift_c: float = field(default=2.0, metadata={"help": "height c of the shift sigmoid"})
    target: str = field(default="", metadata={"help": "target text; '' = the protected concepts' names"})

    def __post_init__(self) -> None:
        if self.shift_a <= 0 or self.shift_c < 0:
            raise InvalidValueError(f"shift_a must be > 0 and shift_c >= 0, got a={self.shift_a}, c={self.shift_c}")


def shift(cos: torch.Tensor, config: AdaVDConfig) -> torch.Tensor:
    """Adaptive shift factor s(cos) (same shape), or ones when `config.adaptive` is False."""
    if not config.adaptive:
        return torch.ones_like(cos)
    return config.shift_c / (1 + torch.exp(-config.shift_a * (cos - config.shift_b)))


def project_values(value: torch.Tensor, targets: torch.Tensor, config: AdaVDConfig) -> torch.Tensor:
    """value (B, L, C) minus its (shifted) component along the targets' values (K, L, C), per token; token 0 kept."""
    eps = torch.finfo(value.dtype).eps
    if targets.shape[0] == 1:
        t = targets[0]  # (L, C)
        dot = (value * t).sum(-1)  # (B, L)
        t2 = (t * t).sum(-1).clamp_min(eps)
        cos = dot / (value.norm(dim=-1) * t.norm(dim=-1)).clamp_min(eps)
        weight = shift(cos, config) * dot / t2
        weight[:, 0] = 0
        return value - weight[..., None] * t
    basis = torch.linalg.qr(targets.permute(1, 2, 0)).Q.permute(0, 2, 1)  # (L, K, C) orthonormal per token
    coef = torch.einsum("blc,lkc->blk", value, basis)  # (B, L, K)
    cos = torch.einsum("blc,klc->blk", value, targets) / (
        value.norm(dim=-1)[..., None] * targets.norm(dim=-1).T[None]).clamp_min(eps)
    weight = shift(cos, config) * coef
    weight[:, 0] = 0
    return value - torch.einsum("blk,lkc->blc", weight, basis)


class AdaVDProcessor:
    """Cross-attention processor (diffusers' AttnProcessor computation) whose values are projected by AdaVD; calls
    whose context length differs from the targets' (self-attention) go to the `base` processor unchanged."""

    def __init__(self, base: object, targets: torch.Tensor, config: AdaVDConfig):
        self.base, self.targets, self.config = base, targets, config

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != self.targets.shape[1]:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, h * w).transpose(1, 2)
        batch, seq, _ = encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.to_v(encoder_hidden_states)  # (B, L, C)
        value = project_values(value, self.targets.to(value.dtype), self.config)
        value = attn.head_to_batch_dim(value)
        probs = attn.get_attention_scores(query, key, attention_mask)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, ch, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def spread_embedding(pipe: StableDiffusionPipeline, texts: Sequence[str]) -> torch.Tensor:
    """(K, 77, D): E(text) with every row after BOS replaced by the row of its last word token (official "spread")."""
    from ..sampling import encode_prompts

    emb = encode_prompts(pipe, list(texts))
    ids = pipe.tokenizer(list(texts), padding="max_length", max_length=emb.shape[1], truncation=True,
                         return_tensors="pt").attention_mask
    last = (ids.sum(1) - 2).clamp(min=0)
    out = emb.clone()
    out[:, 1:] = emb[torch.arange(len(texts)), last][:, None]
    return out


class AdaVD(Shield):
    """AdaVD value-space erasure at inference time (no weight change)."""

    name = "adavd"
    config_cls = AdaVDConfig

    def __init__(self, config: AdaVDConfig | None = None, concepts: Sequence[str | ProtectedConcept] = ()):
        super().__init__(config, concepts)
        self.texts = [self.config.target] if self.config.target else [c.name for c in self.concepts]
        if not self.texts:
            raise InvalidValueError("adavd needs a concept to erase: pass concepts=[...] or target=TEXT")

    @contextlib.contextmanager
    def installed(self, pipe: StableDiffusionPipeline) -> Iterator[None]:
        """Swap AdaVD processors into every cross-attention of `pipe.unet` for the duration of the block."""
        from ..erasers._closed_form import cross_attention_modules

        with torch.no_grad():
            spread = spread_embedding(pipe, self.texts)  # (K, 77, D)
            modules = cross_attention_modules(pipe.unet)
            old = {name: m.processor for name, m in modules.items()}
            for name, m in modules.items():
                m.set_processor(AdaVDProcessor(m.processor, m.to_v(spread.to(m.to_v.weight.dtype)), self.config))
        try:
            yield
        finally:
            for name, m in modules.items():
                m.set_processor(old[name])

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        plan.wraps = [*plan.wraps, self.installed]
        return plan, {}

    def identity(self) -> dict:
        return {**super().identity(), "targets": self.texts}


__all__ = ["AdaVD", "AdaVDConfig", "AdaVDProcessor", "project_values", "spread_embedding"]
