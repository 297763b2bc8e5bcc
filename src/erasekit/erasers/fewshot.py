"""Few-shot erasing: Fuchi & Takagi, "Erasing Concepts from Text-to-Image Diffusion Models with Few-shot Unlearning",
BMVC 2024. arXiv:2405.07288; official code: github.com/fmp453/few-shot-erasing (train.py::train, data.py, utils.py).

Gradient *ascent* on the textual-inversion loss, through the text encoder only (UNet and VAE frozen):

    min_phi  L(phi) = - E_{x0, T, t, eps} || eps_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, t, E_phi(T(c))) - eps ||^2

z0 = VAE latent (posterior sample x scaling factor, drawn once per image) of one of a few real images of the concept c;
T a random prompt template (27 object templates, or 19 style templates for art concepts); t ~ U{0..999}. Trainable
("mlp-final-attn"): mlp.fc1 / mlp.fc2 of every CLIP layer + the self-attention (q, k, v, out) of the last layer.
Official defaults: Adam lr 1e-5, betas (0.9, 0.98), eps 1e-6, weight decay 1e-8; batch 2; 4 epochs (README; 5 in the
argument parser) over ~4 images = 8 optimiser steps, "within 10 s" on a GPU.

Images: concepts the pipeline's world can draw come from `World.images` (`n_images` per concept; the toy world renders
them); any other concept needs real images, from `images=` (a folder of .png/.jpg/.jpeg files, or a .npy (N, H, W, 3) uint8 array) or in
memory via `hooks=FewShotHooks(images=array)`. Several erase prompts: each catalogue concept gets its own images;
prompts that are not catalogue names (e.g. an unsafe concept's trigger phrases) are taught with the images of the
nearest preceding catalogue concept; with user images, every erase prompt goes with all of them.

Deviations from the official code:
  - Defaults are tuned for the tiny toy model: lr 2e-3, at most 12 steps, and a concept check every 2 steps when
    one is given (the oracle in bench/erasure.py). With the official lr 1e-5 (or 2e-4) 8 steps do not erase a toy
    concept; at 3e-3 they do but also wreck neighbouring concepts, since gradient ascent has no term that keeps
    anything, so stopping as soon as the concept is gone matters (lr 1e-3 keeps neighbours a little better but
    needs ~22 steps for an artist, over the 10 s target once checks are counted). Official:
    `lr=1e-5 steps=8 check_every=0`.
  - "Last layer" is the text encoder's last layer (official: the substring "11.self_attn.", i.e. layer 11 of CLIP
    ViT-L/14's 12; the same layer there, and it would silently select nothing on smaller encoders).
  - The noise schedule is the pipeline's own (official: a PNDM schedule with SD1.x's scaled-linear betas, the same
    for SD1.x) and the latent scaling factor is the VAE's (official: 0.18215 hard-coded).
  - Images are resized to the pipeline's resolution (official: 512, bicubic, no crop); the random horizontal flip is
    drawn once per image as in the official preprocessing. Batches are shuffled per epoch from (seed, epoch), so a
    resumed run draws the same ones; a batch may straddle two epochs when the image count is not a multiple of the
    batch size (official: a smaller last batch).
  - The official zero-shot mode (`--is_zero_shot`: uniform noise of shape (1, 4, 64, 64) per item instead of
    latents) is not offered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import check_choice, check_min
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._text_encoder import epoch_batch, layer_selector, num_layers, optimiser_step, tokenize
from ._training import TrainHooks, TrainingConfig, TrainingLoop, changed_tensors, pipe_with, render_check, \
    trainable_copy
from .concepts import CONCEPT_TYPES, concept_type

# the textual-inversion templates the official code samples from (data.py), duplicates included as published
OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
)
STYLE_TEMPLATES: tuple[str, ...] = (
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a cropped painting in the style of {}", "a good painting in the style of {}",
    "a close-up painting in the style of {}", "a rendition in the style of {}", "a nice painting in the style of {}",
    "a small painting in the style of {}", "a weird painting in the style of {}", "a large painting in the style of {}",
)
# official utils.freeze_and_unfreeze_text_encoder methods
PARAM_SETS = ("mlp-final-attn", "mlp-only", "attn-only", "mlp-attn", "all")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class FewShotConfig(TrainingConfig):
    steps: int = field(default=12, metadata={
        "help": "budget: optimiser steps (official: 4 epochs x 4 images / batch 2 = 8)"})
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate (official: 1e-5)"})
    check_every: int = field(default=2, metadata={
        "help": "steps between concept checks (0 = never; used only with a check, e.g. the toy oracle)"})
    batch_size: int = field(default=2, metadata={"help": "images per step (official: 2)"})
    n_images: int = field(default=4, metadata={"help": "images rendered per toy-world concept (official: ~4 real)"})
    images: str = field(default="", metadata={
        "help": "folder of .png/.jpg/.jpeg images (or a .npy (N,H,W,3) uint8 file) of the concept; required for "
                "concepts outside the toy world"})
    concept_type: str = field(default="auto", metadata={
        "help": "'object' (27 templates) or 'art' (19 style templates); 'auto': toy-world artists -> art"})
    params: str = field(default="mlp-final-attn", metadata={
        "help": "trainable set: 'mlp-final-attn' (official), 'mlp-only', 'attn-only', 'mlp-attn', 'all'"})
    betas: tuple[float, float] = field(default=(0.9, 0.98), metadata={"help": "Adam betas (official: 0.9,0.98)"})
    eps: float = field(default=1e-6, metadata={"help": "Adam epsilon (official: 1e-6)"})
    weight_decay: float = field(default=1e-8, metadata={"help": "Adam (L2) weight decay (official: 1e-8)"})
    flip: bool = field(default=True, metadata={"help": "random horizontal flip (p=0.5) once per image (official)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min(self, 1, "batch_size", "n_images")
        for name, valid in (("concept_type", CONCEPT_TYPES), ("params", PARAM_SETS)):
            check_choice(name, getattr(self, name), valid)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise InvalidValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not self.eps > 0 or self.weight_decay < 0:
            raise InvalidValueError(f"eps must be > 0 and weight_decay >= 0, got eps={self.eps}, "
                                    f"weight_decay={self.weight_decay}")


@dataclass
class FewShotHooks(TrainHooks):
    """`TrainHooks` plus in-memory training images: (N, H, W, 3) uint8 array (or a list of PIL images / arrays)
    of the concept to erase. `FewShotHooks(images=arr, **vars(toyworld_hooks(...)))` keeps an oracle check too."""

    images: Any = None


def trainable_names(n_layers: int, params: str) -> Callable[[str], bool]:
    """Parameter-name predicate of the official trainable sets (utils.freeze_and_unfreeze_text_encoder): 'mlp' =
    mlp.fc1/fc2 of every layer, 'attn' = self_attn of every layer, 'final-attn' = self_attn of the last layer,
    'all' = every parameter (token and position embeddings and layer norms included, as officially)."""
    check_choice("params", params, PARAM_SETS)
    last = n_layers - 1

    def rule(layer: int | None, rest: str) -> bool:
        if params == "all":
            return True
        if layer is None:
            return False
        mlp = rest.startswith(("mlp.fc1.", "mlp.fc2."))
        attn = rest.startswith("self_attn.")
        return {"mlp-only": mlp, "attn-only": attn, "mlp-attn": mlp or attn,
                "mlp-final-attn": mlp or (attn and layer == last)}[params]

    return layer_selector(rule)


# ------------------------------------------------------------------------------------------------ images
def world_images(world: Any, concept: str, n: int = 4, seed: int = 0) -> np.ndarray | None:
    """(n, H, W, 3) uint8 images of `concept` drawn by its world (`World.images`), or None when the world does not
    know the concept or cannot draw it."""
    from ..errors import UnknownNameError
    from ..worlds import UnsupportedError

    try:
        return world.images(world.concept(concept).name, n, seed)
    except (UnknownNameError, UnsupportedError):
        return None


def load_images(source: str | Path) -> np.ndarray:
    """(N, H, W, 3) uint8 from a folder of .png/.jpg/.jpeg files (sorted by name) or a .npy array file."""
    path = Path(source)
    if path.is_file() and path.suffix == ".npy":
        return as_image_array(np.load(path), str(path))
    if not path.is_dir():
        raise InvalidValueError(f"images={str(source)!r} is neither a folder of images nor a .npy file")
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidValueError(f"images={str(source)!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    return as_image_array([np.asarray(Image.open(p).convert("RGB")) for p in files], str(path))


def as_image_array(images: Any, label: str = "images") -> list[np.ndarray] | np.ndarray:
    """Validated images: an (N, H, W, 3) uint8 array, or a list of (H, W, 3) uint8 arrays / PIL images."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    elif isinstance(images, Sequence) and not isinstance(images, str):
        items = [np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im) for im in images]
    else:
        raise InvalidValueError(f"{label}: expected (N, H, W, 3) uint8 images, got {type(images).__name__} "
                                f"{getattr(images, 'shape', '')}")
    if not items:
        raise InvalidValueError(f"{label}: no images")
    for im in items:
        if im.ndim != 3 or im.shape[-1] != 3 or im.dtype != np.uint8:
            raise InvalidValueError(f"{label}: expected (H, W, 3) uint8 images, got {im.dtype} {tuple(im.shape)}")
    if len({im.shape for im in items}) == 1:
        return np.stack(items)
    return items


def _resize(images: list[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8; images of another size are resized with bicubic interpolation (no crop)."""
    from PIL import Image

    out = [im if im.shape[:2] == (size, size) else
           np.asarray(Image.fromarray(im).resize((size, size), resample=Image.Resampling.BICUBIC)) for im in images]
    return np.stack(out)


def image_groups(request: EraseRequest, config: FewShotConfig, hooks: Any, world: Any = None
                 ) -> tuple[list[tuple[list[str], Any]], str]:
    """[(erase prompts, their images)], and where the images came from ("world" | "folder:<path>" | "memory").
    Without given images, each erase prompt the world knows gets `n_images` images drawn by the world; other prompts
    join the previous group."""
    from ..worlds import get_world

    world = get_world(world)
    given = getattr(hooks, "images", None)
    if given is not None and config.images:
        raise InvalidValueError(f"images={config.images!r} and hooks.images both given; pass one")
    if given is not None:
        return [(list(request.erase), as_image_array(given, "hooks.images"))], "memory"
    if config.images:
        return [(list(request.erase), load_images(config.images))], f"folder:{config.images}"
    groups: list[tuple[list[str], Any]] = []
    index: dict[str, int] = {}
    for prompt in request.erase:
        name = world.concept(prompt).name if world.knows(prompt) else None
        if name is not None and name in index:
            groups[index[name]][0].append(prompt)
            continue
        images = world_images(world, prompt, config.n_images, config.seed) if name is not None else None
        if images is None:
            if not groups:
                raise InvalidValueError(
                    f"few-shot erasing needs images of {prompt!r}: world {world.name!r} cannot draw it, so pass "
                    "images=<folder of .png/.jpg/.jpeg or .npy file> (CLI: -o images=PATH) or "
                    "hooks=FewShotHooks(images=array)")
            groups[-1][0].append(prompt)
            continue
        index[name] = len(groups)
        groups.append(([prompt], images))
    return groups, "world"


@torch.no_grad()
def encode_latents(pipe: Any, images: np.ndarray, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """(N, 4, h, w) scaled VAE latents, one posterior sample per image (drawn once, as officially), after an optional
    random horizontal flip per image (p = 0.5)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, H, W) in [-1, 1]
    if flip:
        mask = torch.rand(len(x), generator=gen) < 0.5
        x[mask] = x[mask].flip(-1)
    x = x.to(pipe.vae.device, pipe.vae.dtype)
    dist = pipe.vae.encode(x).latent_dist
    noise = torch.randn(dist.mean.shape, generator=gen).to(dist.mean)
    return (dist.mean + dist.std * noise).float() * pipe.vae.config.scaling_factor


def ascent_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The minimised objective: the *negative* textual-inversion MSE (gradient ascent on the denoising error)."""
    return -F.mse_loss(pred.float(), target.float(), reduction="mean")


# ------------------------------------------------------------------------------------------------ the method
def fewshot(pipe: Any, request: EraseRequest, config: FewShotConfig,
            hooks: TrainHooks) -> tuple[dict[str, torch.Tensor], dict]:
    """Erase `request.erase` with few-shot unlearning; returns ({text_encoder.* name: new tensor}, info)."""
    from ..generation import image_size

    kind = concept_type(request.erase, config.concept_type, pipe)
    templates = STYLE_TEMPLATES if kind == "art" else OBJECT_TEMPLATES
    from ..worlds import world_of_model

    groups, source = image_groups(request, config, hooks, world_of_model(pipe))
    size = image_size(pipe)
    gen0 = torch.Generator().manual_seed(int(config.seed))
    images = [_resize(imgs, size) for _, imgs in groups]
    latents = torch.cat([encode_latents(pipe, im, gen0, config.flip) for im in images])  # (N, 4, h, w)
    owner = [g for g, im in enumerate(images) for _ in range(len(im))]  # image -> group
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(im).tobytes() for im in images)).hexdigest()

    te, names = trainable_copy(pipe.text_encoder, trainable_names(num_layers(pipe.text_encoder), config.params))
    params = [p for p in te.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                           weight_decay=config.weight_decay)
    unet, sched = pipe.unet, pipe.scheduler
    n_train = int(sched.config.num_train_timesteps)
    prediction = sched.config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise InvalidValueError(f"scheduler prediction_type={prediction!r} is not 'epsilon' or 'v_prediction'")

    def step(i: int, gen: torch.Generator) -> float:
        idx = epoch_batch(len(latents), config.batch_size, i, config.seed)
        prompts = []
        for j in idx:
            words = groups[owner[j]][0]
            word = words[int(torch.randint(len(words), (1,), generator=gen))]
            prompts.append(templates[int(torch.randint(len(templates), (1,), generator=gen))].format(word))
        x0 = latents[idx].to(unet.device, unet.dtype)
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        t = torch.randint(0, n_train, (len(idx),), generator=gen).to(unet.device)
        xt = sched.add_noise(x0, noise, t)
        cond = te(tokenize(pipe, prompts).to(te.device))[0].to(unet.dtype)  # (B, L, D)
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        target = noise if prediction == "epsilon" else sched.get_velocity(x0, noise, t)
        loss = ascent_loss(pred, target)
        optimiser_step(opt, params, loss)
        return float(loss.detach())

    loop = TrainingLoop("fewshot", config, hooks, trainable={"text_encoder": te}, optimizer=opt,
                        key_extra={"erase": request.erase, "images": digest})
    log = loop.run(step, render=lambda: render_check(pipe_with(pipe, text_encoder=te), list(request.erase), hooks))
    tensors = changed_tensors("text_encoder", te, names, pipe.text_encoder.dtype)
    info = {"concept_type": kind, "templates": len(templates), "trainable": len(names),
            "images": {"source": source, "count": int(len(latents)), "sha256": digest,
                       "groups": [g for g, _ in groups]},
            "train": log.to_dict()}
    return tensors, info


METHOD = Method("fewshot", FewShotConfig, fewshot, trains=True,
                paper="Fuchi & Takagi, Erasing Concepts from Text-to-Image Diffusion Models with Few-shot Unlearning, "
                      "BMVC 2024")

__all__ = ["FewShotConfig", "FewShotHooks", "METHOD", "OBJECT_TEMPLATES", "STYLE_TEMPLATES", "ascent_loss",
           "encode_latents", "fewshot", "image_groups", "load_images", "trainable_names", "world_images"]
