"""Attacks on watermarked images: distortions, regeneration and forgery, one registry, composable specs.

    from erasekit.marks.attacks import apply_attack
    out = apply_attack("jpeg:quality=50+blur:sigma=1", images, seed=0)        # (N, H, W, 3) uint8, same shape
    out = apply_attack("img2img:strength=0.3", images, pipe=pipe, seed=0)     # regeneration needs a pipeline

Every attack maps (N, H, W, 3) uint8 images to images of the same shape and dtype, every strength is an option, and
randomness (noise, crop offsets, diffusion noise) comes from `seed` (+ image index), so an attack applied to clean
and marked images with the same seed treats them alike - the Tree-Ring and Gaussian Shading papers' protocol (attacks
are applied to clean and marked images before detection; MarkDiffusion's unwatermarked pipeline does not, which
raises measured TPR@FPR).

    jpeg          PIL JPEG at `quality` (Tree-Ring: 25; GS: 25; WAVES: 90-10)
    crop          centre crop keeping `scale` of the area, resized back (bilinear) (Tree-Ring: 0.75)
    rotate        rotation by `degrees` (bilinear, black corners) (Tree-Ring: 75)
    blur          Gaussian blur of radius `sigma` px (PIL) (Tree-Ring / GS: 4 at 512 px)
    noise         additive Gaussian noise of std `std` (fraction of 255) (Tree-Ring: 0.1; GS: 0.05)
    brightness    PIL brightness factor `factor`
    contrast      PIL contrast factor `factor`
    vae           VAE encode/decode round trip through the pipeline (regeneration)
    img2img       diffusion purification: noise to `strength` of the schedule, denoise with `prompt` (default "")
                  through the pipeline's scheduler (MarkDiffusion's DiffusionPurification: strength 0.3)

Forgery (Yang et al. NeurIPS 2024, "Can simple averaging defeat modern watermarks?"): `average_forgery` estimates a
content-agnostic key pattern as the mean of many marked images minus the mean of clean ones and stamps it onto clean
images; a forgery succeeds when the detector calls the stamped clean image marked.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import parse_spec_options
from ..errors import InvalidValueError
from ..registry import Registry
from . import check_images


@dataclass(frozen=True)
class MarkAttack:
    """A registered attack: `name`, `config_cls`, `fn(images, config, pipe, seed) -> images`, `needs_pipe`."""

    name: str
    config_cls: type
    fn: Callable[..., np.ndarray]
    needs_pipe: bool = False
    help: str = ""


mark_attacks: Registry[MarkAttack] = Registry("watermark attack")


def _register(name: str, config_cls: type, needs_pipe: bool = False, help: str = ""):
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        mark_attacks.add(name, MarkAttack(name, config_cls, fn, needs_pipe, help), help=help)
        return fn

    return deco


def _range(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = (lo < value if lo_open else lo <= value) and value <= hi
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        raise InvalidValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")


def _pil(images: np.ndarray, op: Callable[[Any], Any]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(op(Image.fromarray(im)).convert("RGB"), dtype=np.uint8) for im in images])


# ------------------------------------------------------------------------------------------------ distortions
@dataclass(frozen=True)
class JpegConfig:
    quality: int = field(default=50, metadata={"help": "JPEG quality 1-95 (PIL)"})

    def __post_init__(self) -> None:
        _range("quality", self.quality, 1, 95)


@_register("jpeg", JpegConfig, help="JPEG compression (PIL) at `quality`")
def jpeg(images: np.ndarray, cfg: JpegConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from PIL import Image

    def op(im: Any) -> Any:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(cfg.quality))
        buf.seek(0)
        return Image.open(buf)

    return _pil(images, op)


@dataclass(frozen=True)
class CropConfig:
    scale: float = field(default=0.75, metadata={"help": "fraction of the area kept (centre crop), then resized back"})

    def __post_init__(self) -> None:
        _range("scale", self.scale, 0.0, 1.0, lo_open=True)


@_register("crop", CropConfig, help="centre crop of `scale` of the area, resized back")
def crop(images: np.ndarray, cfg: CropConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from PIL import Image

    h, w = images.shape[1:3]
    ch, cw = max(1, round(h * cfg.scale ** 0.5)), max(1, round(w * cfg.scale ** 0.5))
    top, left = (h - ch) // 2, (w - cw) // 2
    return _pil(images, lambda im: im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR))


@dataclass(frozen=True)
class RotateConfig:
    degrees: float = field(default=15.0, metadata={"help": "rotation angle in degrees (counter-clockwise)"})

    def __post_init__(self) -> None:
        _range("degrees", self.degrees, -360.0, 360.0)


@_register("rotate", RotateConfig, help="rotation by `degrees` (bilinear)")
def rotate(images: np.ndarray, cfg: RotateConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from PIL import Image

    return _pil(images, lambda im: im.rotate(float(cfg.degrees), resample=Image.BILINEAR))


@dataclass(frozen=True)
class BlurConfig:
    sigma: float = field(default=1.0, metadata={"help": "Gaussian blur radius in pixels (PIL GaussianBlur)"})

    def __post_init__(self) -> None:
        _range("sigma", self.sigma, 0.0, 100.0)


@_register("blur", BlurConfig, help="Gaussian blur of radius `sigma` px")
def blur(images: np.ndarray, cfg: BlurConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from PIL import ImageFilter

    return _pil(images, lambda im: im.filter(ImageFilter.GaussianBlur(radius=float(cfg.sigma))))


@dataclass(frozen=True)
class NoiseConfig:
    std: float = field(default=0.05, metadata={"help": "std of additive Gaussian noise, as a fraction of 255"})

    def __post_init__(self) -> None:
        _range("std", self.std, 0.0, 1.0)


@_register("noise", NoiseConfig, help="additive Gaussian noise of std `std` (x 255), seeded per image")
def noise(images: np.ndarray, cfg: NoiseConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    out = np.empty_like(images)
    for i, im in enumerate(images):
        n = np.random.default_rng(seed + i).normal(0.0, cfg.std * 255.0, im.shape)
        out[i] = np.clip(np.round(im.astype(np.float64) + n), 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class FactorConfig:
    factor: float = field(default=1.5, metadata={"help": "enhancement factor (1 = unchanged)"})

    def __post_init__(self) -> None:
        _range("factor", self.factor, 0.0, 10.0)


@_register("brightness", FactorConfig, help="PIL brightness by `factor`")
def brightness(images: np.ndarray, cfg: FactorConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from PIL import ImageEnhance

    return _pil(images, lambda im: ImageEnhance.Brightness(im).enhance(float(cfg.factor)))


@_register("contrast", FactorConfig, help="PIL contrast by `factor`")
def contrast(images: np.ndarray, cfg: FactorConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from PIL import ImageEnhance

    return _pil(images, lambda im: ImageEnhance.Contrast(im).enhance(float(cfg.factor)))


# ------------------------------------------------------------------------------------------------ regeneration
@dataclass(frozen=True)
class NoOptions:
    pass


@_register("vae", NoOptions, needs_pipe=True, help="VAE encode/decode round trip through the pipeline")
@torch.no_grad()
def vae(images: np.ndarray, cfg: NoOptions, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from ..sampling import decode
    from ._latent import encode_images

    return decode(pipe, encode_images(pipe, images))


@dataclass(frozen=True)
class Img2ImgConfig:
    strength: float = field(default=0.3, metadata={"help": "fraction of the noise schedule added, then denoised"})
    prompt: str = field(default="", metadata={"help": "prompt of the denoising (default empty: unknown content)"})
    steps: int | None = field(default=None, metadata={"help": "full-schedule steps (None: the model's default)"})

    def __post_init__(self) -> None:
        _range("strength", self.strength, 0.0, 1.0, lo_open=True)
        if self.steps is not None:
            from ..sampling import check_sampling

            check_sampling(self.steps, None, where="img2img steps")


@_register("img2img", Img2ImgConfig, needs_pipe=True,
           help="diffusion purification: noise to `strength`, denoise (no guidance) with `prompt`")
@torch.no_grad()
def img2img(images: np.ndarray, cfg: Img2ImgConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    from ..sampling import decode, encode_prompts, resolve_sampling, step_kwargs
    from ._latent import encode_images

    steps = resolve_sampling(pipe, cfg.steps, 0.0)[0]
    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps)
    n_run = max(1, min(steps, int(round(steps * cfg.strength))))
    ts = sched.timesteps[steps - n_run:]
    z0 = encode_images(pipe, images)
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(images))]
    eps0 = torch.cat([torch.randn((1, *z0.shape[1:]), generator=g) for g in gens]).to(z0.device, z0.dtype)
    x = sched.add_noise(z0, eps0, ts[:1].repeat(len(images)))
    cond = encode_prompts(pipe, [cfg.prompt] * len(images))
    extra = step_kwargs(sched, gens)
    for t in ts:
        eps = pipe.unet(sched.scale_model_input(x, t), t, encoder_hidden_states=cond).sample
        x = sched.step(eps, t, x, **extra).prev_sample
    return decode(pipe, x)


# ------------------------------------------------------------------------------------------------ specs
def parse_attack(spec: str) -> list[tuple[MarkAttack, Any]]:
    """'jpeg:quality=50+blur:sigma=1' -> [(attack, config), ...] (validated; nothing runs). 'none' or '' -> []."""
    spec = str(spec).strip()
    if spec.lower() in ("", "none", "identity"):
        return []
    parts = [p.strip() for p in spec.split("+")]
    if not all(parts):
        raise InvalidValueError(f"empty attack in spec {spec!r}; known attacks: {', '.join(mark_attacks.names())}")
    out = []
    for part in parts:
        name, _, opts = part.partition(":")
        atk = mark_attacks.get(name.strip())
        out.append((atk, atk.config_cls(**parse_spec_options(atk.name, atk.config_cls, opts))))
    return out


def apply_attack(spec: str | Sequence[tuple[MarkAttack, Any]], images: np.ndarray, pipe: Any = None,
                 seed: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8 images after every attack of `spec` in order (same shape and dtype)."""
    chain = parse_attack(spec) if isinstance(spec, str) else list(spec)
    images = check_images(images)
    for atk, cfg in chain:
        if atk.needs_pipe and pipe is None:
            raise InvalidValueError(f"attack {atk.name!r} regenerates through a diffusion model: pass pipe= "
                                    "(erasekit mark attack --model ...)")
        out = np.asarray(atk.fn(images, cfg, pipe=pipe, seed=seed))
        if out.shape != images.shape or out.dtype != np.uint8:
            raise InvalidValueError(f"attack {atk.name!r} returned {out.dtype} {out.shape} for {images.shape}")
        images = out
    return images


# ------------------------------------------------------------------------------------------------ forgery
def average_forgery(marked: np.ndarray, clean_ref: np.ndarray, targets: np.ndarray,
                    strength: float = 1.0) -> np.ndarray:
    """Forge a mark onto `targets` (clean images): stamp strength * (mean(marked) - mean(clean_ref)), the
    content-agnostic pattern that averaging many images of one key reveals (Yang et al., NeurIPS 2024). All inputs
    (N, H, W, 3) uint8 of one size; the attacker needs only marked images and unrelated clean images."""
    marked, clean_ref, targets = check_images(marked, what="marked images"), check_images(clean_ref), \
        check_images(targets, what="target images")
    if not (marked.shape[1:] == clean_ref.shape[1:] == targets.shape[1:]):
        raise InvalidValueError(f"forgery inputs differ in size: {marked.shape[1:]}, {clean_ref.shape[1:]}, "
                                f"{targets.shape[1:]}")
    if not 0.0 < strength <= 10.0:
        raise InvalidValueError(f"strength must be in (0, 10], got {strength!r}")
    pattern = marked.astype(np.float64).mean(axis=0) - clean_ref.astype(np.float64).mean(axis=0)
    return np.clip(np.round(targets.astype(np.float64) + strength * pattern[None]), 0, 255).astype(np.uint8)


__all__ = ["MarkAttack", "apply_attack", "average_forgery", "mark_attacks", "parse_attack"]
