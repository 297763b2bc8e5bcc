"""UCE: Unified Concept Editing in Diffusion Models. Gandikota, Orgad, Belinkov, Materzynska, Bau. WACV 2024.
arXiv:2308.14761; official code: github.com/rohitgandikota/unified-concept-editing.

Closed-form edit of every cross-attention to_k/to_v matrix W (paper eq. 7):

    W* = argmin lamb ||W - W0||^2 + s_e sum_i ||W c_i - W0 g_i||^2 + s_p sum_j ||W p_j - W0 p_j||^2

c_i: text-encoder rows of the erased concept, g_i: rows of its guide concept (v*_i = W0 g_i, technique "replace"),
p_j: rows of preserved concepts. Two token selections:
  - token="last" (current official `trainscripts/uce_sd_erase.py`): one row per prompt, its last word token
    (index attention_mask.sum() - 2); preserve rows likewise.
  - token="span" (paper-era `train-scripts/train_erase.py`): rows from the last word token through EOS and padding,
    aligned with the guide's rows from its last word token; preserve prompts contribute all 77 rows. With no preserve
    prompts the span mode preserves the 77 rows of "" (as the paper-era script does: `retain_text_=None` -> `['']`),
    so the unconditional prompt's keys/values stay put; pass preserve prompts to replace it.
technique="tensor" (paper-era option): v*_i = W0 g - <u, W0 g> u with u = W0 c / ||W0 c|| (Frobenius over the rows).

Defaults: erase_scale 1, preserve_scale 1, lamb 0.5, guide "art" for art concepts else "" (current official code).

Deviations from the official code (all deliberate; flags give the official behaviour where it is well defined):
  - Empty guide "" in the official code resolves to the BOS row (last-token index 2 - 2 = 0; paper-era likewise
    aligns the concept's last token with BOS, since " " tokenises to nothing). BOS is the same for every prompt and is
    not what the unconditional prompt presents at the concept's position, so by default (`empty_guide="aligned"`) an
    empty guide uses the row of "" at the same position as the concept row. `empty_guide="bos"` is the official one.
  - `expand_prompts` in the current official script zips the erase list with the *preserve* list (so it does nothing
    without preserve concepts and never terminates with them) and adds every templated prompt to the preserve set as
    well as the erase set. We expand the erase set only, each template keeping its concept's guide (as the paper-era
    `--add_prompts` does). The templates are the official five per kind; `templates=` overrides them.
  - The solve is done in float64 (official: float32 inverse), in the residual form of erasekit.erasers._closed_form.
  - Paper-era defaults differ (preserve_scale 0.1, erase rows also include to_k; all artists as preserve set); set
    them explicitly if you need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._closed_form import Encoded, PipelineLike, Rows, encode, kv_weights, solve, span_pair, token_lengths
from .concepts import CONCEPT_TYPES, UCE_TEMPLATES, concept_type, default_guide, expanded_pairs

TOKENS = ("last", "span")
TECHNIQUES = ("replace", "tensor")
EMPTY_GUIDE = ("aligned", "bos")


@dataclass(frozen=True)
class UCEConfig:
    erase_scale: float = field(default=1.0, metadata={"help": "weight s_e of the erase terms"})
    preserve_scale: float = field(default=1.0, metadata={"help": "weight s_p of the preserve terms (paper-era: 0.1)"})
    lamb: float = field(default=0.5, metadata={"help": "weight of ||W - W0||^2 (keeps everything else)"})
    token: str = field(default="last", metadata={"help": "'last' word token (current code) or 'span' (paper-era)"})
    technique: str = field(default="replace", metadata={"help": "'replace' (v* = W g) or 'tensor' (paper-era)"})
    with_to_k: bool = field(default=True, metadata={"help": "edit to_k as well as to_v"})
    concept_type: str = field(default="auto", metadata={"help": "'art', 'object' or 'auto' (the world's concept kind)"})
    expand_prompts: bool = field(default=False, metadata={"help": "add the 5 official templates per erase concept"})
    templates: tuple[str, ...] = field(default=(), metadata={"help": "templates for expand_prompts (with '{}')"})
    empty_guide: str = field(default="aligned", metadata={
        "help": "row used for an empty guide: 'aligned' (same position in \"\") or 'bos' (official)"})

    def __post_init__(self) -> None:
        for name in ("erase_scale", "preserve_scale", "lamb"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, valid in (("token", TOKENS), ("technique", TECHNIQUES), ("empty_guide", EMPTY_GUIDE),
                            ("concept_type", CONCEPT_TYPES)):
            check_choice(name, getattr(self, name), valid)
        if self.lamb == 0 and self.preserve_scale == 0:
            raise InvalidValueError("lamb=0 with preserve_scale=0 leaves the edit undetermined; make one positive")


def guide_row(enc: Encoded, i: int, position: int, empty_guide: str) -> torch.Tensor:
    """(d,) the guide row for a concept row at `position`: the guide's last word token, or for an empty guide the row
    of "" at the same position ('aligned') or BOS ('bos', official)."""
    if int(enc.lengths[i]) <= 2:  # empty prompt: BOS + EOS
        return enc.hidden[i, position if empty_guide == "aligned" else 0]
    return enc.hidden[i, int(enc.lengths[i]) - 2]


def pair_rows(old: Encoded, new: Encoded, token: str, empty_guide: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per erase prompt: (concept rows (n, d), guide rows (n, d)) for the chosen token selection."""
    pairs = []
    for i in range(len(old.lengths)):
        k = max(int(old.lengths[i]) - 2, 0)
        if token == "last":
            pairs.append((old.hidden[i, k:k + 1], guide_row(new, i, k, empty_guide)[None]))
        elif int(new.lengths[i]) <= 2 and empty_guide == "aligned":
            pairs.append((old.hidden[i, k:], new.hidden[i, k:]))
        else:
            pairs.append(span_pair(old, i, new, i))
    return pairs


def build(pipe: PipelineLike, erase: list[str], guides: list[str], preserve: list[str], token: str, empty_guide: str,
          erase_scale: float, preserve_scale: float, encoded: Encoded | None = None, order: list[str] | None = None
          ) -> tuple[Rows, list[tuple[torch.Tensor, torch.Tensor]]]:
    """UCE constraint rows for prompt lists (erase[i] -> guides[i]; preserve); also returns the per-prompt pairs.

    encoded / order: full-length encodings of the prompts `order` (one text-encoder pass shared with the caller, as
    RECE does); None encodes here."""
    if encoded is not None and order is not None:
        def enc(prompts: list[str], length: int | None = None) -> Encoded:
            idx = torch.tensor([order.index(p) for p in prompts], dtype=torch.long)
            return Encoded(encoded.hidden[idx], encoded.lengths[idx], encoded.ids[idx])
    else:
        def enc(prompts: list[str], length: int | None = None) -> Encoded:
            return encode(pipe, prompts, length=length)
    # "last" needs rows only up to each prompt's last word token (the text encoder is causal): encode short
    width = None if token == "span" else max(token_lengths(pipe, erase))
    old, new = enc(erase, width), enc(guides, width)
    keep = enc(preserve, None if token == "span" else 1)
    d = old.hidden.shape[-1]
    rows = Rows.empty(d)
    pairs = pair_rows(old, new, token, empty_guide)
    if pairs:  # one concatenation (pair by pair re-copies the growing row set)
        rows.add_erase(torch.cat([c for c, _ in pairs]), torch.cat([g for _, g in pairs]), erase_scale)
    if preserve:
        kept = keep.last_token() if token == "last" else keep.hidden.reshape(-1, d)
        rows.add_preserve(kept, preserve_scale)
    return rows, pairs


def tensor_values(weights: dict[str, torch.Tensor], pairs: list[tuple[torch.Tensor, torch.Tensor]]
                  ) -> dict[str, torch.Tensor]:
    """Paper-era 'tensor' targets per layer: W g minus its component along u = W c / ||W c|| (per prompt pair)."""
    out = {}
    for name, w in weights.items():
        w64 = w.to("cpu", torch.float64)
        vals = []
        for c, g in pairs:
            u = c @ w64.T
            u = u / u.norm().clamp_min(1e-12)
            n = g @ w64.T
            vals.append(n - (u * n).sum() * u)
        out[name] = torch.cat(vals)
    return out


def uce(pipe: PipelineLike, request: EraseRequest, config: UCEConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """Erase `request.erase` from `pipe` with UCE; returns ({K/V weight name: new weight}, info)."""
    kind = concept_type(request.erase, config.concept_type, pipe)
    guides = request.guides(default_guide(kind))
    erase_prompts, guide_prompts = expanded_pairs(
        request.erase, guides, (config.templates or UCE_TEMPLATES[kind]) if config.expand_prompts else None)
    preserve = list(request.preserve) or ([""] if config.token == "span" else [])  # paper-era span: keep E("")
    rows, pairs = build(pipe, erase_prompts, guide_prompts, preserve, config.token, config.empty_guide,
                        config.erase_scale, config.preserve_scale)
    weights = kv_weights(pipe, with_to_k=config.with_to_k)
    values = None
    if config.technique == "tensor":
        # explicit per-layer targets need every erase row (even those equal to their guide row)
        rows = Rows.empty(rows.d)
        for c, g in pairs:
            rows.keys = torch.cat([rows.keys, c])
            rows.targets = torch.cat([rows.targets, g])
            rows.erase_w = torch.cat([rows.erase_w, torch.full((len(c),), config.erase_scale, dtype=torch.float64)])
        if preserve:
            keep = encode(pipe, preserve, length=None if config.token == "span" else 1)
            rows.add_preserve(keep.last_token() if config.token == "last" else keep.hidden.reshape(-1, rows.d),
                              config.preserve_scale)
        values = tensor_values(weights, pairs)
    new = solve(weights, rows, config.lamb, values=values)
    info = {"concept_type": kind, "guides": guides, "erase_rows": int(rows.keys.shape[0]),
            "preserve_rows": int(rows.preserve.shape[0]), "prompts": erase_prompts}
    return new, info


METHOD = Method("uce", UCEConfig, uce, paper="Gandikota et al., Unified Concept Editing in Diffusion Models, WACV 2024")
