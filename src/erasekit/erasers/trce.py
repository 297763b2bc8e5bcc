"""TRCE stage 1: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models. Chen et al. ICCV 2025.
arXiv:2503.07389; official code: github.com/ddgoodgood/TRCE (run_trce_stage1.py, src/cfr_utils.py::prepare_k_v,
closed_form_refinement; config/stage1/*.yaml).

Malicious prompts carry their meaning into the first end-of-text token [EoT] (the causal text encoder summarises the
prompt there), which implicit or adversarial prompts share with explicit ones. Stage 1 edits every cross-attention
to_k/to_v W so that the [EoT] row c of each malicious prompt maps to what W gives the [EoT] row g of its safe
counterpart, in closed form (MACE's refinement):

    W* = argmin lamb ||W - W0||^2 + (1/n) sum_pairs sum_tokens s_t b_t ||W c_t - W0 g_t||^2
                 + preserve_scale sum_preserve ||W p - W0 p||^2

tokens t: [SoT] (weight base 1), first [EoT] (1), the last padding row (base 77 - words - 2); official weights
s = (0, 1, 0) for these (and 0 for the keyword tokens), i.e. only the first [EoT] is edited.

`erase` are the malicious prompts, `guide` their safe counterparts (one per prompt, or one for all; default "").

Deviations from the official code:
  - The [EoT] index is the tokenizer's (attention_mask.sum() - 1); the official code uses word count + 1, which is
    the same only when every word is one token.
  - Preservation: `preserve` prompts (all 77 rows) with `preserve_scale` and lamb 0.5 by default, instead of the
    cached COCO sums (weighted 0.01 / 3e4) with lamb 0, which we do not ship; keyword-token rows (weight 0 in the
    official configs) and the GPT-based prompt augmentation are not implemented.
  - Stage 2 (contrastive early-step steering by fine-tuning) is a fine-tuning method, not part of this closed form.
  - Solves in float64 via the shared residual form (official: float32 inverse).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._closed_form import PipelineLike, Rows, encode, kv_weights, solve


@dataclass(frozen=True)
class TRCEConfig:
    lamb: float = field(default=0.5, metadata={"help": "weight of ||W - W0||^2 (official: 0 with COCO sums)"})
    token_weights: tuple[float, float, float] = field(default=(0.0, 1.0, 0.0), metadata={
        "help": "weights of [SoT], first [EoT], last padding row (official: 0,1,0)"})
    preserve_scale: float = field(default=1.0, metadata={"help": "weight of each preserve row"})
    with_to_k: bool = field(default=True, metadata={"help": "edit to_k as well as to_v (official: yes)"})

    def __post_init__(self) -> None:
        for name in ("lamb", "preserve_scale"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.token_weights) != 3 or min(self.token_weights) < 0:
            raise InvalidValueError(f"token_weights={self.token_weights!r} must be three weights >= 0 "
                                    "([SoT], first [EoT], last padding row)")
        if not any(self.token_weights):
            raise InvalidValueError("token_weights are all 0: nothing would be erased; official: (0, 1, 0)")


def trce(pipe: PipelineLike, request: EraseRequest, config: TRCEConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """TRCE stage-1 closed-form edit of `request.erase` (malicious prompts) toward `request.guide` (safe ones)."""
    safe = request.guides("")
    old, new = encode(pipe, list(request.erase)), encode(pipe, safe)
    n, length, d = old.hidden.shape
    rows = Rows.empty(d)
    for i in range(n):
        eot_old, eot_new = int(old.lengths[i]) - 1, int(new.lengths[i]) - 1
        words = int(old.lengths[i]) - 2
        bases = (1.0, 1.0, float(length - words - 2))
        positions = ((0, 0), (eot_old, eot_new), (length - 1, length - 1))
        for (po, pn), base, scale in zip(positions, bases, config.token_weights, strict=True):
            if scale > 0:
                rows.add_erase(old.hidden[i, po][None], new.hidden[i, pn][None], scale * base / n)
    if request.preserve:
        keep = encode(pipe, list(request.preserve))
        rows.add_preserve(keep.hidden.reshape(-1, d), config.preserve_scale)
    weights = kv_weights(pipe, with_to_k=config.with_to_k)
    new_w = solve(weights, rows, config.lamb)
    info = {"safe": safe, "erase_rows": int(rows.keys.shape[0]), "preserve_rows": int(rows.preserve.shape[0])}
    return new_w, info


METHOD = Method("trce", TRCEConfig, trce,
                paper="Chen et al., TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion "
                      "Models, ICCV 2025 (stage 1)")
