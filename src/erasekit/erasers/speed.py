"""SPEED: Scalable, Precise, and Efficient Concept Erasure for Diffusion Models. Li et al. ICLR 2026.
arXiv:2503.07392; official code: github.com/Ouxiang-Li/SPEED (train_erase_null.py::edit_model).

A UCE-style closed-form edit of the cross-attention projections restricted to the *null space* of a retain set, so
retained keys keep their outputs exactly (UCE only trades them off). Per edited matrix W (out, d):

    S_tt = mean_i c_i c_i^T,  S_at = mean_i g_i c_i^T          (c: concept rows, g: anchor/guide rows; last token)
    P    = projector onto the eigenvectors of mean_r e_r e_r^T with eigenvalue < threshold   (retain rows e_r)
    M    = (S_tt P + retain_scale I)^-1
    dW   = W (S_at - S_tt) P (I - M K2 (K2^T P M K2 + lamb I)^-1 K2^T P) M

Refinements of the retain set (per layer, as the official code): influence-based filtering (keep retain rows whose
||E e|| is above the mean, E = W (S_at - S_tt)(I + S_tt)^-1 the unconstrained edit), directed prior augmentation
(`aug_num` perturbed copies e + n P0 per row, P0 = projector on W's smallest right singular vector, again keeping the
above-mean ones), and invariant constraints K2 (d, 4): the BOS row of "" and 3 k-means centres of its other rows,
which the edit leaves unchanged exactly when lamb = 0.

Defaults (official): to_v only, aug_num 10, threshold 0.1, retain_scale 1, lamb 0; last word token of each concept
and anchor (an empty anchor is BOS, index 0); with no retain prompts the retain set is the rows 1..76 of "".
With no retain rows (`retain_empty_prompt=False`, no preserve prompts) and `invariant=False`, P = I and SPEED is UCE
(token "last", empty_guide "bos", erase_scale 1/n, lamb retain_scale, no preserve rows).

Deviations from the official code:
  - Evaluated in low-rank form (S_tt and S_at - S_tt have rank n; P = I - Q Q^T from the (r, r) kernel matrix of
    the r retain rows; M applied by Woodbury), so no (d, d) inverse or eigendecomposition per layer; equal to the
    official formula in exact arithmetic (tested against UCE and the retained-row invariance).
  - Solves in float64; the K2 block uses a pseudo-inverse (official: `inverse`, which is singular when the invariant
    rows lie in the retained subspace, e.g. the default "" retain set with lamb 0).
  - k-means: a deterministic Lloyd's iteration from k-means++ seeding with `seed` (official: kmeans_pytorch, random).
  - Retain prompts containing an erased concept word are dropped (as official); nudity's all-token mode is not
    special-cased (pass `token="span"`-style prompts through preserve instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._closed_form import F64, PipelineLike, encode, kv_weights, token_lengths
from .concepts import CONCEPT_TYPES, concept_type, default_guide


@dataclass(frozen=True)
class SPEEDConfig:
    retain_scale: float = field(default=1.0, metadata={"help": "ridge of M = (S_tt P + retain_scale I)^-1"})
    threshold: float = field(default=0.1, metadata={"help": "eigenvalues of the retain Gram below this span P"})
    aug_num: int = field(default=10, metadata={"help": "directed prior augmentation: perturbed copies per row"})
    filter: bool = field(default=True, metadata={"help": "influence-based retain filtering (above-mean rows)"})
    invariant: bool = field(default=True, metadata={"help": "invariant constraints K2 from the rows of \"\""})
    lamb: float = field(default=0.0, metadata={"help": "ridge of the invariant-constraint block (0: exact)"})
    retain_empty_prompt: bool = field(default=True, metadata={
        "help": "with no preserve prompts, retain the rows 1..76 of \"\" (official)"})
    with_to_k: bool = field(default=False, metadata={"help": "edit to_k as well (official default: to_v only)"})
    concept_type: str = field(default="auto", metadata={"help": "'art', 'object' or 'auto'"})
    seed: int = field(default=0, metadata={"help": "seed of the augmentation noise and k-means"})

    def __post_init__(self) -> None:
        for name in ("retain_scale", "threshold", "lamb"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.retain_scale == 0:
            raise InvalidValueError("retain_scale must be > 0 (it keeps M invertible)")
        if self.aug_num < 0:
            raise InvalidValueError(f"aug_num must be >= 0, got {self.aug_num}")
        check_choice("concept_type", self.concept_type, CONCEPT_TYPES)


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iters: int = 50) -> torch.Tensor:
    """(k, d) centres of rows `x` (n, d): k-means++ seeding then Lloyd's iterations (deterministic given `gen`)."""
    centres = [x[int(torch.randint(len(x), (1,), generator=gen))]]
    for _ in range(1, k):
        dist = torch.cdist(x, torch.stack(centres)).min(1).values ** 2
        centres.append(x[int(torch.multinomial(dist / dist.sum(), 1, generator=gen))])
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)])
        if torch.equal(new, c):
            break
        c = new
    return c


def above_mean_lowrank(rows: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Rows (r, d) whose image under the edit X Z ((out, n) x (n, d)) has above-mean norm (the influence filter)."""
    norms = ((rows @ z.T) @ x.T).norm(dim=1)
    return rows[norms > norms.mean()]


def smallest_right_singular(w: torch.Tensor) -> torch.Tensor:
    """(d,) right singular vector of w (out, d) with the smallest of its min(out, d) singular values (official
    `torch.svd(W)[2][:, -1]`), from the eigendecomposition of the smaller Gram matrix, in float32 (it only sets the
    direction of the augmentation noise; the official code works in float32 too)."""
    w32 = w.float()
    if w.shape[0] < w.shape[1]:
        evecs = torch.linalg.eigh(w32 @ w32.T)[1]
        v = w32.T @ evecs[:, 0]
        v = v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)
    else:
        v = torch.linalg.eigh(w32.T @ w32)[1][:, 0]
    return v.to(w.dtype)


def retained_basis(rows: torch.Tensor, threshold: float) -> torch.Tensor:
    """(d, k) orthonormal eigenvectors of mean_r e_r e_r^T (rows (r, d)) with eigenvalue >= threshold: the null-space
    projector is P = I - Q Q^T. Computed from the (r, r) kernel matrix when r < d."""
    r, d = rows.shape
    if r == 0:
        return rows.new_zeros(d, 0)
    if r < d:
        evals, u = torch.linalg.eigh(rows @ rows.T / r)
        keep = evals >= max(threshold, torch.finfo(rows.dtype).eps * float(evals.max().clamp_min(0)) * r)
        return (rows.T @ u[:, keep]) / torch.sqrt(evals[keep] * r)
    evals, evecs = torch.linalg.eigh(rows.T @ rows / r)
    return evecs[:, evals >= threshold]


def m_apply(v: torch.Tensor, c: torch.Tensor, q: torch.Tensor, n: int, scale: float) -> torch.Tensor:
    """M v for v (d, m) (see `apply_m`; M is not symmetric)."""
    cp = c - (c @ q) @ q.T
    small = scale * torch.eye(n, dtype=c.dtype) + cp @ c.T / n
    return (v - c.T / n @ torch.linalg.solve(small, cp @ v)) / scale


def apply_m(a: torch.Tensor, c: torch.Tensor, q: torch.Tensor, n: int, scale: float) -> torch.Tensor:
    """a M for a (m, d), M = (S_tt P + scale I)^-1, S_tt = C^T C / n, P = I - Q Q^T (Woodbury with the (n, n) system
    scale I + C P C^T / n)."""
    cp = c - (c @ q) @ q.T  # C P (n, d)
    small = scale * torch.eye(n, dtype=c.dtype) + cp @ c.T / n  # (n, n)
    return (a - torch.linalg.solve(small.T, (a @ c.T / n).T).T @ cp) / scale


def speed(pipe: PipelineLike, request: EraseRequest, config: SPEEDConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """SPEED null-space-constrained erasure of `request.erase`; returns ({weight name: new weight}, info)."""
    kind = concept_type(request.erase, config.concept_type, pipe)
    anchors = request.guides(default_guide(kind))
    erase = list(request.erase)
    width = max(token_lengths(pipe, erase + anchors))
    old, new = encode(pipe, erase, length=width), encode(pipe, anchors, length=width)
    c, g = old.last_token(), new.last_token()  # (n, d); an empty anchor gives BOS (index 0), as official
    n, d = c.shape
    s_tt = c.T @ c / n
    s_at = g.T @ c / n

    words = [w.lower() for w in erase]
    retain = [p for p in request.preserve if not any(re.search(r"\b" + re.escape(w) + r"\b", p.lower())
                                                      for w in words)]
    gen = torch.Generator().manual_seed(config.seed)
    empty = encode(pipe, [""]).hidden[0]  # (L, d)
    if retain:
        ret_rows = encode(pipe, retain, length=max(token_lengths(pipe, retain))).last_token()
    elif config.retain_empty_prompt:
        ret_rows = empty[1:]
    else:
        ret_rows = torch.zeros(0, d, dtype=F64)
    ret_rows = ret_rows[torch.randperm(len(ret_rows), generator=gen)]
    k2 = torch.cat([empty[:1], kmeans(empty[1:], 3, gen)]).T if config.invariant else None  # (d, 4)

    # every (d, d) operator is low rank around I: S_tt = C^T C / n, S_at - S_tt = (G - C)^T C / n, so each layer works
    # with (n, d) and (r, d) factors (n concepts, r retain rows) instead of d x d inverses and eigendecompositions
    y = c / n  # (n, d): S_at - S_tt = (G - C)^T Y
    z = torch.linalg.solve(torch.eye(n, dtype=F64) + c @ c.T / n, y)  # (n, d): Y (I + S_tt)^-1 (push-through)
    out: dict[str, torch.Tensor] = {}
    kept = []
    for name, w0 in kv_weights(pipe, with_to_k=config.with_to_k).items():
        w = w0.to("cpu", F64)
        x = w @ (g - c).T  # (out, n): W (S_at - S_tt) = X Y, the unconstrained edit is X Z
        rows = ret_rows
        if len(rows) and config.aug_num > 0 and config.filter:
            rows = above_mean_lowrank(rows, x, z)
        if len(rows) and config.aug_num > 0:
            v_min = smallest_right_singular(w)  # (d,)
            noise = torch.randn(config.aug_num, *rows.shape, generator=gen, dtype=F64) @ torch.outer(v_min, v_min)
            aug = (rows[None] + noise).reshape(-1, d)
            rows = torch.cat([rows, above_mean_lowrank(aug, x, z)])
        kept.append(int(len(rows)))
        q = retained_basis(rows, config.threshold)  # (d, k): P = I - Q Q^T
        delta_right = y - (y @ q) @ q.T  # Y P  (n, d)
        if k2 is not None:
            mk2 = m_apply(k2, c, q, n, config.retain_scale)  # M K2 (d, 4)
            pk2 = k2 - q @ (q.T @ k2)  # P K2
            block = pk2.T @ mk2 + config.lamb * torch.eye(k2.shape[1], dtype=F64)  # K2^T P M K2
            delta_right = delta_right - (delta_right @ mk2) @ torch.linalg.pinv(block) @ pk2.T
        delta = x @ apply_m(delta_right, c, q, n, config.retain_scale)  # X (Y P core) M
        out[name] = (w + delta).to(w0.dtype)
    info = {"concept_type": kind, "anchors": anchors, "retain_prompts": len(retain),
            "retain_rows_per_layer": kept}
    return out, info


METHOD = Method("speed", SPEEDConfig, speed,
                paper="Li et al., SPEED: Scalable, Precise, and Efficient Concept Erasure for Diffusion Models, "
                      "ICLR 2026")
