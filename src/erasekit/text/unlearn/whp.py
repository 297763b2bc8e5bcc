"""Who's Harry Potter (WHP).

Eldan & Russinovich, "Who's Harry Potter? Approximate Unlearning in LLMs" (arXiv:2310.02238): a reinforced model
is fine-tuned further on the forget texts; generic predictions are v_generic = v_base - alpha * relu(v_reinforced -
v_base) (logits); the model is then fine-tuned on the forget texts towards argmax v_generic.

Deviations: the paper also replaces anchored terms with generic translations (an LLM-made dictionary) before
computing the targets; the text world has no such dictionary, so only the logit-based targets are used. MUSE's
official code (swj0419/muse_bench, baselines/baselines/whos_harry_potter.py) stops at the two-model logit
combination at inference time; that is not a weight edit, so here the combination is distilled into the weights as
in the paper's second stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...edits import Edit
from ...errors import InvalidValueError
from ._loop import LoopConfig, check_texts, lm_ce, logits_ce, make_edit, run_loop


@dataclass(frozen=True)
class WHPConfig(LoopConfig):
    """Reinforce on forget (reinforce_steps), then fine-tune on generic targets (steps)."""

    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate (both stages)"})
    alpha: float = field(default=20.0, metadata={"help": "strength of the reinforced-logit offset (paper: 1 to 5; "
                                                         "a model that memorised the forget set needs more)"})
    reinforce_steps: int = field(default=30, metadata={"help": "steps of the reinforced model's fine-tuning"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise InvalidValueError(f"alpha must be a positive finite number, got {self.alpha!r}")
        if self.reinforce_steps < 1:
            raise InvalidValueError(f"reinforce_steps must be >= 1, got {self.reinforce_steps!r}")


def whp(model: Any, tokenizer: Any, forget: Sequence[str], retain: Sequence[str] = (), config: WHPConfig | None = None,
        forget_names: Sequence[str] = (), progress: Callable[[int, int, float], None] | None = None) -> Edit:
    """WHP on `forget` texts; returns an Edit (the model is left unchanged)."""
    import copy
    import dataclasses

    cfg = config or WHPConfig()
    check_texts(forget)
    reinforced_cfg = LoopConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(LoopConfig)})
    reinforced_cfg = dataclasses.replace(reinforced_cfg, steps=cfg.reinforce_steps)
    tuned, _ = run_loop(model, tokenizer, forget, (), reinforced_cfg, lambda m, fb, rb, ref: lm_ce(m, fb))
    reinforced = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, t in tuned.items():
            reinforced.get_parameter(n).copy_(t)

    def loss(m: Any, fb: tuple, rb: tuple | None, ref: Any) -> torch.Tensor:
        ids, mask, labels = fb
        with torch.no_grad():
            v_b = ref(input_ids=ids, attention_mask=mask).logits.float()
            v_r = reinforced(input_ids=ids, attention_mask=mask).logits.float()
            generic = (v_b - cfg.alpha * torch.relu(v_r - v_b)).argmax(-1)  # (B, T) targets for the next token
        targets = torch.cat([labels[:, :1], generic[:, :-1]], 1).masked_fill(labels == -100, -100)
        return logits_ce(m(input_ids=ids, attention_mask=mask).logits, targets)

    changed, stats = run_loop(model, tokenizer, forget, (), cfg, loss, needs_ref=True, progress=progress)
    return make_edit(model, changed, "whp", cfg, forget_names, stats)
