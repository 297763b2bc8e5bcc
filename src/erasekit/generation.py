"""Seeded, batched image generation with any SD1.x pipeline: image i of a call uses `torch.Generator().manual_seed(
seed + i)`, so the same (prompt, seed) gives the same image in any batch and on any edited copy of the model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from .errors import InvalidValueError


def image_size(pipe: StableDiffusionPipeline) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


@torch.no_grad()
def generate(pipe: StableDiffusionPipeline, prompts: Sequence[str], seeds: Sequence[int] | int = 0,
             steps: int = 25, guidance: float = 5.0, batch_size: int = 64, negative_prompt: str | None = None,
             progress=None) -> np.ndarray:
    """Images (N, H, W, 3) uint8 for `prompts`; `seeds` is one int per prompt, or a base seed (prompt i -> base + i)."""
    prompts = list(prompts)
    if not prompts:
        raise InvalidValueError("generate() needs at least one prompt; got an empty list")
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(prompts))]
    if len(seeds) != len(prompts):
        raise InvalidValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    if steps < 1:
        raise InvalidValueError(f"steps must be >= 1, got {steps}")
    size = image_size(pipe)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds[i:i + batch_size]]
        neg = None if negative_prompt is None else [negative_prompt] * len(chunk)
        res = pipe(chunk, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                   generator=gens, output_type="np", negative_prompt=neg)
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(out)
