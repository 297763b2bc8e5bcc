"""An explicit DDIM/any-scheduler denoising loop for SD1.x pipelines, with a pluggable guidance rule.

`pipe(...)` is a black box; shields (SLD, embedding mixing), attacks (concept arithmetic) and fine-tuning methods need the
loop itself. `denoise` evaluates the UNet on K conditionings per step (one batched call) and lets `combine` turn the K
noise predictions into one. With the default rule (classifier-free guidance on [uncond, cond]) its images equal
`pipe(prompt, ...)` on the same seeds (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from .errors import InvalidValueError

# combine(step_index, t, eps_list) -> eps; eps_list[k] is the (B, 4, h, w) prediction under conditioning k
Combine = Callable[[int, torch.Tensor, list[torch.Tensor]], torch.Tensor]

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 5.0


def default_guidance(model: str = "toyworld") -> float:
    """The guidance scale a model is evaluated with (the toy model's manifest records its own)."""
    if model == "toyworld":
        from .models import toyworld_manifest

        try:
            return float(toyworld_manifest().get("sampling", {}).get("guidance", DEFAULT_GUIDANCE))
        except FileNotFoundError:
            return DEFAULT_GUIDANCE
    return 7.5


@torch.no_grad()
def encode_prompts(pipe: StableDiffusionPipeline, prompts: Sequence[str]) -> torch.Tensor:
    """(B, 77, D) text-encoder outputs, padded to the tokenizer's max length as SD1.x pipelines do."""
    tok = pipe.tokenizer(list(prompts), padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    ids = tok.input_ids.to(pipe.text_encoder.device)
    return pipe.text_encoder(ids)[0].to(pipe.unet.dtype)


def initial_latents(pipe: StableDiffusionPipeline, seeds: Sequence[int]) -> torch.Tensor:
    """(B, 4, h, w) starting noise, drawn exactly as `StableDiffusionPipeline.prepare_latents` does for a list of
    CPU generators (one per image), times the scheduler's initial sigma."""
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    lat = torch.cat([torch.randn((1, c, s, s), generator=torch.Generator("cpu").manual_seed(int(sd)),
                                 dtype=pipe.unet.dtype) for sd in seeds])
    return lat.to(pipe.unet.device) * pipe.scheduler.init_noise_sigma


def cfg_combine(guidance: float) -> Combine:
    """Classifier-free guidance on conditionings [uncond, cond]: eps_u + w (eps_c - eps_u)."""

    def combine(i: int, t: torch.Tensor, eps: list[torch.Tensor]) -> torch.Tensor:
        return eps[0] + guidance * (eps[1] - eps[0])

    return combine


@torch.no_grad()
def denoise(pipe: StableDiffusionPipeline, conds: Sequence[torch.Tensor], combine: Combine, seeds: Sequence[int],
            steps: int = DEFAULT_STEPS, latents: torch.Tensor | None = None,
            cond_fn: Callable[[int, torch.Tensor], Sequence[torch.Tensor]] | None = None) -> torch.Tensor:
    """Run the sampler and return final latents (B, 4, h, w).

    conds: K tensors (B, 77, D) (or (1, 77, D), broadcast); combine: the guidance rule; cond_fn(i, t), if given,
    returns the conditionings for step i instead (for time-varying embeddings).
    """
    if steps < 1:
        raise InvalidValueError(f"steps must be >= 1, got {steps}")
    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps, device=pipe.unet.device)
    x = initial_latents(pipe, seeds) if latents is None else latents
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
        x = sched.step(combine(i, t, list(eps)), t, x).prev_sample
    return x


@torch.no_grad()
def decode(pipe: StableDiffusionPipeline, latents: torch.Tensor) -> np.ndarray:
    """(B, 4, h, w) latents -> (B, H, W, 3) uint8 images, as the pipeline's postprocessing does."""
    img = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    img = (img / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    return (img * 255).round().astype(np.uint8)
