"""Loss-based membership inference on a diffusion model's training images, reported as AUC.

A training image ("member") is denoised better by a model that saw it than by one that did not. For each image we
measure the denoising loss at fixed timesteps and fixed noises (the same for every model, so differences are the
models'), averaged over the timesteps:

    loss_M(x) = 1/|T| sum_{t in T} || eps_M(sqrt(abar_t) z0 + sqrt(1 - abar_t) eps_xt, t, E(caption)) - eps_xt ||^2

and score it
  - against a reference model R (a never-trained model, or the base model when M is an erased copy of it):
    score = loss_R(x) - loss_M(x) (Carlini et al., "Extracting Training Data from Diffusion Models", USENIX Security
    2023, Sec. 5 calibrate a model's loss with a reference's; Matsumoto et al., "Membership Inference Attacks against
    Diffusion Models", 2023, use the loss threshold);
  - without one: score = -loss_M(x) (the LOSS attack, Yeom et al., CSF 2018).
AUC = P(score(member) > score(non-member)) + 1/2 P(tie) (the Mann-Whitney statistic; `auc`).

    from erasekit.membership import membership_inference
    res = membership_inference(erased_pipe, members, nonmembers, reference_pipe=never_trained)
    res.auc

Shapes: images (N, H, W, 3) uint8; latents (N, 4, h, w); losses and scores (N,).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InvalidValueError

DEFAULT_TIMESTEPS: tuple[int, ...] = (100, 200, 300, 400, 500)  # low/mid noise: where memorised detail shows


def auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of `scores` (higher = more likely a member) for boolean `labels` (True = member):
    the probability that a random member outscores a random non-member, ties counting one half. Exact (rank-based,
    O(N log N)); NaN/inf scores and a class with no examples are refused."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise InvalidValueError(f"scores has {s.size} values, labels {y.size}; give one label per score")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise InvalidValueError(f"labels must be booleans (or 0/1), got values {sorted(set(y.tolist()))[:5]}")
        y = y.astype(bool)
    if not np.isfinite(s).all():
        raise InvalidValueError("scores contain NaN or inf; membership scores must be finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InvalidValueError(f"AUC needs members and non-members; got {n_pos} members and {n_neg} non-members")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks over ties (1-based)
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@torch.no_grad()
def denoising_losses(pipe: Any, images: np.ndarray, captions: Sequence[str] | str = "",
                     timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0, batch_size: int = 16) -> np.ndarray:
    """(N,) mean denoising loss of each image over `timesteps`, with noise eps_{i,t} drawn from (seed, i, t) — so two
    models given the same images, seed and timesteps see the same noisy inputs. captions: one per image or one for all
    ("" = unconditional). Images are resized to the pipeline's resolution; latents are the VAE posterior mean."""
    from .generation import image_size
    from .sampling import encode_prompts

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise InvalidValueError(f"images must be (N, H, W, 3) uint8 with N >= 1, got {images.dtype} {images.shape}")
    n_train = int(pipe.scheduler.config.num_train_timesteps)
    ts = [int(t) for t in timesteps]
    if not ts or any(not 0 <= t < n_train for t in ts):
        raise InvalidValueError(f"timesteps must be integers in [0, {n_train}), got {list(timesteps)}")
    caps = [captions] * len(images) if isinstance(captions, str) else list(captions)
    if len(caps) != len(images):
        raise InvalidValueError(f"got {len(caps)} captions for {len(images)} images; give one each or one string")
    if batch_size < 1:
        raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}")
    size = image_size(pipe)
    if images.shape[1:3] != (size, size):
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC))
                           for im in images])
    kind = pipe.scheduler.config.get("prediction_type", "epsilon")
    if kind not in ("epsilon", "v_prediction"):
        raise InvalidValueError(f"scheduler prediction_type={kind!r} is not 'epsilon' or 'v_prediction'")
    dev, dt = pipe.unet.device, pipe.unet.dtype
    out = np.zeros(len(images), dtype=np.float64)
    for lo in range(0, len(images), batch_size):
        hi = min(lo + batch_size, len(images))
        x = torch.as_tensor(images[lo:hi]).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(dev, pipe.vae.dtype)
        z0 = (pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor).float()
        cond = encode_prompts(pipe, caps[lo:hi])
        for t in ts:
            noise = torch.cat([torch.randn((1, *z0.shape[1:]), generator=torch.Generator().manual_seed(
                int(seed) * 1_000_003 + (lo + k) * 1009 + t)) for k in range(hi - lo)]).to(dev)
            tt = torch.full((hi - lo,), t, device=dev, dtype=torch.long)
            xt = pipe.scheduler.add_noise(z0, noise, tt)
            pred = pipe.unet(xt.to(dt), tt, encoder_hidden_states=cond).sample.float()
            target = noise if kind == "epsilon" else pipe.scheduler.get_velocity(z0, noise, tt)
            out[lo:hi] += ((pred - target) ** 2).mean(dim=(1, 2, 3)).cpu().double().numpy() / len(ts)
    if not np.isfinite(out).all():
        raise InvalidValueError("the model's denoising loss is NaN or inf on some images")
    return out


@dataclass
class MembershipResult:
    """AUC of the membership scores, and everything it came from (per image: losses, scores, labels)."""

    auc: float
    scores: list[float]
    labels: list[bool]
    losses: list[float]
    reference_losses: list[float] | None
    timesteps: list[int]
    seed: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


def membership_scores(losses: np.ndarray, reference_losses: np.ndarray | None = None) -> np.ndarray:
    """(N,) membership scores (higher = member): reference_loss - loss with a reference, else -loss."""
    losses = np.asarray(losses, dtype=np.float64)
    if reference_losses is None:
        return -losses
    ref = np.asarray(reference_losses, dtype=np.float64)
    if ref.shape != losses.shape:
        raise InvalidValueError(f"reference_losses has shape {ref.shape}, losses {losses.shape}")
    return ref - losses


def membership_inference(pipe: Any, members: np.ndarray, nonmembers: np.ndarray, reference_pipe: Any = None,
                         member_captions: Sequence[str] | str = "", nonmember_captions: Sequence[str] | str = "",
                         timesteps: Sequence[int] = DEFAULT_TIMESTEPS, seed: int = 0) -> MembershipResult:
    """Loss-based membership inference of `members` (training images) against `nonmembers` on `pipe`, calibrated by
    `reference_pipe` (a model that never saw the members; e.g. the base model when `pipe` is erased, or a model
    trained without them) when given. Returns the AUC and the per-image scores."""
    images = np.concatenate([np.asarray(members), np.asarray(nonmembers)])
    labels = np.array([True] * len(members) + [False] * len(nonmembers))

    def caps(c: Sequence[str] | str, n: int) -> list[str]:
        return [c] * n if isinstance(c, str) else list(c)

    captions = caps(member_captions, len(members)) + caps(nonmember_captions, len(nonmembers))
    losses = denoising_losses(pipe, images, captions, timesteps, seed)
    ref = denoising_losses(reference_pipe, images, captions, timesteps, seed) if reference_pipe is not None else None
    scores = membership_scores(losses, ref)
    return MembershipResult(auc=auc(scores, labels), scores=scores.tolist(), labels=labels.tolist(),
                            losses=losses.tolist(), reference_losses=None if ref is None else ref.tolist(),
                            timesteps=[int(t) for t in timesteps], seed=int(seed),
                            info={"members": int(len(members)), "nonmembers": int(len(nonmembers)),
                                  "score": "reference_loss - loss" if ref is not None else "-loss"})


__all__ = ["DEFAULT_TIMESTEPS", "MembershipResult", "auc", "denoising_losses", "membership_inference",
           "membership_scores"]
