"""The fine-tuning loop shared by the text unlearning methods, and the Edit they return.

Every method trains a copy of the weights in place on the model it is given, then restores the original weights
bit for bit and returns the changed tensors as an `erasekit.edits.Edit` (keys are the model's parameter names, e.g.
"transformer.h.0.attn.c_attn.weight"), so `edit.apply(model)` / `edit.revert(model)` work as for the image erasers.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ...edits import Edit
from ...errors import InvalidValueError
from ..train import batch_tensors

RETAIN_TERMS = ("none", "gdr", "klr")


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation settings every text unlearning method shares."""

    steps: int = field(default=30, metadata={"help": "optimizer steps"})
    lr: float = field(default=2e-4, metadata={"help": "AdamW learning rate (constant, as in MUSE); 2e-4 is what the "
                                                   "text-world table used for the GDR/KLR variants"})
    batch_size: int = field(default=8, metadata={"help": "forget (and retain) documents per step"})
    max_len: int = field(default=256, metadata={"help": "tokens per document (longer ones are truncated)"})
    seed: int = field(default=0, metadata={"help": "batch-order seed"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    budget_s: float = field(default=300.0, metadata={"help": "stop after this many seconds (0: no limit)"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_len", "threads"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not (math.isfinite(self.budget_s) and self.budget_s >= 0):
            raise InvalidValueError(f"budget_s must be >= 0 (0: no limit), got {self.budget_s!r}")


@dataclass(frozen=True)
class RetainConfig(LoopConfig):
    """LoopConfig plus MUSE's regulariser on the retain set: none, gdr (gradient descent) or klr (KL to the
    original model)."""

    retain: str = field(default="none", metadata={"help": "retain term: none | gdr | klr"})
    retain_weight: float = field(default=1.0, metadata={"help": "weight of the retain term"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retain not in RETAIN_TERMS:
            raise InvalidValueError(f"retain={self.retain!r} is not one of {', '.join(RETAIN_TERMS)}")
        if not (math.isfinite(self.retain_weight) and self.retain_weight >= 0):
            raise InvalidValueError(f"retain_weight must be a finite number >= 0, got {self.retain_weight!r}")


def context_length(model: Any) -> int:
    """The model's maximum sequence length (GPT-2's n_positions, Llama's max_position_embeddings)."""
    conf = model.config
    return int(getattr(conf, "n_positions", None) or getattr(conf, "max_position_embeddings", None) or 1 << 20)


def check_texts(forget: Sequence[str], retain: Sequence[str] = (), need_retain: bool = False) -> None:
    if not forget or not any(t.strip() for t in forget):
        raise InvalidValueError("empty forget set: give at least one non-empty forget text")
    if need_retain and not retain:
        raise InvalidValueError("this retain term (gdr/klr) needs retain texts; give some or use retain='none'")


def sequence_logprob(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor]:
    """(sum of next-token log-probs per sequence (B,), logits (B, T, V))."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    tgt = labels[:, 1:]
    keep = tgt != -100
    tok = lp.gather(-1, tgt.clamp_min(0).unsqueeze(-1)).squeeze(-1) * keep
    return tok.sum(-1), logits


def kl_to_reference(model: Any, ref: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens of KL(p_ref || p_model) of the next-token distributions."""
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    with torch.no_grad():
        logq = torch.log_softmax(ref(input_ids=ids, attention_mask=mask).logits.float(), -1)
    kl = (logq.exp() * (logq - logp)).sum(-1)  # (B, T)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def retain_term(model: Any, ref: Any | None, cfg: RetainConfig, batch: tuple[torch.Tensor, ...] | None) -> torch.Tensor:
    if cfg.retain == "none" or batch is None:
        return torch.zeros(())
    ids, mask, labels = batch
    if cfg.retain == "gdr":
        return cfg.retain_weight * model(input_ids=ids, attention_mask=mask, labels=labels).loss
    return cfg.retain_weight * kl_to_reference(model, ref, ids, mask)


# loss(model, forget_batch, retain_batch or None, ref model or None) -> scalar
LossFn = Callable[[Any, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...] | None, Any | None], torch.Tensor]


def run_loop(model: Any, tokenizer: Any, forget: Sequence[str], retain: Sequence[str], cfg: LoopConfig,
             loss_fn: LossFn, needs_ref: bool = False, progress: Callable[[int, int, float], None] | None = None,
             ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train `model` in place with `loss_fn` for cfg.steps, then restore its weights exactly. Returns
    ({parameter name: trained value} for the parameters that changed, stats)."""
    torch.set_num_threads(cfg.threads)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    original = {n: p.detach().clone() for n, p in params.items()}
    ref = None
    if needs_ref:
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    was_training = model.training
    model.train()
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    max_len = min(cfg.max_len, context_length(model))
    t0, losses, stopped = time.perf_counter(), [], "steps"
    try:
        for step in range(cfg.steps):
            if cfg.budget_s and time.perf_counter() - t0 > cfg.budget_s:
                stopped = "budget"
                break
            fb = batch_tensors(tokenizer, rng.choices(list(forget), k=min(cfg.batch_size, len(forget))), max_len)
            rb = batch_tensors(tokenizer, rng.choices(list(retain), k=min(cfg.batch_size, len(retain))),
                               max_len) if retain else None
            loss = loss_fn(model, fb, rb, ref)
            if not torch.isfinite(loss):
                raise InvalidValueError(f"the unlearning loss became {float(loss)} at step {step}; lower lr "
                                        f"(now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, cfg.steps, losses[-1])
        trained = {n: p.detach().clone() for n, p in params.items()}
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(original[n])
        model.train(was_training)
    changed = {n: t for n, t in trained.items() if not torch.equal(t, original[n])}
    stats = {"steps_done": len(losses), "stopped_by": stopped, "seconds": round(time.perf_counter() - t0, 2),
             "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None}
    return changed, stats


def make_edit(model: Any, changed: dict[str, torch.Tensor], method: str, cfg: Any, forget_names: Sequence[str],
              stats: dict[str, Any]) -> Edit:
    """An Edit of `model` (base hashes from its current, original weights) replacing the `changed` tensors."""
    if not changed:
        raise InvalidValueError(f"{method} changed no weights (steps=0 or lr too small); nothing to save")
    return Edit.from_tensors(model, changed, method=method, config=asdict(cfg), erase=list(forget_names),
                             extra={"modality": "text", "train": stats})


def lm_ce(model: Any, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    ids, mask, labels = batch
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def logits_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
