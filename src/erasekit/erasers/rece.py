"""RECE: Reliable and Efficient Concept Erasure of Text-to-Image Diffusion Models. Gong, Chen, Wei, Chen, Jiang.
ECCV 2024. arXiv:2407.12383; official code: github.com/CharlesGong12/RECE
(train.py, utils/embedding_calculation/close_form_emb.py, erase_methods/uce.py::edit_model_adversarial).

Starting from a UCE-erased model (weights W'), each epoch and each erased concept:
  1. closed-form adversarial embedding: the rows c' (all L = 77 tokens of E(concept)) that make the *edited* K/V
     projections reproduce what the *original* ones gave the concept:
        c' = argmin sum_l ||W'_l c' - W_l c||^2 + reg ||c' - t||^2  =  (reg I + sum W'^T W')^-1 (reg t + sum W'^T W c)
     with t = 0 ("regzero", the paper's default) or t = E(guide) rows ("standard" regularisation toward the old guide);
  2. a UCE edit of the *current* weights over all L rows: c'_k -> W' E(guide)_k, preserving the preserve prompts'
     rows (default: the empty prompt), regulariser lamb ||W - W'||^2.
Defaults from the official scripts: lamb 0.1, erase_scale 1, preserve_scale 0.1, regular_scale 1e-3 (artists; nudity
uses 0.1), epochs 1 (nudity: 3).

The starting UCE (`start`):
  - "official" (default): RECE's own `erase_methods/train_uce.py` (paper-era UCE span): token span, lamb 0.5,
    erase_scale 1, technique replace, empty guide -> BOS (the script turns '' into ' '), preserve set
    `[''] + preserve` (all 77 rows of each) with preserve scale max(0.1, 1 / len(that set)) rounded to 3 decimals,
    i.e. 1.0 with no preserve prompts (`train_artists.py` likewise uses `[''] + preserve`). `uce_preserve_scale`
    overrides the scale; `uce_token`, `uce_lamb`, `uce_erase_scale` and `empty_guide` still apply.
  - "plain": erasekit's earlier start: only the given preserve prompts, scale `uce_preserve_scale` (default 0.1),
    empty guide 'aligned' unless `empty_guide` says otherwise.

Deviations from the official code:
  - The official loop generates images after every epoch and keeps the epoch with the lowest NudeNet/Q16 rate. We
    have no detector in the loop: all `epochs` are run and the last weights are returned (select `epochs` with
    `erasekit` metrics instead). Per-epoch diagnostics are recorded in the manifest (`info.epochs`).
  - In the adversarial edit the guide's rows are aligned by position, as in the official code.
  - Default preserve set when none is given: the empty prompt (official: " " for non-art, a random sample of the
    1,734-artist list for art, which we do not ship). The "surrogate" regularisation variants are not implemented.
  - Solves in float64 via the shared residual form (official: float32 inverses). The epochs run in (d, d) space on
    the float64 Gram of the original K/V weights (see `rece`); the intermediate weights are never rounded to the
    model's dtype, only the final ones (official: float32 weights after every edit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..conditioning import cholesky
from ..config import check_choice
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._closed_form import F64, Encoded, PipelineLike, Rows, apply_right, encode, kv_weights, right_update, \
    weight_gram
from .concepts import CONCEPT_TYPES, concept_type, default_guide
from .uce import EMPTY_GUIDE, TOKENS, build

EMBEDDINGS = ("regzero", "standard")
STARTS = ("official", "plain")


@dataclass(frozen=True)
class RECEConfig:
    epochs: int = field(default=1, metadata={"help": "adversarial rounds (official: 1 art/objects, 3 nudity)"})
    lamb: float = field(default=0.1, metadata={"help": "weight of ||W - W_current||^2 in each adversarial edit"})
    erase_scale: float = field(default=1.0, metadata={"help": "weight of the adversarial-embedding rows"})
    preserve_scale: float = field(default=0.1, metadata={"help": "weight of the preserve rows"})
    regular_scale: float = field(default=1e-3, metadata={"help": "reg of the adversarial embedding (nudity: 0.1)"})
    embedding: str = field(default="regzero", metadata={"help": "'regzero' (t = 0) or 'standard' (t = E(guide))"})
    with_to_k: bool = field(default=True, metadata={"help": "edit to_k as well as to_v"})
    concept_type: str = field(default="auto", metadata={"help": "'art', 'object' or 'auto'"})
    uce: bool = field(default=True, metadata={"help": "start with a UCE edit (False: start from the current weights)"})
    uce_token: str = field(default="span", metadata={"help": "token selection of the starting UCE ('span'|'last')"})
    uce_lamb: float = field(default=0.5, metadata={"help": "lamb of the starting UCE"})
    uce_erase_scale: float = field(default=1.0, metadata={"help": "erase_scale of the starting UCE"})
    uce_preserve_scale: float | None = field(default=None, metadata={
        "help": "preserve_scale of the starting UCE (None: official max(0.1, 1/n) with start=official, else 0.1)"})
    empty_guide: str | None = field(default=None, metadata={
        "help": "empty-guide row in the starting UCE ('aligned'|'bos'; None: 'bos' for official, else 'aligned')"})
    start: str = field(default="official", metadata={
        "help": "starting UCE: 'official' (RECE's train_uce.py: preserve [''] + preserve) or 'plain'"})

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise InvalidValueError(f"epochs must be >= 0, got {self.epochs}")
        for name in ("lamb", "erase_scale", "preserve_scale", "regular_scale", "uce_lamb", "uce_erase_scale",
                     "uce_preserve_scale"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.regular_scale == 0 and self.epochs > 0:
            raise InvalidValueError("regular_scale must be > 0 (it keeps the adversarial embedding well defined)")
        for name, valid in (("embedding", EMBEDDINGS), ("uce_token", TOKENS), ("concept_type", CONCEPT_TYPES),
                            ("start", STARTS)):
            check_choice(name, getattr(self, name), valid)
        if self.empty_guide is not None:
            check_choice("empty_guide", self.empty_guide, EMPTY_GUIDE)
        if not self.uce and self.epochs == 0:
            raise InvalidValueError("uce=False with epochs=0 would change nothing")


def start_preserve(config: RECEConfig, preserve: list[str]) -> tuple[list[str], float, str]:
    """(preserve prompts, preserve scale, empty-guide rule) of the starting UCE for `config.start`."""
    if config.start == "official":
        retain = [""] + preserve
        scale = config.uce_preserve_scale
        if scale is None:
            scale = round(max(0.1, 1 / len(retain)), 3)
        return retain, scale, config.empty_guide or "bos"
    scale = 0.1 if config.uce_preserve_scale is None else config.uce_preserve_scale
    return preserve, scale, config.empty_guide or "aligned"


def rece(pipe: PipelineLike, request: EraseRequest, config: RECEConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """Erase `request.erase` with RECE; returns ({K/V weight name: new weight}, info).

    Every edit here is a right factor shared by all layers (W_l -> W_l P, P (d, d); see `_closed_form.right_update`),
    so the epochs run in (d, d) space: sum_l W'_l^T W'_l = P^T G P and sum_l W'_l^T W_l = P^T G with
    G = sum_l W_l^T W_l the Gram of the original weights, formed once in float64 (`weight_gram`, cached per weight
    state), and the layers are written once at the end. Same edit as chaining `adversarial_embedding` and `solve`
    per epoch (tests/test_erasers.py, tests/test_closed_forms2.py), without one float32 rounding of the
    intermediate weights."""
    kind = concept_type(request.erase, config.concept_type, pipe)
    guides = request.guides(default_guide(kind))
    original = kv_weights(pipe, with_to_k=config.with_to_k)  # views of the parameters (the Gram cache's key)
    preserve, scale, empty_guide = start_preserve(config, list(request.preserve))
    adv_preserve = list(request.preserve) or [""]
    # one text-encoder pass (77 rows) for every prompt the start and the epochs need
    order = list(dict.fromkeys([*request.erase, *guides, *preserve, *adv_preserve]))
    full = encode(pipe, order)

    def rows_of(prompts: list[str]) -> Encoded:
        idx = torch.tensor([order.index(p) for p in prompts], dtype=torch.long)
        return Encoded(full.hidden[idx], full.lengths[idx], full.ids[idx])

    concepts, targets = rows_of(list(request.erase)), rows_of(guides)
    keep = rows_of(adv_preserve)
    d = concepts.hidden.shape[-1]
    eye = torch.eye(d, dtype=F64)
    # the edit so far: W = W0 P with P = I + U V (factors while their rank is small, else U = P - I, V = None)
    u: torch.Tensor = torch.zeros(d, 0, dtype=F64)
    v: torch.Tensor | None = torch.zeros(0, d, dtype=F64)
    if config.uce:
        rows, _ = build(pipe, list(request.erase), guides, preserve, config.uce_token, empty_guide,
                        config.uce_erase_scale, scale, encoded=full, order=order)
        if rows.keys.shape[0]:
            u, v = right_update(rows, config.uce_lamb)
    names = list(original)
    gram = weight_gram([original[n] for n in names]) if config.epochs else None
    emb = concepts.hidden.reshape(-1, d)  # (n_concepts * L, d): all concepts' rows at once
    t = targets.hidden.reshape(-1, d)
    length = concepts.hidden.shape[1]
    epochs = []
    for _ in range(config.epochs):
        p = eye + (u if v is None else u @ v)
        gp = gram @ p  # sum_l W_l^T W'_l
        # adversarial embedding c' = (reg I + P^T G P)^-1 (reg t + P^T G c), as rows: (c G P + reg t) A^-1
        chol = cholesky(config.regular_scale * eye + p.T @ gp, f"reg={config.regular_scale}; set reg > 0")
        rhs = emb @ gp
        if config.embedding == "standard":
            rhs = rhs + config.regular_scale * t
        adv = torch.cholesky_solve(rhs.T, chol).T  # (n_concepts * L, d)
        cosines = [float(torch.nn.functional.cosine_similarity(adv[i * length:(i + 1) * length].reshape(1, -1),
                                                                concepts.hidden[i].reshape(1, -1)))
                   for i in range(len(request.erase))]
        rows = Rows.empty(d)
        rows.add_erase(adv, t, config.erase_scale)
        rows.add_preserve(keep.hidden.reshape(-1, d), config.preserve_scale)
        # the UCE edit of the current weights W0 P: P -> P (I + U2 V2)
        u2, v2 = right_update(rows, config.lamb)
        if v is not None and v2 is not None and u.shape[1] + u2.shape[1] <= d // 2:
            u, v = torch.cat([u, p @ u2], 1), torch.cat([v, v2])
        else:
            u, v = p @ (u2 if v2 is None else u2 @ v2) + (p - eye), None
        epochs.append({"adv_cosine": [round(c, 4) for c in cosines]})
    weights = apply_right(original, u, v) if u.shape[1] else {n: w.clone() for n, w in original.items()}
    info = {"concept_type": kind, "guides": guides, "preserve": list(request.preserve) or [""], "epochs": epochs}
    return weights, info


METHOD = Method("rece", RECEConfig, rece,
                paper="Gong et al., Reliable and Efficient Concept Erasure of Text-to-Image Diffusion Models, "
                      "ECCV 2024")
