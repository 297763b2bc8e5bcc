"""Finding Dori: Kowalczuk, Hintersdorf, Struppek et al., "Finding Dori: Memorization in Text-to-Image Diffusion
Models Is Less Local Than Assumed", 2025 (arXiv:2507.16880; later "Finding DoRI: Discovery of Retained Images in
Diffusion Models", ICML 2026). Official code: github.com/sprintml/finding_dori.

After a memorized prompt has been "mitigated" by pruning (NeMo, or Wanda = Chavhan et al.'s memorized-subspace
pruning, `erasers/mempruning.py`), a small change of the prompt's *text embedding* brings the memorized image back:
memorization is not confined to the pruned weights. The attack searches the continuous text-encoder output space,
starting from the memorized prompt's own embedding E(p) (77, D), for a conditioning c that makes the model's
text-conditional noise prediction large again -- the memorization signal of Wen et al. (ICLR 2024), which erasekit's
detector reads (`erasekit.memorization`):

    maximise   1/B sum_b || eps(x_T^b, t_1, c) - eps(x_T^b, t_1, E("")) ||_2       c = E(p) + delta

with fresh Gaussian starting latents x_T^b (B = `noises`) at the first sampling timestep t_1 every step, by Adam on
delta (`lr`). `objective="denoise"` instead minimises the denoising loss ||eps - eps(x_t, t, c)||^2 of the image the
*unpruned* model (`base_pipe`) makes for the prompt -- for a memorized prompt, the memorized image -- at random
training timesteps (the image-targeted reading of the paper's search; needs the base model). `radius` optionally
keeps ||delta|| <= radius ||E(p)|| (projection after each step), to stay "near" the memorized prompt. The output
is the embedding c, rendered with classifier-free guidance against E("") like every embedding attack; success is
decided by the caller's check (for memorization: `verbatim_copies` against the
training image, see bench/memorization_pruning.py).

Deviations / caveats: the official repository could not be read from this environment (it is not in the code index
and could not be fetched), so the objective above follows the paper's description as we read it (Wen et al.'s
magnitude as the replication trigger, embeddings optimised from the memorized prompt's; which of the two objectives
the paper uses we could not confirm from the excerpts available), not the official script; step count, learning
rate, batch of noises and the optional radius are our defaults, not the paper's. The paper's
adversarial fine-tuning defence (iterative trigger search + model update) is not implemented.

Shapes: conditionings (1, 77, D); latents (B, 4, h, w).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from ..errors import InvalidValueError
from ..sampling import encode_prompts
from . import AttackConfig, AttackContext, AttackMethod, Outcome, _check_choice, _check_positive
from ._common import Budget, noised, train_timesteps

OBJECTIVES = ("magnitude", "denoise")


@dataclass(frozen=True)
class FindingDoriConfig(AttackConfig):
    steps: int = field(default=50, metadata={"help": "budget: Adam steps per prompt"})
    lr: float = field(default=0.05, metadata={"help": "Adam learning rate on the embedding perturbation"})
    noises: int = field(default=2, metadata={"help": "starting latents x_T averaged per step (fresh each step)"})
    radius: float | None = field(default=None, metadata={
        "help": "keep ||delta|| <= radius * ||E(prompt)|| (None: unconstrained)"})
    eval_every: int = field(default=10, metadata={"help": "steps between success checks"})
    objective: str = field(default="magnitude", metadata={
        "help": "'magnitude': maximise the first-step conditional magnitude (image-free); 'denoise': minimise the "
                "denoising loss on the base model's image of the prompt (needs base_pipe)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "lr", "noises", "eval_every")
        _check_choice(self, "objective", OBJECTIVES)
        if self.radius is not None and not (self.radius > 0 and self.radius < float("inf")):
            raise InvalidValueError(f"radius must be a finite number > 0 or None, got {self.radius!r}")


def conditional_norm(pipe, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, eps_uncond: torch.Tensor
                     ) -> torch.Tensor:
    """(B,) ||eps(x, t, cond) - eps_uncond||_2 per latent; x (B, 4, h, w), cond (1, 77, D) (differentiable)."""
    eps = pipe.unet(x, t, encoder_hidden_states=cond.expand(x.shape[0], -1, -1)).sample
    return (eps - eps_uncond).float().flatten(1).norm(dim=1)


def finding_dori(ctx: AttackContext, prompt: str, seed: int, config: FindingDoriConfig) -> Outcome:
    """Optimise the text embedding of `prompt` to maximise the first-step conditional noise-prediction magnitude."""
    pipe = ctx.target
    unet = pipe.unet
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        e0 = encode_prompts(pipe, [prompt]).detach()
        eu = encode_prompts(pipe, [""]).detach()
    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(ctx.sample_steps, device=unet.device)
    t = sched.timesteps[0]
    c, s = unet.config.in_channels, unet.config.sample_size
    delta = torch.zeros_like(e0, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=config.lr)
    limit = None if config.radius is None else config.radius * float(e0.float().norm())
    x0 = None
    if config.objective == "denoise":  # the unpruned model's image of a memorized prompt is the memorized image
        x0 = ctx.base_latents(prompt, seed)
    budget = Budget(config.steps, config.max_seconds)
    losses: list[float] = []
    checks: list[dict] = []
    done, success = 0, False
    while not budget.exhausted(done):
        if x0 is None:
            x = torch.randn((config.noises, c, s, s), generator=gen).to(unet.device, unet.dtype)
            x = sched.scale_model_input(x * sched.init_noise_sigma, t)
            with torch.no_grad():
                eps_u = unet(x, t, encoder_hidden_states=eu.expand(x.shape[0], -1, -1)).sample
            with torch.enable_grad():
                loss = -conditional_norm(pipe, x, t, (e0.float() + delta).to(unet.dtype), eps_u).mean()
        else:
            noise = torch.randn((config.noises, *x0.shape[1:]), generator=gen).to(x0)
            tt = torch.randint(0, train_timesteps(pipe), (config.noises,), generator=gen).to(unet.device)
            with torch.enable_grad():
                cond = (e0.float() + delta).to(unet.dtype).expand(config.noises, -1, -1)
                pred = unet(noised(pipe, x0.expand(config.noises, -1, -1, -1), noise, tt), tt,
                            encoder_hidden_states=cond).sample
                loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss, [delta])
        delta.grad = grad
        opt.step()
        opt.zero_grad(set_to_none=True)
        if limit is not None:
            with torch.no_grad():
                n = float(delta.norm())
                if n > limit:
                    delta.mul_(limit / n)
        if not torch.isfinite(delta).all():
            raise InvalidValueError(f"finding_dori diverged (non-finite embedding) at step {done + 1}; lower lr "
                                    f"(now {config.lr}) or set a radius")
        losses.append(float(loss.detach()))
        done += 1
        if ctx.check is not None and (done % config.eval_every == 0 or budget.exhausted(done)):
            with torch.no_grad():
                emb = (e0.float() + delta).to(unet.dtype)
            success = bool(ctx.detected(ctx.render_embeddings(emb, [seed], [prompt]))[0])
            checks.append({"step": done, "success": success})
            if success and config.stop_on_success:
                break
    with torch.no_grad():
        emb = (e0.float() + delta).to(e0.dtype)[0]
        rel = float(delta.norm()) / max(float(e0.float().norm()), 1e-12)
    return Outcome(prompt=prompt, embedding=emb, losses=losses, steps=done, success=success,
                   extra={"checks": checks[-5:], "relative_distance": rel, "objective": config.objective,
                          "start_loss": losses[0] if losses else None, "end_loss": losses[-1] if losses else None})


METHOD = AttackMethod("finding_dori", FindingDoriConfig, finding_dori, kind="embedding",
                      paper="Kowalczuk, Hintersdorf, Struppek et al., Finding Dori: Memorization in Text-to-Image "
                            "Diffusion Models Is Less Local Than Assumed, 2025")
