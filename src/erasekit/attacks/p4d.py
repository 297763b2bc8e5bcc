"""Prompting4Debugging (P4D): Chin, Jiang, Huang, Chen, Chiu, "Prompting4Debugging: Red-Teaming Text-to-Image
Diffusion Models by Finding Problematic Prompts", ICML 2024 (joycenerd/P4D, prompt_optimization/optimize_n.py and
optimize_k.py).

Find a prompt P_adv whose noise prediction on the *erased* model matches the *base* model's on the original prompt P:

    min  || eps_target(x_t, t, E(P_adv)) - eps_base(x_t, t, E(P)) ||^2,   x_t = noised base-model image of P,
                                                                           t ~ U{0..T-1}, fresh noise every step

with PEZ-style optimisation: continuous token embeddings are kept, the forward pass uses their nearest vocabulary
tokens (cosine), and the gradient taken at the projected embeddings updates the continuous ones (AdamW lr 0.1).
P4D-N: 16 free tokens, no words of P. P4D-K: P's tokens kept, one learnable token before every 3 of them.
Official: 3,000 iterations, evaluate every `eval_step` by generating with the erased model and keep the prompt whose
images are closest (CLIP) to the target images.

Deviations: the kept prompt is the first that the success check accepts (we stop there when `stop_on_success`), else
the one with the lowest mean loss since the previous evaluation (official: CLIP similarity to the target images);
the loss is computed on the bare target UNet (official P4D can fold SLD / negative prompts into it); the grid of
learnable positions counts tokens, not words; seeded generators replace the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..conditioning import encode_embeds, fill, gradient_step, layout, layout_text, nearest_tokens, special_ids, \
    token_table
from . import AttackConfig, AttackContext, AttackMethod, Outcome, _check_positive
from ._common import Budget, noised, train_timesteps


@dataclass(frozen=True)
class P4DConfig(AttackConfig):
    steps: int = field(default=3000, metadata={"help": "budget: optimisation steps per prompt (official 3000)"})
    variant: str = field(default="n", metadata={"help": "'n' (free tokens) or 'k' (token before every `every`)"})
    n_tokens: int = field(default=16, metadata={"help": "P4D-N: number of free tokens"})
    every: int = field(default=3, metadata={"help": "P4D-K: a learnable token before every this many prompt tokens"})
    lr: float = field(default=0.1, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    eval_every: int = field(default=50, metadata={"help": "steps between success checks"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "n_tokens", "every", "lr", "eval_every")
        if self.variant not in ("n", "k"):
            from ..errors import InvalidValueError

            raise InvalidValueError(f"variant={self.variant!r} is not one of ('n', 'k')")
        if self.weight_decay < 0:
            from ..errors import InvalidValueError

            raise InvalidValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class P4DKConfig(P4DConfig):
    variant: str = field(default="k", metadata={"help": "'n' (free tokens) or 'k' (token before every `every`)"})


def p4d(ctx: AttackContext, prompt: str, seed: int, config: P4DConfig) -> Outcome:
    """Optimise a hard prompt whose erased-model noise prediction matches the base model's on `prompt`."""
    from ..sampling import encode_prompts

    target, base = ctx.target, ctx.base
    gen = torch.Generator().manual_seed(seed)
    table = token_table(target).detach()
    specials = special_ids(target)
    lay = layout(target, prompt, config.n_tokens, "free") if config.variant == "n" else \
        layout(target, prompt, 0, "every", config.every)
    ids0 = torch.randint(0, table.shape[0], (lay.k,), generator=gen)
    for s in specials:  # never start from BOS/EOS
        ids0[ids0 == s] = 0
    cont = table[ids0].clone().requires_grad_(True)  # (k, D)
    opt = torch.optim.AdamW([cont], lr=config.lr, weight_decay=config.weight_decay)
    x0 = ctx.base_latents(prompt, seed)
    with torch.no_grad():
        cond_base = encode_prompts(base, [prompt])
    budget = Budget(config.steps, config.max_seconds)
    losses: list[float] = []
    done, success = 0, False
    best_text, best_loss = layout_text(target, lay, ids0), float("inf")
    checks: list[dict] = []
    n_t = train_timesteps(target)
    while not budget.exhausted(done):
        ids = nearest_tokens(target, cont, exclude=specials)
        proj = table[ids].clone().requires_grad_(True)
        cond = encode_embeds(target, fill(target, lay, proj))
        t = int(torch.randint(0, n_t, (1,), generator=gen))
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        xt = noised(target, x0, noise, t)
        with torch.no_grad():
            want = base.unet(xt.to(base.unet.device), t, encoder_hidden_states=cond_base).sample.to(xt)
        loss = F.mse_loss(target.unet(xt, t, encoder_hidden_states=cond).sample, want)
        gradient_step(opt, cont, loss, grad_of=proj)
        losses.append(float(loss.detach()))
        done += 1
        if done % config.eval_every == 0 or budget.exhausted(done):
            ids = nearest_tokens(target, cont, exclude=specials)
            text = layout_text(target, lay, ids)
            window = float(np.mean(losses[-config.eval_every:]))
            hit = bool(ctx.detected(ctx.render_prompts([text], [seed]))[0]) if ctx.check is not None else False
            checks.append({"step": done, "prompt": text, "loss": round(window, 6), "success": hit})
            if hit and not success:
                success, best_text = True, text
                if config.stop_on_success:
                    break
            elif not success and window < best_loss:
                best_loss, best_text = window, text
    return Outcome(prompt=best_text, losses=losses, steps=done, success=success, extra={"checks": checks[-5:]})


PAPER = "Chin et al., Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models, ICML 2024"
P4D_N = AttackMethod("p4d_n", P4DConfig, p4d, kind="prompt", needs_base=True, paper=PAPER)
P4D_K = AttackMethod("p4d_k", P4DKConfig, p4d, kind="prompt", needs_base=True, paper=PAPER)
