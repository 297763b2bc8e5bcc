"""Negative Preference Optimization (NPO), with MUSE's retain regularisers GDR and KLR.

Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From Catastrophic Collapse to Effective Unlearning"
(COLM 2024, arXiv:2404.05868): L = -(2/beta) E_forget[ log sigmoid( -beta * log(pi_theta(y|x) / pi_ref(y|x)) ) ],
with pi_ref the model before unlearning and log pi(y|x) the summed token log-likelihood of a forget text. GDR/KLR
retain terms as in MUSE (Shi et al., arXiv:2407.06460).

Deviation from MUSE's official code (swj0419/muse_bench, baselines/baselines/iterative.py): it takes the "log
ratio" as the element-wise difference of the two models' raw logits over the whole vocabulary and averages
log-sigmoid over it; here the ratio is of sequence log-likelihoods, as in the NPO paper's definition and its
authors' code. beta defaults to 0.1 as in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ...edits import Edit
from ...errors import InvalidValueError
from ._loop import RetainConfig, check_texts, make_edit, retain_term, run_loop, sequence_logprob


@dataclass(frozen=True)
class NPOConfig(RetainConfig):
    """NPO; `retain` = none (NPO), gdr (NPO_GDR) or klr (NPO_KLR)."""

    beta: float = field(default=0.1, metadata={"help": "inverse temperature of the NPO loss (paper: 0.1)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise InvalidValueError(f"beta must be a positive finite number, got {self.beta!r}")


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2/beta) mean log sigmoid(-beta (logp - logp_ref)); logp, logp_ref (B,) sequence log-likelihoods."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref)).mean()


def npo(model: Any, tokenizer: Any, forget: Sequence[str], retain: Sequence[str] = (), config: NPOConfig | None = None,
        forget_names: Sequence[str] = (), progress: Callable[[int, int, float], None] | None = None) -> Edit:
    """Unlearn `forget` texts from a causal LM with NPO; returns an Edit (the model is left unchanged)."""
    cfg = config or NPOConfig()
    check_texts(forget, retain, need_retain=cfg.retain != "none")

    def loss(m: Any, fb: tuple, rb: tuple | None, ref: Any) -> torch.Tensor:
        logp, _ = sequence_logprob(m, *fb)
        with torch.no_grad():
            logp_ref, _ = sequence_logprob(ref, *fb)
        return npo_loss(logp, logp_ref, cfg.beta) + retain_term(m, ref, cfg, rb)

    changed, stats = run_loop(model, tokenizer, forget, retain if cfg.retain != "none" else (), cfg, loss,
                              needs_ref=True, progress=progress)
    name = "npo" if cfg.retain == "none" else f"npo_{cfg.retain}"
    return make_edit(model, changed, name, cfg, forget_names, stats)
