"""Memorization: detect memorized prompts from the model alone, and count verbatim reproductions of training images.

**Detection** (Wen et al., "Detecting, Explaining, and Mitigating Memorization in Diffusion Models", ICLR 2024): a
memorized prompt pulls the sampler hard towards one image, so the text-conditional part of the noise prediction is
large along the whole trajectory. For a prompt p and a generation from seed s, with classifier-free guidance,

    d(p, s) = 1/K sum_{k < K} || eps(x_t_k, E(p)) - eps(x_t_k, E("")) ||_2      (norm over all latent elements)

over the first K sampling steps (K = all steps by default; the paper also detects from the first step alone), and
d(p) is the mean over seeds. The detector's AUC separates memorized from other prompts (`detection_auc`).
Deviation from the official code (github.com/YuxinWenRick/diffusion_memorization): it accumulates the norm over the
steps of the diffusers pipeline through a callback; here it is read inside erasekit's own sampler (`sampling.denoise`,
the path every generation takes), with the same scheduler and guidance, so the numbers are those of `generate`.

**Verbatim reproduction**: a generated image reproduces a training image when it is closer to it (pixel RMSE) than
any of a set of *reference* images -- other renderings of the same content (in the toy world: the same scene labels
drawn with other seeds, so other placement, scale and noise) -- are: closer than the content alone can explain.
`verbatim_copies` takes the references from the caller, so a real model brings its own (e.g. near-duplicates).

Shapes: images (N, H, W, 3) uint8; magnitudes and distances (N,).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InvalidValueError
from .membership import auc


@torch.no_grad()
def conditional_magnitude(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], steps: int | None = None,
                          guidance: float | None = None, first_steps: int | None = None,
                          batch_size: int = 32) -> np.ndarray:
    """(N,) d(p_i, s_i): mean over the first `first_steps` (None = all) sampling steps of the L2 norm of
    eps(x_t, p) - eps(x_t, "") along the guided trajectory of prompt i from seed i. steps / guidance: None = the
    model's defaults."""
    from .sampling import denoise, encode_prompts, resolve_sampling

    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if not prompts or len(prompts) != len(seeds):
        raise InvalidValueError(f"give one seed per prompt (got {len(prompts)} prompts, {len(seeds)} seeds)")
    steps, guidance = resolve_sampling(pipe, steps, guidance)
    if first_steps is not None and not 1 <= int(first_steps) <= steps:
        raise InvalidValueError(f"first_steps must be in [1, {steps}] (the sampling steps), got {first_steps}")
    k = steps if first_steps is None else int(first_steps)
    out = np.zeros(len(prompts))
    for lo in range(0, len(prompts), batch_size):
        chunk = prompts[lo:lo + batch_size]
        cond, uncond = encode_prompts(pipe, chunk), encode_prompts(pipe, [""] * len(chunk))
        acc = torch.zeros(len(chunk))

        def combine(i: int, t: torch.Tensor, eps: list[torch.Tensor]) -> torch.Tensor:
            if i < k:
                acc.add_((eps[1] - eps[0]).float().flatten(1).norm(dim=1).cpu() / k)
            return eps[0] + guidance * (eps[1] - eps[0])

        denoise(pipe, [uncond, cond], combine, seeds[lo:lo + batch_size], steps=steps)
        out[lo:lo + len(chunk)] = acc.double().numpy()
    if not np.isfinite(out).all():
        raise InvalidValueError("the conditional noise-prediction magnitude is NaN or inf for some prompts")
    return out


def prompt_magnitudes(pipe: Any, prompts: Sequence[str], n_seeds: int = 4, seed: int = 0, **kwargs: Any) -> np.ndarray:
    """(P,) d(p) averaged over `n_seeds` generations per prompt (seeds seed, seed+1, ...)."""
    if n_seeds < 1:
        raise InvalidValueError(f"n_seeds must be >= 1, got {n_seeds}")
    flat = [p for p in prompts for _ in range(n_seeds)]
    seeds = [seed + j for _ in prompts for j in range(n_seeds)]
    return conditional_magnitude(pipe, flat, seeds, **kwargs).reshape(len(prompts), n_seeds).mean(1)


@dataclass
class DetectionResult:
    auc: float  # P(d(memorized) > d(other)), ties 1/2
    memorized: np.ndarray  # (M,) d of the memorized prompts
    other: np.ndarray  # (O,) d of the other prompts
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"auc": self.auc, "memorized": self.memorized.tolist(), "other": self.other.tolist(), **self.config}


def detection_auc(pipe: Any, memorized: Sequence[str], other: Sequence[str], n_seeds: int = 4, seed: int = 0,
                  **kwargs: Any) -> DetectionResult:
    """The detector's AUC: memorized prompts against other prompts (e.g. training captions seen once)."""
    if not memorized or not other:
        raise InvalidValueError(f"need memorized and other prompts, got {len(memorized)} and {len(other)}")
    dm = prompt_magnitudes(pipe, memorized, n_seeds, seed, **kwargs)
    do = prompt_magnitudes(pipe, other, n_seeds, seed, **kwargs)
    labels = np.r_[np.ones(len(dm), bool), np.zeros(len(do), bool)]
    return DetectionResult(auc(np.r_[dm, do], labels), dm, do, {"n_seeds": n_seeds, "seed": seed, **kwargs})


def rmse(images: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(N,) pixel RMSE (0-255 scale) of each of `images` (N, H, W, 3) to one `image` (H, W, 3)."""
    images, image = np.asarray(images), np.asarray(image)
    if images.ndim != 4 or image.shape != images.shape[1:]:
        raise InvalidValueError(f"images {images.shape} and image {image.shape} must be (N, H, W, 3) and (H, W, 3)")
    d = images.astype(np.float64) - image.astype(np.float64)[None]
    return np.sqrt((d ** 2).mean(axis=(1, 2, 3)))


def verbatim_copies(generated: np.ndarray, original: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Which `generated` images (N, H, W, 3) reproduce the training image `original` (H, W, 3): (is_copy (N,) bool,
    distances (N,), threshold), where threshold = the smallest RMSE of a `references` image (R, H, W, 3) -- another
    rendering of the same content -- to the original."""
    references = np.asarray(references)
    if len(references) == 0:
        raise InvalidValueError("verbatim_copies needs at least one reference image of the same content")
    thr = float(rmse(references, original).min())
    dist = rmse(generated, original)
    return dist < thr, dist, thr


__all__ = ["DetectionResult", "conditional_magnitude", "detection_auc", "prompt_magnitudes", "rmse",
           "verbatim_copies"]
