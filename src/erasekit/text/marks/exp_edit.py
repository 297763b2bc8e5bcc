"""Robust distortion-free watermark, EXP-edit (Kuditipudi, Thickstun, Hashimoto, Liang, "Robust Distortion-free
Watermarks for Language Models", TMLR 2024, arXiv:2307.15593; official code github.com/jthickstun/watermark:
demo/generate.py, demo/detect.py, demo/levenshtein.pyx, watermarking/gumbel/*, watermarking/detection.py).

Key: a sequence xi of n vectors in [0, 1]^V (n = `key_length`, official 256), expanded from the key's secret.
Embed (exponential-minimum sampling): generation i of a text with random offset s emits
y_i = argmax_v xi[(s + i) mod n, v] ** (1 / p_i(v)) (computed as argmax log(xi) / p), a deterministic function of
the key and the model's distribution; over the key's randomness y_i ~ p_i exactly (distortion-free).
Detect: the cost of aligning the text y_1..y_m with the key segment starting at shift j is the Levenshtein-style
distance d_gamma with match cost log(1 - xi[j + t, y_u]) (<= 0) and insertion / deletion cost gamma (official
gamma 0.0 for the EXP method); the statistic is the minimum over the n shifts (lower = more marked). p-value: the
permutation test of the official demo, (1 + #{null <= observed}) / (n_runs + 1) with nulls computed from fresh
independent key sequences; marked iff p <= fpr. Detection.score = -statistic (higher = more marked).

Deviations from the official code (and why):
- the key sequence comes from numpy's PCG64 seeded with the key file's 256-bit secret (official: a Mersenne twister
  seeded with a small integer); each entry has 24 random bits in (0, 1) (never exactly 0 or 1, so log(1 - xi) is
  finite).
- the sampling runs as a transformers LogitsProcessor that keeps only the chosen token (usable with any
  `model.generate`); the random offset per text is drawn from `seed` (official: unseeded torch.randint, "deliberately
  not controlling this randomness") so runs are reproducible. Detection searches every offset either way.
- the DP is vectorised over shifts and null keys (row by row with a cumulative minimum, exact for gamma >= 0) instead
  of Cython loops; null keys are drawn only at the distinct tokens of the text, which has the same distribution as the
  official full (n, V) draw because the statistic reads no other entry.
- the whole text is one block (the official demo's k = len(tokens)); the sliding-window blocks of the experiments
  (k < m, for copy-paste mixing) are not implemented.
- with p-values, Detection.extra["z"] is the statistic standardised by its own null keys (comparable across texts;
  ROC curves over many texts use it, the raw cost depends on the text's length and tokens).

Measured (bench/textmarks/text_marks.py, BENCHMARKS.md, "Text marks"): on the low-entropy text-world model the official
gamma = 0 (free insertions/deletions, so null keys also find good alignments) is weak at the
lengths measured; a large gamma (no edits: the plain EXP statistic) detects far more unedited text, and gamma 1-2 trades
between the two under insertions/deletions. The default stays the official value; pass gamma= to choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import InvalidValueError
from . import Detection, TextKey, TextWatermark, check_fpr

PAPER_KEY_LENGTH = 256  # official n
PAPER_GAMMA = 0.0  # official insertion/deletion cost of the EXP-edit runs (experiments/scripts: gamma_gu=0.0)
PAPER_RUNS = 100  # official demo's permutation-test runs
RANDOM_BITS = 24  # random bits per key entry (float32 mantissa)
NULL_CHUNK_ELEMS = 1 << 24  # cost-matrix entries per DP batch (memory bound, ~64 MB)


@dataclass(frozen=True)
class ExpEditConfig:
    key_length: int = field(default=PAPER_KEY_LENGTH, metadata={"help": "n: length of the key sequence (official 256)"})
    gamma: float = field(default=PAPER_GAMMA, metadata={"help": "insertion/deletion cost of the alignment "
                                                                 "(official 0.0 for EXP-edit)"})
    n_runs: int = field(default=PAPER_RUNS - 1, metadata={
        "help": "null keys of the permutation test (p >= 1 / (n_runs + 1); official demo 100)"})
    fpr: float = field(default=0.01, metadata={"help": "decision level: marked iff p-value <= fpr"})
    null_seed: int = field(default=0, metadata={"help": "seed of the null keys (the p-value is a Monte Carlo "
                                                         "estimate; fixed for reproducibility)"})

    def __post_init__(self) -> None:
        for name in ("key_length", "n_runs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidValueError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0.0 <= self.gamma < 1e3:
            raise InvalidValueError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        check_fpr("fpr", self.fpr)
        if 1.0 / (self.n_runs + 1) > self.fpr:
            raise InvalidValueError(f"n_runs={self.n_runs} cannot give a p-value <= fpr={self.fpr:g} (the smallest is "
                                    f"1/(n_runs+1)); use n_runs >= {int(np.ceil(1 / self.fpr)) - 1}")


def key_sequence(secret: bytes, n: int, vocab_size: int) -> torch.Tensor:
    """(n, V) float32 uniform entries in (0, 1) from the secret (PCG64, 24 random bits each)."""
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(secret, "little")))
    raw = rng.bit_generator.random_raw(n * vocab_size) >> np.uint64(64 - RANDOM_BITS)
    u = (raw.astype(np.float64) + 0.5) / float(1 << RANDOM_BITS)
    return torch.from_numpy(u.astype(np.float32).reshape(n, vocab_size))


class ExpSampler:
    """transformers LogitsProcessor: exponential-minimum sampling; returns logits that keep only the chosen token.
    Row b of the batch uses key rows (offset_b + i) mod n at its i-th new token, i counting the calls (one per new
    token), so a text generated in several `generate` calls (a sliding window) follows one key segment."""

    def __init__(self, xi: torch.Tensor, offsets: torch.Tensor):
        self.xi, self.offsets, self.step = xi, offsets.long(), 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] != self.xi.shape[1]:
            raise InvalidValueError(f"the key marks a vocabulary of {self.xi.shape[1]} tokens but the model's logits "
                                    f"have {scores.shape[-1]}; use a key made for this model")
        if scores.shape[0] != len(self.offsets):
            raise InvalidValueError(f"the sampler was made for {len(self.offsets)} texts, the batch has "
                                    f"{scores.shape[0]}; make one processor per batch")
        i = self.step
        self.step += 1
        u = self.xi[(self.offsets + i) % self.xi.shape[0]].to(scores.device)  # (B, V)
        probs = torch.softmax(scores.float(), dim=-1)
        token = (torch.log(u) / probs).argmax(dim=-1)  # log u < 0: p = 0 -> -inf, never chosen
        out = torch.full_like(scores, -float("inf"))
        out[torch.arange(len(token)), token] = 0.0
        return out


def alignment_cost(cost: torch.Tensor, gamma: float) -> torch.Tensor:
    """(K,) Levenshtein-style distance of K (m, k) match-cost matrices: insert/delete cost `gamma`, match cost
    cost[u, t]; the official `levenshtein` recursion A[i][j] = min(A[i-1][j] + g, A[i][j-1] + g,
    A[i-1][j-1] + c), computed row by row (the in-row insertions as a cumulative minimum)."""
    K, m, k = cost.shape
    ar = torch.arange(k + 1, dtype=cost.dtype) * gamma  # (k+1,)
    row = ar.expand(K, k + 1).clone()
    for i in range(1, m + 1):
        c = cost[:, i - 1, :]
        best = torch.minimum(row[:, :-1] + c, row[:, 1:] + gamma)  # diagonal or up, j = 1..k
        full = torch.cat([torch.full((K, 1), i * gamma, dtype=cost.dtype), best], dim=1)
        row = torch.cummin(full - ar, dim=1).values + ar
    return row[:, k]


def min_cost(g: torch.Tensor, gamma: float) -> torch.Tensor:
    """(R,) minimum over the n shifts of the alignment cost, for R key sequences given as g = log(1 - xi[:, y]) of
    shape (R, n, m) (key position x text position)."""
    R, n, m = g.shape
    idx = (torch.arange(n)[:, None] + torch.arange(m)[None, :]) % n  # (n shifts, k = m key steps)
    out = []
    per = max(1, NULL_CHUNK_ELEMS // max(1, n * m * m))
    for r0 in range(0, R, per):
        gg = g[r0:r0 + per]  # (r, n, m)
        c = gg[:, idx, :]  # (r, n, k, m): key row (s + t) mod n, token u
        c = c.permute(0, 1, 3, 2).reshape(-1, m, m)  # (r n, m tokens, k key steps)
        out.append(alignment_cost(c, gamma).reshape(-1, n).min(dim=1).values)
    return torch.cat(out)


class ExpEdit(TextWatermark):
    """EXP-edit (Kuditipudi et al. 2023): exponential-minimum sampling; edit-robust alignment detection."""

    name = "exp_edit"
    paper = "Kuditipudi et al., Robust Distortion-free Watermarks for Language Models, TMLR 2024"
    config_cls = ExpEditConfig
    min_tokens = 2

    def xi(self, key: TextKey) -> torch.Tensor:
        self.check_key(key)
        n = int(key.config.get("key_length", self.config.key_length))
        if n != self.config.key_length:
            raise InvalidValueError(f"the key was made with key_length={n}, the config says "
                                    f"{self.config.key_length}; use the key's")
        return key_sequence(key.secret, n, key.vocab_size)

    def logits_processor(self, key: TextKey, batch_size: int = 1, seed: int = 0) -> ExpSampler:
        g = torch.Generator("cpu").manual_seed(int(seed))
        offsets = torch.randint(self.config.key_length, (int(batch_size),), generator=g)
        return ExpSampler(self.xi(key), offsets)

    def statistic(self, key: TextKey, ids: list[int], xi: torch.Tensor | None = None) -> float:
        """Minimum alignment cost of one text against the key (lower = more marked); `xi`: the key's sequence if
        already expanded."""
        xi = self.xi(key) if xi is None else xi
        g = torch.log1p(-xi[:, torch.tensor(ids)])[None]  # (1, n, m)
        return float(min_cost(g, float(self.config.gamma))[0])

    def null_statistics(self, ids: list[int], n_runs: int, seed: int) -> np.ndarray:
        """(n_runs,) statistics of the text against fresh independent key sequences (the permutation test's null)."""
        uniq, inv = np.unique(np.asarray(ids), return_inverse=True)
        rng = np.random.Generator(np.random.PCG64(seed))
        raw = rng.random((n_runs, self.config.key_length, len(uniq)), dtype=np.float32)
        u = torch.from_numpy(np.clip(raw, 2.0 ** -RANDOM_BITS, 1 - 2.0 ** -RANDOM_BITS))
        g = torch.log1p(-u)[:, :, torch.from_numpy(inv.reshape(-1))]
        return min_cost(g, float(self.config.gamma)).numpy()

    def detect_ids(self, key: TextKey, ids: Any, p_values: bool = True) -> Detection:
        """Statistic per text and, with `p_values`, the permutation-test p-value (n_runs null keys each)."""
        seqs = self._ids(key, ids)
        xi = self.xi(key)
        stat = np.array([self.statistic(key, s, xi) for s in seqs])
        cfg = self.config
        rule = {"statistic": f"min over shifts of the Levenshtein alignment cost (gamma={cfg.gamma:g}) with "
                             "log(1 - xi) match costs; score = -statistic",
                "marked_if": f"p <= {cfg.fpr:g}", "threshold": cfg.fpr, "fpr": cfg.fpr,
                "source": f"permutation test, {cfg.n_runs} independent null keys: p = (1 + #null <= obs) / "
                          f"(n_runs + 1) (no calibration set)"}
        if not p_values:
            rule["marked_if"] = "no decision (statistic only)"
            return Detection(self.name, score=-stat, decision=np.zeros(len(seqs), dtype=bool), rule=rule)
        p, z = np.empty(len(seqs)), np.empty(len(seqs))
        for i, s in enumerate(seqs):
            null = self.null_statistics(s, cfg.n_runs, cfg.null_seed + i)
            p[i] = (1.0 + float((null <= stat[i]).sum())) / (cfg.n_runs + 1.0)
            z[i] = (float(null.mean()) - stat[i]) / max(float(null.std()), 1e-12)
        # z: the statistic standardised by its own null draws, comparable across texts of different lengths and
        # vocabularies (the raw statistic is not); ROC curves over many texts should use it
        return Detection(self.name, score=-stat, decision=p <= cfg.fpr, rule=rule, p_value=p, extra={"z": z})
