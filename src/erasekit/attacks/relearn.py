"""Relearning by fine-tuning: the erased model is fine-tuned for a few steps, then prompted as before.

  relearn (variant "concept")  a few images of the erased concept with captions naming it, DreamBooth/LoRA-style:
      Ruiz et al., "DreamBooth", CVPR 2023 (LoRA fine-tuning as in diffusers' train_dreambooth_lora.py); as a recovery
      attack: Pham et al., ICLR 2024 (Sec. 6) and Suriyakumar et al., "Unstable Unlearning: The Hidden Risk of Concept
      Resurgence in Diffusion Models", 2024 (few-shot relearning)
  relearn (variant "benign")   images of *unrelated* concepts with their own captions: concept resurgence after benign
      fine-tuning (Suriyakumar et al., 2024); the concept is never shown or named during the fine-tune.

Objective: the standard denoising loss on the images' VAE latents (`_recovery.denoising_loss`), Adam on
  - "lora-attn":  rank-r LoRA factors (up (out, r) = 0, down (r, in) ~ U(+-1/sqrt(in)), peft's init) on to_q/to_k/to_v/to_out.0 of every
                  attention (diffusers' DreamBooth-LoRA target modules), scale alpha / r with alpha = r;
  - "lora-xattn": the same on the cross-attentions only;
  - "xattn-kv":   full fine-tune of the cross-attention key/value projections (where UCE/RECE/MACE edit);
  - "full":       full fine-tune of every UNet tensor (diffusers' train_text_to_image; FreezeAsGuard's user).
`freeze=PATH` (a FreezeAsGuard mask file, `erasekit.guards.freezeasguard`): the tensors it lists are left out of the
fine-tune (no delta, no LoRA factors), as the publisher's fine-tuning API would enforce (Huang & Gao, 2024).
The attack keeps only the learned deltas (`Replay.tensors`: "<param>::up"/"::down" or "<param>::delta"), never a copy
of the model, and renders by adding them in place around each generation and restoring the original tensors
bit-exactly afterwards; shields apply as to any prompt.

Budget: `n_images` x `steps` (batch `batch_size`). Not the official recipe of any one paper (DreamBooth: 5e-6 full /
1e-4 LoRA, ~400-1000 steps, a class-prior loss we do not use); defaults sized for the toy model (lr 1e-3, 20 steps).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from ..errors import InvalidValueError
from ..optim import grad_step
from . import AttackContext, AttackMethod, AttackResult, Outcome, Replay
from ._common import Budget
from ._recovery import (RecoveryConfig, batch_indices, concept_images, denoising_loss, images_digest, resize,
                        templates, world_images)

PARAMS = ("lora-attn", "lora-xattn", "xattn-kv", "full")
FULL_PARAMS = ("xattn-kv", "full")  # fine-tuned as full deltas, not LoRA factors
VARIANTS = ("concept", "benign")
LORA_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class RelearnConfig(RecoveryConfig):
    steps: int = field(default=20, metadata={"help": "budget: fine-tuning steps"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=2, metadata={"help": "images per step"})
    params: str = field(default="lora-attn", metadata={"help": f"what is fine-tuned: {', '.join(PARAMS)}"})
    rank: int = field(default=4, metadata={"help": "LoRA rank (lora-* params)"})
    variant: str = field(default="concept", metadata={
        "help": "'concept' (images of the erased concept, named) or 'benign' (unrelated images: resurgence)"})
    freeze: str = field(default="", metadata={
        "help": "FreezeAsGuard mask file (.json): the tensors it lists stay frozen during the fine-tune"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..config import check_choice, check_min

        check_min(self, 0, "lr", strict=True)
        check_min(self, 1, "batch_size", "rank")
        check_choice("params", self.params, PARAMS)
        check_choice("variant", self.variant, VARIANTS)
        if self.freeze and not Path(self.freeze).is_file():
            raise InvalidValueError(f"freeze={self.freeze!r} is not a file; pass a FreezeAsGuard mask .json "
                                    "(erasekit.guards.freezeasguard.FreezeMask.save)")


def target_parameters(unet: torch.nn.Module, params: str) -> dict[str, torch.nn.Parameter]:
    """{"unet.<path>.weight": parameter} of the projections `params` fine-tunes, in module order."""
    if params == "full":
        return {f"unet.{n}": p for n, p in unet.named_parameters() if p.is_floating_point()}
    out: dict[str, torch.nn.Parameter] = {}
    for name, module in unet.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in ("attn1", "attn2") or not hasattr(module, "to_k"):
            continue
        if params != "lora-attn" and leaf != "attn2":
            continue
        projs = ("to_k", "to_v") if params == "xattn-kv" else LORA_PROJECTIONS
        for p in projs:
            sub = module.get_submodule(p)
            out[f"unet.{name}.{p}.weight"] = sub.weight
    if not out:
        raise InvalidValueError(f"{type(unet).__name__} has no attention projections for params={params!r}")
    return out


def training_set(ctx: AttackContext, config: RelearnConfig) -> tuple[np.ndarray, list[list[str]], dict]:
    """(images (N, H, W, 3), per image its captions, info). Concept: the concept's images with the world's caption
    templates naming it (those naming no other concept). Benign: one image each of `n_images` unrelated concepts,
    captioned with their names."""
    from ..generation import image_size

    if config.variant == "concept":
        images, source = concept_images(ctx, config)
        caps = [t.format(ctx.concept) for t in templates(ctx, ctx.concept, 16, config.seed)]
        return images, [caps] * len(images), {"source": source, "concepts": [ctx.concept]}
    if ctx.world is None:
        raise InvalidValueError("variant=benign needs a world that can draw unrelated concepts")
    prompts = ctx.world.unrelated(ctx.concept, config.n_images, config.seed)
    imgs, caps, names = [], [], []
    for i, p in enumerate(prompts):
        im = world_images(ctx.world, p.concept, 1, config.seed + 7919 * (i + 1))
        if im is None:
            continue
        imgs.append(resize(im, image_size(ctx.target))[0])
        caps.append([p.concept])  # the image shows the concept alone: its name is the caption
        names.append(p.concept)
    if not imgs:
        raise InvalidValueError(f"world {ctx.world.name!r} could not draw unrelated images for variant=benign")
    return np.stack(imgs), caps, {"source": "world", "concepts": names}


def _forward_weights(base: dict[str, torch.Tensor], train: dict[str, torch.Tensor], config: RelearnConfig,
                     ) -> dict[str, torch.Tensor]:
    """{unet-relative name: weight + delta} (differentiable in the trainable tensors)."""
    out = {}
    for name, w in base.items():
        rel = name.removeprefix("unet.")
        if config.params in FULL_PARAMS:
            out[rel] = w + train[f"{name}::delta"]
        else:
            out[rel] = w + train[f"{name}::up"] @ train[f"{name}::down"]  # scale alpha / r = 1
    return out


def fine_tune(ctx: AttackContext, prompts: list[str], config: RelearnConfig) -> Replay:
    """Fine-tune the target (through functional weight overrides: the model itself is never modified) and return the
    learned deltas."""
    from ..sampling import encode_prompts
    from ._recovery import vae_latents

    t0 = time.perf_counter()
    pipe = ctx.target
    images, captions, info = training_set(ctx, config)
    latents = vae_latents(pipe, images)
    base = {n: p.detach() for n, p in target_parameters(pipe.unet, config.params).items()}
    frozen_info: dict[str, Any] = {}
    if config.freeze:
        from ..guards.freezeasguard import FreezeMask

        mask = FreezeMask.load(config.freeze)
        frozen = set(mask.frozen)
        kept = {n: w for n, w in base.items() if n not in frozen}
        frozen_info = {"freeze": {"file_sha256": mask.sha256, "frozen_targets": len(base) - len(kept),
                                  "trainable_targets": len(kept)}}
        if not kept:
            raise InvalidValueError(f"freeze={config.freeze!r} freezes every tensor params={config.params!r} "
                                    "fine-tunes; choose other params (e.g. params=full)")
        base = kept
    gen = torch.Generator().manual_seed(config.seed)
    train: dict[str, torch.Tensor] = {}
    for name, w in base.items():
        if config.params in FULL_PARAMS:
            train[f"{name}::delta"] = torch.zeros_like(w, dtype=torch.float32)
        else:
            out_f, in_f = w.shape
            train[f"{name}::up"] = torch.zeros(out_f, config.rank)
            bound = 1.0 / in_f ** 0.5  # peft's default: kaiming_uniform_(a=sqrt(5)) on down
            train[f"{name}::down"] = (torch.rand(config.rank, in_f, generator=gen) * 2 - 1) * bound
    for t in train.values():
        t.requires_grad_(True)
    opt = torch.optim.Adam(list(train.values()), lr=config.lr)
    budget = Budget(config.steps, config.max_seconds)
    losses: list[float] = []
    done = 0
    while not budget.exhausted(done):
        idx = batch_indices(len(latents), config.batch_size, done, config.seed)
        texts = [captions[i][int(torch.randint(len(captions[i]), (1,), generator=gen))] for i in idx]
        cond = encode_prompts(pipe, texts)
        weights = {k: v.to(pipe.unet.dtype) for k, v in _forward_weights(base, train, config).items()}

        def unet(x, t, encoder_hidden_states):  # the target UNet with the current deltas
            return functional_call(pipe.unet, weights, (x, t), {"encoder_hidden_states": encoder_hidden_states})

        loss = denoising_loss(pipe, latents[idx].to(pipe.unet.device), cond, gen, unet=unet)
        grad_step(opt, loss, list(train.values()))
        losses.append(round(float(loss.detach()), 6))
        done += 1
    tensors = {k: v.detach().contiguous() for k, v in train.items()}
    n_params = int(sum(v.numel() for v in tensors.values()))
    return Replay(tensors, {"params": config.params, "variant": config.variant, "steps": done, "losses": losses,
                            "seconds": round(time.perf_counter() - t0, 3), "trainable_parameters": n_params,
                            "images": {**info, "count": len(images), "sha256": images_digest(images)},
                            **frozen_info})


@contextlib.contextmanager
def deltas_applied(pipe: Any, replay: Replay) -> Iterator[None]:
    """Add the replay's learned deltas to `pipe`'s weights in place; restore the originals (bit-exact) on exit."""
    from ..edits import resolve_parameter

    names = sorted({k.split("::")[0] for k in replay.tensors})
    originals: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name in names:
                param = resolve_parameter(pipe, name)
                originals[name] = param.detach().clone()
                if f"{name}::delta" in replay.tensors:
                    delta = replay.tensors[f"{name}::delta"]
                else:
                    delta = replay.tensors[f"{name}::up"] @ replay.tensors[f"{name}::down"]
                param.copy_((param.float() + delta.to(param.device)).to(param.dtype))
        yield
    finally:
        with torch.no_grad():
            for name, old in originals.items():
                resolve_parameter(pipe, name).copy_(old)


def relearn(ctx: AttackContext, prompt: str, seed: int, config: RelearnConfig, state: Replay) -> Outcome:
    """The prompt itself: rendered on the fine-tuned model (see `render`)."""
    return Outcome(prompt=prompt, losses=state.info["losses"], steps=state.info["steps"],
                   extra={"train_seconds": state.info["seconds"], "variant": config.variant})


def render(ctx: AttackContext, result: AttackResult, seeds: list[int]) -> np.ndarray:
    """(K, H, W, 3) images of the result's prompts on the target with the learned deltas added (shield applies)."""
    with deltas_applied(ctx.target, result.replay):
        return ctx.render_prompts(result.adv_prompts, seeds)


METHOD = AttackMethod("relearn", RelearnConfig, relearn, kind="replay", prepare=fine_tune, render=render,
                      paper="Ruiz et al., DreamBooth, CVPR 2023 (LoRA fine-tuning); Suriyakumar et al., Unstable "
                            "Unlearning: The Hidden Risk of Concept Resurgence in Diffusion Models, 2024")

__all__ = ["FULL_PARAMS", "LORA_PROJECTIONS", "METHOD", "PARAMS", "RelearnConfig", "VARIANTS", "deltas_applied",
           "fine_tune", "relearn", "render", "target_parameters", "training_set"]
