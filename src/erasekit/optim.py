"""Optimisation helpers shared by erasers and attacks (which must not import each other)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def grad_step(opt: torch.optim.Optimizer, loss: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    """One optimiser step on `tensors` only: their gradients of `loss` (torch.autograd.grad, so no other tensor of
    the graph, e.g. the pipeline's own weights, gets a .grad), then step and clear."""
    grads = torch.autograd.grad(loss, list(tensors))
    for t, g in zip(tensors, grads, strict=True):
        t.grad = g
    opt.step()
    opt.zero_grad(set_to_none=True)


__all__ = ["grad_step"]
