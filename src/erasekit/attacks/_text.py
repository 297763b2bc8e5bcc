"""Text-side helpers shared by the embedding and token attacks: token-embedding tables, a text-encoder forward that
takes token *embeddings* instead of ids, insertion of adversarial tokens into a prompt, nearest-token projection.

Shapes: V = vocabulary size, D = text hidden size (= token-embedding size in CLIP), L = 77 positions.
`CLIPTextModel.forward` accepts only ids, so `encode_embeds` re-runs its three stages (embeddings + positions,
causal encoder, final layer norm); it equals `text_encoder(ids)[0]` when given `token_embedding(ids)` (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline
from torch import nn

from ..errors import InvalidValueError

BOS_EOS_SLOTS = 2  # <|startoftext|> and the first <|endoftext|>


def _text_model(pipe: StableDiffusionPipeline) -> nn.Module:
    """The module holding `embeddings`, `encoder`, `final_layer_norm` (transformers >= 5: the model itself)."""
    te = pipe.text_encoder
    return getattr(te, "text_model", te)


def token_table(pipe: StableDiffusionPipeline) -> torch.Tensor:
    """(V, D) token-embedding matrix of the pipeline's text encoder (a view; do not modify)."""
    return _text_model(pipe).embeddings.token_embedding.weight


def encode_embeds(pipe: StableDiffusionPipeline, embeds: torch.Tensor) -> torch.Tensor:
    """Text-encoder last hidden state (B, L, D) for token embeddings `embeds` (B, L, D), differentiable."""
    tm = _text_model(pipe)
    h = tm.embeddings(inputs_embeds=embeds)
    b, n = h.shape[:2]
    mask = torch.full((n, n), float("-inf"), dtype=h.dtype, device=h.device).triu(1)[None, None].expand(b, 1, n, n)
    h = tm.encoder(inputs_embeds=h, attention_mask=mask).last_hidden_state
    return tm.final_layer_norm(h)


def prompt_ids(pipe: StableDiffusionPipeline, prompt: str) -> tuple[torch.Tensor, int]:
    """(L,) padded token ids of `prompt` (BOS ... EOS pad...) and its number of word tokens (without BOS/EOS)."""
    tok = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="pt")
    ids = tok.input_ids[0]
    return ids, int(tok.attention_mask[0].sum()) - BOS_EOS_SLOTS


def word_ids(pipe: StableDiffusionPipeline, text: str) -> list[int]:
    """Token ids of `text` without BOS/EOS."""
    return list(pipe.tokenizer(text, add_special_tokens=False).input_ids)


@dataclass(frozen=True)
class Layout:
    """Where k adversarial tokens go in a prompt's L positions: `ids` (L,) the prompt's ids with placeholders,
    `slots` (k,) the positions the adversarial tokens occupy. Everything after the last word is EOS padding."""

    ids: torch.Tensor
    slots: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.slots.numel())


def layout(pipe: StableDiffusionPipeline, prompt: str, k: int, where: str = "prefix", every: int = 3) -> Layout:
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
        raise InvalidValueError(f"where={where!r} is not one of ('prefix', 'free', 'every')")
    seq.append(eos)
    if len(seq) > length:
        raise InvalidValueError(f"prompt {prompt!r} with {len(slots)} adversarial tokens needs {len(seq)} positions; "
                                f"the text encoder has {length}")
    seq += [eos] * (length - len(seq))
    return Layout(torch.tensor(seq), torch.tensor(slots))


def fill(pipe: StableDiffusionPipeline, lay: Layout, adv: torch.Tensor) -> torch.Tensor:
    """Token embeddings (1, L, D) of the layout with `adv` (k, D) written into its slots (differentiable in adv)."""
    table = token_table(pipe)
    base = table[lay.ids.to(table.device)].detach().clone()
    index = lay.slots.to(table.device)[:, None].expand(-1, base.shape[-1])
    return base.scatter(0, index, adv.to(base.dtype))[None]


def nearest_tokens(pipe: StableDiffusionPipeline, vectors: torch.Tensor, exclude: Sequence[int] = ()) -> torch.Tensor:
    """(k,) ids of the vocabulary tokens with the highest cosine similarity to `vectors` (k, D) (PEZ projection)."""
    table = token_table(pipe).detach()
    sims = nn.functional.normalize(vectors.detach(), dim=-1) @ nn.functional.normalize(table, dim=-1).T  # (k, V)
    if exclude:
        sims[:, list(exclude)] = float("-inf")
    return sims.argmax(-1)


def special_ids(pipe: StableDiffusionPipeline) -> list[int]:
    """BOS/EOS/PAD ids: never chosen as adversarial tokens (they would end or restart the prompt)."""
    tok = pipe.tokenizer
    return sorted({i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) if i is not None})


def layout_text(pipe: StableDiffusionPipeline, lay: Layout, adv_ids: torch.Tensor) -> str:
    """The prompt text of a layout with token ids `adv_ids` (k,) in its slots (BOS/EOS/padding dropped)."""
    ids = lay.ids.clone()
    ids[lay.slots] = adv_ids.to(ids.dtype).cpu()
    keep = [int(i) for i in ids[1:] if int(i) not in special_ids(pipe)]
    text = pipe.tokenizer.decode(keep).replace("</w>", " ")  # some byte-level tokens keep their end-of-word mark
    return " ".join(text.split())
