"""Imitation score (FIT / MIMETIC-2): how close a model's generations of a concept are to the concept's training images.

With unit-normalised embeddings G (n_gen, D) of the generations and T (n_train, D) of the training images,
S = G T^T (n_gen, n_train) holds cosine similarities. The k training images with the highest mean similarity to the
generations (column means of S) are kept, and the score is the mean of S over those k columns (k = min(k, n_train)).

The embedding is pluggable: any callable images -> (N, D) tensor (`Embedder`). Any evaluator with image features gives
one: `evaluator_embedder(evaluator)` (the toy world's oracle: its penultimate features); for real models pass a style
or face embedding model of your own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError

# images (anything the embedder accepts: (N, H, W, 3) uint8 arrays, tensors, PIL lists) -> (N, D) embeddings
Embedder = Callable[[Any], torch.Tensor]

TOP_K = 10  # MIMETIC-2 keeps the 10 training images closest to the generations on average


@dataclass(frozen=True)
class ImitationScore:
    """The imitation score of one concept and what it was computed from."""

    score: float  # mean cosine similarity between the generations and the k selected training images
    k: int  # training images actually kept: min(k, n_train)
    n_generated: int
    n_training: int
    top_indices: tuple[int, ...]  # indices (into the training set) of the kept images, most similar first

    def to_dict(self) -> dict:
        return {"score": self.score, "k": self.k, "n_generated": self.n_generated, "n_training": self.n_training,
                "top_indices": list(self.top_indices)}


def _as_matrix(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().double()
    if t.ndim != 2:
        raise InvalidValueError(f"{what} embeddings must be a 2-D (N, D) tensor; got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise InvalidValueError(f"no {what} images: {what} embeddings have shape {tuple(t.shape)}; "
                                f"the imitation score needs at least one {what} image")
    if not torch.isfinite(t).all():
        raise InvalidValueError(f"{what} embeddings contain NaN or inf")
    return t


def normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, (N, D) -> (N, D); zero rows stay zero."""
    return x / (x.norm(dim=1, keepdim=True) + 1e-16)


def similarity_matrix(generated: torch.Tensor | np.ndarray, training: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Cosine similarities S (n_gen, n_train) between generated (n_gen, D) and training (n_train, D) embeddings."""
    g, t = _as_matrix(generated, "generated"), _as_matrix(training, "training")
    if g.shape[1] != t.shape[1]:
        raise InvalidValueError(f"embedding sizes differ: generated D={g.shape[1]}, training D={t.shape[1]}")
    return normalise(g) @ normalise(t).T


def imitation_score(generated: torch.Tensor | np.ndarray, training: torch.Tensor | np.ndarray,
                    k: int = TOP_K) -> ImitationScore:
    """Top-k imitation score of one concept from generated (n_gen, D) and training (n_train, D) embeddings."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidValueError(f"k must be a positive integer; got {k!r} (the published value is {TOP_K})")
    s = similarity_matrix(generated, training)  # (n_gen, n_train)
    k_used = min(k, s.shape[1])
    mean_per_train = s.mean(dim=0)  # (n_train,)
    top = torch.argsort(mean_per_train, descending=True, stable=True)[:k_used]
    return ImitationScore(score=float(s[:, top].mean()), k=k_used, n_generated=s.shape[0], n_training=s.shape[1],
                          top_indices=tuple(int(i) for i in top))


def embed(embedder: Embedder, images: Any, what: str = "images") -> torch.Tensor:
    """Call `embedder` and check that it returned an (N, D) tensor with one row per image."""
    n = len(images)
    if n == 0:
        raise InvalidValueError(f"no {what} to embed (got an empty set)")
    out = embedder(images)
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    if out.ndim != 2 or out.shape[0] != n:
        raise InvalidValueError(f"the embedder returned shape {tuple(out.shape)} for {n} {what}; expected ({n}, D)")
    return out.float()


def evaluator_embedder(evaluator: Any) -> Embedder:
    """The image features of an `erasekit.evaluators.Evaluator` (its `embed`; e.g. the toy oracle's penultimate
    features), as an Embedder. `evaluator` may be a registered name."""
    from ..evaluators import get_evaluator

    return get_evaluator(evaluator).embed


def score_images(embedder: Embedder, generated: Any, training: Any, k: int = TOP_K) -> ImitationScore:
    """Embed generated and training images with `embedder`, then `imitation_score`."""
    return imitation_score(embed(embedder, generated, "generated images"), embed(embedder, training, "training images"), k)
