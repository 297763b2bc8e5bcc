"""Content fingerprints: what a cached result depends on, by value rather than by name.

`pipeline_fingerprint(pipe)` hashes every parameter and buffer of the UNet, text encoder and VAE (names, dtypes,
shapes and bytes, in name order) plus the scheduler's class and config. Two pipelines share a fingerprint iff they
would compute the same thing. Cost: one pass over the weights (the toy model: ~10 ms; SD1.5 in float32, ~1 B
parameters: a few seconds on CPU) — recomputed for every evaluation, never cached on the object, so an in-place
change of a weight can never be missed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

COMPONENTS = ("unet", "text_encoder", "vae")


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every parameter and buffer of `module`, in name order."""
    h = hashlib.sha256()
    tensors = dict(module.named_parameters())
    tensors.update(dict(module.named_buffers()))
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bit pattern
            t = t.view(torch.int16)
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def scheduler_identity(pipe: Any) -> dict:
    """{"class": name, "config": {...}} of the pipeline's scheduler (JSON-able)."""
    cfg = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
    return {"class": type(pipe.scheduler).__name__, "config": json.loads(json.dumps(cfg, default=str))}


def pipeline_fingerprint(pipe: Any) -> dict:
    """Everything about `pipe` that determines its images: per-component weight sha256, dtype, device, scheduler,
    and one combined sha256 ("sha256")."""
    parts = {c: module_sha256(getattr(pipe, c)) for c in COMPONENTS if getattr(pipe, c, None) is not None}
    out = {"weights": parts, "dtype": str(pipe.unet.dtype).removeprefix("torch."), "device": str(pipe.unet.device),
           "scheduler": scheduler_identity(pipe)}
    out["sha256"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()
    return out


__all__ = ["COMPONENTS", "module_sha256", "pipeline_fingerprint", "scheduler_identity"]
