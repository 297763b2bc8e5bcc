"""Task-vector negation.

Ilharco et al., "Editing Models with Task Arithmetic" (ICLR 2023), as used for unlearning in MUSE (Shi et al.,
arXiv:2407.06460): fine-tune the model further on the forget texts (theta_ft), then subtract the task vector:
theta_new = theta - alpha * (theta_ft - theta). MUSE's official code (swj0419/muse_bench,
baselines/baselines/task_vector.py) does the same with alpha = 1; the fine-tuning here is the shared loop's
(AdamW, constant lr).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...edits import Edit
from ...errors import InvalidValueError
from ._loop import LoopConfig, check_texts, lm_ce, make_edit, run_loop


@dataclass(frozen=True)
class TaskVectorConfig(LoopConfig):
    """Fine-tune on forget, then negate the task vector scaled by alpha."""

    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate of the forget fine-tuning"})
    alpha: float = field(default=3.0, metadata={"help": "scale of the negated task vector (MUSE: 1.0; the text "
                                                        "world's memorised forget set needs more, see bench notes)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise InvalidValueError(f"alpha must be a positive finite number, got {self.alpha!r}")


def task_vector(model: Any, tokenizer: Any, forget: Sequence[str], retain: Sequence[str] = (),
                config: TaskVectorConfig | None = None, forget_names: Sequence[str] = (),
                progress: Callable[[int, int, float], None] | None = None) -> Edit:
    """Negated task vector of fine-tuning on `forget`; returns an Edit (the model is left unchanged)."""
    cfg = config or TaskVectorConfig()
    check_texts(forget)
    tuned, stats = run_loop(model, tokenizer, forget, (), cfg, lambda m, fb, rb, ref: lm_ce(m, fb),
                            progress=progress)
    params = dict(model.named_parameters())
    new = {n: (params[n].detach() - cfg.alpha * (t - params[n].detach())) for n, t in tuned.items()}
    return make_edit(model, new, "task_vector", cfg, forget_names, stats)
