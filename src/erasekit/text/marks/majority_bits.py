"""Multi-bit payload watermark after MajorMark (Xu, Hu, Zhang, "Majority Bit-Aware Watermarking For Large Language
Models", arXiv:2508.03829, 2025): a b-bit message (a user id) in majority bit-aware green lists.

What is implemented (our reconstruction; the paper's method section and code were not available offline, only its
abstract: "selects preferred token sets based on the majority bit of the message ... clustering-based decoding"):
- Encode: the message m (b bits, stored in the key) has majority bit M (1 on a tie). After previous token t, a keyed
  permutation of the vocabulary seeded by (key, M, t) splits it into b + 1 equal sub-lists; sub-list i < b stands for
  message bit i and sub-list b is a pilot that is never preferred. The preferred set is the union of the sub-lists of
  the bits equal to M: at least b/2 of b + 1 sub-lists (a large green list, the paper's point), and never the whole
  vocabulary (the pilot). Preferred tokens get logit bias `delta`.
- Decode (two-cluster split): for each hypothesis M' in {0, 1}, count the scored tokens (distinct (previous, token)
  pairs) per sub-list under the M' partition; the high cluster is the top-h bits by count, h >= b/2 (M' = 1) or
  h > b/2 (M' = 0). The split (M', h) with the smallest binomial tail p = P(Bin(T, h / (b + 1)) >= G) (G: tokens in the
  high cluster) wins; its bits read M' in the high cluster and 1 - M' elsewhere.
- Detect: the winning p times the number of candidate splits (Bonferroni over every (M', subset) the decoder could
  pick: a valid p-value); marked iff p <= fpr. Bit accuracy and exact decoding are measured against the key's
  message.
Deviations we know of: MajorMark+ (message blocks) is not implemented; the pilot sub-list is our addition (without it
an all-equal message would make every token preferred).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...errors import InvalidValueError
from . import Detection, TextKey, TextWatermark, check_fpr, secret_int

DEFAULT_BITS = 8
DEFAULT_DELTA = 2.0
UINT64_MOD = 2**64 - 1


@dataclass(frozen=True)
class MajorityBitsConfig:
    bits: int = field(default=DEFAULT_BITS, metadata={"help": "message length b (user id in [0, 2^b))"})
    delta: float = field(default=DEFAULT_DELTA, metadata={"help": "logit bias of preferred tokens"})
    fpr: float = field(default=1e-3, metadata={"help": "decision level: marked iff (Bonferroni) p-value <= fpr"})

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise InvalidValueError(f"bits must be an integer in [1, 32], got {self.bits!r}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)) or not 0.0 <= self.delta < 1e3:
            raise InvalidValueError(f"delta must be a finite number >= 0, got {self.delta!r}")
        check_fpr("fpr", self.fpr)


def message_bits(message: Any, bits: int) -> np.ndarray:
    """(bits,) uint8, most significant first, of an integer user id in [0, 2^bits) (or a 0/1 sequence)."""
    if isinstance(message, (int, np.integer)) and not isinstance(message, bool):
        if not 0 <= int(message) < (1 << bits):
            raise InvalidValueError(f"message {message} does not fit in {bits} bits; use an id in [0, {1 << bits})")
        return np.array([(int(message) >> (bits - 1 - i)) & 1 for i in range(bits)], dtype=np.uint8)
    arr = np.asarray(message)
    if arr.shape != (bits,) or not np.isin(arr, (0, 1)).all():
        raise InvalidValueError(f"message must be an integer id or {bits} bits of 0/1, got {message!r}")
    return arr.astype(np.uint8)


def bits_to_int(bits: np.ndarray) -> int:
    return int("".join(str(int(b)) for b in bits), 2)


def majority(msg: np.ndarray) -> int:
    return int(2 * int(msg.sum()) >= len(msg))


def sublists(hash_key: int, majority_bit: int, prev: int, vocab_size: int, bits: int) -> torch.Tensor:
    """(V,) sub-list index in [0, bits] of every token after `prev` under hypothesis `majority_bit`."""
    g = torch.Generator("cpu")
    g.manual_seed((hash_key * (2 * int(prev) + int(majority_bit) + 1)) % UINT64_MOD)
    perm = torch.randperm(vocab_size, generator=g)
    idx = torch.empty(vocab_size, dtype=torch.long)
    idx[perm] = torch.arange(vocab_size) * (bits + 1) // vocab_size
    return idx


class PreferredBias:
    """transformers LogitsProcessor: + delta on the tokens of the sub-lists whose message bit equals the majority."""

    def __init__(self, hash_key: int, msg: np.ndarray, vocab_size: int, delta: float):
        self.hash_key, self.vocab_size, self.delta = hash_key, vocab_size, float(delta)
        self.bits = len(msg)
        self.M = majority(msg)
        self.pref = torch.from_numpy(np.append(msg == self.M, False))  # (bits + 1,) preferred sub-lists
        self.cache: dict[int, torch.Tensor] = {}

    def mask(self, prev: int) -> torch.Tensor:
        if prev not in self.cache:
            self.cache[prev] = self.pref[sublists(self.hash_key, self.M, prev, self.vocab_size, self.bits)]
        return self.cache[prev]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] != self.vocab_size:
            raise InvalidValueError(f"the key marks a vocabulary of {self.vocab_size} tokens but the model's logits "
                                    f"have {scores.shape[-1]}; use a key made for this model")
        out = scores.clone()
        for b in range(scores.shape[0]):
            out[b, self.mask(int(input_ids[b, -1]))] += self.delta
        return out


class MajorityBits(TextWatermark):
    """Majority bit-aware multi-bit watermark (after MajorMark, Xu et al. 2025): a user id in the green lists."""

    name = "majority_bits"
    paper = "Xu et al., Majority Bit-Aware Watermarking For Large Language Models, arXiv:2508.03829 (2025)"
    config_cls = MajorityBitsConfig
    multibit = True
    min_tokens = 2

    def _extra_tensors(self, message: Any) -> dict[str, torch.Tensor]:
        if message is None:
            import os

            message = int.from_bytes(os.urandom(4), "little") % (1 << self.config.bits)
        return {"message": torch.from_numpy(message_bits(message, self.config.bits).copy())}

    def _unpack(self, key: TextKey) -> tuple[int, np.ndarray]:
        self.check_key(key)
        msg = key.message
        if msg is None or msg.shape != (self.config.bits,):
            raise InvalidValueError(f"majority_bits key holds no {self.config.bits}-bit message; make a new one with "
                                    "`erasekit text mark keygen --method majority_bits --message ID`")
        return secret_int(key.secret), msg

    def logits_processor(self, key: TextKey, batch_size: int = 1, seed: int = 0) -> PreferredBias:
        hk, msg = self._unpack(key)
        return PreferredBias(hk, msg, key.vocab_size, self.config.delta)

    def candidates(self) -> int:
        """Number of (M', high cluster) splits the decoder can choose (the Bonferroni factor)."""
        b = self.config.bits
        return sum(math.comb(b, h) for h in range(b + 1) if 2 * h >= b) + \
            sum(math.comb(b, h) for h in range(b + 1) if 2 * h > b)

    def decode_ids(self, key: TextKey, ids: list[int]) -> tuple[np.ndarray, float, float]:
        """(decoded bits, best split's binomial p, its z) of one text."""
        from scipy.stats import binom

        hk, _ = self._unpack(key)
        b, V = self.config.bits, key.vocab_size
        pairs = list(dict.fromkeys(zip(ids[:-1], ids[1:])))
        T = len(pairs)
        best = (np.zeros(b, dtype=np.uint8), 1.0, -np.inf)
        for M in (0, 1):
            cache: dict[int, torch.Tensor] = {}
            counts = np.zeros(b + 1)
            for prev, tok in pairs:
                if prev not in cache:
                    cache[prev] = sublists(hk, M, prev, V, b)
                counts[int(cache[prev][tok])] += 1
            order = np.argsort(-counts[:b], kind="stable")
            for h in range(1, b + 1):
                if (M == 1 and 2 * h < b) or (M == 0 and 2 * h <= b):
                    continue
                G = counts[order[:h]].sum()
                frac = h / (b + 1)
                p = float(binom.sf(G - 1, T, frac))
                z = (G - T * frac) / math.sqrt(T * frac * (1 - frac))
                if p < best[1] or (p == best[1] and z > best[2]):
                    bits = np.full(b, 1 - M, dtype=np.uint8)
                    bits[order[:h]] = M
                    best = (bits, p, z)
        return best

    def detect_ids(self, key: TextKey, ids: Any) -> Detection:
        seqs = self._ids(key, ids)
        _, msg = self._unpack(key)
        res = [self.decode_ids(key, s) for s in seqs]
        dec = np.stack([r[0] for r in res])
        n_cand = self.candidates()
        raw = np.array([r[1] for r in res])
        p = np.minimum(1.0, raw * n_cand)
        acc = (dec == msg[None]).mean(axis=1)
        rule = {"statistic": "binomial tail of the best two-cluster split of sub-list counts, times the number of "
                             f"splits ({n_cand})", "marked_if": f"p <= {self.config.fpr:g}",
                "threshold": self.config.fpr, "fpr": self.config.fpr,
                "source": "Bonferroni-corrected binomial tail under no watermark (no calibration set)"}
        return Detection(self.name, score=-np.log10(np.maximum(raw, 1e-300)), decision=p <= self.config.fpr,
                         rule=rule, p_value=p, bit_acc=acc.astype(np.float64),
                         extra={"decoded": [bits_to_int(d) for d in dec], "message": bits_to_int(msg),
                                "exact": [bool(a == 1.0) for a in acc]})
