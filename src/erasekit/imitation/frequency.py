"""Training frequency of concepts in a captioned dataset, as FIT counts them over LAION.

1. Caption matching: an image counts for a concept when its caption mentions one of the concept's names (whole words,
   case-insensitive).
2. Optional image confirmation (MIMETIC-2): a caption-matched image is kept when its maximum cosine similarity to any
   reference image of the concept exceeds a threshold; the threshold can be chosen to maximise F1 on labelled examples.

For the toy world, `toy_frequencies` returns true counts (from the scenes' ground truth), caption-matched counts and
image-confirmed counts side by side: captions name an artist only ~78% of the time, so caption counts undercount.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import InvalidValueError
from .score import Embedder, embed, similarity_matrix


def _pattern(names: Iterable[str]) -> re.Pattern:
    names = [n.strip() for n in names]
    bad = [n for n in names if not n]
    if bad or not names:
        raise InvalidValueError(f"empty concept name in {list(names)!r}: every concept needs a non-empty name")
    alts = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
    return re.compile(rf"(?<![\w]){'(?:' + alts + ')'}(?![\w])", re.IGNORECASE)


def caption_matches(captions: Sequence[str], names: str | Iterable[str]) -> np.ndarray:
    """(N,) bool: caption i mentions one of `names` as whole words (case-insensitive)."""
    pat = _pattern([names] if isinstance(names, str) else names)
    return np.array([bool(pat.search(c)) for c in captions], dtype=bool)


def count_by_captions(captions: Sequence[str], concepts: Mapping[str, Iterable[str]] | Iterable[str]) -> dict[str, int]:
    """{concept: number of captions that mention it}; `concepts` is a list of names or {concept: [aliases]}."""
    table = dict(concepts) if isinstance(concepts, Mapping) else {c: [c] for c in concepts}
    if not table:
        raise InvalidValueError("no concepts to count")
    return {c: int(caption_matches(captions, [c, *aliases]).sum()) for c, aliases in table.items()}


def max_similarity(candidates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(N,) maximum cosine similarity of each candidate (N, D) to any reference (R, D)."""
    return similarity_matrix(candidates, references).max(dim=1).values.float()


def max_f1_threshold(similarities: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> tuple[float, float]:
    """(threshold, F1): the cut on `similarities` (keep > threshold) that maximises F1 against boolean `labels`."""
    s = np.asarray(similarities, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1 or len(s) == 0:
        raise InvalidValueError(f"need equal-length non-empty 1-D similarities and labels; got {s.shape} and {y.shape}")
    if not y.any():
        raise InvalidValueError("labels contain no positive example; F1 is undefined")
    cuts = np.unique(s)
    best = (-1.0, float(cuts[0]) - 1e-6)
    for i, c in enumerate(cuts):
        lo = float(cuts[i - 1]) if i else float(c) - 1e-6
        thr = (lo + float(c)) / 2  # keep every similarity >= c
        pred = s > thr
        tp = float((pred & y).sum())
        f1 = 2 * tp / (pred.sum() + y.sum()) if pred.any() else 0.0
        if f1 > best[0]:
            best = (f1, thr)
    return best[1], best[0]


@dataclasses.dataclass(frozen=True)
class ConceptCount:
    """Training frequency of one concept, three ways."""

    concept: str
    true: int  # ground truth (toy world only)
    caption: int  # captions mentioning the concept
    confirmed: int | None = None  # caption-matched images confirmed by image similarity to reference images
    details: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"concept": self.concept, "true": self.true, "caption": self.caption, "confirmed": self.confirmed,
                **self.details}
