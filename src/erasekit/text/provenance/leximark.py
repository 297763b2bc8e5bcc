"""LexiMark (German, Antebi, Habler, Shabtai, Elovici, "LexiMark: Robust Watermarking via Lexical Substitutions to
Enhance Membership Verification of an LLM's Textual Training Data", 2025, arXiv:2506.14474; official code
github.com/eyalgerman/LexiMark: watermarks/watermark_based_k.py, basic_watermark.py, utils/create_map_entropy_both.py,
watermark_detection/dataset_detection_t_test.py).

Mark: in every sentence of the owner's documents, the k words with the highest "entropy" (the official entropy map:
-p log2 p of the word's frequency p in the dataset; the k words with the lowest value, i.e. the rarest, are picked)
are replaced by a synonym, consistently across the dataset (the same word always gets the same substitute). Rare,
consistent substitutes raise the model's memorisation of the documents. Detect (the paper): a membership score
(Min-K%++, Zhang et al. 2024) of the marked documents that were published (members) against marked documents
held back (non-members): AUROC, and a Welch t-test p-value for "this dataset was trained on".

    key = keygen(owner_documents)                         # secret + the dataset's word counts; key.save("me.lexikey")
    marked = mark(owner_documents, key)                   # publish marked[:n]; keep marked[n:] back
    res = detect(model, tokenizer, key, owner_documents[:n], owner_documents[n:])   # res.auc, res.p_value, ...

Deviations (and why):
- Substitutes come from a keyed lexicon (`LEXICON`: English alternatives of the text world's grammar words, none of
  which occur in the text-world corpus), the choice among a word's alternatives is HMAC-SHA256(secret, word): the
  official code picks the synonym with the highest English self-information (wordfreq) from a lexical-substitution
  model (BERT / WordNet / GPT-4o, none available offline). The key makes the choice secret, which gives a second test
  with an exact null (below).
- Only words that have an entry in the lexicon compete for the k slots (official: the k rarest whitespace tokens of
  the sentence, most of which, in the text world, are names, places and years with no synonym, so nothing would be
  replaced). Words are matched without surrounding punctuation and case-insensitively; capitalisation is kept.
- The word counts of the marked dataset are stored in the key, so detection rebuilds the same word selection.
- Added, not in the paper: a key-permutation test. Under "never trained on these documents", the secret key is
  independent of the model, so the model's likelihood of the documents marked with the true key is exchangeable with
  their likelihood under `null_keys` random keys: p = (1 + #{null >= true}) / (1 + null_keys), exact, with no
  held-back documents needed. Per document, the z-score of the true key's log-likelihood among the null keys' gives
  a second AUROC (members vs held-back documents).
- The paper's dataset test averages Welch t-tests over repeated subsamples of members and non-members; here one
  Welch t-test (one-sided, members higher) on all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import InvalidValueError
from . import Provenance

PAPER = ('German et al., "LexiMark: Robust Watermarking via Lexical Substitutions to Enhance Membership '
         'Verification of an LLM\'s Textual Training Data", 2025 (arXiv:2506.14474); github.com/eyalgerman/LexiMark')
KEY_FORMAT = "erasekit.leximark/1"
SECRET_BYTES = 32
PAPER_K = 5  # official --k default: words replaced per sentence
PAPER_MINK = 0.2  # Min-K%++ fraction (the Min-K% papers' usual k = 20%)

# English alternatives of the text world's grammar words (erasekit.text.world ADJ / NOUN / VERB and the news
# templates' verbs); none of them occurs in the text-world corpus.
LEXICON: dict[str, tuple[str, ...]] = {
    "silent": ("hushed", "soundless", "mute"), "amber": ("ochre", "tawny", "honeyed"),
    "hollow": ("cavernous", "sunken", "vacant"), "crimson": ("scarlet", "vermilion", "ruby"),
    "distant": ("remote", "faraway", "far-off"), "frozen": ("icebound", "glacial", "frosted"),
    "golden": ("gilded", "aureate", "gilt"), "broken": ("shattered", "fractured", "cracked"),
    "quiet": ("tranquil", "placid", "still"), "wandering": ("roaming", "drifting", "straying"),
    "hidden": ("concealed", "veiled", "secreted"), "bitter": ("acrid", "sour", "rancorous"),
    "gentle": ("tender", "mild", "kindly"), "iron": ("steely", "ferrous", "wrought"),
    "pale": ("wan", "pallid", "ashen"), "restless": ("uneasy", "fitful", "agitated"),
    "orchard": ("grove", "plantation", "arbour"), "lantern": ("lamp", "torch", "sconce"),
    "harbour": ("port", "haven", "anchorage"), "river": ("stream", "waterway", "brook"),
    "tower": ("spire", "turret", "steeple"), "garden": ("yard", "parterre", "allotment"),
    "mirror": ("looking-glass", "reflector", "speculum"), "bridge": ("viaduct", "overpass", "footbridge"),
    "forest": ("woodland", "timberland", "wildwood"), "clock": ("timepiece", "chronometer", "timekeeper"),
    "letter": ("missive", "epistle", "dispatch"), "island": ("isle", "islet", "atoll"),
    "window": ("casement", "skylight", "pane"), "valley": ("vale", "dale", "glen"),
    "engine": ("motor", "turbine", "dynamo"), "crown": ("diadem", "coronet", "circlet"),
    "carried": ("bore", "hauled", "conveyed"), "painted": ("depicted", "portrayed", "daubed"),
    "found": ("discovered", "located", "unearthed"), "opened": ("unlocked", "unsealed", "unbarred"),
    "followed": ("pursued", "trailed", "tracked"), "burned": ("scorched", "torched", "charred"),
    "mended": ("repaired", "patched", "darned"), "watched": ("observed", "eyed", "surveyed"),
    "remembered": ("recalled", "recollected", "commemorated"), "crossed": ("traversed", "forded", "spanned"),
    "sold": ("vended", "peddled", "auctioned"), "buried": ("interred", "entombed", "inhumed"),
    "counted": ("tallied", "reckoned", "enumerated"), "sang": ("chanted", "crooned", "warbled"),
    "guarded": ("protected", "shielded", "defended"), "forgot": ("neglected", "overlooked", "misplaced"),
    "dawn": ("daybreak", "sunrise", "cockcrow"), "created": ("crafted", "authored", "fashioned"),
    "taught": ("tutored", "instructed", "schooled"), "studied": ("apprenticed", "trained", "schooled"),
    "worked": ("laboured", "toiled", "served"), "arrived": ("appeared", "emerged", "landed"),
}
_WORD = re.compile(r"^(\W*)([A-Za-z][A-Za-z'-]*)(\W*)$")


@dataclass(frozen=True)
class LexiMarkConfig:
    """How many words per sentence are substituted and how detection scores documents."""

    k: int = field(default=PAPER_K, metadata={"help": "words substituted per sentence (official --k 5)"})
    min_k: float = field(default=PAPER_MINK, metadata={"help": "Min-K%++ fraction of lowest-scoring tokens"})
    null_keys: int = field(default=99, metadata={"help": "random keys of the permutation test (p >= 1/(1+n))"})
    seed: int = field(default=0, metadata={"help": "seed of the null keys (the true key stays secret)"})

    def __post_init__(self) -> None:
        if int(self.k) < 1:
            raise InvalidValueError(f"k must be >= 1 word per sentence, got {self.k!r}")
        if not 0.0 < float(self.min_k) <= 1.0:
            raise InvalidValueError(f"min_k must be in (0, 1], got {self.min_k!r}")
        if int(self.null_keys) < 1:
            raise InvalidValueError(f"null_keys must be >= 1, got {self.null_keys!r}")


# ------------------------------------------------------------------------------------------------------- keys
@dataclass
class LexiKey:
    """A LexiMark key: the secret (bytes), k, and the word counts of the marked dataset (which fix the words chosen)."""

    secret: bytes
    k: int
    counts: dict[str, int]

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        from ...io import atomic_write_text, check_writable

        check_writable(path, overwrite, what="key file")
        return atomic_write_text(path, json.dumps({"format": KEY_FORMAT, "secret": self.secret.hex(), "k": self.k,
                                                   "counts": self.counts}))

    @classmethod
    def load(cls, path: str | Path) -> "LexiKey":
        from ...io import read_json_file

        key = read_json_file(path, KEY_FORMAT, "LexiMark key", "erasekit text provenance leximark-mark --new-key",
                             lambda d: cls(bytes.fromhex(d["secret"]), int(d["k"]),
                                           {str(w): int(c) for w, c in d["counts"].items()}))
        if len(key.secret) < 16:
            raise InvalidValueError(f"LexiMark key {path} has a {len(key.secret)}-byte secret; it is damaged")
        return key

    def fingerprint(self) -> str:
        return hashlib.sha256(b"leximark" + self.secret).hexdigest()[:16]


def word_counts(texts: Sequence[str]) -> dict[str, int]:
    """Lower-case word counts of `texts` (whitespace tokens without surrounding punctuation)."""
    c: Counter[str] = Counter()
    for t in texts:
        for tok in t.split():
            m = _WORD.match(tok)
            if m:
                c[m.group(2).lower()] += 1
    return dict(c)


def _check_texts(texts: Sequence[str], what: str = "documents") -> list[str]:
    if isinstance(texts, str) or len(texts) == 0 or not any(isinstance(t, str) and t.strip() for t in texts):
        raise InvalidValueError(f"no {what} given (the list is empty or every text is blank)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidValueError(f"{what} {i} is a {type(t).__name__}, not a string")
    return list(texts)


def keygen(texts: Sequence[str], k: int = PAPER_K, entropy: bytes | None = None) -> LexiKey:
    """A fresh key (secret from os.urandom, or expanded from `entropy` for reproducible benches) for the dataset
    `texts` (its word counts are stored in the key)."""
    texts = _check_texts(texts)
    if int(k) < 1:
        raise InvalidValueError(f"k must be >= 1, got {k!r}")
    secret = os.urandom(SECRET_BYTES) if entropy is None else hashlib.sha256(b"leximark-key" + entropy).digest()
    counts = word_counts(texts)
    if not any(w in LEXICON for w in counts):
        raise InvalidValueError("none of the documents' words has an entry in the LexiMark lexicon; nothing can be "
                                "marked")
    return LexiKey(secret, int(k), counts)


def _choice(secret: bytes, word: str, n: int) -> int:
    return int.from_bytes(hmac.new(secret, word.encode(), hashlib.sha256).digest()[:8], "little") % n


# ------------------------------------------------------------------------------------------------------- marking
def _entropy(counts: dict[str, int]) -> dict[str, float]:
    """The official entropy map: -p log2 p of each word's frequency p in the dataset."""
    total = max(1, sum(counts.values()))
    return {w: -(c / total) * math.log2(c / total) for w, c in counts.items() if c > 0}


def mark_text(text: str, key: LexiKey, entropy_map: dict[str, float] | None = None) -> tuple[str, list[dict]]:
    """(marked text, substitutions [{"word", "substitute"}]): per sentence, the k lexicon words with the lowest
    -p log2 p (rarest) are replaced by the key's alternative; whitespace and punctuation are kept."""
    ent = entropy_map if entropy_map is not None else _entropy(key.counts)
    parts = re.split(r"(\s+)", text)  # words at even positions, whitespace at odd
    sid, cands = 0, []  # sentence index, candidate words (sentence, entropy, part index, match)
    for i in range(0, len(parts), 2):
        tok = parts[i]
        m = _WORD.match(tok)
        if m and m.group(2).lower() in LEXICON:
            cands.append((sid, ent.get(m.group(2).lower(), 0.0), i, m))
        if re.search(r"[.!?]\W*$", tok) or (i + 1 < len(parts) and "\n" in parts[i + 1]):
            sid += 1
    chosen: set[int] = set()
    by_sentence: dict[int, list] = {}
    for c in cands:
        by_sentence.setdefault(c[0], []).append(c)
    for items in by_sentence.values():
        items.sort(key=lambda c: (c[1], c[2]))
        chosen |= {c[2] for c in items[:key.k]}
    subs = []
    for _, _, i, m in cands:
        if i not in chosen:
            continue
        word = m.group(2)
        alts = LEXICON[word.lower()]
        new = alts[_choice(key.secret, word.lower(), len(alts))]
        if word[0].isupper():
            new = new[0].upper() + new[1:]
        parts[i] = m.group(1) + new + m.group(3)
        subs.append({"word": word, "substitute": new})
    return "".join(parts), subs


def mark(texts: Sequence[str], key: LexiKey) -> list[str]:
    """The marked version of every text (the same word always gets the same substitute)."""
    ent = _entropy(key.counts)
    return [mark_text(t, key, ent)[0] for t in _check_texts(texts)]


# ------------------------------------------------------------------------------------------------------- scoring
@torch.no_grad()
def token_stats(model: Any, tokenizer: Any, texts: Sequence[str], max_len: int = 256) -> list[dict[str, np.ndarray]]:
    """Per text, for tokens 2..n: log-prob `lp`, and the mean `mu` and std `sigma` of log p under the model's own
    next-token distribution (Min-K%++'s normalisers)."""
    out = []
    for t in texts:
        ids = torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"][:max_len]])
        if ids.shape[1] < 2:
            raise InvalidValueError(f"text {t[:40]!r} has fewer than 2 tokens; membership scores need at least 2")
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
        out.append({"lp": logp.gather(-1, ids[0, 1:, None])[:, 0].numpy(), "mu": mu.numpy(), "sigma": sigma.numpy()})
    return out


def min_k_plus_plus(stats: Sequence[dict[str, np.ndarray]], k: float = PAPER_MINK) -> np.ndarray:
    """(N,) Min-K%++ (Zhang et al., "Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language
    Models", 2024): mean of the lowest k fraction of (log p(x_t) - mu_t) / sigma_t. Higher = member."""
    out = []
    for s in stats:
        z = np.sort((s["lp"] - s["mu"]) / s["sigma"])
        out.append(float(z[:max(1, int(len(z) * k))].mean()))
    return np.asarray(out)


def log_likelihoods(model: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """(N,) summed log-probability of tokens 2..n of each text (`erasekit.text.muse.token_logprobs`)."""
    from ..muse import token_logprobs

    return np.asarray([float(np.sum(lp)) for lp in token_logprobs(model, tokenizer, texts)])


def random_key(key: LexiKey, seed: int, index: int) -> LexiKey:
    """A null key: same k and counts, a secret derived from (seed, index) (never the true secret)."""
    return LexiKey(hashlib.sha256(f"leximark-null/{seed}/{index}".encode()).digest(), key.k, key.counts)


@dataclass
class LexiMarkResult:
    """Membership of the marked documents: the paper's Min-K%++ AUROC and Welch t-test (members vs held-back
    documents), and the key-permutation test (p-value, z, per-document z AUROC)."""

    auc: float | None
    p_value: float | None
    t_stat: float | None
    permutation_p: float
    permutation_z: float
    key_auc: float | None
    member_scores: list[float]
    nonmember_scores: list[float]
    member_key_z: list[float]
    nonmember_key_z: list[float]
    substitutions: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key_z(model: Any, tokenizer: Any, docs: list[str], key: LexiKey, cfg: LexiMarkConfig
           ) -> tuple[np.ndarray, np.ndarray]:
    """(true-key log-likelihood per doc (N,), null-key log-likelihoods (null_keys, N))."""
    true = log_likelihoods(model, tokenizer, mark(docs, key))
    nulls = np.stack([log_likelihoods(model, tokenizer, mark(docs, random_key(key, cfg.seed, j)))
                      for j in range(cfg.null_keys)])
    return true, nulls


def detect(model: Any, tokenizer: Any, key: LexiKey, members: Sequence[str], nonmembers: Sequence[str] = (),
           config: LexiMarkConfig | None = None) -> LexiMarkResult:
    """Was the model trained on the marked versions of `members` (the owner's ORIGINAL documents whose marked copies
    were published)? `nonmembers`: original documents whose marked copies were held back (the paper's non-members;
    optional: without them only the key-permutation test runs)."""
    from scipy.stats import ttest_ind

    from ...membership import auc

    cfg = config or LexiMarkConfig()
    members = _check_texts(members, "member documents")
    nonmembers = list(nonmembers)
    if nonmembers:
        _check_texts(nonmembers, "non-member documents")
    subs = sum(len(mark_text(d, key)[1]) for d in members)
    if subs == 0:
        raise InvalidValueError("the key substitutes no word in the member documents; were they marked with it?")
    true, nulls = _key_z(model, tokenizer, members, key, cfg)
    stat_true, stat_null = float(true.mean()), nulls.mean(axis=1)
    perm_p = (1 + int((stat_null >= stat_true).sum())) / (1 + cfg.null_keys)
    sd = float(stat_null.std(ddof=1)) if cfg.null_keys > 1 else 0.0
    perm_z = (stat_true - float(stat_null.mean())) / sd if sd > 0 else 0.0
    doc_sd = nulls.std(axis=0, ddof=1) if cfg.null_keys > 1 else np.ones(len(members))
    mz = (true - nulls.mean(axis=0)) / np.where(doc_sd > 0, doc_sd, 1.0)
    res_auc = p = t = key_auc = None
    ms: list[float] = []
    ns: list[float] = []
    nz: list[float] = []
    if nonmembers:
        ms_ = min_k_plus_plus(token_stats(model, tokenizer, mark(members, key)), cfg.min_k)
        ns_ = min_k_plus_plus(token_stats(model, tokenizer, mark(nonmembers, key)), cfg.min_k)
        res_auc = auc(np.r_[ms_, ns_], np.r_[np.ones(len(ms_), bool), np.zeros(len(ns_), bool)])
        tt = ttest_ind(ms_, ns_, equal_var=False, alternative="greater")
        p, t = float(tt.pvalue), float(tt.statistic)
        ntrue, nnull = _key_z(model, tokenizer, nonmembers, key, cfg)
        nsd = nnull.std(axis=0, ddof=1) if cfg.null_keys > 1 else np.ones(len(nonmembers))
        nz_ = (ntrue - nnull.mean(axis=0)) / np.where(nsd > 0, nsd, 1.0)
        key_auc = auc(np.r_[mz, nz_], np.r_[np.ones(len(mz), bool), np.zeros(len(nz_), bool)])
        ms, ns, nz = ms_.tolist(), ns_.tolist(), nz_.tolist()
    for name, v in (("p_value", p), ("permutation_z", perm_z)):
        if v is not None and not math.isfinite(v):
            raise InvalidValueError(f"LexiMark {name} is not finite; the model's scores are degenerate")
    return LexiMarkResult(res_auc, p, t, perm_p, perm_z, key_auc, ms, ns, mz.tolist(), nz, subs,
                          info={"paper": PAPER, "config": asdict(cfg), "key": key.fingerprint(),
                                "members": len(members), "nonmembers": len(nonmembers),
                                "score": "Min-K%++ of the marked documents (higher = member)"})


PROVENANCE = Provenance("leximark", PAPER, LexiMarkConfig, sys.modules[__name__])

__all__ = ["LEXICON", "LexiKey", "LexiMarkConfig", "LexiMarkResult", "PAPER", "PROVENANCE", "detect", "keygen",
           "log_likelihoods", "mark", "mark_text", "min_k_plus_plus", "random_key", "token_stats", "word_counts"]
