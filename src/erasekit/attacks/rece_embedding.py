"""RECE's closed-form adversarial embedding as an attack: Gong et al., "Reliable and Efficient Concept Erasure of
Text-to-Image Diffusion Models", ECCV 2024 (CharlesGong12/RECE, utils/embedding_calculation/close_form_emb.py).

Against any edit of the cross-attention key/value projections (UCE, RECE, MACE, RealEra, ...): find conditioning rows
c' (L, D) that make the *edited* projections W'_l reproduce what the *original* W_l computed for the prompt's rows c,

    c' = argmin sum_l ||W'_l c' - W_l c||^2 + reg ||c' - t||^2 = (reg I + sum W'^T W')^-1 (reg t + sum W'^T W c)

summed over every cross-attention to_k/to_v: t = 0 ("regzero", RECE's default) or, as in the official "standard"
regularisation (close_form_emb with --old_target_concept), t = E(old_target), the rows of the concept the erasure
mapped to (option `old_target`, default "" = the unconditional prompt; not the attacked prompt). One linear solve,
no optimisation: `steps` is unused. The attack returns c' as the conditioning (an embedding, generated with classifier-
free guidance against E("")). Uses the closed-form solver shared with the RECE eraser.

Deviations: RECE computes c' for the concept word's prompt during erasure; here it is computed for each attacked
prompt (all L rows), with the target's text encoder. Edits that touch the text encoder or other UNet weights are
outside the model of this attack (it still runs; only K/V differences are inverted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import AttackConfig, AttackContext, AttackMethod, Outcome, _check_choice, _check_positive

EMBEDDINGS = ("regzero", "standard")


@dataclass(frozen=True)
class RECEEmbeddingConfig(AttackConfig):
    steps: int = field(default=1, metadata={"help": "unused (closed form)"})
    regular_scale: float = field(default=1e-3, metadata={"help": "reg (RECE: 1e-3 artists, 0.1 nudity)"})
    embedding: str = field(default="regzero", metadata={
        "help": "'regzero' (t = 0) or 'standard' (t = E(old_target), official meaning)"})
    old_target: str = field(default="", metadata={
        "help": "'standard': the old target concept the erasure mapped to (official --old_target_concept)"})
    with_to_k: bool = field(default=True, metadata={"help": "include to_k (RECE: yes)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "regular_scale")
        _check_choice(self, "embedding", EMBEDDINGS)


def rece_embedding(ctx: AttackContext, prompt: str, seed: int, config: RECEEmbeddingConfig) -> Outcome:
    """c' for `prompt` against the target's cross-attention K/V relative to the base model's."""
    from ..conditioning import adversarial_embedding, encode_prompts, kv_weights

    edited = kv_weights(ctx.target, with_to_k=config.with_to_k)
    original = kv_weights(ctx.base, with_to_k=config.with_to_k)
    names = list(edited)
    with torch.no_grad():
        c = encode_prompts(ctx.target, [prompt])[0]  # (L, D)
        t = encode_prompts(ctx.target, [config.old_target])[0].double() if config.embedding == "standard" else None
    adv = adversarial_embedding([edited[n] for n in names], [original[n] for n in names], c.double(),
                                config.regular_scale, t)
    emb = adv.to(c.dtype)
    success = None
    if ctx.check is not None:
        success = bool(ctx.detected(ctx.render_embeddings(emb[None], [seed], [prompt]))[0])
    cos = float(torch.nn.functional.cosine_similarity(emb.flatten()[None], c.flatten()[None]))
    return Outcome(prompt=f"<RECE embedding of: {prompt}>", embedding=emb, steps=1, success=success,
                   extra={"cosine_to_prompt": round(cos, 4), "kv_matrices": len(names)})


METHOD = AttackMethod("rece_embedding", RECEEmbeddingConfig, rece_embedding, kind="embedding", needs_base=True,
                      paper="Gong et al., Reliable and Efficient Concept Erasure of Text-to-Image Diffusion Models, "
                            "ECCV 2024")
