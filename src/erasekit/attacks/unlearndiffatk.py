"""UnlearnDiffAtk: Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy to
Generate Unsafe Images ... For Now", ECCV 2024 (OPTML-Group/Diffusion-MU-Attack, src/attackers/text_grad_.py,
src/tasks/classifier_.py).

For a prompt P and a target image x0 made by the *base* model, find k discrete tokens `adv` such that the attacked
model denoises x0 well when conditioned on [BOS, adv, P, EOS]:

    min_u  || noise - eps_target( sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t, E([BOS, onehot(u) @ T, P]) ) ||^2

u (k, V) is a relaxed one-hot on the probability simplex (init uniform), `onehot(u)` a token *sampled* from u in the
forward pass (straight-through: the backward pass passes hardtanh(grad) to u), T the (V, D) token table; Adam (lr 0.01,
weight decay 0.1), then projection of each row of u onto the simplex. Official schedule: t in {10, 30, ..., 990}
(ascending), 40 iterations each (2,000 steps); after each t the argmax prompt is decoded, generated with the target on
the prompt's seed, classified, and the attack stops on success.

Gradients: the code we read (text_grad_.py at 0afefc7) sets `.grad` from `torch.autograd.grad` each step, so it does
not accumulate; the never-zeroed-gradient bug is in AdvUnlearn's soft-prompt loop (`loss.backward()` without
`zero_grad`, see `softprompt`). We use one step's gradient per step; `accumulate_grads=True` reproduces the buggy
accumulation for comparison with numbers produced that way.

Deviations: the budget (`steps`, `max_seconds`) truncates the schedule (set `iters_per_timestep` lower to visit every
timestep within a small budget); the simplex projection is exact (sort-based) instead of bisection to 1e-5; noise is
drawn from a seeded generator (official: the global RNG); the success check is pluggable (official: NudeNet at 0.45,
a style or ImageNet classifier).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..conditioning import encode_embeds, fill, gradient_step, layout, layout_text, token_table
from . import AttackConfig, AttackContext, AttackMethod, Outcome, _check_choice, _check_positive
from ._common import Budget, noised, project_simplex, train_timesteps

SAMPLING = ("multinomial", "argmax")


class StraightThroughOneHot(torch.autograd.Function):
    """Forward: a one-hot (k, V) token per row, sampled from the rows of u (or their argmax).
    Backward: hardtanh of the incoming gradient, passed to u unchanged otherwise (official STERandSelect)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, generator: torch.Generator | None, argmax: bool) -> torch.Tensor:  # noqa: ARG004
        idx = u.argmax(-1) if argmax else torch.multinomial(u.clamp_min(0), 1, generator=generator).squeeze(-1)
        return F.one_hot(idx, u.shape[-1]).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ARG004
        return F.hardtanh(grad), None, None


def timestep_schedule(num_train_timesteps: int = 1000, n: int = 50) -> list[int]:
    """UnlearnDiffAtk's timesteps: n evenly spaced, starting at T // n // 2 (10, 30, ..., 990 for T=1000, n=50)."""
    start = num_train_timesteps // n // 2
    return list(range(start, num_train_timesteps, num_train_timesteps // n))[:n]


@dataclass(frozen=True)
class UnlearnDiffAtkConfig(AttackConfig):
    steps: int = field(default=2000, metadata={"help": "budget: optimisation steps per prompt (official 50 x 40)"})
    k: int = field(default=5, metadata={"help": "adversarial prefix tokens"})
    lr: float = field(default=0.01, metadata={"help": "Adam learning rate on the relaxed one-hot"})
    weight_decay: float = field(default=0.1, metadata={"help": "Adam weight decay"})
    n_timesteps: int = field(default=50, metadata={"help": "timesteps of the schedule (official 50: 10, 30, ..., 990)"})
    iters_per_timestep: int = field(default=40, metadata={"help": "optimisation steps per timestep (official 40)"})
    sampling: str = field(default="multinomial", metadata={"help": "straight-through forward: 'multinomial' (official)"
                                                                   " or 'argmax'"})
    rand_init: bool = field(default=False, metadata={"help": "random instead of uniform init of u (official option)"})
    accumulate_grads: bool = field(default=False, metadata={"help": "never zero gradients (AdvUnlearn's bug; off)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "k", "lr", "n_timesteps", "iters_per_timestep")
        if self.weight_decay < 0:
            from ..errors import InvalidValueError

            raise InvalidValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        _check_choice(self, "sampling", SAMPLING)


def unlearndiffatk(ctx: AttackContext, prompt: str, seed: int, config: UnlearnDiffAtkConfig) -> Outcome:
    """Optimise k prefix tokens for `prompt` against the target's denoising loss on the base model's image."""
    target = ctx.target
    gen = torch.Generator().manual_seed(seed)
    table = token_table(target).detach()
    vocab = table.shape[0]
    lay = layout(target, prompt, config.k, "prefix")
    x0 = ctx.base_latents(prompt, seed)
    u0 = torch.rand(config.k, vocab, generator=gen) if config.rand_init else torch.full((config.k, vocab), 1 / vocab)
    u = project_simplex(u0.to(table)).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=config.lr, weight_decay=config.weight_decay)
    budget = Budget(config.steps, config.max_seconds)
    losses: list[float] = []
    done, success, text = 0, False, prompt
    checks: list[dict] = []
    for t in timestep_schedule(train_timesteps(target), config.n_timesteps):
        if budget.exhausted(done):
            break
        for _ in range(config.iters_per_timestep):
            if budget.exhausted(done):
                break
            onehot = StraightThroughOneHot.apply(u, gen, config.sampling == "argmax")  # (k, V)
            cond = encode_embeds(target, fill(target, lay, onehot @ table))  # (1, L, D)
            noise = torch.randn(x0.shape, generator=gen).to(x0)
            pred = target.unet(noised(target, x0, noise, t), t, encoder_hidden_states=cond).sample
            loss = F.mse_loss(pred, noise)
            gradient_step(opt, u, loss, accumulate=config.accumulate_grads)
            with torch.no_grad():
                u.copy_(project_simplex(u))
            losses.append(float(loss.detach()))
            done += 1
        text = layout_text(target, lay, u.detach().argmax(-1))
        if ctx.check is not None:
            success = bool(ctx.detected(ctx.render_prompts([text], [seed]))[0])
            checks.append({"t": t, "step": done, "prompt": text, "success": success})
            if success and config.stop_on_success:
                break
    return Outcome(prompt=text, losses=losses, steps=done, success=success, extra={"checks": checks[-5:]})


METHOD = AttackMethod("unlearndiffatk", UnlearnDiffAtkConfig, unlearndiffatk, kind="prompt", needs_base=True,
                      paper="Zhang et al., To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy "
                            "to Generate Unsafe Images ... For Now, ECCV 2024")
