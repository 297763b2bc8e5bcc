"""Geom-Erasing: Implicit Concept Removal of Diffusion Models. Liu, Chen, Zhang, Han, Hong, Xu, Li, Yeung, Kwok.
ECCV 2024. arXiv:2310.05873 (first titled "Geom-Erasing: Geometry-Driven Removal of Implicit Concept in Diffusion
Models"); project page kaichen1998.github.io/projects/geom-erasing. No official code is public (searched: none on
the project page, none in the GeoDiffusion family's repositories, the "awesome" lists link only the paper), so this
follows the paper's description; where it is silent the choices are stated below.

Implicit concepts (watermarks, QR codes, text) are learned from training images whose captions never name them, so a
model can neither be prompted to show them nor told not to: the text "watermark" does not control them, and
name-driven erasers (ESD, UCE, ...) have nothing to erase. Geom-Erasing gives the concept a name after the fact:

  1. a detector (classifier or box detector) marks the training images that show the concept and where;
  2. each such image's caption gets geometric tokens appended: one existence token for the concept and one location
     token per cell of a `grid` x `grid` partition of the image that the detected box covers (>= `min_overlap` of
     the cell's area). The tokens are new words (embeddings `GeomTokenSet.vectors`, (1 + grid^2, D));
  3. the model is fine-tuned on the re-captioned images with the ordinary denoising loss
        L = || eps_theta(x_t, t, E(caption [+ tokens])) - eps ||^2
     so the concept binds to the tokens (and captions without them stop producing it);
  4. at inference the tokens are the negative prompt: eps = eps(neg) + w (eps(c) - eps(neg)), neg = the existence
     token and the location tokens where the concept was found (shield "geom_negative", `shields/geom_negative.py`).

Here (defaults chosen for the toy world on 2 CPU cores; every one is an option):
  - data: `n_images` image-caption pairs of the model's training set from its world (`World.captioned_images`; the
    toy world rebuilds a toy model's dataset from its manifest), from `data=FILE.npz` (arrays `images` (N, H, W, 3)
    uint8 and `captions` (N,)), or in memory (`GeomHooks(images=..., captions=...)`);
  - detector: a registered evaluator name (`detector="toyworld-mark"`) or an `Evaluator` / callable
    `images -> (N,) bool` in `GeomHooks(detector=...)`; its optional `boxes(images) -> (N, 4)` (x0, y0, x1, y1 as
    fractions, NaN rows when absent) gives the location; without it only the existence token is used (the paper's
    classifier case);
  - trained: the UNet's parameters of `train_method` (ESD's sets; default esd-all, the full UNet as in ordinary SD
    fine-tuning) and the token embeddings (their own learning rate `token_lr`); the text encoder is unchanged, so every
    existing prompt encodes exactly as before;
  - batches of `batch_size` with `concept_share` of them drawn from the detected images (the detected share of a
    real training set is small: ~10% of the toy's object scenes) and caption dropout `caption_dropout` (the toy model
    was trained with 0.1; it keeps the unconditional prediction that classifier-free guidance uses);
  - `geometric_tokens=false` is the ablation control (not in the paper): the same fine-tuning with plain captions
    only, which separates the tokens' effect from that of fine-tuning on (over-sampled) marked data.
  - binding options (issue 18: at the defaults on toy world v2 the tokens barely steer the UNet), all off by default:
    `token_position="before"` puts the tokens right after BOS instead of after the caption; `kv_lr` gives the
    cross-attention to_k/to_v weights their own learning rate; `text_encoder_lr > 0` also trains the text encoder's
    layers and final norm (GeoDiffusion trains its text encoder; the token table stays fixed, the tokens being the
    separate `token_lr` vectors, like GeoDiffusion's "added_embedding" option); `tagged_dropout` sets the caption
    dropout of the detected pairs (0 = they always keep caption + tokens; applied to the same pairs in the control);
    `box_loss_weight` weights the loss in the detected location's latent cells (GeoDiffusion's foreground loss, the
    official script uses 2.0 with per-image normalisation to mean 1).

The result is an `Edit` of the UNet tensors (reversible, hashed) whose manifest carries the token embeddings
(`info.geom`: names, grid, the cells of the inference negative prompt, the (K, D) vectors as float lists and their
sha256), so one .safetensors file holds everything inference needs; `GeomTokenSet.from_edit` reads and checks them.

Deviations from the paper (no official code to compare with; the paper's method section could not be read here, only
its abstract, so the token placement and what is trained follow its description "existence and geometric information
integrated into the text prompts" and the closest official code, GeoDiffusion's `train_geodiffusion.py` by the same
group (read): layout tokens after the caption text ("An image with <label> <loc tokens> ..."), UNet and text encoder
trained (text lr 0.75 x UNet lr, layer decay 0.95), foreground loss weight 2, caption dropout 0.1):
  - The geometric tokens are not added to the tokenizer: the text encoder's vocabulary (and so the base tensors the
    Edit hashes) stays as it is; the tokens are pseudo-words whose embeddings are written into their positions of the
    prompt's token embeddings (as textual inversion does), and the shield encodes the negative prompt the same way.
  - Location tokens: one per grid cell covered by the box (a mask-like code), not the quantised box corners of
    GeoDiffusion's location tokens; the inference negative prompt lists the cells found in >= `negative_share` of the
    detected training images (the toy mark always sits in the same two cells of the 4 x 4 grid).
  - By default the text encoder is frozen (GeoDiffusion trains it) so that every existing prompt encodes as before
    and the edit is UNet-only; `text_encoder_lr > 0` trains it with one learning rate (no layer-wise decay) and never
    its token table. Plain denoising loss by default (`box_loss_weight=1`; GeoDiffusion's official run uses 2).
  - Only a sample of the training set is re-captioned and the detected images are over-sampled (`concept_share`);
    the paper fine-tunes on the whole re-captioned dataset.
  - The negative prompt is applied as an extra guidance term (one more UNet evaluation per step; exact:
    eps_u + w (eps_c - eps_u - (w - 1) / w (eps_neg - eps_u)) = eps_neg + w (eps_c - eps_neg)) because shields give
    the unconditional slot as text.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import check_choice, check_min
from ..errors import IntegrityError, InvalidValueError
from . import EraseRequest, Method
from ._training import TrainHooks, TrainingConfig, TrainingLoop, changed_tensors, pipe_with, trainable_copy

CELL_MODES = ("learned", "all", "none")  # which location tokens the inference negative prompt lists
INFO_KEY = "geom"  # where the token set lives in the edit's info
TOKEN_POSITIONS = ("after", "before")  # where the geometric tokens sit relative to the caption
TEXT_ENCODER_TRAINED = ("encoder.", "final_layer_norm.")  # text_encoder_lr > 0: these; not the token table


@dataclass(frozen=True)
class GeomErasingConfig(TrainingConfig):
    steps: int = field(default=300, metadata={"help": "optimiser steps (the paper fine-tunes on the whole dataset)"})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the UNet parameters"})
    token_lr: float = field(default=5e-3, metadata={"help": "Adam learning rate of the geometric token embeddings"})
    train_method: str = field(default="esd-all", metadata={
        "help": "UNet parameters trained (ESD's sets): esd-all (full UNet), esd-u, esd-x (cross-attentions), "
                "esd-x-strict"})
    batch_size: int = field(default=8, metadata={"help": "image-caption pairs per optimiser step"})
    grid: int = field(default=4, metadata={"help": "location tokens: a grid x grid partition of the image"})
    min_overlap: float = field(default=0.25, metadata={
        "help": "a cell gets its location token when the detected box covers this share of its area"})
    n_images: int = field(default=1024, metadata={"help": "image-caption pairs drawn from the world's training set"})
    data: str = field(default="", metadata={
        "help": ".npz file with arrays images (N,H,W,3) uint8 and captions (N,) ('' = the model's world)"})
    detector: str = field(default="", metadata={
        "help": "registered evaluator that sees the concept, e.g. toyworld-mark ('' = GeomHooks(detector=...))"})
    concept_share: float = field(default=0.5, metadata={
        "help": "share of each batch drawn from images showing the concept (-1 = the data's own share)"})
    caption_dropout: float = field(default=0.1, metadata={
        "help": "probability of training a pair with the empty caption (keeps the unconditional prediction)"})
    negative_share: float = field(default=0.5, metadata={
        "help": "inference negative prompt: the cells covered in at least this share of the detected images"})
    init_word: str = field(default="", metadata={
        "help": "word whose embedding initialises the existence token ('' = the concept's first word)"})
    geometric_tokens: bool = field(default=True, metadata={
        "help": "false = ablation control: the same fine-tuning (same batches, over-sampling, dropout) with the "
                "plain captions only, no tokens appended or learned"})
    token_position: str = field(default="after", metadata={
        "help": "where the geometric tokens go: after the caption (the paper: appended), or before it (the causal "
                "text encoder then conditions every caption position on them)"})
    kv_lr: float = field(default=0.0, metadata={
        "help": "Adam learning rate of the cross-attention to_k/to_v weights (0 = lr)"})
    text_encoder_lr: float = field(default=0.0, metadata={
        "help": "0 = text encoder frozen; > 0 also trains its layers and final norm at this lr (GeoDiffusion's "
                "--train_text_encoder; the token table stays fixed, the geometric tokens have token_lr)"})
    tagged_dropout: float = field(default=-1.0, metadata={
        "help": "caption dropout of the pairs that carry geometric tokens (-1 = caption_dropout)"})
    box_loss_weight: float = field(default=1.0, metadata={
        "help": "loss weight of the detected location's latent cells relative to the rest, each weight map "
                "normalised to mean 1 (GeoDiffusion's foreground loss, official 2.0; 1 = plain MSE)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from .esd import PARAMETER_SETS

        check_choice("train_method", self.train_method, tuple(PARAMETER_SETS))
        check_min(self, 1, "batch_size", "grid", "n_images")
        check_min(self, 0, "token_lr", strict=True)
        for name in ("min_overlap", "negative_share"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 < v <= 1.0):
                raise InvalidValueError(f"{name} must be in (0, 1], got {v!r}")
        if not (self.concept_share == -1 or 0.0 <= self.concept_share <= 1.0):
            raise InvalidValueError(f"concept_share must be in [0, 1] or -1 (the data's own share), got "
                                    f"{self.concept_share!r}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise InvalidValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout!r}")
        check_choice("token_position", self.token_position, TOKEN_POSITIONS)
        check_min(self, 0, "kv_lr", "text_encoder_lr")
        if not (self.tagged_dropout == -1 or 0.0 <= self.tagged_dropout < 1.0):
            raise InvalidValueError(f"tagged_dropout must be in [0, 1) or -1 (= caption_dropout), got "
                                    f"{self.tagged_dropout!r}")
        check_min(self, 0, "box_loss_weight", strict=True)
        if self.data and not self.data.endswith(".npz"):
            raise InvalidValueError(f"data={self.data!r} must be a .npz file with arrays images and captions")


@dataclass
class GeomHooks(TrainHooks):
    """TrainHooks plus the objects Geom-Erasing may take instead of names: `detector` (an Evaluator, or a callable
    images (N, H, W, 3) uint8 -> (N,) bool; an optional `boxes(images) -> (N, 4)` gives locations) and the data
    (`images` (N, H, W, 3) uint8 with `captions`, N strings)."""

    detector: Any = None
    images: Any = None
    captions: Sequence[str] | None = None


# ------------------------------------------------------------------------------------------------ geometric tokens
def cell_names(grid: int) -> list[str]:
    """Names of the location tokens, row-major: "<loc-r0c0>", ..., "<loc-r{g-1}c{g-1}>"."""
    return [f"<loc-r{r}c{c}>" for r in range(grid) for c in range(grid)]


def existence_name(concept: str) -> str:
    return "<" + "-".join(concept.lower().split()) + ">"


def box_cells(boxes: np.ndarray, grid: int, min_overlap: float) -> list[list[int]]:
    """Cells (row * grid + col) covered by each box (N, 4) = (x0, y0, x1, y1) fractions: those whose area the box
    covers at least `min_overlap` of, else the single most covered cell; [] for NaN rows (no location)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidValueError(f"detector boxes must be (N, 4) (x0, y0, x1, y1), got shape {boxes.shape}")
    edges = np.arange(grid + 1) / grid
    out: list[list[int]] = []
    for b in boxes:
        if np.isnan(b).any():
            out.append([])
            continue
        x0, y0, x1, y1 = np.clip(b, 0.0, 1.0)
        if not (x1 > x0 and y1 > y0):
            raise InvalidValueError(f"a detector box must have x1 > x0 and y1 > y0 (fractions), got {b.tolist()}")
        wx = np.clip(np.minimum(edges[1:], x1) - np.maximum(edges[:-1], x0), 0, None) * grid  # (grid,) share of cell
        wy = np.clip(np.minimum(edges[1:], y1) - np.maximum(edges[:-1], y0), 0, None) * grid
        cover = np.outer(wy, wx).ravel()  # (grid^2,) covered share of each cell's area
        cells = [int(i) for i in np.flatnonzero(cover >= min_overlap - 1e-9)]
        out.append(cells or [int(cover.argmax())])
    return out


@dataclass(frozen=True)
class GeomTokenSet:
    """The learned geometric tokens: `vectors` (1 + grid^2, D) token embeddings (row 0: existence of `concept`, row
    1 + r * grid + c: location cell (r, c)), `negative_cells`, the cells of the inference negative prompt, and
    `position`, where the tokens were trained relative to the text ("after" / "before"; the negative encodes alike)."""

    concept: str
    grid: int
    vectors: torch.Tensor
    negative_cells: tuple[int, ...]
    position: str = "after"

    def __post_init__(self) -> None:
        if self.vectors.dim() != 2 or self.vectors.shape[0] != 1 + self.grid ** 2:
            raise InvalidValueError(f"geometric tokens need (1 + grid^2, D) = ({1 + self.grid ** 2}, D) vectors, got "
                                    f"{tuple(self.vectors.shape)}")
        if not bool(torch.isfinite(self.vectors).all()):
            raise IntegrityError("geometric token embeddings hold NaN/inf values; refusing them")
        check_choice("position", self.position, TOKEN_POSITIONS)
        bad = [c for c in self.negative_cells if not 0 <= c < self.grid ** 2]
        if bad:
            raise InvalidValueError(f"negative cells {bad} are outside the {self.grid} x {self.grid} grid")

    @property
    def names(self) -> list[str]:
        return [existence_name(self.concept)] + cell_names(self.grid)

    def rows(self, cells: str = "learned") -> list[int]:
        """Token rows of the negative prompt: the existence token, then the location tokens of `cells` ("learned":
        the recorded negative cells, "all": every cell, "none": no location)."""
        check_choice("cells", cells, CELL_MODES)
        chosen = {"learned": list(self.negative_cells), "all": list(range(self.grid ** 2)), "none": []}[cells]
        return [0] + [1 + c for c in chosen]

    def to_info(self) -> dict:
        v = self.vectors.detach().to("cpu", torch.float32).contiguous()
        return {"concept": self.concept, "grid": self.grid, "names": self.names, "dim": int(v.shape[1]),
                "negative_cells": list(self.negative_cells), "position": self.position,
                "negative_prompt": " ".join(self.names[r] for r in self.rows()),
                "vectors": v.tolist(), "vectors_sha256": hashlib.sha256(v.numpy().tobytes()).hexdigest()}

    @classmethod
    def from_info(cls, info: dict) -> GeomTokenSet:
        try:
            v = torch.tensor(info["vectors"], dtype=torch.float32)
            digest = hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
            if digest != info["vectors_sha256"]:
                raise IntegrityError("the geometric token embeddings do not match their recorded sha256 (corrupt "
                                     "edit)")
            return cls(str(info["concept"]), int(info["grid"]), v, tuple(int(c) for c in info["negative_cells"]),
                       str(info.get("position", "after")))  # edits made before the option: after
        except (KeyError, TypeError, ValueError) as e:
            raise IntegrityError(f"malformed geometric tokens in the edit ({type(e).__name__}: {e})") from None

    @classmethod
    def from_edit(cls, edit: Any) -> GeomTokenSet:
        """The token set of a Geom-Erasing `Edit` (or the path of its .safetensors file)."""
        from ..edits import Edit

        if isinstance(edit, (str, Path)):
            edit = Edit.load(edit)
        info = (getattr(edit, "manifest", None) or {}).get("info", {}).get(INFO_KEY)
        if info is None:
            raise InvalidValueError(f"this edit (method {getattr(edit, 'method', '?')!r}) holds no geometric tokens; "
                                    "give the edit made by the geom_erasing eraser")
        return cls.from_info(info)


def geom_layout(pipe: Any, text: str, k: int, position: str = "after") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (L,), slots (k,)): [BOS, words of `text`, k token slots, EOS, padding] ("after") or [BOS, k token slots,
    words, EOS, padding] ("before"); the words are cut (with a warning-free truncation, as the pipeline's own) so
    that the k slots always fit. The slots hold EOS ids until `encode_with_tokens` writes the tokens in."""
    from ..conditioning import word_ids

    tok = pipe.tokenizer
    length = tok.model_max_length
    if k + 2 > length:
        raise InvalidValueError(f"{k} geometric tokens do not fit the text encoder's {length} positions")
    check_choice("position", position, TOKEN_POSITIONS)
    words = word_ids(pipe, text)[:length - 2 - k]
    if position == "after":
        seq = [tok.bos_token_id, *words]
        slots = list(range(len(seq), len(seq) + k))
        seq += [tok.eos_token_id] * (k + 1)
    else:
        slots = list(range(1, 1 + k))
        seq = [tok.bos_token_id] + [tok.eos_token_id] * k + [*words, tok.eos_token_id]
    seq += [tok.eos_token_id] * (length - len(seq))  # SD1.x pads with EOS
    return torch.tensor(seq), torch.tensor(slots, dtype=torch.long)


def encode_with_tokens(pipe: Any, texts: Sequence[str], rows: Sequence[Sequence[int]],
                       vectors: torch.Tensor, position: str = "after") -> torch.Tensor:
    """(B, L, D) text-encoder outputs of each text with the geometric tokens `rows[i]` (rows of `vectors` (K, D))
    after it (or before it, `position="before"`); differentiable in `vectors` (and in the pipeline's text encoder).
    A text with no rows is encoded as the plain prompt."""
    from ..conditioning import encode_embeds, token_table

    table = token_table(pipe)
    embeds = []
    for text, r in zip(texts, rows, strict=True):
        ids, slots = geom_layout(pipe, text, len(r), position)
        base = table[ids.to(table.device)].detach()
        if len(r):
            idx = slots.to(table.device)[:, None].expand(-1, base.shape[-1])
            base = base.scatter(0, idx, vectors[list(r)].to(table.device, table.dtype))
        embeds.append(base)
    return encode_embeds(pipe, torch.stack(embeds))


# ------------------------------------------------------------------------------------------------ data + detector
def _detector(config: GeomErasingConfig, hooks: Any, concept: str) -> tuple[Callable, Callable | None, str]:
    """(presence images -> (N,) bool, boxes images -> (N, 4) or None, description)."""
    from ..evaluators import Evaluator, get_evaluator, parse_evaluator_spec

    obj = getattr(hooks, "detector", None)
    if obj is not None and config.detector:
        raise InvalidValueError(f"detector={config.detector!r} and GeomHooks(detector=...) both given; pass one")
    if obj is None:
        if not config.detector:
            raise InvalidValueError(f"Geom-Erasing needs a detector of {concept!r}: pass detector=NAME (a registered "
                                    "evaluator, e.g. toyworld-mark) or GeomHooks(detector=...)")
        name, options = parse_evaluator_spec(config.detector)
        obj = get_evaluator(name, **options)
    if isinstance(obj, Evaluator):
        obj.target(concept)  # an evaluator that cannot see the concept fails before any work

        def present(images: np.ndarray) -> np.ndarray:
            return obj.shows(images, concept)

        desc = obj.name
    elif callable(obj):
        present, desc = obj, getattr(obj, "__qualname__", type(obj).__name__)
    else:
        raise InvalidValueError(f"detector must be an Evaluator or a callable images -> (N,) bool, got "
                                f"{type(obj).__name__}")
    boxes = getattr(obj, "boxes", None)
    return present, boxes if callable(boxes) else None, desc


def _data(pipe: Any, config: GeomErasingConfig, hooks: Any) -> tuple[np.ndarray, list[str], str]:
    """(images (N, H, W, 3) uint8, captions, source)."""
    from ..generation import image_size
    from .fewshot import _resize, as_image_array

    images, captions = getattr(hooks, "images", None), getattr(hooks, "captions", None)
    if (images is None) != (captions is None):
        raise InvalidValueError("GeomHooks needs both images= and captions= (or neither)")
    if images is not None and config.data:
        raise InvalidValueError(f"data={config.data!r} and GeomHooks(images=...) both given; pass one")
    if images is not None:
        source = "memory"
    elif config.data:
        path = Path(config.data)
        if not path.is_file():
            raise InvalidValueError(f"data={config.data!r}: no such .npz file")
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z or "captions" not in z:
                raise InvalidValueError(f"data={config.data!r} must hold arrays 'images' and 'captions', has "
                                        f"{sorted(z.files)}")
            images, captions = z["images"], [str(c) for c in z["captions"]]
        source = f"file:{config.data}"
    else:
        from ..worlds import world_of_model

        world = world_of_model(pipe)
        images, captions = world.captioned_images(pipe, config.n_images, config.seed)
        source = f"world:{world.name}"
    captions = list(captions)
    if not all(isinstance(c, str) for c in captions):
        raise InvalidValueError("captions must be strings")
    images = _resize(as_image_array(images, "Geom-Erasing images"), image_size(pipe))
    if len(images) != len(captions):
        raise InvalidValueError(f"got {len(images)} images and {len(captions)} captions; give one caption per image")
    return images, captions, source


def _detect(images: np.ndarray, present_fn: Callable, boxes_fn: Callable | None, config: GeomErasingConfig
            ) -> tuple[np.ndarray, list[list[int]]]:
    """(present (N,) bool, cells per image) in chunks of 256."""
    present, cells = [], []
    for i in range(0, len(images), 256):
        chunk = images[i:i + 256]
        p = np.asarray(present_fn(chunk), dtype=bool).reshape(-1)
        if p.shape != (len(chunk),):
            raise InvalidValueError(f"the detector returned {p.shape} flags for {len(chunk)} images")
        present.append(p)
        if boxes_fn is not None:
            b = np.asarray(boxes_fn(chunk), dtype=np.float64)
            if b.shape != (len(chunk), 4):
                raise InvalidValueError(f"the detector's boxes() returned shape {b.shape} for {len(chunk)} images; "
                                        "expected (N, 4)")
            b[~p] = np.nan
            cells += box_cells(b, config.grid, config.min_overlap)
        else:
            cells += [[] for _ in range(len(chunk))]
    return np.concatenate(present), cells


def negative_cells(cells: Sequence[Sequence[int]], present: np.ndarray, share: float) -> tuple[int, ...]:
    """Cells covered in >= `share` of the detected images (else the most frequent one; () without locations)."""
    found = [c for c, p in zip(cells, present) if p and c]
    if not found:
        return ()
    counts = np.bincount([x for c in found for x in c])
    chosen = np.flatnonzero(counts >= share * len(found) - 1e-9)
    return tuple(int(x) for x in (chosen if len(chosen) else [counts.argmax()]))


def box_weights(cells: Sequence[Sequence[int]], present: np.ndarray, grid: int, hw: tuple[int, int],
                weight: float) -> torch.Tensor:
    """(N, h, w) loss weights: `weight` on the latent cells of each detected image's location cells, 1 elsewhere, each
    map normalised to mean 1 (GeoDiffusion's constant foreground loss with --foreground_loss_norm); all ones when
    `weight` is 1 or an image has no location."""
    h, w = hw
    out = torch.ones((len(cells), h, w))
    if weight == 1.0:
        return out
    for i, (cs, p) in enumerate(zip(cells, present)):
        if not (p and cs):
            continue
        for c in cs:
            r, col = divmod(int(c), grid)
            out[i, r * h // grid:(r + 1) * h // grid, col * w // grid:(col + 1) * w // grid] = weight
        out[i] /= out[i].mean()
    return out


class _Tokens(nn.Module):
    """The trainable token embeddings (a module so that the training loop checkpoints them)."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.vectors = nn.Parameter(init.clone())


def _init_tokens(pipe: Any, concept: str, config: GeomErasingConfig, gen: torch.Generator) -> torch.Tensor:
    """(1 + grid^2, D) float32: the existence token from `init_word` (or the concept's first word), the location
    tokens drawn around the vocabulary's mean with its per-dimension spread (distinct, word-like)."""
    from ..conditioning import token_table, word_ids

    table = token_table(pipe).detach().float()
    word = config.init_word or concept.split()[0]
    ids = word_ids(pipe, word)
    if not ids:
        raise InvalidValueError(f"init_word={word!r} has no tokens; give a word")
    mean, std = table.mean(0), table.std(0)
    locs = mean + std * torch.randn((config.grid ** 2, table.shape[1]), generator=gen)
    return torch.cat([table[ids[0]][None], locs])


# ------------------------------------------------------------------------------------------------ training
def run(pipe, request: EraseRequest, config: GeomErasingConfig, hooks: TrainHooks) -> tuple[dict, dict]:
    """Fine-tune on re-captioned data; returns ({"unet.<name>": tensor in the pipeline's dtype}, info with the
    geometric tokens under info["geom"])."""
    from ..sampling import encode_prompts
    from .esd import parameter_names
    from .fewshot import encode_latents

    if len(request.erase) != 1:
        raise InvalidValueError(f"Geom-Erasing erases one implicit concept per run (the detector's), got "
                                f"{list(request.erase)}")
    concept = request.erase[0].strip()
    present_fn, boxes_fn, detector_desc = _detector(config, hooks, concept)
    images, captions, source = _data(pipe, config, hooks)
    present, cells = _detect(images, present_fn, boxes_fn, config)
    pos, neg = np.flatnonzero(present), np.flatnonzero(~present)
    if len(pos) == 0:
        raise InvalidValueError(f"the detector found {concept!r} in none of the {len(images)} training images; "
                                "nothing to bind the geometric tokens to (check the detector or give more data)")
    if config.concept_share not in (-1, 1) and len(neg) == 0:
        raise InvalidValueError(f"every one of the {len(images)} images shows {concept!r}; set concept_share=1")
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes() + "\n".join(captions).encode()).hexdigest()

    base_dtype, device = pipe.unet.dtype, pipe.unet.device
    gen0 = torch.Generator().manual_seed(int(config.seed))
    with torch.no_grad():
        latents = torch.cat([encode_latents(pipe, images[i:i + 256], gen0, flip=False)
                             for i in range(0, len(images), 256)]).to(device)  # (N, 4, h, w); no flip: it moves marks
        plain = encode_prompts(pipe, captions).to(device, torch.float32)  # (N, L, D)
        uncond = encode_prompts(pipe, [""]).to(device, torch.float32)  # (1, L, D)
    tokens = _Tokens(_init_tokens(pipe, concept, config, gen0).to(device))
    names = set(parameter_names(pipe.unet, config.train_method))
    trained, chosen = trainable_copy(pipe.unet, lambda n: n in names)
    trained.train()
    named = [(n, p) for n, p in trained.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    is_kv = [config.kv_lr > 0 and (".attn2.to_k." in n or ".attn2.to_v." in n) for n, _ in named]
    if config.kv_lr > 0 and not any(is_kv):
        raise InvalidValueError(f"kv_lr={config.kv_lr:g} but train_method={config.train_method!r} trains no "
                                "cross-attention to_k/to_v weight; use esd-all, esd-x or esd-x-strict, or kv_lr=0")
    groups = [{"params": [p for p, k in zip(params, is_kv) if not k], "lr": config.lr},
              {"params": [p for p, k in zip(params, is_kv) if k], "lr": config.kv_lr},
              {"params": [tokens.vectors], "lr": config.token_lr}]
    te, te_names, tpipe = None, [], pipe
    if config.text_encoder_lr > 0:
        from ._text_encoder import bare_name

        te, te_names = trainable_copy(pipe.text_encoder,
                                      lambda n: bare_name(n).startswith(TEXT_ENCODER_TRAINED))
        te.train()
        tpipe = pipe_with(pipe, text_encoder=te)
        groups.append({"params": [p for p in te.parameters() if p.requires_grad], "lr": config.text_encoder_lr})
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.Adam(groups)
    all_params = [p for g in groups for p in g["params"]]
    sched = pipe.scheduler
    n_train = int(sched.config.num_train_timesteps)
    rows = [[0] + [1 + c for c in cs] if p and config.geometric_tokens else [] for p, cs in zip(present, cells)]
    # caption dropout per pair: detected pairs (the ones that carry tokens; also in the control, so that it draws the
    # same conditioning) use tagged_dropout
    p_drop = torch.full((len(images),), float(config.caption_dropout))
    if config.tagged_dropout != -1:
        p_drop[torch.as_tensor(present)] = float(config.tagged_dropout)
    weight = box_weights(cells, present, config.grid, tuple(latents.shape[-2:]), config.box_loss_weight).to(device)
    n_pos = round(config.batch_size * config.concept_share) if config.concept_share != -1 else None

    def batch(gen: torch.Generator) -> torch.Tensor:
        if n_pos is None:
            return torch.randint(len(images), (config.batch_size,), generator=gen)
        a = torch.as_tensor(pos)[torch.randint(len(pos), (n_pos,), generator=gen)]
        b = torch.as_tensor(neg)[torch.randint(max(len(neg), 1), (config.batch_size - n_pos,), generator=gen)] \
            if config.batch_size > n_pos else torch.zeros(0, dtype=torch.long)
        return torch.cat([a, b])

    def step(i: int, gen: torch.Generator) -> float:
        idx = batch(gen)
        drop = torch.rand(len(idx), generator=gen) < p_drop[idx]
        t = torch.randint(0, n_train, (len(idx),), generator=gen).to(device)
        eps = torch.randn(latents[idx].shape, generator=gen).to(latents)
        if te is not None:  # the trained text encoder encodes every pair (dropped ones as "")
            cond = encode_with_tokens(tpipe, ["" if bool(drop[k]) else captions[int(i)] for k, i in enumerate(idx)],
                                      [[] if bool(drop[k]) else rows[int(i)] for k, i in enumerate(idx)],
                                      tokens.vectors, config.token_position).float()
        else:
            cond = plain[idx].clone()
            cond[drop] = uncond[0]
            tagged = [k for k in range(len(idx)) if rows[int(idx[k])] and not bool(drop[k])]
            if tagged:
                enc = encode_with_tokens(pipe, [captions[int(idx[k])] for k in tagged],
                                         [rows[int(idx[k])] for k in tagged], tokens.vectors,
                                         config.token_position).float()
                cond = cond.index_put((torch.tensor(tagged),), enc)
        x0 = latents[idx]
        target = eps if sched.config.prediction_type == "epsilon" else sched.get_velocity(x0, eps, t)
        pred = trained(sched.add_noise(x0, eps, t), t, encoder_hidden_states=cond).sample
        loss = ((pred.float() - target.float()) ** 2 * weight[idx][:, None]).mean()  # weight 1: plain MSE
        # the pipeline's text encoder gets no .grad; a batch without a tagged pair (every batch of the control, often
        # with concept_share=-1) leaves the tokens out of the graph: their grad is None and Adam skips them
        grads = torch.autograd.grad(loss, all_params, allow_unused=True)
        for p, g in zip(all_params, grads):
            p.grad = g
        opt.step()
        return float(loss.detach())

    def current() -> GeomTokenSet:
        return GeomTokenSet(concept, config.grid, tokens.vectors.detach().float().cpu(),
                            negative_cells(cells, present, config.negative_share), config.token_position)

    def render() -> np.ndarray:
        from ..shields import shielded_generate
        from ..shields.geom_negative import GeomNegative

        prompts = list(hooks.check_prompts) or list(dict.fromkeys(captions[i] for i in pos))[:4]
        ps = [p for p in prompts for _ in hooks.check_seeds]
        seeds = [int(s) for _ in prompts for s in hooks.check_seeds]
        trained.eval()
        try:
            shown = trained if next(trained.parameters()).dtype == base_dtype else copy.deepcopy(trained).to(base_dtype)
            parts = {"unet": shown} | ({"text_encoder": te} if te is not None else {})
            imgs, _ = shielded_generate(pipe_with(pipe, **parts), ps, seeds, shields=GeomNegative(tokens=current()),
                                        steps=hooks.sample_steps, guidance=hooks.guidance)
            return imgs
        finally:
            trained.train()

    trainable = {"unet": trained, "tokens": tokens} | ({"text_encoder": te} if te is not None else {})
    loop = TrainingLoop("geom_erasing", config, hooks, trainable=trainable, optimizer=opt,
                        key_extra={"concept": concept, "data": digest, "detector": detector_desc,
                                   "model": pipe.unet.config.get("_name_or_path", "")})
    log = loop.run(step, render=render)
    trained.eval()
    tensors = changed_tensors("unet", trained, chosen, base_dtype)
    if te is not None:
        tensors |= changed_tensors("text_encoder", te, te_names, pipe.text_encoder.dtype)
    token_set = current()
    info = {"train": log.to_dict(), "parameters": len(chosen) + len(te_names),
            "trained_numel": int(sum(p.numel() for p in params)
                                 + (sum(p.numel() for p in te.parameters() if p.requires_grad) if te is not None else 0)
                                 + (tokens.vectors.numel() if config.geometric_tokens else 0)),
            "data": {"source": source, "count": int(len(images)), "sha256": digest,
                     "detected": int(present.sum()), "detected_share": round(float(present.mean()), 4),
                     "with_location": int(sum(1 for p, c in zip(present, cells) if p and c))},
            "detector": detector_desc, "geometric_tokens": bool(config.geometric_tokens),
            INFO_KEY: token_set.to_info(),
            "unused": {"guide": list(request.guide or ()), "preserve": list(request.preserve)}}
    return tensors, info


METHOD = Method(name="geom_erasing", config_cls=GeomErasingConfig, run=run, trains=True,
                paper="Liu et al., Implicit Concept Removal of Diffusion Models (Geom-Erasing), ECCV 2024")

__all__ = ["CELL_MODES", "GeomErasingConfig", "GeomHooks", "GeomTokenSet", "METHOD", "box_cells", "cell_names",
           "box_weights", "encode_with_tokens", "geom_layout", "negative_cells", "run"]
