"""LEACE baseline: LEACE: Perfect linear concept erasure in closed form. Belrose, Schneider-Joseph, Ravfogel, Cotterell,
Raff, Biderman. NeurIPS 2023. arXiv:2306.03819; reference implementation: the `concept-erasure` package
(EleutherAI/concept-erasure, LeaceFitter).

Fits the least-squares concept eraser r(x) = x - M (x - mu) on text-encoder output rows (x: (d,), one per token),
where no linear classifier can then tell rows of prompts with the concept from rows of the same prompts with the guide
(and of preserve prompts). With Sigma = Cov(x), W = Sigma^-1/2 (pseudo-inverse on the non-null space) and P the
orthogonal projection onto the columns of W Cov(x, z):  M = W^+ P W.

The eraser is applied to the text-encoder output as seen by the UNet, folded into every cross-attention exactly:
to_k.weight <- W_k (I - M), to_v.weight <- W_v (I - M), to_out.0.bias <- b + W_o W_v M mu. The constant W_k M mu
added to every key shifts all attention logits of a query equally (softmax-invariant); the constant added to every
value passes through the attention average into the output bias. So the edited UNet given E(p) equals the original
UNet given r(E(p)) (to float precision), and the edit is an ordinary reversible `Edit`.

Rows: for each erase concept and each prompt (the concept alone, plus `templates`), the rows from the first token where
the prompt differs from the same prompt with the guide concept through the last padding row are class "concept i";
the guide prompt's rows at the same positions, and all rows but BOS of the preserve prompts, are class "none".

Deviations: not an erasure method from the diffusion literature; a representation-level baseline. Our own torch
implementation (float64), checked in tests against the constrained least-squares optimum it claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._closed_form import F64, PipelineLike, cross_attention_modules, encode
from .concepts import CONCEPT_TYPES, UCE_TEMPLATES, check_templates, concept_type, default_guide


@dataclass(frozen=True)
class LEACEConfig:
    expand_prompts: bool = field(default=True, metadata={"help": "fit on templated prompts too (UCE's templates)"})
    templates: tuple[str, ...] = field(default=(), metadata={"help": "templates with '{}' (default: per kind)"})
    concept_type: str = field(default="auto", metadata={"help": "'art', 'object' or 'auto'"})
    tol: float = field(default=1e-8, metadata={"help": "relative eigenvalue cut-off of the covariance pseudo-inverse"})

    def __post_init__(self) -> None:
        if not 0 < self.tol < 1:
            raise InvalidValueError(f"tol must be in (0, 1), got {self.tol}")
        check_choice("concept_type", self.concept_type, CONCEPT_TYPES)
        check_templates(self.templates)


def leace_fit(x: torch.Tensor, z: torch.Tensor, tol: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """LEACE for rows `x` (n, d) and labels `z` (n, k) -> (M (d, d), mu (d,)) with r(x) = x - M (x - mu). float64."""
    x, z = x.to(F64), z.to(F64)
    if x.shape[0] != z.shape[0]:
        raise InvalidValueError(f"x has {x.shape[0]} rows but z has {z.shape[0]}")
    mu = x.mean(0)
    xc = x - mu
    sigma = xc.T @ xc / len(x)
    sigma_xz = xc.T @ (z - z.mean(0)) / len(x)  # (d, k)
    evals, evecs = torch.linalg.eigh(sigma)
    keep = evals > tol * evals.max().clamp_min(1e-300)
    v, lam = evecs[:, keep], evals[keep]
    whiten = (v * lam.rsqrt()) @ v.T  # Sigma^-1/2
    unwhiten = (v * lam.sqrt()) @ v.T  # Sigma^1/2 (the pseudo-inverse of whiten)
    u, s, _ = torch.linalg.svd(whiten @ sigma_xz, full_matrices=False)
    u = u[:, s > tol * s.max().clamp_min(1e-300)] if s.numel() else u[:, :0]
    proj = u @ u.T
    return unwhiten @ proj @ whiten, mu


def _neutral(template: str, guide: str) -> str:
    return " ".join(template.format(guide).split())


def fit_eraser(pipe: PipelineLike, request: EraseRequest,
               config: LEACEConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Fit LEACE on the text-encoder rows described in the module docstring -> (M (d, d), mu (d,), info)."""
    kind = concept_type(request.erase, config.concept_type, pipe)
    guides = request.guides(default_guide(kind))
    templates = ["{}"] + (list(config.templates or UCE_TEMPLATES[kind]) if config.expand_prompts else [])
    old_p, new_p, label = [], [], []
    for i, (c, g) in enumerate(zip(request.erase, guides, strict=True)):
        for t in templates:
            old_p.append(t.format(c))
            new_p.append(_neutral(t, g))
            label.append(i)
    old, new = encode(pipe, old_p), encode(pipe, new_p)
    xs, zs = [], []
    k = len(request.erase)
    for j in range(len(old_p)):
        lo = int(old.lengths[j])
        a, b = old.ids[j, :lo].tolist(), new.ids[j].tolist()
        p = 0
        while p < lo and a[p] == b[p]:
            p += 1
        pos, neg = old.hidden[j, p:], new.hidden[j, p:]
        xs += [pos, neg]
        onehot = torch.zeros(len(pos), k, dtype=F64)
        onehot[:, label[j]] = 1
        zs += [onehot, torch.zeros(len(neg), k, dtype=F64)]
    if request.preserve:
        keep = encode(pipe, list(request.preserve)).hidden[:, 1:]
        xs.append(keep.reshape(-1, keep.shape[-1]))
        zs.append(torch.zeros(xs[-1].shape[0], k, dtype=F64))
    m, mu = leace_fit(torch.cat(xs), torch.cat(zs), config.tol)
    info = {"concept_type": kind, "guides": guides, "rows": int(sum(len(x) for x in xs)),
            "rank": int(torch.linalg.matrix_rank(m)), "templates": templates}
    return m, mu, info


def leace(pipe: PipelineLike, request: EraseRequest, config: LEACEConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """Fit LEACE for `request.erase` on text-encoder rows, fold it into the cross-attention -> (tensors, info)."""
    m, mu, info = fit_eraser(pipe, request, config)
    eye = torch.eye(m.shape[0], dtype=F64)
    out: dict[str, torch.Tensor] = {}
    for name, attn in cross_attention_modules(pipe.unet).items():
        if getattr(attn, "norm_cross", None) is not None:
            raise InvalidValueError(f"{name} normalises encoder states before to_k/to_v; LEACE cannot be folded "
                                    "into it")
        out_lin = attn.to_out[0]
        if out_lin.bias is None:
            raise InvalidValueError(f"{name}.to_out.0 has no bias to absorb LEACE's constant term")
        wk, wv = attn.to_k.weight.detach().to("cpu", F64), attn.to_v.weight.detach().to("cpu", F64)
        out[f"{name}.to_k.weight"] = (wk @ (eye - m)).to(attn.to_k.weight.dtype)
        out[f"{name}.to_v.weight"] = (wv @ (eye - m)).to(attn.to_v.weight.dtype)
        shift = out_lin.weight.detach().to("cpu", F64) @ (wv @ (m @ mu))
        out[f"{name}.to_out.0.bias"] = (out_lin.bias.detach().to("cpu", F64) + shift).to(out_lin.bias.dtype)
    return out, info


METHOD = Method("leace", LEACEConfig, leace,
                paper="Belrose et al., LEACE: Perfect linear concept erasure in closed form, NeurIPS 2023")
