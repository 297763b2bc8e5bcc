"""Attacks that try to revive unlearned knowledge in a text-world LM.

relearn      Relearning: fine-tune the unlearned model on a small part of the forget split, then measure what comes
             back on the forget facts it was NOT shown (Hu et al., "Unlearning or Obfuscating? Jogging the Memory of
             Unlearned LLMs via Benign Relearning", arXiv:2406.13356; Lynch et al., "Eight Methods to Evaluate Robust
             Unlearning in LLMs", arXiv:2402.16835). The same fine-tuning on the retrained reference gives the
             baseline: what the shown texts alone teach a model that never saw the rest.
in_context   In-context re-introduction (Shumailov et al., "UnUnlearning: Unlearning is not sufficient for content
             regulation in advanced generative AI", arXiv:2407.00106): the fact is stated in the prompt before the
             question; an unlearned model that answers uses knowledge supplied at inference time.
step_by_step Step-by-step reasoning (Sleek, arXiv:2506.17279): chains of sub-questions answered by the model
             itself lead it to the forgotten fact; in reasoning_attack.py (`TEXT_ATTACKS["step-by-step"]`).
restor       RESTOR (Rezaei et al., TMLR 2025): inject wrong facts, unlearn them, measure recovery of the clean
             answers; and `reference_distance` to the retrained model; in restor.py.

All take a model with the edit already applied (or any model) and never leave weights changed.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InvalidValueError
from . import muse
from .unlearn._loop import LoopConfig, lm_ce, run_loop
from ..text.world import STATEMENTS


@dataclass(frozen=True)
class RelearnConfig:
    """Relearning attack: fine-tune on the news of `shown_fraction` of the forget entities."""

    shown_fraction: float = field(default=0.5, metadata={"help": "fraction of forget entities whose news is shown"})
    budgets: tuple[int, ...] = field(default=(0, 5, 10, 20), metadata={"help": "fine-tuning steps to measure at"})
    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate"})
    batch_size: int = field(default=8, metadata={"help": "documents per step"})
    seed: int = field(default=0, metadata={"help": "which entities are shown, and batch order"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads of the fine-tuning"})

    def __post_init__(self) -> None:
        if int(self.threads) < 1:
            raise InvalidValueError(f"threads must be >= 1, got {self.threads!r}")
        if not 0 < self.shown_fraction < 1:
            raise InvalidValueError(f"shown_fraction must be in (0, 1), got {self.shown_fraction!r}")
        if not self.budgets or any(int(b) < 0 for b in self.budgets):
            raise InvalidValueError(f"budgets must be steps >= 0, got {self.budgets!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidValueError(f"lr must be a positive finite number, got {self.lr!r}")


@contextlib.contextmanager
def temporarily(model: Any, tensors: dict[str, torch.Tensor]) -> Iterator[Any]:
    """Write `tensors` into the model's parameters, restore the previous values on exit."""
    saved = {n: model.get_parameter(n).detach().clone() for n in tensors}
    try:
        with torch.no_grad():
            for n, t in tensors.items():
                model.get_parameter(n).copy_(t)
        yield model
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                model.get_parameter(n).copy_(t)


def relearn(model: Any, tokenizer: Any, world: Any, config: RelearnConfig | None = None) -> dict[str, Any]:
    """Budget curve of the relearning attack: QA on shown and unseen forget entities, verbatim on forget books,
    after each number of fine-tuning steps in `config.budgets`."""
    cfg = config or RelearnConfig()
    ents = sorted(e for e, s in world.entity_split.items() if s == "forget")
    if len(ents) < 2:
        raise InvalidValueError("the relearning attack needs >= 2 forget entities (some shown, some held out)")
    rng = random.Random(cfg.seed)
    shown = sorted(rng.sample(ents, max(1, min(len(ents) - 1, round(len(ents) * cfg.shown_fraction)))))
    unseen = [e for e in ents if e not in shown]
    texts = [d.text for d in world.docs("forget", "news") if d.subject in shown]
    facts_shown = [f for f in world.facts if f.entity in shown]
    facts_unseen = [f for f in world.facts if f.entity in unseen]
    items = muse.verbatim_items(world, "forget", tokenizer=tokenizer)
    curve = []
    for steps in sorted(set(int(b) for b in cfg.budgets)):
        tuned: dict[str, torch.Tensor] = {}
        if steps:
            tuned, _ = run_loop(model, tokenizer, texts, (), LoopConfig(steps=steps, lr=cfg.lr,
                                batch_size=cfg.batch_size, seed=cfg.seed, threads=cfg.threads, budget_s=0.0),
                                lambda m, fb, rb, ref: lm_ce(m, fb))
        with temporarily(model, tuned):
            _, acc_shown, _ = muse.knowmem(model, tokenizer, facts_shown)
            _, acc_unseen, _ = muse.knowmem(model, tokenizer, facts_unseen)
            vm, _ = muse.verbmem(model, tokenizer, items)
        curve.append({"steps": steps, "qa_acc_shown": acc_shown, "qa_acc_unseen": acc_unseen, "verbmem_f": vm})
    return {"shown": shown, "unseen": unseen, "config": {"shown_fraction": cfg.shown_fraction, "lr": cfg.lr,
                                                           "budgets": list(cfg.budgets), "seed": cfg.seed},
            "curve": curve}


# every text attack by its `erasekit text attack --kind` name -> "module:function" (imported on use)
TEXT_ATTACKS = {"relearn": "erasekit.text.attacks:relearn", "in-context": "erasekit.text.attacks:in_context",
                "step-by-step": "erasekit.text.reasoning_attack:step_by_step",
                "restor": "erasekit.text.restor:restor"}


def fact_statement(fact: Any) -> str:
    """The fact as its first training statement template ("X was born in Velmora.")."""
    return STATEMENTS[fact.relation][0].format(e=fact.entity, a=fact.answer)


def in_context(model: Any, tokenizer: Any, facts: Sequence[Any]) -> dict[str, float]:
    """QA accuracy without and with the fact stated in the prompt (in-context re-introduction)."""
    _, plain, _ = muse.knowmem(model, tokenizer, facts)
    _, given, _ = muse.knowmem(model, tokenizer, facts, context=lambda f: fact_statement(f) + "\n")
    return {"qa_acc": plain, "qa_acc_in_context": given}
