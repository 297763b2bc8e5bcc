"""Conditioning: what lies between a prompt and the UNet's cross-attention, shared by the erasers and the attacks
(neither package imports the other; both import this module).

  text encoding      `tokenize`, `encode_prompts` (the SD1.x pipeline's own padding to the tokenizer's max length)
  token embeddings   `token_table`, `encode_embeds` (the text encoder run on token *embeddings*), `layout` / `fill` /
                     `layout_text` (adversarial tokens placed around a prompt's words), `nearest_tokens`, `special_ids`
  K/V weights        `cross_attention_modules`, `cross_attention_kv`, `kv_weights`: the cross-attention key/value
                     projections W (out, d) that map text-encoder rows to keys and values
  closed form        `adversarial_embedding` (RECE): rows that make edited K/V reproduce the original K/V
  soft prompts       `SoftPrompt` (a continuous prefix optimised in word-embedding space; AdvUnlearn's attack) and
                     `gradient_step` (one optimiser step, with the official never-zeroed-gradient behaviour as a flag)

Shapes: V = vocabulary size, D = d = text hidden size (= token-embedding size in CLIP = the UNet's cross-attention
dim), L = 77 positions. `CLIPTextModel.forward` accepts only ids, so `encode_embeds` re-runs its three stages
(embeddings + positions, causal encoder, final layer norm); it equals `text_encoder(ids)[0]` when given
`token_embedding(ids)` (tested).
"""

from __future__ import annotations

import warnings

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidValueError

F64 = torch.float64


class PipelineLike(Protocol):
    """What this module reads: a diffusers StableDiffusionPipeline, or any object with these three components."""

    unet: nn.Module
    text_encoder: nn.Module
    tokenizer: Any


# ------------------------------------------------------------------------------------------------ text encoding


def tokenize(pipe: Any, prompts: Sequence[str]) -> torch.Tensor:
    """(B, L) token ids of `prompts`, padded (and truncated) to the tokenizer's max length as SD1.x pipelines do.
    A prompt cut by the truncation gets a warning naming it (the model never sees the rest)."""
    prompts = list(prompts)
    limit = pipe.tokenizer.model_max_length
    long = [p for p in prompts if len(p) > limit - 2]  # every BPE token covers >= 1 character: shorter ones fit
    if long:
        lengths = pipe.tokenizer(long, truncation=False)["input_ids"]
        for p, ids in zip(long, lengths):
            if len(ids) > limit:
                warnings.warn(f"prompt {p[:40]!r}... has {len(ids)} tokens; the text encoder sees only the first "
                              f"{limit} (the rest is cut)", stacklevel=2)
    return pipe.tokenizer(prompts, padding="max_length", max_length=limit, truncation=True,
                          return_tensors="pt").input_ids


@torch.no_grad()
def encode_prompts(pipe: PipelineLike, prompts: Sequence[str]) -> torch.Tensor:
    """(B, L, D) text-encoder outputs (last hidden state, what SD1.x conditions on), in the UNet's dtype."""
    ids = tokenize(pipe, prompts).to(pipe.text_encoder.device)
    return pipe.text_encoder(ids)[0].to(pipe.unet.dtype)


# ------------------------------------------------------------------------------------------------ token embeddings


def _text_model(pipe: PipelineLike) -> nn.Module:
    """The module holding `embeddings`, `encoder`, `final_layer_norm` (transformers >= 5: the model itself)."""
    te = pipe.text_encoder
    return getattr(te, "text_model", te)


def token_table(pipe: PipelineLike) -> torch.Tensor:
    """(V, D) token-embedding matrix of the pipeline's text encoder (a view; do not modify)."""
    return _text_model(pipe).embeddings.token_embedding.weight


def encode_embeds(pipe: PipelineLike, embeds: torch.Tensor) -> torch.Tensor:
    """Text-encoder last hidden state (B, L, D) for token embeddings `embeds` (B, L, D), differentiable."""
    tm = _text_model(pipe)
    h = tm.embeddings(inputs_embeds=embeds)
    b, n = h.shape[:2]
    mask = torch.full((n, n), float("-inf"), dtype=h.dtype, device=h.device).triu(1)[None, None].expand(b, 1, n, n)
    h = tm.encoder(inputs_embeds=h, attention_mask=mask).last_hidden_state
    return tm.final_layer_norm(h)


def word_ids(pipe: PipelineLike, text: str) -> list[int]:
    """Token ids of `text` without BOS/EOS."""
    return list(pipe.tokenizer(text, add_special_tokens=False).input_ids)


def special_ids(pipe: PipelineLike) -> list[int]:
    """BOS/EOS/PAD ids: never chosen as adversarial tokens (they would end or restart the prompt)."""
    tok = pipe.tokenizer
    return sorted({i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if i is not None})


@dataclass(frozen=True)
class Layout:
    """Where k adversarial tokens go in a prompt's L positions: `ids` (L,) the prompt's ids with placeholders,
    `slots` (k,) the positions the adversarial tokens occupy. Everything after the last word is EOS padding."""

    ids: torch.Tensor
    slots: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.slots.numel())


LAYOUTS = ("prefix", "free", "every")


def layout(pipe: PipelineLike, prompt: str, k: int, where: str = "prefix", every: int = 3) -> Layout:
    """Positions of `k` adversarial tokens around `prompt`'s word tokens.

    where: "prefix" ([BOS, adv x k, words, EOS, ...]; UnlearnDiffAtk's prefix_k, AdvUnlearn's prefix),
    "free" (no prompt words: [BOS, adv x k, EOS, ...]; P4D-N), "every" (one adversarial token before every group of
    `every` word tokens, as P4D-K / UnlearnDiffAtk's per_k_words; k is then derived from the prompt length).
    """
    bos, eos = pipe.tokenizer.bos_token_id, pipe.tokenizer.eos_token_id
    length = pipe.tokenizer.model_max_length
    words = word_ids(pipe, prompt) if where != "free" else []
    seq: list[int] = [bos]
    slots: list[int] = []
    if where in ("prefix", "free"):
        if k < 1:
            raise InvalidValueError(f"the number of adversarial tokens must be >= 1, got {k}")
        for _ in range(k):
            slots.append(len(seq))
            seq.append(eos)
        seq += words
    elif where == "every":
        if every < 1:
            raise InvalidValueError(f"every must be >= 1, got {every}")
        for i in range(0, max(len(words), 1), every):
            slots.append(len(seq))
            seq.append(eos)
            seq += words[i:i + every]
    else:
        raise InvalidValueError(f"where={where!r} is not one of {LAYOUTS}")
    seq.append(eos)
    if len(seq) > length:
        raise InvalidValueError(f"prompt {prompt!r} with {len(slots)} adversarial tokens needs {len(seq)} positions; "
                                f"the text encoder has {length}")
    seq += [eos] * (length - len(seq))
    return Layout(torch.tensor(seq), torch.tensor(slots))


def fill(pipe: PipelineLike, lay: Layout, adv: torch.Tensor) -> torch.Tensor:
    """Token embeddings (1, L, D) of the layout with `adv` (k, D) written into its slots (differentiable in adv)."""
    table = token_table(pipe)
    base = table[lay.ids.to(table.device)].detach().clone()
    index = lay.slots.to(table.device)[:, None].expand(-1, base.shape[-1])
    return base.scatter(0, index, adv.to(base.dtype))[None]


def nearest_tokens(pipe: PipelineLike, vectors: torch.Tensor, exclude: Sequence[int] = ()) -> torch.Tensor:
    """(k,) ids of the vocabulary tokens with the highest cosine similarity to `vectors` (k, D) (PEZ projection)."""
    table = token_table(pipe).detach()
    sims = F.normalize(vectors.detach(), dim=-1) @ F.normalize(table, dim=-1).T  # (k, V)
    if exclude:
        sims[:, list(exclude)] = float("-inf")
    return sims.argmax(-1)


def layout_text(pipe: PipelineLike, lay: Layout, adv_ids: torch.Tensor) -> str:
    """The prompt text of a layout with token ids `adv_ids` (k,) in its slots (BOS/EOS/padding dropped)."""
    ids = lay.ids.clone()
    ids[lay.slots] = adv_ids.to(ids.dtype).cpu()
    specials = special_ids(pipe)
    keep = [int(i) for i in ids[1:] if int(i) not in specials]
    text = pipe.tokenizer.decode(keep).replace("</w>", " ")  # some byte-level tokens keep their end-of-word mark
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------ K/V weights


def cross_attention_modules(unet: nn.Module) -> dict[str, nn.Module]:
    """{"unet.<module path>": attention module} for every cross-attention of a UNet, in module order.

    A module counts as cross-attention when diffusers marks it `is_cross_attention` (SD1.x: every `attn2`).
    """
    out: dict[str, nn.Module] = {}
    for name, module in unet.named_modules():
        is_cross = getattr(module, "is_cross_attention", None)
        if is_cross is None:
            is_cross = name.endswith("attn2")
        if is_cross and hasattr(module, "to_k") and hasattr(module, "to_v"):
            out[f"unet.{name}"] = module
    if not out:
        raise InvalidValueError(f"{type(unet).__name__} has no cross-attention to_k/to_v projections to edit")
    return out


def cross_attention_kv(unet: nn.Module, with_to_k: bool = True, with_to_v: bool = True) -> dict[str, nn.Linear]:
    """The cross-attention key/value projections of a UNet as {"unet.<module>.to_k.weight": Linear}: they map
    text-encoder rows (d = cross_attention_dim) to keys/values (out = inner dim). Order: per module, to_k then to_v."""
    out: dict[str, nn.Linear] = {}
    for name, module in cross_attention_modules(unet).items():
        for proj in (("to_k",) if with_to_k else ()) + (("to_v",) if with_to_v else ()):
            out[f"{name}.{proj}.weight"] = getattr(module, proj)
    return out


def kv_weights(pipe: PipelineLike, with_to_k: bool = True) -> dict[str, torch.Tensor]:
    """Current cross-attention K/V weights of `pipe.unet` as {parameter name: (out, d) tensor} (detached views)."""
    return {n: m.weight.detach() for n, m in cross_attention_kv(pipe.unet, with_to_k=with_to_k).items()}


# ------------------------------------------------------------------------------------------------ closed form


def cholesky(m: torch.Tensor, fix: str) -> torch.Tensor:
    """Lower Cholesky factor of a symmetric positive-definite (d, d) matrix; InvalidValueError naming `fix` (what the
    caller should change) when it is singular."""
    chol, info = torch.linalg.cholesky_ex(m)
    if int(info) != 0:
        raise InvalidValueError(f"the closed-form system ({m.shape[0]} dims) is singular: {fix}")
    return chol


def adversarial_embedding(current: Sequence[torch.Tensor], original: Sequence[torch.Tensor], emb: torch.Tensor,
                          reg: float, target: torch.Tensor | None = None) -> torch.Tensor:
    """RECE's closed-form adversarial embedding: rows c' (n, d) float64 minimising, per row,

        sum_l ||W'_l c' - W_l c||^2 + reg ||c' - t||^2

    over all edited K/V matrices W'_l (`current`, each (out_l, d)) against the unedited W_l (`original`); c: the rows
    of `emb` (n, d); t = 0 ("regzero") when `target` is None, else the rows of `target` (n, d). Solution:
    c' = (reg I + sum W'^T W')^-1 (reg t + sum W'^T W c). Every product is formed in float64 on the CPU, whatever
    the weights' dtype and device; the right-hand side as sum (c W^T) W' (n x out x d per layer, not d x out x d).
    """
    d = emb.shape[-1]
    a = reg * torch.eye(d, dtype=F64)
    rhs = torch.zeros(emb.shape[0], d, dtype=F64)
    c = emb.to("cpu", F64)
    for w_now, w_old in zip(current, original, strict=True):
        now, old = w_now.detach().to("cpu", F64), w_old.detach().to("cpu", F64)
        a += now.T @ now
        rhs += (c @ old.T) @ now
    if target is not None:
        rhs += reg * target.to("cpu", F64)
    chol = cholesky(a, f"reg={reg}; set reg > 0")
    return torch.cholesky_solve(rhs.T, chol).T


# ------------------------------------------------------------------------------------------------ soft prompts


def gradient_step(optimizer: torch.optim.Optimizer, param: torch.Tensor, loss: torch.Tensor,
                  accumulate: bool = False, grad_of: torch.Tensor | None = None, sign: bool = False,
                  on_grad: Callable[[torch.Tensor], None] | None = None) -> None:
    """One optimiser step on `param` from `loss`.

    accumulate=False (ours): the gradient used is this step's alone. accumulate=True reproduces the official
    AdvUnlearn soft-prompt loop, which calls `loss.backward()` every step and never zeroes the gradient, so step k
    uses the sum of the gradients of steps 0..k. grad_of: compute the gradient with respect to this tensor instead and
    apply it to `param` (PEZ / straight-through: forward with a projection, update the continuous variable).
    sign: use the sign of the gradient (AdvUnlearn's "fast_at"; officially signed in place, so with accumulate=True
    the next step adds to the signed gradient, as here). on_grad(g) sees the gradient the optimiser is about to use.
    Only `param` gets a `.grad`: the models the loss went through are left alone.
    """
    g = torch.autograd.grad(loss, [param if grad_of is None else grad_of])[0].to(param.dtype)
    if accumulate and param.grad is not None:
        g = param.grad + g
    param.grad = g.sign() if sign else g
    if on_grad is not None:
        on_grad(param.grad.detach().clone())
    optimizer.step()
    if not accumulate:
        param.grad = None


SOFT_PROMPT_METHODS = ("pgd", "fast_at")


class SoftPrompt:
    """A continuous prefix delta (k, D) in word-embedding space before a prompt's words, [BOS, delta, words, EOS, ...]
    (AdvUnlearn's soft-prompt attack: erasekit's `softprompt` attack and the AdvUnlearn eraser's inner loop).

    delta starts as k random vocabulary rows drawn with `gen` (or as `init`) and is optimised with Adam (`lr`;
    method "pgd") or Adam on the sign of the gradient ("fast_at"); accumulate=True keeps the official never-zeroed
    gradient (see `gradient_step`). `pipe` gives the tokenizer and the text encoder the prefix goes through.
    """

    def __init__(self, pipe: PipelineLike, prompt: str, k: int, lr: float, gen: torch.Generator | None = None,
                 init: torch.Tensor | None = None, method: str = "pgd", accumulate: bool = False):
        if method not in SOFT_PROMPT_METHODS:
            raise InvalidValueError(f"method={method!r} is not one of {SOFT_PROMPT_METHODS}")
        self.pipe = pipe
        self.layout = layout(pipe, prompt, k, "prefix")
        if init is None:
            table = token_table(pipe).detach()
            init = table[torch.randint(0, table.shape[0], (k,), generator=gen)]
        if tuple(init.shape) != (k, token_table(pipe).shape[1]):
            raise InvalidValueError(f"init has shape {tuple(init.shape)}; a soft prompt of k={k} needs "
                                    f"({k}, {token_table(pipe).shape[1]})")
        self.delta = init.detach().clone().requires_grad_(True)  # (k, D)
        self.optimizer = torch.optim.Adam([self.delta], lr=lr)
        self.sign, self.accumulate = method == "fast_at", accumulate

    def embeddings(self) -> torch.Tensor:
        """(1, L, D) text-encoder output of the prompt with the prefix, differentiable in delta."""
        return encode_embeds(self.pipe, fill(self.pipe, self.layout, self.delta))

    def step(self, unet: nn.Module, z: torch.Tensor, t: int | torch.Tensor, want: torch.Tensor) -> float:
        """One optimiser step on || unet(z, t, E([delta; words])) - want ||^2 (z, want: (1, 4, h, w)); returns the
        loss. Only delta gets a gradient."""
        cond = self.embeddings().to(unet.dtype)
        loss = F.mse_loss(unet(z, t, encoder_hidden_states=cond).sample.float(), want.float())
        gradient_step(self.optimizer, self.delta, loss, accumulate=self.accumulate, sign=self.sign)
        return float(loss.detach())

    def reading(self) -> str:
        """The prompt with each prefix vector replaced by its nearest vocabulary token (a hard-prompt reading)."""
        ids = nearest_tokens(self.pipe, self.delta, exclude=special_ids(self.pipe))
        return layout_text(self.pipe, self.layout, ids)


__all__ = ["F64", "LAYOUTS", "Layout", "PipelineLike", "SOFT_PROMPT_METHODS", "SoftPrompt", "adversarial_embedding",
           "cholesky", "cross_attention_kv", "cross_attention_modules", "encode_embeds", "encode_prompts", "fill",
           "gradient_step", "kv_weights", "layout", "layout_text", "nearest_tokens", "special_ids", "token_table",
           "tokenize", "word_ids"]
