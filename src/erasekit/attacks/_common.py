"""Pieces shared by the optimising attacks: budgets, one gradient step (with the official never-zeroed-gradient
behaviour available as a flag), projection onto the probability simplex, and noised target latents.

Shapes: latents (B, 4, h, w); relaxed one-hot (k, V); token embeddings (k, D).
"""

from __future__ import annotations

import time
from collections.abc import Callable

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


def gradient_step(optimizer: torch.optim.Optimizer, param: torch.Tensor, loss: torch.Tensor,
                  accumulate: bool = False, grad_of: torch.Tensor | None = None, sign: bool = False,
                  on_grad: Callable[[torch.Tensor], None] | None = None) -> None:
    """One optimiser step on `param` from `loss`.

    accumulate=False (ours): the gradient used is this step's alone. accumulate=True reproduces the official
    AdvUnlearn soft-prompt loop, which calls `loss.backward()` every step and never zeroes the gradient, so step k
    uses the sum of the gradients of steps 0..k. grad_of: compute the gradient with respect to this tensor instead and
    apply it to `param` (PEZ / straight-through: forward with a projection, update the continuous variable).
    sign: use the sign of the gradient (AdvUnlearn's "fast_at"; officially signed in place, so with accumulate=True
    the next step adds to the signed gradient, as here). on_grad(g) sees the gradient the optimiser is about to use.
    """
    g = torch.autograd.grad(loss, [param if grad_of is None else grad_of])[0].to(param.dtype)
    if accumulate and param.grad is not None:
        g = param.grad + g
    param.grad = g.sign() if sign else g
    if on_grad is not None:
        on_grad(param.grad.detach().clone())
    optimizer.step()
    if not accumulate:
        param.grad = None


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
