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
    paraphrase    visual paraphrase (Barman et al. 2024): caption each image (the model's world's captioner, else
                  `prompt`), img2img at `strength` with classifier-free `guidance` towards the caption

Forgery (Yang et al. NeurIPS 2024, "Can simple averaging defeat modern watermarks?"): `average_forgery` estimates a
content-agnostic key pattern as the mean of many marked images minus the mean of clean ones and stamps it onto clean
images; a forgery succeeds when the detector calls the stamped clean image marked.

Forgery of initial-noise marks through a proxy model (Mueller et al., CVPR 2025; registered with forgery=True: their
output is other content that should *not* be judged marked):

    reprompt      invert each image through the pipeline (the proxy), regenerate from the recovered latent with
                  `prompt`: the mark travels with the latent
    imprint       optimise a cover's latent so that its proxy inversion matches the image's (`imprint_forgery(pipe,
                  marked, covers)` takes explicit covers; as a plain attack the cover is the next image or grey)

In `regen_attacks.py` (registered from there): ctrlregen (regeneration from clean noise under a structure control, Liu
et al. ICLR 2025), prefforge / prefremove (one-shot forgery / removal through a key-free preference model, Soucek et
al. NeurIPS 2025).
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
    forgery: bool = False  # the output is meant to be judged marked (other content carrying the input's mark)


mark_attacks: Registry[MarkAttack] = Registry("watermark attack")


def _register(name: str, config_cls: type, needs_pipe: bool = False, help: str = "", forgery: bool = False):
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        mark_attacks.add(name, MarkAttack(name, config_cls, fn, needs_pipe, help, forgery), help=help)
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
    from ..sampling import resolve_sampling

    steps = resolve_sampling(pipe, cfg.steps, 0.0)[0]
    return _renoise_denoise(pipe, images, [cfg.prompt] * len(images), steps, cfg.strength, None, seed)


def _renoise_denoise(pipe: Any, images: np.ndarray, texts: Sequence[str], steps: int, strength: float,
                     guidance: float | None, seed: int) -> np.ndarray:
    """Noise the images' VAE latents to `strength` of a `steps`-step schedule (noise and stochastic steps seeded per
    image: `seed` + index) and denoise conditioned on `texts`: without guidance (`guidance` None, diffusion
    purification) or with classifier-free guidance against the empty prompt (the visual paraphrase)."""
    from ..sampling import decode, encode_prompts, step_kwargs
    from ._latent import encode_images

    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps)
    n_run = max(1, min(steps, int(round(steps * strength))))
    ts = sched.timesteps[steps - n_run:]
    z0 = encode_images(pipe, images)
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(images))]
    eps0 = torch.cat([torch.randn((1, *z0.shape[1:]), generator=g) for g in gens]).to(z0.device, z0.dtype)
    x = sched.add_noise(z0, eps0, ts[:1].repeat(len(images)))
    extra = step_kwargs(sched, gens)
    if guidance is None:
        cond = encode_prompts(pipe, list(texts))
        for t in ts:
            eps = pipe.unet(sched.scale_model_input(x, t), t, encoder_hidden_states=cond).sample
            x = sched.step(eps, t, x, **extra).prev_sample
        return decode(pipe, x)
    enc = torch.cat([encode_prompts(pipe, [""] * len(images)), encode_prompts(pipe, list(texts))])
    for t in ts:
        eu, ec = pipe.unet(sched.scale_model_input(torch.cat([x, x]), t), t, encoder_hidden_states=enc).sample.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x, **extra).prev_sample
    return decode(pipe, x)


@dataclass(frozen=True)
class ParaphraseConfig:
    strength: float = field(default=0.4, metadata={
        "help": "fraction of the noise schedule added, then denoised (paraphrasing strength s; Peccavi's project page: "
                "s <= 0.4 keeps the image's content)"})
    guidance: float | None = field(default=None, metadata={
        "help": "classifier-free guidance towards the caption (None: the model's default; project page: 4-7)"})
    prompt: str = field(default="", metadata={
        "help": "text used when the model's world has no captioner (the paper captions with KOSMOS-2)"})
    steps: int | None = field(default=None, metadata={"help": "full-schedule steps (None: the model's default)"})

    def __post_init__(self) -> None:
        from ..sampling import check_sampling

        _range("strength", self.strength, 0.0, 1.0, lo_open=True)
        check_sampling(self.steps, self.guidance, where="paraphrase")
        if not isinstance(self.prompt, str):
            raise InvalidValueError(f"paraphrase prompt must be a string, got {self.prompt!r}")


def paraphrase_captions(pipe: Any, images: np.ndarray, prompt: str = "") -> list[str]:
    """One text per image: the captioner of the model's world (`World.caption`), else `prompt` for every image;
    neither -> one line naming the fix."""
    from ..worlds import UnsupportedError, world_of_model

    world = world_of_model(pipe)
    try:
        return list(world.caption(images))
    except UnsupportedError:
        if prompt.strip():
            return [prompt] * len(images)
        raise InvalidValueError(f"paraphrase: the model's world {world.name!r} has no captioner and no prompt was "
                                "given; pass one, e.g. --attack \"paraphrase:prompt=a photo of a cat\"") from None


@_register("paraphrase", ParaphraseConfig, needs_pipe=True,
           help="visual paraphrase: caption each image, regenerate it img2img at `strength` guided by the caption")
@torch.no_grad()
def paraphrase(images: np.ndarray, cfg: ParaphraseConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    """Visual paraphrase attack (Barman et al. 2024, "The Brittleness of AI-Generated Image Watermarking Techniques:
    Examining Their Robustness Against Visual Paraphrasing Attacks", arXiv 2408.10446): caption the image, then
    regenerate it image-to-image: noise the VAE latent to `strength` of the schedule and denoise with classifier-free
    guidance `guidance` towards the caption. Deviations: the captioner is the model's world's (`World.caption`; the
    toy world's is its oracle's labels in the training grammar) instead of KOSMOS-2, and the img2img model is the
    pipeline given (the paper uses a large public img2img diffusion model, not the generator); noise and stochastic
    steps are seeded per image (`seed` + index), so clean and marked images are treated alike. Written from the
    paper's text (its released code was not found in our search), with strength and guidance as options: Peccavi's
    project page finds s <= 0.4 and guidance 4-7 keep the content."""
    from ..sampling import resolve_sampling

    steps, guidance = resolve_sampling(pipe, cfg.steps, cfg.guidance)
    texts = paraphrase_captions(pipe, images, cfg.prompt)
    return _renoise_denoise(pipe, images, texts, steps, cfg.strength, float(guidance), seed)


# ------------------------------------------------------------------------------------------------ forgery on the latent
@dataclass(frozen=True)
class RepromptConfig:
    prompt: str = field(default="a picture of a cat", metadata={
        "help": "the new prompt the recovered latent is regenerated with (any other content)"})
    guidance: float | None = field(default=None, metadata={"help": "regeneration guidance (None: the model's default)"})
    steps: int | None = field(default=None, metadata={"help": "inversion and regeneration steps (None: the model's)"})
    inversion_prompt: str = field(default="", metadata={
        "help": "text the attacker inverts with (default empty: the attacker does not know the prompt either)"})
    inversion_guidance: float = field(default=1.0, metadata={"help": "guidance of the attacker's inversion"})
    fixed_point: int = field(default=0, metadata={"help": "fixed-point iterations per inversion step"})
    decoder_steps: int = field(default=0, metadata={
        "help": "Adam steps of decoder inversion refining the VAE encoding before the DDIM inversion (0: the paper's "
                "encoder-only attacker; a stronger attacker uses the detector's best inversion)"})

    def __post_init__(self) -> None:
        from ..sampling import check_sampling

        check_sampling(self.steps, self.guidance, where="reprompt")
        check_sampling(None, self.inversion_guidance, where="reprompt inversion_guidance")
        _count("fixed_point", self.fixed_point, 100)
        _count("decoder_steps", self.decoder_steps, 10_000)
        if not isinstance(self.prompt, str) or not isinstance(self.inversion_prompt, str):
            raise InvalidValueError("reprompt prompt and inversion_prompt must be strings")


def _count(name: str, value: Any, hi: int, lo: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


@_register("reprompt", RepromptConfig, needs_pipe=True, forgery=True,
           help="forgery: DDIM-invert each image through the (proxy) pipeline, regenerate from it with `prompt`")
def reprompt(images: np.ndarray, cfg: RepromptConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    """Re-prompt forgery (Mueller et al., "Black-Box Forgery Attacks on Semantic Watermarks for Diffusion Models",
    CVPR 2025, official code and-mill/semantic-forgery): the attacker inverts a marked image through a proxy model
    (here: `pipe`) and generates new content from the recovered initial latent; an initial-noise mark travels with
    the latent, so the new image is detected as marked. The official attack uses an empty-prompt inversion and the
    target model's sampler; both are options here, as is a stronger inversion (`decoder_steps`, `fixed_point`,
    `inversion_guidance`) than the paper's attacker uses."""
    from ._latent import ddim_invert, generate_from_latents

    z = ddim_invert(pipe, images, steps=cfg.steps, prompt=cfg.inversion_prompt, guidance=float(cfg.inversion_guidance),
                    fixed_point=cfg.fixed_point, decoder_steps=cfg.decoder_steps)
    seeds = [seed + i for i in range(len(images))]
    return generate_from_latents(pipe, [cfg.prompt] * len(images), seeds, z, cfg.steps, cfg.guidance)


@dataclass(frozen=True)
class ImprintConfig:
    steps: int = field(default=150, metadata={"help": "Adam steps on the cover latent (official 151)"})
    lr: float = field(default=0.01, metadata={"help": "Adam learning rate (official 1e-2)"})
    inversion_steps: int | None = field(default=None, metadata={
        "help": "DDIM steps of the proxy inversion (None: the model's default)"})
    cover: str = field(default="roll", metadata={
        "help": "as a plain attack, the cover of image i: roll (image i+1 of the batch, other content) or grey"})

    def __post_init__(self) -> None:
        from ..config import check_choice
        from ..sampling import check_sampling

        _count("steps", self.steps, 10_000, lo=1)
        _range("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_sampling(self.inversion_steps, None, where="imprint inversion_steps")
        check_choice("cover", self.cover, IMPRINT_COVERS)


IMPRINT_COVERS = ("roll", "grey")
GREY = 128  # pixel level of the "grey" cover


def imprint_forgery(pipe: Any, marked: np.ndarray, covers: np.ndarray, cfg: ImprintConfig | None = None,
                    log: Callable[[str], None] | None = None) -> np.ndarray:
    """Imprint forgery (Mueller et al., CVPR 2025): optimise the VAE latent of each cover image (N, H, W, 3) uint8 so
    that its empty-prompt DDIM inversion through the proxy `pipe` (differentiable, no fixed-point iterations) matches
    the inversion of the marked image of the same index (MSE, Adam), then decode. Returns (N, H, W, 3) uint8 forged
    covers; a detector that calls them marked has been forged. Deviation: the official code optimises a pixel-space
    cover through the proxy's VAE encoder; here the cover's VAE latent is optimised directly (same proxy, fewer
    backward passes through the encoder, and the decoded image is what a detector sees)."""
    from ..sampling import decode, resolve_sampling
    from ._latent import encode_images, invert_latents, invert_loop

    cfg = cfg or ImprintConfig()
    marked, covers = check_images(marked, what="marked images"), check_images(covers, what="cover images")
    if marked.shape != covers.shape:
        raise InvalidValueError(f"imprint needs one cover per marked image of the same size, got {covers.shape} "
                                f"covers for {marked.shape} marked images")
    steps = resolve_sampling(pipe, cfg.inversion_steps, 0.0)[0]
    empty = [""] * len(marked)
    target = invert_latents(pipe, encode_images(pipe, marked), empty, steps).to(pipe.unet.device)
    z = encode_images(pipe, covers).detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    frozen = [(m, [p.requires_grad for p in m.parameters()]) for m in (pipe.unet, pipe.vae)]
    for m, _ in frozen:
        m.requires_grad_(False)
    try:
        with torch.enable_grad():
            for i in range(cfg.steps):
                loss = ((invert_loop(pipe, z, empty, steps).float() - target) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if log is not None and (i % 25 == 0 or i == cfg.steps - 1):
                    log(f"imprint step {i}: mse {loss.item():.4f}")
    finally:
        for m, flags in frozen:
            for p, r in zip(m.parameters(), flags):
                p.requires_grad_(r)
    return decode(pipe, z.detach().to(pipe.vae.dtype))


@_register("imprint", ImprintConfig, needs_pipe=True, forgery=True,
           help="forgery: optimise a cover so its proxy inversion matches each image's (cover: the next image, grey)")
def imprint(images: np.ndarray, cfg: ImprintConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    covers = np.roll(images, 1, axis=0) if cfg.cover == "roll" else np.full_like(images, GREY)
    return imprint_forgery(pipe, images, covers, cfg)


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


__all__ = ["MarkAttack", "apply_attack", "average_forgery", "imprint_forgery", "mark_attacks", "parse_attack"]

from . import regen_attacks  # noqa: E402,F401  registers ctrlregen, prefforge, prefremove (Liu 2025; Soucek 2025)

