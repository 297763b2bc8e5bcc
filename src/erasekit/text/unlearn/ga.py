"""Gradient ascent (GA) on the forget set, with MUSE's retain regularisers GDR and KLR.

GA: Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning" (EuroS&P 2022) and
Jang et al., "Knowledge Unlearning for Mitigating Privacy Risks in Language Models" (ACL 2023): maximise the LM loss
of the forget texts. GDR adds gradient descent on retain texts; KLR adds KL(p_original || p_model) on retain texts
(Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", arXiv:2407.06460, Sec. 4).

Deviation from MUSE's official code (swj0419/muse_bench, baselines/baselines/iterative.py): its KLR term passes raw
logits to `F.kl_div(..., log_target=True)`, which expects log-probabilities; here both sides are log-softmaxed so
the term is a true KL divergence (averaged over real tokens). MUSE trains 5-10 epochs at lr 1e-5 on Llama-7B; the
defaults here (steps, lr) are sized for the text world's small model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...edits import Edit
from ._loop import RetainConfig, check_texts, lm_ce, make_edit, retain_term, run_loop


@dataclass(frozen=True)
class GAConfig(RetainConfig):
    """Gradient ascent; `retain` = none (GA), gdr (GA_GDR) or klr (GA_KLR)."""


def ga(model: Any, tokenizer: Any, forget: Sequence[str], retain: Sequence[str] = (), config: GAConfig | None = None,
       forget_names: Sequence[str] = (), progress: Callable[[int, int, float], None] | None = None) -> Edit:
    """Unlearn `forget` texts from a causal LM by gradient ascent; returns an Edit (the model is left unchanged)."""
    cfg = config or GAConfig()
    check_texts(forget, retain, need_retain=cfg.retain != "none")

    def loss(m: Any, fb: tuple, rb: tuple | None, ref: Any) -> Any:
        return -lm_ce(m, fb) + retain_term(m, ref, cfg, rb)

    changed, stats = run_loop(model, tokenizer, forget, retain if cfg.retain != "none" else (), cfg, loss,
                              needs_ref=cfg.retain == "klr", progress=progress)
    name = "ga" if cfg.retain == "none" else f"ga_{cfg.retain}"
    return make_edit(model, changed, name, cfg, forget_names, stats)
