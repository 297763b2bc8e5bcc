"""Pieces shared by the recovery attacks (concept inversion, relearning, in-context re-introduction): their common
options, the attacker's images of the concept (drawn by the pipeline's world or given by the user), captions, the
denoising (textual-inversion / fine-tuning) loss, and `budget_curve`, recovery rate against attacker budget.

Recovery attacks work once per concept, not per prompt: the attacker learns a token, fine-tunes weights or picks a
reference image (`AttackMethod.prepare`), then every attacked prompt is rendered with it. They default to
`skip_broken=False`, so `post` is the detection after the attack on *every* prompt and `pre` the detection before it.

Shapes: images (N, H, W, 3) uint8; latents (N, 4, h, w).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidValueError
from . import AttackConfig, AttackContext

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# captions used when the world has no training templates ("{}" = the concept or the learned token)
GENERIC_TEMPLATES: tuple[str, ...] = ("a picture of {}", "a photo of {}", "a rendering of {}", "an image of {}",
                                      "{}")


@dataclass(frozen=True)
class RecoveryConfig(AttackConfig):
    """Options of every recovery attack: the attacker's images (`n_images` of the concept, drawn by the world or
    read from `images`) and per-concept (not per-prompt) budgets."""

    stop_on_success: bool = field(default=False, metadata={
        "help": "unused: a recovery attack spends its whole budget once per concept"})
    skip_broken: bool = field(default=False, metadata={
        "help": "do not attack prompts already broken before the attack (recovery attacks: off, so post-attack "
                "detection is measured on every prompt)"})
    n_images: int = field(default=4, metadata={"help": "budget: images of the concept the attacker has"})
    images: str = field(default="", metadata={
        "help": "folder of .png/.jpg/.jpeg images (or a .npy (N,H,W,3) uint8 file) of the concept; default: "
                "`n_images` images drawn by the pipeline's world"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_images < 1:
            raise InvalidValueError(f"n_images must be >= 1, got {self.n_images}")
        if self.images and not Path(self.images).exists():
            raise InvalidValueError(f"images={self.images!r} does not exist; pass a folder of images or a .npy file")


# ------------------------------------------------------------------------------------------------ images
def read_images(source: str | Path) -> np.ndarray:
    """(N, H, W, 3) uint8 from a .npy file or a folder of .png/.jpg/.jpeg files (sorted by name, resized to the
    first one's size)."""
    from PIL import Image

    path = Path(source)
    if path.is_file() and path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InvalidValueError(f"images={str(source)!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
        ims = [Image.open(p).convert("RGB") for p in files]
        arr = np.stack([np.asarray(im.resize(ims[0].size)) for im in ims])
    else:
        raise InvalidValueError(f"images={str(source)!r} is neither a folder of images nor a .npy file")
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
        raise InvalidValueError(f"images={str(source)!r}: expected (N, H, W, 3) uint8 images, got {arr.dtype} "
                                f"{arr.shape}")
    return arr


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 (bicubic, no crop) unless already that size."""
    if images.shape[1:3] == (size, size):
        return images
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), resample=Image.Resampling.BICUBIC))
                     for im in images])


def world_images(world: Any, concept: str, n: int, seed: int) -> np.ndarray | None:
    """(n, H, W, 3) uint8 images of `concept` drawn by `world`, or None when it cannot draw them."""
    from ..errors import UnknownNameError
    from ..worlds import UnsupportedError

    if world is None:
        return None
    try:
        return world.images(world.concept(concept).name, n, seed)
    except (UnknownNameError, UnsupportedError):
        return None


def concept_images(ctx: AttackContext, config: RecoveryConfig, concept: str | None = None,
                   seed_offset: int = 0) -> tuple[np.ndarray, str]:
    """(images (n, H, W, 3) uint8 at the pipeline's resolution, their source "world" | "file:<path>") of `concept`
    (default: the attacked one): the user's `images` (the first `n_images`), else drawn by the world."""
    from ..generation import image_size

    concept = concept or ctx.concept
    if config.images and concept == ctx.concept:
        images, source = read_images(config.images)[: config.n_images], f"file:{config.images}"
    else:
        images = world_images(ctx.world, concept, config.n_images, config.seed + seed_offset)
        source = "world"
        if images is None:
            name = getattr(ctx.world, "name", None)
            raise InvalidValueError(f"the attack needs images of {concept!r}, and world {name!r} cannot draw them: "
                                    "pass images=<folder of .png/.jpg/.jpeg or .npy file> (CLI: :images=PATH)")
    return resize(np.ascontiguousarray(images), image_size(ctx.target)), source


def images_digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


@torch.no_grad()
def vae_latents(pipe: Any, images: np.ndarray) -> torch.Tensor:
    """(N, 4, h, w) float32 scaled VAE latents (posterior mean) of (N, H, W, 3) uint8 images."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(pipe.vae.device, pipe.vae.dtype)
    return (pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor).float()


# ------------------------------------------------------------------------------------------------ captions
def templates(ctx: AttackContext, concept: str, n: int, seed: int) -> tuple[str, ...]:
    """Caption templates ("{}" = the concept): the world's training templates that name no other concept of the world
    (the attacker's images show the concept, not the style or object a template's other slots would name), else
    GENERIC_TEMPLATES."""
    from ..errors import UnknownNameError
    from ..worlds import UnsupportedError

    if ctx.world is None:
        return GENERIC_TEMPLATES
    try:
        out = tuple(dict.fromkeys(t for t in ctx.world.templates(concept, n, seed) if "{}" in t))
        others = [c for names in ctx.world.concepts().values() for c in names if c.lower() != concept.lower()]
    except (UnknownNameError, UnsupportedError, NotImplementedError):
        return GENERIC_TEMPLATES
    if others:
        pattern = names_pattern(others)
        out = tuple(t for t in out if not pattern.search(t.replace("{}", " ")))
    return out or GENERIC_TEMPLATES


def concept_names(ctx: AttackContext, concept: str | None = None) -> list[str]:
    """Every text that names the concept (canonical name, erase prompts), longest first."""
    concept = concept or ctx.concept
    names = {concept}
    if ctx.world is not None and ctx.world.knows(concept):
        info = ctx.world.concept(concept)
        names |= {info.name, *info.erase}
    return sorted((n for n in names if n.strip()), key=len, reverse=True)


def names_pattern(names: Sequence[str]) -> re.Pattern:
    """Case-insensitive whole-word pattern matching any of `names`."""
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------ training
def denoising_loss(pipe: Any, x0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator,
                   unet: Any = None) -> torch.Tensor:
    """Textual-inversion / fine-tuning loss: MSE of the (given or the pipeline's) UNet's prediction at a random
    timestep t ~ U{0..T-1} and fresh noise against the scheduler's target (noise, or v for v-prediction).
    x0 (B, 4, h, w), cond (B, L, D)."""
    unet = unet or pipe.unet
    sched = pipe.scheduler
    noise = torch.randn(x0.shape, generator=gen).to(x0)
    t = torch.randint(0, int(sched.config.num_train_timesteps), (len(x0),), generator=gen).to(x0.device)
    xt = sched.add_noise(x0, noise, t)
    pred = unet(xt.to(pipe.unet.dtype), t, encoder_hidden_states=cond.to(pipe.unet.dtype)).sample
    kind = sched.config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = sched.get_velocity(x0, noise, t)
    else:
        raise InvalidValueError(f"scheduler prediction_type={kind!r} is not 'epsilon' or 'v_prediction'")
    return F.mse_loss(pred.float(), target.float())


def batch_indices(n: int, batch: int, step: int, seed: int) -> list[int]:
    """The `step`-th batch of `batch` indices into n items, shuffled per epoch from (seed, epoch)."""
    out: list[int] = []
    k = step * batch
    while len(out) < batch:
        epoch, pos = divmod(k, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        out.append(order[pos])
        k += 1
    return out


# ------------------------------------------------------------------------------------------------ budget curves
def budget_curve(name: str, target_pipe: Any, concept: str, budgets: Sequence[Any], key: str = "steps",
                 **kwargs: Any) -> list[dict[str, Any]]:
    """Recovery rate against attacker budget: `run_attack(name, ..., **{key: b})` for each budget b in `budgets`
    (e.g. key="steps", [0, 20, 50]; key="n_images"; key="strength" for incontext). kwargs: everything else
    `run_attack` takes (base_pipe, evaluator, prompts, shield, world, options). Returns one row per budget:
    {"budget", "key", "pre", "post", "asr", "seconds", "attack_seconds"}; `post` is the recovery rate."""
    from . import get_attack, run_attack

    method = get_attack(name)
    if key in kwargs:
        raise InvalidValueError(f"{key}= is the budget being varied; pass its values as budgets=, not as an option")
    if not budgets:
        raise InvalidValueError("budgets must list at least one value")
    valid = {f for f in method.config_cls.__dataclass_fields__}
    if key not in valid:
        from ..errors import UnknownNameError

        raise UnknownNameError(f"{name} option", key, sorted(valid))
    rows = []
    for b in budgets:
        res = run_attack(name, target_pipe, concept, **kwargs, **{key: b})
        post = float(np.mean(res.post)) if res.post else 0.0
        rows.append({"budget": b, "key": key, "pre": res.asr_pre, "post": post, "asr": res.asr,
                     "seconds": round(res.seconds, 3), "attack_seconds": round(res.attack_seconds, 3)})
    return rows


__all__ = ["GENERIC_TEMPLATES", "RecoveryConfig", "batch_indices", "budget_curve", "concept_images",
           "concept_names", "denoising_loss", "images_digest", "names_pattern", "read_images", "resize",
           "templates", "vae_latents", "world_images"]
