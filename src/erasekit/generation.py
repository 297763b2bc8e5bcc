"""Seeded, batched image generation with any SD1.x pipeline, through the one explicit denoising loop of
`erasekit.sampling` (shields, attacks and training renders use the same loop): image i of a call uses
`torch.Generator().manual_seed(seed_i)` for its initial noise and for every stochastic scheduler step, so the same
(prompt, seed) gets the same noise in any batch and on any edited copy of the model (the images then agree up to
batched floating-point arithmetic: a batch of 16 vs 8 differed by at most 1 of 255 levels on the toy model, found by
`bench/safesd/untriggered_check.py`; same batch composition, same images bit for bit), and equals
`pipe(prompt, generator=[torch.Generator().manual_seed(seed_i), ...])` for deterministic and stochastic schedulers
(tested for DDIM, DDPM and Euler ancestral)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from .errors import InvalidValueError
from .sampling import cfg_combine, decode, denoise, encode_prompts, resolve_sampling


def image_size(pipe: StableDiffusionPipeline) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


@torch.no_grad()
def generate(pipe: StableDiffusionPipeline, prompts: Sequence[str], seeds: Sequence[int] | int = 0,
             steps: int | None = None, guidance: float | None = None, batch_size: int = 64,
             negative_prompt: str | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Images (N, H, W, 3) uint8 for `prompts`; `seeds` is one int per prompt, or a base seed (prompt i -> base + i).
    steps / guidance: None = the model's defaults (`erasekit.sampling.sampling_defaults`). Guidance <= 1 uses the
    conditional prediction alone, as the pipeline does."""
    prompts = list(prompts)
    if not prompts:
        raise InvalidValueError("generate() needs at least one prompt; got an empty list")
    if not all(isinstance(p, str) for p in prompts):
        raise InvalidValueError(f"prompts must be strings, got {[type(p).__name__ for p in prompts][:3]}...")
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(prompts))]
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise InvalidValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    if any(s < 0 for s in seeds):
        raise InvalidValueError(f"seeds must be >= 0, got {min(seeds)}")
    if batch_size < 1:
        raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}")
    steps, guidance = resolve_sampling(pipe, steps, guidance)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk, chunk_seeds = prompts[i:i + batch_size], seeds[i:i + batch_size]
        cond = encode_prompts(pipe, chunk)
        if guidance > 1.0:
            uncond = encode_prompts(pipe, [negative_prompt or ""] * len(chunk))
            lat = denoise(pipe, [uncond, cond], cfg_combine(guidance), chunk_seeds, steps=steps)
        else:
            lat = denoise(pipe, [cond], lambda j, t, eps: eps[0], chunk_seeds, steps=steps)
        out.append(decode(pipe, lat))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(out)
