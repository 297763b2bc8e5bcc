"""Soft-prompt attack: the inner maximisation of AdvUnlearn — Zhang et al., "Defensive Unlearning with Adversarial
Training for Robust Concept Erasure in Diffusion Models", NeurIPS 2024 (OPTML-Group/AdvUnlearn,
utils/attack_util.py::soft_prompt_attack).

A continuous prefix delta (k, D) in word-embedding space, [BOS, delta, P, EOS], minimising

    || eps_target(z_t, t, E_target([delta; P])) - eps_base(z_t, t, E_base(P)) ||^2

where z_t is a fresh partial DDIM trajectory of the *target* model conditioned on P (guidance `start_guidance`,
official 3) stopped at a random step, and t the timestep it stopped at. Adam (lr 1e-3, "pgd") or signed gradients
("fast_at"); k = 1, 30 steps (README defaults); delta initialised from k random vocabulary tokens. The attack returns
the text-encoder output E_target([delta; P]) (L, D): an embedding, not a prompt (a nearest-token reading is logged).

Bug fixed: the official loop calls `loss.backward(retain_graph=True)` every step and never zeroes the gradient, so
step k follows the sum of all earlier gradients. We use each step's own gradient; `accumulate_grads=True`
reproduces the official behaviour.

Deviations: the official code samples t_enc DDIM steps from noise but evaluates at DDPM time ~1000 * t_enc / 50 (the
ESD code base's index convention, which pairs a nearly clean latent with a high-noise timestep or vice versa); we
evaluate at the timestep the trajectory actually reached. Success checks every `eval_every` steps (official: none
inside the attack).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..conditioning import SOFT_PROMPT_METHODS, SoftPrompt
from ..sampling import encode_prompts, partial_ddim
from . import AttackConfig, AttackContext, AttackMethod, Outcome, _check_choice, _check_positive
from ._common import Budget


@dataclass(frozen=True)
class SoftPromptConfig(AttackConfig):
    steps: int = field(default=30, metadata={"help": "budget: attack steps per prompt (AdvUnlearn: 30)"})
    k: int = field(default=1, metadata={"help": "prefix embeddings (AdvUnlearn: 1)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (AdvUnlearn: 1e-3)"})
    method: str = field(default="pgd", metadata={"help": "'pgd' (Adam steps) or 'fast_at' (signed gradient)"})
    start_guidance: float = field(default=3.0, metadata={"help": "guidance of the z_t trajectory (AdvUnlearn: 3)"})
    eval_every: int = field(default=10, metadata={"help": "steps between success checks"})
    accumulate_grads: bool = field(default=False, metadata={"help": "never zero gradients (official bug; off)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "k", "lr", "eval_every", "start_guidance")
        _check_choice(self, "method", SOFT_PROMPT_METHODS)


def softprompt(ctx: AttackContext, prompt: str, seed: int, config: SoftPromptConfig) -> Outcome:
    """Optimise a continuous prefix so that the target's prediction matches the base model's on `prompt`."""
    target, base = ctx.target, ctx.base
    gen = torch.Generator().manual_seed(seed)
    soft = SoftPrompt(target, prompt, config.k, config.lr, gen, method=config.method,
                      accumulate=config.accumulate_grads)
    with torch.no_grad():
        cond_base = encode_prompts(base, [prompt])
        cond_t, uncond_t = encode_prompts(target, [prompt]), encode_prompts(target, [""])
    budget = Budget(config.steps, config.max_seconds)
    losses: list[float] = []
    done, success = 0, False
    checks: list[dict] = []
    n = ctx.sample_steps  # the trajectory uses the attack's sampling steps (None in the config = the model default)
    while not budget.exhausted(done):
        stop = int(torch.randint(0, n, (1,), generator=gen))
        z, t = partial_ddim(target.unet, target.scheduler, cond_t, uncond_t, n, stop, config.start_guidance, gen)
        with torch.no_grad():
            want = base.unet(z.to(base.unet.device), t, encoder_hidden_states=cond_base).sample.to(z)
        losses.append(soft.step(target.unet, z, t, want))
        done += 1
        if ctx.check is not None and (done % config.eval_every == 0 or budget.exhausted(done)):
            with torch.no_grad():
                emb = soft.embeddings()
            success = bool(ctx.detected(ctx.render_embeddings(emb, [seed], [prompt]))[0])
            checks.append({"step": done, "success": success})
            if success and config.stop_on_success:
                break
    with torch.no_grad():
        emb = soft.embeddings()[0]
    return Outcome(prompt=soft.reading(), embedding=emb, losses=losses, steps=done, success=success,
                   extra={"checks": checks[-5:], "delta_norm": float(soft.delta.detach().norm())})


METHOD = AttackMethod("softprompt", SoftPromptConfig, softprompt, kind="embedding", needs_base=True,
                      paper="Zhang et al., Defensive Unlearning with Adversarial Training for Robust Concept Erasure "
                            "in Diffusion Models (AdvUnlearn), NeurIPS 2024")
