"""An explicit DDIM/any-scheduler denoising loop for SD1.x pipelines, with a pluggable guidance rule.

`pipe(...)` is a black box; shields (SLD, embedding mixing), attacks (concept arithmetic) and fine-tuning methods need the
loop itself. `denoise` evaluates the UNet on K conditionings per step (one batched call) and lets `combine` turn the K
noise predictions into one. With the default rule (classifier-free guidance on [uncond, cond]) its images equal
`pipe(prompt, ...)` on the same seeds (tested).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from .conditioning import encode_prompts  # re-exported: the loop's callers encode with it
from .errors import InvalidValueError

# combine(step_index, t, eps_list) -> eps; eps_list[k] is the (B, 4, h, w) prediction under conditioning k
Combine = Callable[[int, torch.Tensor, list[torch.Tensor]], torch.Tensor]

@dataclass(frozen=True)
class SamplingDefaults:
    """The settings a model is sampled with when the caller gives none: steps, guidance scale, image side (px)."""

    steps: int
    guidance: float
    size: int
    source: str  # where they came from: "erasekit.json" or "pipeline defaults"


def sampling_defaults(pipe: StableDiffusionPipeline, model: object = None) -> SamplingDefaults:
    """Defaults of `pipe`: its folder's erasekit.json `sampling` (e.g. the toy model: 25 steps, guidance 5.0), else
    the pipeline class's own `__call__` defaults (SD1.x: 50 steps, 7.5). `model` (a name or folder) overrides where
    the card is looked for. The image side is the UNet's sample size times the VAE scale factor."""
    from .models import model_card

    card = model_card(model if model is not None else pipe).get("sampling") or {}
    sig = inspect.signature(type(pipe).__call__).parameters
    steps = card.get("steps", sig["num_inference_steps"].default)
    guidance = card.get("guidance", sig["guidance_scale"].default)
    check_sampling(steps, guidance, where="the model card's sampling" if card else "the pipeline's defaults")
    size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    return SamplingDefaults(int(steps), float(guidance), size, "erasekit.json" if card else "pipeline defaults")


MAX_STEPS = 1000  # a DDPM-trained model has 1000 training timesteps; more sampling steps than that are an error


def check_sampling(steps: object = None, guidance: object = None, where: str = "") -> None:
    """Refuse steps that are not integers in [1, MAX_STEPS] and guidance that is not a finite number >= 0."""
    at = f" ({where})" if where else ""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
        raise InvalidValueError(f"steps must be an integer in [1, {MAX_STEPS}], got {steps!r}{at}")
    if guidance is not None:
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
                or guidance < 0:
            raise InvalidValueError(f"guidance must be a finite number >= 0, got {guidance!r}{at}")


def resolve_sampling(pipe: StableDiffusionPipeline, steps: int | None = None,
                     guidance: float | None = None) -> tuple[int, float]:
    """(steps, guidance): the given values (checked), or the model's defaults for those left None."""
    check_sampling(steps, guidance)
    if steps is None or guidance is None:
        d = sampling_defaults(pipe)
        steps = d.steps if steps is None else steps
        guidance = d.guidance if guidance is None else guidance
    return int(steps), float(guidance)


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded: what `StableDiffusionPipeline(generator=[...])` receives."""
    return [torch.Generator("cpu").manual_seed(int(sd)) for sd in seeds]


def initial_latents(pipe: StableDiffusionPipeline, seeds: Sequence[int] | Sequence[torch.Generator],
                    scheduler: Any = None) -> torch.Tensor:
    """(B, 4, h, w) starting noise, drawn exactly as `StableDiffusionPipeline.prepare_latents` does for a list of
    CPU generators (one per image), times the scheduler's initial sigma. `seeds` may be the generators themselves
    (they advance, as the pipeline's do). `scheduler`: the one whose timesteps are set (its initial sigma depends on
    them, e.g. Euler); default the pipeline's."""
    gens = [g if isinstance(g, torch.Generator) else torch.Generator("cpu").manual_seed(int(g)) for g in seeds]
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    lat = torch.cat([torch.randn((1, c, s, s), generator=g, dtype=pipe.unet.dtype) for g in gens])
    return lat.to(pipe.unet.device) * (scheduler or pipe.scheduler).init_noise_sigma


def step_kwargs(scheduler: Any, gens: list[torch.Generator] | torch.Generator) -> dict[str, Any]:
    """The extra `scheduler.step` arguments `StableDiffusionPipeline.prepare_extra_step_kwargs` passes: eta=0 where
    accepted, and the per-image generators (or one generator for the whole batch) where accepted (stochastic
    schedulers: DDPM, Euler ancestral, ...)."""
    params = set(inspect.signature(scheduler.step).parameters)
    out: dict[str, Any] = {}
    if "eta" in params:
        out["eta"] = 0.0
    if "generator" in params:
        out["generator"] = gens
    return out


def cfg_combine(guidance: float) -> Combine:
    """Classifier-free guidance on conditionings [uncond, cond]: eps_u + w (eps_c - eps_u)."""

    def combine(i: int, t: torch.Tensor, eps: list[torch.Tensor]) -> torch.Tensor:
        return eps[0] + guidance * (eps[1] - eps[0])

    return combine


@torch.no_grad()
def denoise(pipe: StableDiffusionPipeline, conds: Sequence[torch.Tensor], combine: Combine, seeds: Sequence[int],
            steps: int | None = None, latents: torch.Tensor | None = None,
            cond_fn: Callable[[int, torch.Tensor], Sequence[torch.Tensor]] | None = None) -> torch.Tensor:
    """Run the sampler and return final latents (B, 4, h, w).

    conds: K tensors (B, 77, D) (or (1, 77, D), broadcast); combine: the guidance rule; cond_fn(i, t), if given,
    returns the conditionings for step i instead (for time-varying embeddings).
    """
    steps = resolve_sampling(pipe, steps, 0.0)[0]  # None -> the model's default
    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps, device=pipe.unet.device)
    gens = generators(seeds)  # one per image: initial noise, then every stochastic step (as the pipeline does)
    x = initial_latents(pipe, gens, sched) if latents is None else latents
    extra = step_kwargs(sched, gens)
    b = x.shape[0]
    for i, t in enumerate(sched.timesteps):
        cs = list(cond_fn(i, t) if cond_fn is not None else conds)
        cs = [c.expand(b, -1, -1) if c.shape[0] == 1 else c for c in cs]
        for c in cs:
            if c.shape[0] != b:
                raise InvalidValueError(f"a conditioning has batch {c.shape[0]}, latents have {b}")
        k = len(cs)
        inp = sched.scale_model_input(torch.cat([x] * k), t)
        eps = pipe.unet(inp, t, encoder_hidden_states=torch.cat(cs)).sample.chunk(k)
        x = sched.step(combine(i, t, list(eps)), t, x, **extra).prev_sample
    return x


@torch.no_grad()
def partial_ddim(unet: torch.nn.Module, scheduler: Any, cond: torch.Tensor, uncond: torch.Tensor, n_steps: int,
                 stop: int, guidance: float, gen: torch.Generator, batch: int = 1) -> tuple[torch.Tensor, int]:
    """x_t from `stop` of `n_steps` steps of `scheduler` (DDIM for SD1.x) started at fresh noise, with classifier-free
    guidance: how ESD, SPM, AdvUnlearn and the soft-prompt attack get their training latents. cond / uncond (1, L, D);
    `gen` draws the (batch, 4, h, w) noise and reaches every stochastic step. Returns (x (batch, 4, h, w), the
    timestep the next step would use, i.e. the noise level of x)."""
    if not 0 <= stop < n_steps:
        raise InvalidValueError(f"stop must be in [0, {n_steps}), got {stop}")
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(n_steps, device=unet.device)
    c, s = unet.config.in_channels, unet.config.sample_size
    x = torch.randn((batch, c, s, s), generator=gen).to(unet.device, unet.dtype) * sched.init_noise_sigma
    enc = torch.cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)]).to(unet.dtype)
    extra = step_kwargs(sched, gen)
    for t in sched.timesteps[:stop]:
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        eu, ec = unet(inp, t, encoder_hidden_states=enc).sample.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x, **extra).prev_sample
    return x, int(sched.timesteps[stop])


@torch.no_grad()
def decode(pipe: StableDiffusionPipeline, latents: torch.Tensor) -> np.ndarray:
    """(B, 4, h, w) latents -> (B, H, W, 3) uint8 images, as the pipeline's postprocessing does."""
    img = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    img = (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    return (img * 255).round().astype(np.uint8)
