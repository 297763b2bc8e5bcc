"""Linear algebra shared by the closed-form erasers (UCE, RECE, MACE stage 1, RealEra).

Every method here edits the cross-attention key/value projections W (out, d) of a UNet and solves

    min_W  lamb ||W - W0||_F^2 + sum_i w_i ||W c_i - W0 g_i||^2 + sum_j u_j ||W p_j - W0 p_j||^2

(c_i: "erase" rows of text-encoder output, g_i: the rows they should behave like, p_j: rows to preserve). Its solution
(UCE paper eq. 7) is W* = [lamb W0 + sum w W0 g c^T + sum u W0 p p^T] M^-1 with M = lamb I + sum w c c^T + sum u p p^T,
which we evaluate in the residual form

    W* = W0 + W0 (G - C)^T diag(w) C M^-1        (D = G - C has rank <= number of erase rows)

so one (d, d) Cholesky factorisation is shared by every layer and each layer costs O(out * d * n_erase) instead of a
(d, d) inverse and a dense (out, d) x (d, d) product. The solve runs in float64; per-layer products run in the
weights' precision (float32 for float32 models, float64 in the fidelity tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..conditioning import F64, PipelineLike, adversarial_embedding, cholesky, cross_attention_kv, \
    cross_attention_modules, kv_weights
from ..errors import InvalidValueError

# PipelineLike, the K/V weight access and RECE's adversarial_embedding live in erasekit.conditioning (shared with the
# attacks); they are imported here for the closed-form erasers, which read them from this module.
__all__ = ["F64", "Encoded", "PipelineLike", "Rows", "adversarial_embedding", "cross_attention_kv",
           "apply_right", "cross_attention_modules", "encode", "kv_weights", "non_concept_pair", "normal_matrix",
           "right_update", "solve", "span_pair", "token_lengths", "weight_gram"]


# ------------------------------------------------------------------------------------------------ text rows


@dataclass(frozen=True)
class Encoded:
    """Text-encoder outputs of some prompts: `hidden` (N, L, d) float64, `lengths` (N,) tokens incl. BOS/EOS,
    `ids` (N, L) token ids (padded to the tokenizer's max length, L = 77 for CLIP)."""

    hidden: torch.Tensor
    lengths: torch.Tensor
    ids: torch.Tensor

    def last_token(self) -> torch.Tensor:
        """(N, d): the row of each prompt's last word token (index length - 2; BOS for an empty prompt)."""
        idx = (self.lengths - 2).clamp(min=0)
        return self.hidden[torch.arange(len(idx)), idx]


def token_lengths(pipe: PipelineLike, prompts: Sequence[str]) -> list[int]:
    """Tokens per prompt including BOS and EOS (truncated to the tokenizer's max length)."""
    tok = pipe.tokenizer
    return [len(ids) for ids in tok(list(prompts), truncation=True, max_length=tok.model_max_length).input_ids]


@torch.no_grad()
def encode(pipe: PipelineLike, prompts: Sequence[str], length: int | None = None, batch_size: int = 64) -> Encoded:
    """Encode `prompts` with the pipeline's tokenizer + text encoder (last hidden state, as SD1.x conditions on).

    length: rows to compute per prompt (padding after EOS as the pipeline does); None = the tokenizer's max length
    (77). The text encoder is causal, so rows before `length` do not depend on it: a short `length` gives the same
    rows, faster. It is raised to the longest prompt if needed.
    """
    tok, enc = pipe.tokenizer, pipe.text_encoder
    prompts = list(prompts)
    full = tok.model_max_length
    if not prompts:
        return Encoded(torch.zeros(0, length or full, enc.config.hidden_size, dtype=F64),
                       torch.zeros(0, dtype=torch.long), torch.zeros(0, length or full, dtype=torch.long))
    unique = list(dict.fromkeys(prompts))
    width = full if length is None else min(full, max(length, *token_lengths(pipe, unique)))
    hidden, lengths, ids = [], [], []
    for i in range(0, len(unique), batch_size):
        t = tok(unique[i:i + batch_size], padding="max_length", max_length=width, truncation=True,
                return_tensors="pt")
        h = enc(t.input_ids.to(enc.device))[0]
        hidden.append(h.to("cpu", F64))
        lengths.append(t.attention_mask.sum(1))
        ids.append(t.input_ids)
    hidden_u, lengths_u, ids_u = torch.cat(hidden), torch.cat(lengths), torch.cat(ids)
    if len(unique) == len(prompts):
        return Encoded(hidden_u, lengths_u, ids_u)
    index = torch.tensor([unique.index(p) for p in prompts])
    return Encoded(hidden_u[index], lengths_u[index], ids_u[index])


def span_pair(old: Encoded, i: int, new: Encoded, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper-era UCE token span: rows from each prompt's last word token through EOS and padding, cut to equal length.

    Returns (old rows (n, d), new rows (n, d)) with n = L - max(k_old, k_new), k = last word token index.
    """
    length = old.hidden.shape[1]
    k_old, k_new = int(old.lengths[i]) - 2, int(new.lengths[j]) - 2
    k_old, k_new = max(k_old, 0), max(k_new, 0)
    n = length - max(k_old, k_new)
    return old.hidden[i, k_old:k_old + n], new.hidden[j, k_new:k_new + n]


def non_concept_pair(old: Encoded, i: int, new: Encoded, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MACE contexts: the rows of prompt `old[i]` that are not the words that differ from `new[j]`, paired with the
    matching rows of `new[j]`: the common prefix, the common suffix (through EOS), then the padding rows aligned by
    their offset after EOS (as many as both prompts have). Returns (old rows (n, d), new rows (n, d))."""
    length = old.hidden.shape[1]
    lo, ln = int(old.lengths[i]), int(new.lengths[j])
    a, b = old.ids[i, :lo].tolist(), new.ids[j, :ln].tolist()
    p = 0
    while p < min(lo, ln) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(lo, ln) - p and a[lo - 1 - s] == b[ln - 1 - s]:
        s += 1
    n_pad = length - max(lo, ln)
    rows_old = list(range(p)) + list(range(lo - s, lo)) + list(range(lo, lo + n_pad))
    rows_new = list(range(p)) + list(range(ln - s, ln)) + list(range(ln, ln + n_pad))
    return old.hidden[i, rows_old], new.hidden[j, rows_new]


# ------------------------------------------------------------------------------------------------ the solve


@dataclass
class Rows:
    """Constraints of one closed-form edit (all float64, d = cross-attention input dim).

    erase: keys (n_e, d) whose projections should equal those of `targets` (n_e, d) under the reference weights,
    with weights `erase_w` (n_e,); preserve: keys (n_p, d) whose projections should stay, with weights `preserve_w`.
    """

    keys: torch.Tensor
    targets: torch.Tensor
    erase_w: torch.Tensor
    preserve: torch.Tensor
    preserve_w: torch.Tensor

    @classmethod
    def empty(cls, d: int) -> Rows:
        z = torch.zeros(0, d, dtype=F64)
        return cls(z, z.clone(), torch.zeros(0, dtype=F64), z.clone(), torch.zeros(0, dtype=F64))

    def add_erase(self, keys: torch.Tensor, targets: torch.Tensor, weight: float | torch.Tensor) -> None:
        """Add rows mapping `keys` (n, d) to `targets` (n, d); rows where key == target go to the preserve set."""
        keys, targets = keys.to(F64).reshape(-1, keys.shape[-1]), targets.to(F64).reshape(-1, targets.shape[-1])
        if keys.shape != targets.shape:
            raise InvalidValueError(f"erase keys {tuple(keys.shape)} and targets {tuple(targets.shape)} differ "
                                    "in shape")
        w = torch.as_tensor(weight, dtype=F64).expand(len(keys)).clone()
        same = (keys == targets).all(1)
        self.add_preserve(keys[same], w[same])
        self.keys = torch.cat([self.keys, keys[~same]])
        self.targets = torch.cat([self.targets, targets[~same]])
        self.erase_w = torch.cat([self.erase_w, w[~same]])

    def add_preserve(self, rows: torch.Tensor, weight: float | torch.Tensor) -> None:
        rows = rows.to(F64).reshape(-1, rows.shape[-1])
        self.preserve = torch.cat([self.preserve, rows])
        self.preserve_w = torch.cat([self.preserve_w, torch.as_tensor(weight, dtype=F64).expand(len(rows))])

    @property
    def d(self) -> int:
        return self.keys.shape[1]


def normal_matrix(rows: Rows, lamb: float) -> torch.Tensor:
    """M = lamb I + sum w c c^T + sum u p p^T, (d, d) float64."""
    d = rows.d
    m = lamb * torch.eye(d, dtype=F64)
    m += (rows.keys * rows.erase_w[:, None]).T @ rows.keys
    m += (rows.preserve * rows.preserve_w[:, None]).T @ rows.preserve
    return m


def _cholesky(m: torch.Tensor, lamb: float) -> torch.Tensor:
    return cholesky(m, f"lamb={lamb}; with lamb=0 it needs at least as many independent erase + preserve rows as "
                       "dimensions; set lamb > 0 or add preserve prompts")


def right_update(rows: Rows, lamb: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The edit as a right factor of the reference weights: W* = W0 + W0 U V for every layer at once.

    Returns (U (d, n_e), V (n_e, d)) float64 (U = D^T, V = K = diag(w) C M^-1), or (U V (d, d), None) when
    n_e > d / 2 (the dense product is then cheaper per layer). Raises InvalidValueError when M is singular."""
    chol = _cholesky(normal_matrix(rows, lamb), lamb)
    # K = diag(w) C M^-1  (n_e, d)
    k = torch.cholesky_solve((rows.keys * rows.erase_w[:, None]).T, chol).T
    diff = rows.targets - rows.keys  # D (n_e, d)
    if k.shape[0] > k.shape[1] // 2:
        return diff.T @ k, None  # (d, d): W* = W0 (I + D^T K)
    return diff.T, k


def apply_right(weights: dict[str, torch.Tensor], u: torch.Tensor, v: torch.Tensor | None
                ) -> dict[str, torch.Tensor]:
    """{name: W + W u v} (or W + W u with v None, u (d, d)); products on the weights' device, in float32 unless the
    weights are float64, result in the weights' dtype."""
    out: dict[str, torch.Tensor] = {}
    for name, w in weights.items():
        cdt, dev = (F64 if w.dtype == F64 else torch.float32), w.device
        w_c = w.to(cdt)
        delta = w_c @ u.to(dev, cdt) if v is None else (w_c @ u.to(dev, cdt)) @ v.to(dev, cdt)
        out[name] = (w_c + delta).to(w.dtype)
    return out


def solve(weights: dict[str, torch.Tensor], rows: Rows, lamb: float,
          values: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """New weights {name: (out, d)} minimising the objective in the module docstring, with W0 = `weights`.

    Targets are W0 g (rows.targets) unless `values` gives explicit targets {name: (n_e, out)} per layer (UCE's
    'tensor' technique). Raises InvalidValueError when M is not positive definite.
    """
    if rows.keys.shape[0] == 0:
        return {n: w.clone() for n, w in weights.items()}
    if values is None:
        return apply_right(weights, *right_update(rows, lamb))
    chol = _cholesky(normal_matrix(rows, lamb), lamb)
    k = torch.cholesky_solve((rows.keys * rows.erase_w[:, None]).T, chol).T  # K = diag(w) C M^-1  (n_e, d)
    out: dict[str, torch.Tensor] = {}
    for name, w in weights.items():  # per-layer products on the weights' device, float32 unless float64
        cdt, dev = (F64 if w.dtype == F64 else torch.float32), w.device
        w_c = w.to(cdt)
        resid = values[name].to(dev, cdt) - rows.keys.to(dev, cdt) @ w_c.T  # (n_e, out)
        out[name] = (w_c + resid.T @ k.to(dev, cdt)).to(w.dtype)
    return out


# ------------------------------------------------------------------------------------------------ Gram of the weights

_GRAMS: dict[tuple, torch.Tensor] = {}
_GRAM_CACHE_SIZE = 4  # models (or weight states) whose Gram is kept; each entry is one (d, d) float64 matrix
_GRAM_SAMPLE_STRIDE = 101  # every 101st weight entry enters the cache key's checksum (coprime with usual widths)


def _gram_key(weights: Sequence[torch.Tensor]) -> tuple:
    """Identity of the weights' current content: storage address, in-place version counter (shared by `.detach()`
    views and bumped by every in-place write, e.g. Edit.apply / revert), shape, dtype, device, and a float64 checksum
    of a strided sample of the entries."""
    return tuple((w.data_ptr(), w._version, tuple(w.shape), str(w.dtype), str(w.device),
                  float(w.detach().reshape(-1)[::_GRAM_SAMPLE_STRIDE].to(F64).sum())) for w in weights)


def weight_gram(weights: Sequence[torch.Tensor], cache: bool = True) -> torch.Tensor:
    """G = sum_l W_l^T W_l (d, d), formed in float64 on the CPU (the dominant cost of RECE's adversarial embedding
    at SD1.5 size: sum over layers of out_l * d^2 multiply-adds).

    cache: keep the result for the same weight state (see `_gram_key`; a few states at most), so repeated erasures
    from the same base model share it. Any in-place change of a weight changes the key."""
    key = _gram_key(weights) if cache else None
    if key is not None and key in _GRAMS:
        return _GRAMS[key]
    d = weights[0].shape[1]
    gram = torch.zeros(d, d, dtype=F64)
    for w in weights:
        w64 = w.detach().to("cpu", F64)
        gram += w64.T @ w64
    if key is not None:
        if len(_GRAMS) >= _GRAM_CACHE_SIZE:
            _GRAMS.pop(next(iter(_GRAMS)))
        _GRAMS[key] = gram
    return gram
