"""Pieces shared by the optimising attacks: budgets, projection onto the probability simplex, and noised target
latents. (Token layouts, the embedding-input text encoder and `gradient_step` are in `erasekit.conditioning`.)

Shapes: latents (B, 4, h, w); relaxed one-hot (k, V); token embeddings (k, D).
"""

from __future__ import annotations

import time

import torch
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError


class Budget:
    """Stop after `steps` optimisation steps or `max_seconds` of wall time, whichever comes first."""

    def __init__(self, steps: int, max_seconds: float | None = None):
        if steps < 0:
            raise InvalidValueError(f"steps must be >= 0, got {steps}")
        self.steps, self.max_seconds = steps, max_seconds
        self.start = time.perf_counter()

    def exhausted(self, done: int) -> bool:
        if done >= self.steps:
            return True
        return self.max_seconds is not None and time.perf_counter() - self.start >= self.max_seconds

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of `v` (k, V) onto {x >= 0, sum x = 1} (Duchi et al. 2008, sort-based).

    UnlearnDiffAtk's official code finds the same point by bisection on the shift mu (tolerance 1e-5)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    idx = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    cond = u - css / idx > 0
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)  # last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)


@torch.no_grad()
def image_latents(pipe: StableDiffusionPipeline, images) -> torch.Tensor:
    """(B, 4, h, w) scaled VAE latents (posterior mean) of (B, H, W, 3) uint8 images, as UnlearnDiffAtk/P4D encode
    their target images."""
    x = torch.as_tensor(images).to(pipe.vae.device).permute(0, 3, 1, 2).to(pipe.vae.dtype) / 127.5 - 1
    return pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor


def noised(pipe: StableDiffusionPipeline, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise with the pipeline's training schedule; t int or (B,)."""
    abar = pipe.scheduler.alphas_cumprod.to(x0.device, torch.float32)
    t = torch.as_tensor(t, device=x0.device).long().reshape(-1)
    a = abar[t].to(x0.dtype).view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def train_timesteps(pipe: StableDiffusionPipeline) -> int:
    return int(pipe.scheduler.config.num_train_timesteps)
