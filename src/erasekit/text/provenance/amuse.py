"""AMUSE (Ranjbar Alvar, Akbari, Yue, Zhang, "AMUSE: Adaptive Multi-Segment Encoding for Dataset Watermarking",
arXiv:2403.05628, ICME 2025) on text: a multi-bit owner message is split into segments, shorter sub-messages carry
subsets of them into the documents of a dataset, and the message is rebuilt from what a suspect model reproduces.

    from erasekit.text.provenance import amuse
    key = amuse.keygen(message=0xBEEF)                       # secret + 16-bit message (a user file: key.save(p))
    marked = amuse.embed_dataset(key, docs)                   # list of marked documents (publish these)
    res = amuse.detect_dataset(key, model, tokenizer, marked) # decoded message, bit accuracy, exact, p-value

The encoder/decoder follow the official code (github.com/vbdi/amuse, `watermark_chunk_method.py`, read through the
code search; nothing copied):
- Adaptive (N, K) choice: for n in 1..max_chunks, k in 1..n-1 with k/n <= guarantee, the sub-message length is
  (n - k)/n * (L + pad) + bitlen(C(n, n - k)) (pad: zeros that make L a multiple of n); the shortest one below L wins
  (none: N = 1, every document carries the whole message). `guarantee` bounds the share k/n of sub-message types
  that lack any given segment.
- Encoding: the left-padded message is cut into N segments; sub-message c (c = 0 .. C(N, N-K) - 1, the
  combinations of N - K segment indices in lexicographic order) is the binary index c followed by its segments;
  document i carries sub-message i mod C (the official `generate_messages` cycles the same way).
- Decoding: read each document's sub-message, drop those whose index is out of range, and take the bitwise majority
  of every segment over the sub-messages that hold it; a segment no sub-message holds is undecodable.

Text side (the paper embeds sub-messages with image watermarks; its base watermark is a plug-in, here it is the
lexical one of `erasekit.text.marks.blackbox_lexical`):
- Embedding: slot s (the s-th eligible lexicon word) of a document carries sub-message bit s mod B (B: sub-message
  length); the word is kept if its keyed encoding E(previous word, word) already equals that bit, else it is replaced
  by a synonym whose encoding does (ranked by a model given the left context if one is given, else keyed
  pseudo-random: the text world's grammar draws these words uniformly, so no choice is less fluent).
- Reading a suspect model: teacher-forced on each marked document, the model scores every synonym of every slot
  given the left context; the slot's soft bit is log sum p(bit-1 synonyms) - log sum p(bit-0 synonyms), summed over
  the slots of each sub-message bit (its sign is the bit). A model that memorised the marked documents prefers the
  marked words and returns the sub-messages; one that never saw them returns key-independent coin flips.
- p-value: among the distinct (previous word, model's top synonym) pairs, how many encode the embedded bit; one-sided
  binomial tail against 1/2. It is nominal: it assumes the suspect model's preferences do not depend on the key,
  which holds for a model that never saw the marked documents up to the grammar's uniform word choice; the with /
  without-training comparison in the benchmark is the empirical check.

Deviations from the official code, and why: sub-message indices use bitlen(C) bits as the official code does, but
N = 1 carries no index (the official decoder strips one bit that the encoder never wrote); a segment bit with a
tied vote is reported undecided (-1, counted wrong) instead of a random pick; segments are decided from summed soft
bits when reading a model (the official decoder votes hard bits extracted from images).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import torch

from ...errors import InvalidValueError
from ..marks import TextKey, check_fpr, random_secret
from ..marks.blackbox_lexical import CLASSES, Lexicon, binomial_test, candidate_loglik, substitute, word_bit, \
    world_lexicon
from . import Provenance

METHOD = "amuse"
DEFAULT_BITS = 16
MAX_CHUNKS = 100  # the official search bound on N


@dataclass(frozen=True)
class AmuseConfig:
    bits: int = field(default=DEFAULT_BITS, metadata={"help": "owner message length L in bits"})
    guarantee: float = field(default=0.5, metadata={"help": "largest share k/N of sub-message types that may lack a "
                                                            "segment (the paper's protection requirement)"})
    max_chunks: int = field(default=MAX_CHUNKS, metadata={"help": "largest number of segments N searched"})
    classes: str = field(default=",".join(CLASSES), metadata={"help": "lexicon classes that carry bits"})
    fpr: float = field(default=1e-3, metadata={"help": "decision level of the nominal binomial p-value"})

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 4096:
            raise InvalidValueError(f"bits must be an integer in [1, 4096], got {self.bits!r}")
        if isinstance(self.guarantee, bool) or not isinstance(self.guarantee, (int, float)) \
                or not (0.0 < self.guarantee <= 1.0) or not math.isfinite(self.guarantee):
            raise InvalidValueError(f"guarantee must be in (0, 1], got {self.guarantee!r}")
        if isinstance(self.max_chunks, bool) or not isinstance(self.max_chunks, int) or self.max_chunks < 1:
            raise InvalidValueError(f"max_chunks must be an integer >= 1, got {self.max_chunks!r}")
        names = [c.strip() for c in str(self.classes).split(",") if c.strip()]
        if not names or any(c not in CLASSES for c in names):
            raise InvalidValueError(f"classes must be a comma list of {', '.join(CLASSES)}, got {self.classes!r}")
        check_fpr("fpr", self.fpr)


# ------------------------------------------------------------------------------------------------------- code
def choose_nk(length: int, guarantee: float, max_chunks: int = MAX_CHUNKS) -> tuple[int, int]:
    """(N segments, segments per sub-message) of the official adaptive search (see the module docstring)."""
    best, best_len = (1, 1), float(length)
    for n in range(1, max_chunks + 1):
        pad = (n - length % n) % n
        for k in range(1, n):
            if k / n > guarantee:
                continue
            sub = (n - k) * (length + pad) / n + math.comb(n, n - k).bit_length()
            if sub <= length and sub < best_len:
                best, best_len = (n, n - k), sub
    return best


class AmuseCode:
    """The multi-segment code of an L-bit message: N segments, `per` of them in every sub-message."""

    def __init__(self, length: int, guarantee: float, max_chunks: int = MAX_CHUNKS):
        self.length = int(length)
        self.n, self.per = choose_nk(self.length, guarantee, max_chunks)
        self.pad = (self.n - self.length % self.n) % self.n
        self.seg = (self.length + self.pad) // self.n
        self.combos = list(combinations(range(self.n), self.per))
        self.index_bits = len(self.combos).bit_length() if len(self.combos) > 1 else 0
        self.sub_length = self.index_bits + self.per * self.seg

    def describe(self) -> dict[str, int]:
        return {"message_bits": self.length, "segments": self.n, "segments_per_submessage": self.per,
                "segment_bits": self.seg, "index_bits": self.index_bits, "submessage_bits": self.sub_length,
                "distinct_submessages": len(self.combos)}

    def encode(self, message: np.ndarray) -> list[np.ndarray]:
        """The C distinct (sub_length,) uint8 sub-messages of `message` ((length,) 0/1)."""
        msg = np.concatenate([np.zeros(self.pad, dtype=np.uint8), np.asarray(message, dtype=np.uint8)])
        segs = msg.reshape(self.n, self.seg)
        out = []
        for c, combo in enumerate(self.combos):
            idx = np.array([(c >> (self.index_bits - 1 - i)) & 1 for i in range(self.index_bits)], dtype=np.uint8)
            out.append(np.concatenate([idx] + [segs[i] for i in combo]))
        return out

    def decode(self, subs: Sequence[np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        """(length,) int8 message (-1: undecided bit) from read sub-messages ((sub_length,) of 0/1, -1 unread)."""
        votes = np.zeros((self.n, self.seg))
        seen = np.zeros(self.n, dtype=bool)
        used = 0
        for s in subs:
            s = np.asarray(s)
            if s.shape != (self.sub_length,):
                raise InvalidValueError(f"a sub-message has shape {s.shape}; this code reads ({self.sub_length},)")
            head = s[:self.index_bits]
            if (head < 0).any():
                continue
            c = int("".join(str(int(b)) for b in head), 2) if self.index_bits else 0
            if c >= len(self.combos):
                continue  # official: an out-of-range index is dropped
            used += 1
            body = s[self.index_bits:].reshape(self.per, self.seg)
            for i, seg in zip(self.combos[c], body):
                votes[i] += np.where(seg < 0, 0, np.where(seg == 1, 1, -1))
                seen[i] = True
        bits = np.where(votes > 0, 1, np.where(votes < 0, 0, -1)).astype(np.int8)
        bits[~seen] = -1
        flat = bits.reshape(-1)[self.pad:]
        return flat, {"submessages_used": used, "segments_missing": int((~seen).sum())}


# ------------------------------------------------------------------------------------------------------- keys
def message_bits(message: Any, bits: int) -> np.ndarray:
    """(bits,) uint8, most significant first, of an integer in [0, 2^bits) or a 0/1 sequence."""
    if isinstance(message, (int, np.integer)) and not isinstance(message, bool):
        if not 0 <= int(message) < (1 << bits):
            raise InvalidValueError(f"message {message} does not fit in {bits} bits; use an integer in "
                                    f"[0, 2^{bits})")
        return np.array([(int(message) >> (bits - 1 - i)) & 1 for i in range(bits)], dtype=np.uint8)
    arr = np.asarray(message)
    if arr.shape != (bits,) or not np.isin(arr, (0, 1)).all():
        raise InvalidValueError(f"message must be an integer or {bits} bits of 0/1, got {message!r}")
    return arr.astype(np.uint8)


def keygen(message: Any = None, config: AmuseConfig | None = None, entropy: bytes | None = None) -> TextKey:
    """A fresh AMUSE key: a 256-bit secret (os.urandom unless `entropy`) and the owner's message (random if None)."""
    cfg = config or AmuseConfig()
    if message is None:
        message = np.frombuffer(random_secret(entropy and b"msg" + entropy, (cfg.bits + 7) // 8), dtype=np.uint8)
        message = np.unpackbits(message)[:cfg.bits]
    msg = message_bits(message, cfg.bits)
    tensors = {"secret": torch.frombuffer(bytearray(random_secret(entropy)), dtype=torch.uint8),
               "message": torch.from_numpy(msg.copy())}
    lex = Lexicon(world_lexicon(), _classes(cfg))
    return TextKey(METHOD, dataclasses.asdict(cfg), 0, "any", tensors, meta={"lexicon": lex.fingerprint})


def _classes(cfg: AmuseConfig) -> list[str]:
    return [c.strip() for c in cfg.classes.split(",") if c.strip()]


def _unpack(key: TextKey, lexicon: Any = None) -> tuple[AmuseConfig, AmuseCode, Lexicon, bytes, np.ndarray]:
    if not isinstance(key, TextKey):
        raise InvalidValueError(f"expected an AMUSE key (erasekit.text.marks.TextKey), got {type(key).__name__}; "
                                "make one with amuse.keygen()")
    key.check_method(METHOD)
    names = {f.name for f in dataclasses.fields(AmuseConfig)}
    cfg = AmuseConfig(**{k: v for k, v in key.config.items() if k in names})
    lex = Lexicon(lexicon if lexicon is not None else world_lexicon(), _classes(cfg))
    if key.meta.get("lexicon") not in (None, lex.fingerprint):
        raise InvalidValueError(f"this AMUSE key was made for lexicon {key.meta['lexicon']}, not {lex.fingerprint}; "
                                "read with the lexicon the documents were marked with")
    msg = key.message
    if msg is None or msg.shape != (cfg.bits,):
        raise InvalidValueError(f"the AMUSE key holds no {cfg.bits}-bit message; make a new one with amuse.keygen()")
    return cfg, AmuseCode(cfg.bits, cfg.guarantee, cfg.max_chunks), lex, key.secret, msg


def _docs(docs: Sequence[str]) -> list[str]:
    if isinstance(docs, str) or not isinstance(docs, Sequence) or len(docs) == 0:
        raise InvalidValueError("no documents given; pass a non-empty list of strings")
    for i, d in enumerate(docs):
        if not isinstance(d, str) or not d.strip():
            raise InvalidValueError(f"document {i} is {'empty' if isinstance(d, str) else type(d).__name__}; give "
                                    "non-empty strings")
    return list(docs)


# ------------------------------------------------------------------------------------------------------- embed / read
def embed_dataset(key: TextKey, docs: Sequence[str], model: Any = None, tokenizer: Any = None,
                  lexicon: Any = None) -> list[str]:
    """Marked copies of `docs`: document i carries sub-message i mod C, slot s its bit s mod B. A document with fewer
    eligible words than B fails in one line (use longer documents or a shorter message)."""
    _, code, lex, secret, msg = _unpack(key, lexicon)
    subs = code.encode(msg)
    out = []
    for i, d in enumerate(_docs(docs)):
        slots = len(lex.slots(d))
        if slots < code.sub_length:
            raise InvalidValueError(f"document {i} has {slots} eligible words but AMUSE sub-messages here have "
                                    f"{code.sub_length} bits; use longer documents, fewer message bits or a larger "
                                    "guarantee")
        sub = subs[i % len(subs)]
        out.append(substitute(d, lex, lambda s, sub=sub: int(sub[s % code.sub_length]), secret, model, tokenizer)[0])
    return out


def read_text(key: TextKey, doc: str, lexicon: Any = None) -> np.ndarray:
    """(B,) int8 sub-message read from a document's words (majority per bit; -1 where tied or absent)."""
    _, code, lex, secret, _ = _unpack(key, lexicon)
    votes = np.zeros(code.sub_length)
    for s, (_, _, p, w) in enumerate(lex.slots(doc)):
        votes[s % code.sub_length] += 1 if word_bit(secret, p, w) else -1
    return np.where(votes > 0, 1, np.where(votes < 0, 0, -1)).astype(np.int8)


@dataclass
class AmuseResult:
    """What a suspect model gives back: the decoded message (-1: undecided bits), its bit accuracy against the key's
    message, exact recovery, the nominal binomial p-value and the decision, and per-slot counts."""

    decoded: np.ndarray
    message: np.ndarray
    bit_acc: float
    exact: bool
    p_value: float
    z: float
    decision: bool
    rule: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"decoded": self.decoded.tolist(), "message": self.message.tolist(), "bit_acc": self.bit_acc,
                "exact": self.exact, "p_value": self.p_value, "z": self.z, "decision": self.decision,
                "rule": self.rule, **self.extra}


def read_model(key: TextKey, model: Any, tokenizer: Any, marked_docs: Sequence[str],
               lexicon: Any = None) -> tuple[list[np.ndarray], list[tuple[str, str, int]]]:
    """(sub-messages read from the model, one (B,) int8 per document; slots as (previous word, model's top synonym,
    embedded bit)) by teacher forcing on the marked documents."""
    _, code, lex, secret, msg = _unpack(key, lexicon)
    subs_true = code.encode(msg)
    subs, slots = [], []
    for i, d in enumerate(_docs(marked_docs)):
        soft = np.zeros(code.sub_length)
        target = subs_true[i % len(subs_true)]
        for s, (a, _, p, w) in enumerate(lex.slots(d)):
            cands = list(lex.of[w])
            sc = candidate_loglik(model, tokenizer, d[:a], cands)
            bits = np.array([word_bit(secret, p, c) for c in cands])
            if bits.all() or not bits.any():
                continue  # every synonym encodes the same bit: the slot carries nothing
            soft[s % code.sub_length] += np.logaddexp.reduce(sc[bits == 1]) - np.logaddexp.reduce(sc[bits == 0])
            slots.append((p.lower(), cands[int(np.argmax(sc))], int(target[s % code.sub_length])))
        subs.append(np.where(soft > 0, 1, np.where(soft < 0, 0, -1)).astype(np.int8))
    return subs, slots


def detect_dataset(key: TextKey, model: Any, tokenizer: Any, marked_docs: Sequence[str],
                   lexicon: Any = None) -> AmuseResult:
    """Decode the owner's message from a suspect model (see the module docstring) and test for the mark."""
    cfg, code, _, secret, msg = _unpack(key, lexicon)
    subs, slots = read_model(key, model, tokenizer, marked_docs, lexicon)
    decoded, info = code.decode(subs)
    pairs: dict[tuple[str, str], int] = {}
    for p, top, bit in slots:
        pairs.setdefault((p, top), int(word_bit(secret, p, top) == bit))
    z, pv = binomial_test(sum(pairs.values()), len(pairs))
    acc = float((decoded == msg.astype(np.int8)).mean())
    rule = {"statistic": "binomial tail of distinct (previous word, model's top synonym) pairs whose keyed bit "
                         "equals the embedded bit", "marked_if": f"p <= {cfg.fpr:g}", "threshold": cfg.fpr,
            "fpr": cfg.fpr, "source": "nominal Binomial(n, 1/2) null (assumes key-independent preferences)"}
    extra = {**info, **code.describe(), "documents": len(subs), "slots": len(slots), "distinct_pairs": len(pairs),
             "slot_agreement": float(np.mean([int(word_bit(secret, p, t) == b) for p, t, b in slots]))
             if slots else float("nan")}
    return AmuseResult(decoded, msg, acc, bool(acc == 1.0), pv, z, bool(pv <= cfg.fpr), rule, extra)


PROVENANCE = Provenance(METHOD, "Ranjbar Alvar et al., AMUSE: Adaptive Multi-Segment Encoding for Dataset "
                                "Watermarking, arXiv:2403.05628 (ICME 2025)", AmuseConfig, sys.modules[__name__])

__all__ = ["AmuseCode", "AmuseConfig", "AmuseResult", "PROVENANCE", "choose_nk", "detect_dataset", "embed_dataset",
           "keygen", "message_bits", "read_model", "read_text"]
