"""Pieces shared by the erasers that fine-tune the text encoder (few-shot erasing, AdvUnlearn): parameter selection
by layer, resumable shuffled batches, an optimiser step that leaves the frozen UNet's `.grad` alone, and export of an
edited text encoder as a standalone `save_pretrained` folder (AdvUnlearn's plug-and-play use).

Parameter names are those of `pipe.text_encoder.named_parameters()` without the "text_model." prefix that
transformers < 5 adds ("encoder.layers.3.mlp.fc1.weight", "final_layer_norm.bias", "embeddings.token_embedding.weight").
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..conditioning import tokenize  # re-exported: the text-encoder erasers tokenise with it
from ..errors import InvalidValueError

_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")


def bare_name(name: str) -> str:
    """`name` without a leading "text_model." (transformers < 5 nests CLIPTextTransformer under it)."""
    return name.removeprefix("text_model.")


def num_layers(text_encoder: torch.nn.Module) -> int:
    """Number of transformer layers of a CLIP text encoder."""
    return int(text_encoder.config.num_hidden_layers)


def layer_selector(rule: Callable[[int | None, str], bool]) -> Callable[[str], bool]:
    """A parameter-name predicate from `rule(layer index or None, rest of the name)`; None = not in a layer."""

    def pick(name: str) -> bool:
        m = _LAYER.match(bare_name(name))
        return rule(int(m.group(1)), m.group(2)) if m else rule(None, bare_name(name))

    return pick


def epoch_batch(n: int, batch: int, step: int, seed: int) -> list[int]:
    """Indices (batch,) of optimiser step `step` when every epoch visits all `n` items in a fresh shuffled order
    (a DataLoader with shuffle=True). Derived from (seed, epoch) alone, so a resumed run draws the same batches; a batch
    that crosses an epoch boundary takes the rest of one order and the start of the next."""
    out = []
    for j in range(step * batch, (step + 1) * batch):
        epoch, pos = divmod(j, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch))
        out.append(int(order[pos]))
    return out


def optimiser_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], loss: torch.Tensor) -> None:
    """One step on `params` from `loss`. Gradients come from `torch.autograd.grad`, so nothing accumulates in the
    (shared, frozen) UNet's or original text encoder's `.grad`, even when their parameters require grad."""
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.zeros_like(p) if g is None else g
    optimizer.step()
    for p in params:
        p.grad = None


class _TextEncoderHolder:
    """The smallest pipeline-like object an `Edit` of `text_encoder.*` tensors applies to."""

    def __init__(self, text_encoder: torch.nn.Module):
        self.text_encoder = text_encoder


def export_text_encoder(pipe: Any, edit: Any, folder: str | os.PathLike) -> Path:
    """Write `pipe`'s text encoder with `edit` applied as a transformers `save_pretrained` folder (the edit must only
    change `text_encoder.*` tensors); `pipe` is not modified. The folder is written beside its final place and renamed
    into it, so it is never half-written. Load it with `CLIPTextModel.from_pretrained(folder)`."""
    other = [n for n in edit.tensors if not n.startswith("text_encoder.")]
    if other:
        raise InvalidValueError(f"the edit changes {other[0]!r}, not only the text encoder; it cannot be exported "
                                "as a text encoder")
    holder = _TextEncoderHolder(copy.deepcopy(pipe.text_encoder))
    edit.apply(holder)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        holder.text_encoder.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


__all__ = ["bare_name", "epoch_batch", "export_text_encoder", "layer_selector", "num_layers", "optimiser_step",
           "tokenize"]
