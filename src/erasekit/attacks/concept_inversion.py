"""Concept inversion: Pham, Marshall, Cohen, Hegde, "Circumventing Concept Erasure Methods for Text-to-Image Generative
Models", ICLR 2024 (official code: github.com/NYU-DICE-Lab/circumventing-concept-erasure, a modified diffusers
`textual_inversion.py`, run per eraser as `concept_inversion.py` with `train.sh`).

Textual inversion on the *erased, frozen* model: a new word embedding v* (D,) is learned from a few images of the
erased concept by minimising the denoising loss

    min_v  E_{z0, T, t, eps} || eps_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, t, E(T[v*])) - eps ||^2

(T[v*]: a caption template with v* in its "{}" slot)
with the UNet, VAE and text encoder frozen (only v* changes). Every attacked prompt is then rendered with v* in place
of the concept's name (or before the prompt when the prompt does not name it): an embedding attack, so shields see the
conditioning, not a text they could rewrite.

Official settings (train.sh): 25 images, 5000 steps, batch 4 x gradient accumulation 4, lr 5e-3 scaled by 16
(`--scale_lr`), constant schedule, AdamW (weight decay 1e-2), an initializer token naming the concept's type ("nude",
"person", "art"), imagenet object / style templates. Deviations:
  - budget defaults for the tiny toy model: 4 images, 60 steps, batch 2, lr 5e-2, no accumulation;
  - templates are the world's training caption templates (the official imagenet templates are object-photo captions
    the toy model never saw); with no world, five generic captions;
  - the initializer is `init` (default: the concept's family name, e.g. "character"); the official code adds a new
    tokenizer entry and restores every other row of the embedding table after each step — we optimise v* directly
    in the embedding stream (`conditioning.encode_embeds`), which leaves the table untouched by construction;
  - z0 is the VAE posterior mean (official: a posterior sample per step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..conditioning import encode_embeds, nearest_tokens, special_ids, token_table, word_ids
from ..errors import InvalidValueError
from . import AttackContext, AttackMethod, Outcome
from ._common import Budget
from ._recovery import (RecoveryConfig, batch_indices, concept_images, concept_names, denoising_loss,
                        images_digest, names_pattern, templates, vae_latents)

TOKEN = "<inv>"  # how the learned token is written in readable prompts


@dataclass(frozen=True)
class ConceptInversionConfig(RecoveryConfig):
    steps: int = field(default=60, metadata={"help": "budget: textual-inversion steps (official: 5000)"})
    n_images: int = field(default=4, metadata={"help": "budget: images of the concept (official: 25)"})
    lr: float = field(default=5e-2, metadata={"help": "AdamW learning rate (official: 5e-3 x 16 = 0.08)"})
    weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay (official: 1e-2)"})
    batch_size: int = field(default=2, metadata={"help": "images per step (official: 4 x 4 accumulated)"})
    init: str = field(default="", metadata={
        "help": "initializer word(s) (mean of their token embeddings); '' = the concept's family name"})
    n_templates: int = field(default=16, metadata={"help": "caption templates drawn from the world"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.lr > 0 and self.weight_decay >= 0 and self.batch_size >= 1 and self.n_templates >= 1):
            raise InvalidValueError(f"need lr > 0, weight_decay >= 0, batch_size >= 1, n_templates >= 1; got "
                                    f"lr={self.lr}, weight_decay={self.weight_decay}, batch_size={self.batch_size}, "
                                    f"n_templates={self.n_templates}")


def slot_embeds(pipe: Any, text: str, v: torch.Tensor) -> torch.Tensor:
    """(1, L, D) token embeddings of `text` with v (D,) at the place of its "{}" slot: [BOS, before, v, after, EOS,
    pad...], the stream `encode_embeds` takes. Truncated like the tokenizer (the slot always survives)."""
    tok = pipe.tokenizer
    before, _, after = text.partition("{}")
    ids_b, ids_a = word_ids(pipe, before.strip()), word_ids(pipe, after.strip())
    limit = tok.model_max_length
    ids_a = ids_a[: max(0, limit - 3 - len(ids_b))]
    ids = [tok.bos_token_id, *ids_b, tok.eos_token_id, *ids_a, tok.eos_token_id]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids = (ids + [pad] * limit)[:limit]
    table = token_table(pipe)
    emb = table[torch.tensor(ids, device=table.device)].clone()
    emb[1 + len(ids_b)] = v.to(emb)
    return emb[None]


def with_slot(ctx: AttackContext, prompt: str) -> str:
    """`prompt` with every name of the concept replaced by the slot "{}" (or "{} , prompt" if it names none)."""
    pattern = names_pattern(concept_names(ctx))
    out, n = pattern.subn("{}", prompt.replace("{", "(").replace("}", ")"), count=1)
    out = pattern.sub("", out)
    return out if n else "{} , " + prompt


def initial_vector(ctx: AttackContext, config: ConceptInversionConfig) -> tuple[torch.Tensor, str]:
    """(D,) mean token embedding of the initializer word(s), and the words used."""
    words = config.init or (ctx.family or "thing")
    ids = word_ids(ctx.target, words)
    if not ids:
        raise InvalidValueError(f"init={config.init!r} has no tokens; pass a word, e.g. init=person")
    table = token_table(ctx.target).detach()
    return table[torch.tensor(ids, device=table.device)].float().mean(0), words


def learn_token(ctx: AttackContext, prompts: list[str], config: ConceptInversionConfig) -> dict[str, Any]:
    """Textual inversion of v* on the target model; returns {"vector" (D,), "losses", "steps", ...}."""
    t0 = time.perf_counter()
    pipe = ctx.target
    images, source = concept_images(ctx, config)
    latents = vae_latents(pipe, images)  # (N, 4, h, w)
    caps = templates(ctx, ctx.concept, config.n_templates, config.seed)
    v0, init = initial_vector(ctx, config)
    v = v0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([v], lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    budget = Budget(config.steps, config.max_seconds)
    losses: list[float] = []
    done = 0
    while not budget.exhausted(done):
        idx = batch_indices(len(latents), config.batch_size, done, config.seed)
        texts = [caps[int(torch.randint(len(caps), (1,), generator=gen))] for _ in idx]
        cond = encode_embeds(pipe, torch.cat([slot_embeds(pipe, t, v) for t in texts]))
        loss = denoising_loss(pipe, latents[idx].to(pipe.unet.device), cond, gen)
        v.grad = torch.autograd.grad(loss, [v])[0]
        opt.step()
        v.grad = None
        losses.append(round(float(loss.detach()), 6))
        done += 1
    v = v.detach()
    nearest = nearest_tokens(pipe, v[None].to(token_table(pipe)), exclude=special_ids(pipe))
    return {"vector": v, "losses": losses, "steps": done, "seconds": time.perf_counter() - t0, "init": init,
            "images": {"source": source, "count": len(images), "sha256": images_digest(images)},
            "templates": len(caps), "nearest_token": pipe.tokenizer.decode(nearest.tolist()),
            "norm": float(v.norm()), "init_norm": float(v0.norm())}


def concept_inversion(ctx: AttackContext, prompt: str, seed: int, config: ConceptInversionConfig,
                      state: dict[str, Any]) -> Outcome:
    """`prompt` rendered with the learned token in place of the concept's name: its conditioning (L, D)."""
    text = with_slot(ctx, prompt)
    with torch.no_grad():
        emb = encode_embeds(ctx.target, slot_embeds(ctx.target, text, state["vector"]))[0]
    extra = {k: state[k] for k in ("init", "images", "templates", "nearest_token", "norm", "init_norm")}
    extra["train_seconds"] = round(state["seconds"], 3)
    return Outcome(prompt=text.replace("{}", TOKEN), embedding=emb, losses=state["losses"], steps=state["steps"],
                   extra=extra)


METHOD = AttackMethod("concept_inversion", ConceptInversionConfig, concept_inversion, kind="embedding",
                      prepare=learn_token,
                      paper="Pham et al., Circumventing Concept Erasure Methods for Text-to-Image Generative Models, "
                            "ICLR 2024")

__all__ = ["ConceptInversionConfig", "METHOD", "TOKEN", "concept_inversion", "learn_token", "slot_embeds",
           "with_slot"]
