"""Green-list watermark (Kirchenbauer, Geiping, Wen, Katz, Miers, Goldstein, "A Watermark for Large Language Models",
ICML 2023; official code github.com/jwkirchenbauer/lm-watermarking), through transformers' own implementation.

Embed: transformers' `WatermarkLogitsProcessor` (seeding "lefthash", context width 1): at each step the previous
token t seeds torch's generator with hash_key * t, a permutation of the vocabulary is drawn and its first
int(gamma * V) tokens form the green list; `bias` (delta) is added to their logits. Detect: the same green lists are
rebuilt here (an independent implementation of the same recipe, checked against transformers' `WatermarkDetector` in
tests/test_text_marks.py), the green count G of the T scored tokens (every token after the first) gives
z = (G - gamma T) / sqrt(T gamma (1 - gamma)) and the one-sided normal p-value; marked iff p <= fpr.

Deviations (and why):
- hash_key is a 63-bit integer derived from a 256-bit secret in the user's key file (transformers' default is the
  fixed public prime 15485863, which the docs say to replace in deployment).
- ignore_repeated defaults to True: each distinct (previous token, token) pair is scored once (the official detector's
  `ignore_repeated_bigrams`, off by default in transformers). Repeated pairs are not independent draws, and the small
  text-world model repeats many; counting them breaks the null's binomial model and the stated false-positive rate.
- only "lefthash" with context width 1 (transformers' default) is detected; "selfhash" would need the candidate-token
  rejection loop at detection.
- a previous token with id 0 seeds the generator with 0 whatever the key (transformers' recipe); such positions have
  key-independent green lists. In the text world id 0 is BOS/EOS, which detection never scores inside a text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import InvalidValueError
from . import Detection, TextKey, TextWatermark, check_fpr, secret_int

PAPER_GAMMA, PAPER_DELTA = 0.25, 2.0  # transformers' defaults (the paper sweeps gamma 0.1-0.75, delta 0.5-10)
DEFAULT_FPR = 1e-3
UINT64_MOD = 2**64 - 1  # transformers' seed modulus


@dataclass(frozen=True)
class GreenListConfig:
    gamma: float = field(default=PAPER_GAMMA, metadata={"help": "green-list fraction of the vocabulary (transformers "
                                                                 "greenlist_ratio, default 0.25)"})
    delta: float = field(default=PAPER_DELTA, metadata={"help": "logit bias of green tokens (transformers bias, 2.0)"})
    ignore_repeated: bool = field(default=True, metadata={
        "help": "score each distinct (previous token, token) pair once (valid null; transformers default False)"})
    fpr: float = field(default=DEFAULT_FPR, metadata={"help": "decision level: marked iff p-value <= fpr"})

    def __post_init__(self) -> None:
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0.0 < self.gamma < 1.0:
            raise InvalidValueError(f"gamma must be in (0, 1), got {self.gamma!r}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)) or not 0.0 <= self.delta < 1e3:
            raise InvalidValueError(f"delta must be a finite number >= 0, got {self.delta!r}")
        if not isinstance(self.ignore_repeated, bool):
            raise InvalidValueError(f"ignore_repeated must be true or false, got {self.ignore_repeated!r}")
        check_fpr("fpr", self.fpr)


def hashing_key(key: TextKey) -> int:
    return secret_int(key.secret)


def greenlist(hash_key: int, prev: int, vocab_size: int, gamma: float) -> torch.Tensor:
    """(int(gamma V),) green token ids after token `prev`: transformers' lefthash recipe (torch CPU generator seeded
    with hash_key * prev mod 2^64 - 1, randperm(V), first int(gamma V))."""
    g = torch.Generator("cpu")
    g.manual_seed((hash_key * int(prev)) % UINT64_MOD)
    return torch.randperm(vocab_size, generator=g)[: int(vocab_size * gamma)]


def green_counts(hash_key: int, ids: list[int], vocab_size: int, gamma: float,
                 ignore_repeated: bool) -> tuple[int, int]:
    """(scored tokens T, green tokens G) of one text: tokens 1..m-1, each against the green list of its predecessor."""
    pairs = list(zip(ids[:-1], ids[1:]))
    if ignore_repeated:
        pairs = list(dict.fromkeys(pairs))
    cache: dict[int, set[int]] = {}
    green = 0
    for prev, tok in pairs:
        if prev not in cache:
            cache[prev] = set(greenlist(hash_key, prev, vocab_size, gamma).tolist())
        green += tok in cache[prev]
    return len(pairs), green


def z_test(green: np.ndarray, total: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """(z, one-sided p) of green counts against Binomial(T, gamma) by the normal approximation (the paper's)."""
    from scipy.stats import norm

    total = np.asarray(total, dtype=np.float64)
    z = (np.asarray(green, dtype=np.float64) - gamma * total) / np.sqrt(total * gamma * (1 - gamma))
    return z, norm.sf(z)


class GreenList(TextWatermark):
    """Green-list watermark (Kirchenbauer et al. ICML 2023) via transformers' WatermarkLogitsProcessor."""

    name = "greenlist"
    paper = "Kirchenbauer et al., A Watermark for Large Language Models, ICML 2023"
    config_cls = GreenListConfig
    min_tokens = 2

    def transformers_config(self, key: TextKey) -> dict[str, Any]:
        """The key and config as transformers' WatermarkingConfig arguments (for WatermarkDetector too)."""
        self.check_key(key)
        return {"greenlist_ratio": float(self.config.gamma), "bias": float(self.config.delta),
                "hashing_key": hashing_key(key), "seeding_scheme": "lefthash", "context_width": 1}

    def logits_processor(self, key: TextKey, batch_size: int = 1, seed: int = 0) -> Any:
        from transformers import WatermarkLogitsProcessor

        return WatermarkLogitsProcessor(vocab_size=key.vocab_size, device="cpu", **self.transformers_config(key))

    def detect_ids(self, key: TextKey, ids: Any) -> Detection:
        seqs = self._ids(key, ids)
        hk, g = hashing_key(key), float(self.config.gamma)
        counts = np.array([green_counts(hk, s, key.vocab_size, g, self.config.ignore_repeated) for s in seqs])
        total, green = counts[:, 0], counts[:, 1]
        z, p = z_test(green, total, g)
        from scipy.stats import norm

        thr = float(norm.isf(self.config.fpr))
        rule = {"statistic": "green-list z = (G - gamma T) / sqrt(T gamma (1 - gamma))", "marked_if":
                f"z >= {thr:.3f} (p <= {self.config.fpr:g})", "threshold": thr, "fpr": self.config.fpr,
                "source": "one-sided normal tail of Binomial(T, gamma) under no watermark (no calibration set)",
                "ignore_repeated": self.config.ignore_repeated}
        return Detection(self.name, score=z, decision=p <= self.config.fpr, rule=rule, p_value=p,
                         extra={"tokens_scored": total.tolist(), "green": green.tolist()})
