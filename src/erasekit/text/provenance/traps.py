"""Copyright traps (Meeus, Shilov, Faysse, de Montjoye, "Copyright Traps for Large Language Models", ICML 2024,
arXiv:2402.09363; official code github.com/computationalprivacy/copyright-traps, src/scripts/gen_traps.py,
inject_traps.py, src/utils.py).

A data owner samples unique "trap" sequences from a reference LM, keeps those whose perplexity under it falls in a
band, injects each into the documents it publishes a controlled number of times, and keeps an equal number of
never-injected "control" sequences generated the same way. Later, the ratio membership test

    score(x) = log ppl_reference(x) - log ppl_target(x)    (= -log of the official ratio ppl_target / ppl_reference)

ranks traps above controls if the target model was trained on the published documents (the official `ratio_auc`
labels members 0 and ranks by the ratio itself: the same AUC). Reported: the AUC of traps
(members) vs controls (non-members) per (length, repetitions) cell, its one-sided Mann-Whitney p-value, and the
"how many repetitions" curve with its PELT change point (`erasekit.imitation.threshold`, as the text world's
frequency curve).

    traps = make_traps(reference_model, tokenizer, TrapConfig(lengths=(25, 50), repetitions=(1, 4, 16)), corpus)
    texts, placements = inject_traps(corpus, traps, tokenizer, seed=0)      # train the target on `texts`
    result = detect_traps(target_model, tokenizer, traps, reference_model)  # result.cells, result.curve

Deviations from the official code (and why):
- Temperatures 1.25-1.75 (official sweep 0.5-3.5): below, the small memorising text-world model replays its
  corpus; above, its samples are byte soup that rarely survives decode -> encode. The perplexity band is a config
  value (official [1, 101) in 10 buckets for LLaMA-2 7B's 32k vocabulary; the default here, [2, 26) in 1 bucket,
  fits a 768-token model whose samples at temperature 1.5 have median perplexity ~8 (25 tokens) to ~14 (100)).
- Jaccard threshold 0.5 (official 0.2): with 768 tokens, two unrelated 100-token samples already share ~20% of their
  token sets (median measured 0.20-0.26), so 0.2 rejects almost everything.
- Candidates are also rejected when they share a `novelty_ngram`-token n-gram with the corpus (the official code
  samples from a 7B model whose samples are unique in practice; the tiny text-world model replays its training
  data), so a trap is never a member before injection (default 16 tokens).
- Each of a trap's `repetitions` copies goes into a different document (official: all copies into one document of
  >= 5,000 tokens); text-world documents are at most `n_positions` = 256 tokens. A copy is placed at a random word
  boundary with a space on both sides (official: the next word is glued to the trap's end).
- Members and controls are drawn from one pool, split round-robin within each perplexity bucket, so every
  (length, repetitions) cell and the controls have the same perplexity mix (official: a second generation run).
- The training recipe sees each document about steps x batch / n_documents times (about 25 epochs in the shipped
  text-world recipe), so a trap injected r times is seen about 25 r times; the official target (Croissant) saw its
  data about once. Reported curves state both.
- Scores use the loss of tokens 2..n given the first (official: the same, after dropping LLaMA's BOS); the same
  tokenizer for target and reference (train the target with the reference's tokenizer, see `train_target`).
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ErasekitError, InvalidValueError
from . import Provenance

PAPER = ('Meeus et al., "Copyright Traps for Large Language Models", ICML 2024 (arXiv:2402.09363); '
         "github.com/computationalprivacy/copyright-traps")
FORMAT = "erasekit.traps/1"
CONTROL = 0  # `repetitions` of a control sequence (generated like a trap, never injected)
SAMPLE_BATCH = 32  # sequences sampled per (temperature) generate call


@dataclass(frozen=True)
class TrapConfig:
    """How trap sequences are generated and how many copies of each go into the corpus."""

    lengths: tuple[int, ...] = field(default=(25, 50, 100), metadata={"help": "trap lengths in tokens (paper: 25, "
                                                                               "50, 100)"})
    repetitions: tuple[int, ...] = field(default=(1, 2, 4, 8, 16), metadata={
        "help": "copies of a trap in the corpus, one cell each (paper: 1, 10, 100, 1000)"})
    traps_per_cell: int = field(default=8, metadata={"help": "traps per (length, repetitions) cell; as many controls "
                                                               "per length"})
    perplexity_band: tuple[float, float] = field(default=(2.0, 26.0), metadata={
        "help": "keep sequences whose reference perplexity is in [lo, hi) (paper: [1, 101) under LLaMA-2 7B)"})
    buckets: int = field(default=1, metadata={"help": "equal-width perplexity buckets with equal quotas (paper: 10)"})
    temperatures: tuple[float, ...] = field(default=(1.25, 1.5, 1.75), metadata={
        "help": "sampling temperatures cycled through (official: 0.5 to 3.5 in steps of 0.5)"})
    jaccard_threshold: float = field(default=0.5, metadata={
        "help": "reject a sequence whose token-set Jaccard similarity with a kept one exceeds this (official 0.2 "
                "for a 32k vocabulary)"})
    novelty_ngram: int = field(default=16, metadata={"help": "reject a sequence sharing a token n-gram of this length "
                                                            "with the corpus (0: off)"})
    max_batches: int = field(default=400, metadata={"help": "give up after this many sampling batches"})
    seed: int = field(default=0, metadata={"help": "sampling and assignment seed"})

    def __post_init__(self) -> None:
        for name in ("lengths", "repetitions", "perplexity_band", "temperatures"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.lengths or any(int(n) < 2 for n in self.lengths):
            raise InvalidValueError(f"lengths must be token counts >= 2, got {self.lengths!r}")
        if not self.repetitions or any(int(r) < 1 for r in self.repetitions) or \
                len(set(self.repetitions)) != len(self.repetitions):
            raise InvalidValueError(f"repetitions must be distinct integers >= 1, got {self.repetitions!r}")
        for name in ("traps_per_cell", "buckets", "max_batches"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.traps_per_cell % self.buckets:
            raise InvalidValueError(f"traps_per_cell={self.traps_per_cell} must be a multiple of buckets="
                                    f"{self.buckets} (equal perplexity mix per cell)")
        lo, hi = (float(x) for x in self.perplexity_band) if len(self.perplexity_band) == 2 else (0.0, 0.0)
        if not (math.isfinite(lo) and math.isfinite(hi) and 1.0 <= lo < hi):
            raise InvalidValueError(f"perplexity_band must be (lo, hi) with 1 <= lo < hi, got {self.perplexity_band!r}")
        if not self.temperatures or any(not (math.isfinite(t) and t > 0) for t in self.temperatures):
            raise InvalidValueError(f"temperatures must be positive numbers, got {self.temperatures!r}")
        if not 0.0 <= float(self.jaccard_threshold) <= 1.0:
            raise InvalidValueError(f"jaccard_threshold must be in [0, 1], got {self.jaccard_threshold!r}")
        if int(self.novelty_ngram) < 0:
            raise InvalidValueError(f"novelty_ngram must be >= 0 (0: off), got {self.novelty_ngram!r}")


@dataclass(frozen=True)
class Trap:
    """One sequence: its text, token ids, length, reference perplexity and `repetitions` (0 = control)."""

    text: str
    ids: tuple[int, ...]
    length: int
    perplexity: float
    repetitions: int

    @property
    def is_member(self) -> bool:
        return self.repetitions > 0


# ------------------------------------------------------------------------------------------------------- files
def save_traps(path: str | Path, traps: Sequence[Trap], config: TrapConfig, meta: dict | None = None,
               overwrite: bool = False) -> Path:
    """Write a trap file (JSON: format, config, meta, traps), atomically; refuses to replace one without
    `overwrite`."""
    from ...io import atomic_write_text, check_writable

    check_writable(path, overwrite, what="trap file")
    data = {"format": FORMAT, "paper": PAPER, "config": asdict(config), "meta": dict(meta or {}),
            "traps": [asdict(t) | {"ids": list(t.ids)} for t in traps]}
    return atomic_write_text(path, json.dumps(data, indent=1))


def load_traps(path: str | Path) -> tuple[list[Trap], dict]:
    """(traps, file dict) of a trap file; one line when it is missing or not a trap file."""
    from ...io import read_json_file

    def parse(data: dict) -> tuple[list[Trap], dict]:
        return [Trap(t["text"], tuple(int(i) for i in t["ids"]), int(t["length"]), float(t["perplexity"]),
                     int(t["repetitions"])) for t in data["traps"]], data

    traps, data = read_json_file(path, FORMAT, "trap file", "erasekit text provenance traps-make", parse)
    if not traps:
        raise InvalidValueError(f"trap file {path} holds no traps")
    return traps, data


# ------------------------------------------------------------------------------------------------------- generation
def _ngrams(ids: Sequence[int], n: int) -> set[tuple[int, ...]]:
    return {tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)}


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / max(1, len(a | b))


@torch.no_grad()
def sequence_perplexity(model: Any, tokenizer: Any, ids: Sequence[Sequence[int]]) -> np.ndarray:
    """(N,) perplexity of each id sequence given BOS (as the official gen_traps scores its samples)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for row in ids:
        x = torch.tensor([[bos, *row]])
        lp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), -1).gather(-1, x[0, 1:, None])[:, 0]
        out.append(math.exp(-float(lp.mean())))
    return np.asarray(out)


def make_traps(model: Any, tokenizer: Any, config: TrapConfig | None = None, corpus: Sequence[str] = (),
               progress: Any = None) -> list[Trap]:
    """Sample traps and controls from the reference `model`: per length, traps_per_cell x (len(repetitions) + 1)
    unique sequences in the perplexity band, equal counts per bucket, assigned round-robin (within buckets) to the
    repetition cells and to the controls (repetitions 0). `corpus`: texts whose token n-grams a trap must avoid."""
    from transformers import TemperatureLogitsWarper

    from ..marks import sample

    cfg = config or TrapConfig()
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max(cfg.lengths) + 1 > int(limit):
        raise InvalidValueError(f"trap length {max(cfg.lengths)} does not fit the model's context of {limit} "
                                "tokens; use shorter lengths")
    corpus_grams: set[tuple[int, ...]] = set()
    if cfg.novelty_ngram:
        for t in corpus:
            corpus_grams |= _ngrams(tokenizer(t, add_special_tokens=False)["input_ids"], cfg.novelty_ngram)
    lo, hi = (float(x) for x in cfg.perplexity_band)
    edges = np.linspace(lo, hi, cfg.buckets + 1)
    roles = list(cfg.repetitions) + [CONTROL]
    per_bucket = cfg.traps_per_cell * len(roles) // cfg.buckets
    rng = random.Random(cfg.seed)
    kept_sets: list[set[int]] = []
    traps: list[Trap] = []
    batch = 0
    for length in cfg.lengths:
        pools: list[list[tuple[str, tuple[int, ...], float]]] = [[] for _ in range(cfg.buckets)]
        while any(len(p) < per_bucket for p in pools):
            if batch >= cfg.max_batches:
                raise ErasekitError(f"found only {[len(p) for p in pools]} of {per_bucket} sequences per perplexity "
                                    f"bucket for length {length} after {batch} batches; widen perplexity_band, add "
                                    "temperatures or lower traps_per_cell")
            temp = cfg.temperatures[batch % len(cfg.temperatures)]
            ids = sample(model, tokenizer, [""] * SAMPLE_BATCH, int(length), seed=cfg.seed * 1_000_003 + batch,
                         processor=TemperatureLogitsWarper(float(temp)))
            batch += 1
            ppl = sequence_perplexity(model, tokenizer, ids)
            for row, p in zip(ids, ppl):
                b = int(np.searchsorted(edges, p, side="right")) - 1
                if not (0 <= b < cfg.buckets) or len(pools[b]) >= per_bucket:
                    continue
                text = tokenizer.decode(row)
                if (tokenizer.eos_token_id in row or text != text.strip() or not text
                        or tokenizer(text, add_special_tokens=False)["input_ids"] != list(row)):
                    continue  # official --retokenize: the text must encode back to the same tokens
                if cfg.novelty_ngram and _ngrams(row, cfg.novelty_ngram) & corpus_grams:
                    continue
                s = set(row)
                if any(_jaccard(s, k) > cfg.jaccard_threshold for k in kept_sets):
                    continue
                kept_sets.append(s)
                pools[b].append((text, tuple(int(i) for i in row), float(p)))
            if progress is not None:
                progress(length, [len(p) for p in pools], per_bucket)
        for pool in pools:
            rng.shuffle(pool)
            for j, (text, ids_, p) in enumerate(pool):
                traps.append(Trap(text, ids_, int(length), p, int(roles[j % len(roles)])))
    return traps


# ------------------------------------------------------------------------------------------------------- injection
def inject_traps(texts: Sequence[str], traps: Sequence[Trap], tokenizer: Any, seed: int = 0,
                 max_tokens: int = 255) -> tuple[list[str], list[dict]]:
    """(texts with the member traps injected, placements). Each trap with repetitions r goes into r different
    documents (chosen at random among those that keep <= `max_tokens` tokens), at a random word boundary.
    Placements: one {"trap", "document"} row per copy (trap = index into `traps`)."""
    texts = list(texts)
    if not texts or not any(t.strip() for t in texts):
        raise InvalidValueError("the corpus is empty; give the training texts the traps go into")
    members = [i for i, t in enumerate(traps) if t.is_member]
    if not members:
        raise InvalidValueError("no member traps to inject (every sequence is a control)")
    rng = random.Random(seed)
    sizes = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    units = [t.split(" ") for t in texts]  # words, and each injected trap as one unit (never split by a later one)
    placements = []
    # longest traps first, so that they find room
    for i in sorted(members, key=lambda i: (-traps[i].length, i)):
        t = traps[i]
        room = [d for d in range(len(texts)) if sizes[d] + t.length + 2 <= max_tokens]
        if len(room) < t.repetitions:
            raise InvalidValueError(f"only {len(room)} documents have room for {t.repetitions} copies of a "
                                    f"{t.length}-token trap (<= {max_tokens} tokens each); use fewer repetitions, "
                                    "shorter traps or fewer traps per cell")
        for d in rng.sample(room, t.repetitions):
            units[d].insert(rng.randint(0, len(units[d])), t.text)
            sizes[d] += t.length + 2
            placements.append({"trap": i, "document": d})
    return [" ".join(u) for u in units], placements


def train_target(texts: Sequence[str], out: str | Path, reference_folder: str | Path, cfg: Any = None,
                 extra: dict | None = None) -> dict:
    """Train the text world's LM recipe (`erasekit.text.train.train_lm`) on `texts` with the tokenizer of the
    reference model in `reference_folder` (copied into the run's checkpoint folder, which train_lm reuses), so that
    target and reference perplexities are over the same tokens."""
    import shutil

    from ..train import train_lm

    ck = Path(out) / "checkpoint"
    ck.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = Path(reference_folder) / name
        if src.is_file() and not (ck / name).exists():
            shutil.copy(src, ck / name)
    if not (ck / "tokenizer.json").is_file():
        raise ErasekitError(f"{reference_folder} has no tokenizer.json to train the target with")
    return train_lm(list(texts), out, cfg, extra=extra)


# ------------------------------------------------------------------------------------------------------- detection
def mean_losses(model: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """(N,) mean next-token loss (nats) of tokens 2..n of each text (`erasekit.text.muse.token_logprobs`)."""
    from ..muse import token_logprobs

    lps = token_logprobs(model, tokenizer, texts)
    out = np.asarray([-float(np.mean(lp)) for lp in lps])
    if not np.isfinite(out).all():
        raise InvalidValueError("the model's loss is NaN or inf on some trap sequences")
    return out


def one_sided_mannwhitney(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """P-value of "members score higher" (Mann-Whitney U, one-sided; the AUC's own test)."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(np.asarray(members, float), np.asarray(nonmembers, float),
                              alternative="greater").pvalue)


@dataclass
class TrapResult:
    """Per (length, repetitions) cell: AUC of traps vs the length's controls and its p-value; the repetition curve
    per length with its change point; every sequence's losses and score."""

    cells: list[dict[str, Any]]
    curve: dict[str, Any]
    rows: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_traps(model: Any, tokenizer: Any, traps: Sequence[Trap], reference: Any = None,
                 reference_tokenizer: Any = None, change_point: bool = True) -> TrapResult:
    """The ratio membership test of every trap and control on the target `model` against `reference` (the model
    that generated the traps / never saw them; None: the LOSS test, score = -loss). AUC per (length, repetitions)
    against the controls of that length, one-sided Mann-Whitney p-value, and per length the PELT change point of
    per-trap AUC (the fraction of controls a trap outscores) vs repetitions."""
    from ...membership import auc, membership_scores

    traps = list(traps)
    if not traps:
        raise InvalidValueError("no traps given")
    texts = [t.text for t in traps]
    loss = mean_losses(model, tokenizer, texts)
    ref = mean_losses(reference, reference_tokenizer or tokenizer, texts) if reference is not None else None
    scores = membership_scores(loss, ref)
    rows = [{"length": t.length, "repetitions": t.repetitions, "perplexity_reference_gen": t.perplexity,
             "loss": float(loss[i]), "reference_loss": None if ref is None else float(ref[i]),
             "score": float(scores[i]), "text": t.text} for i, t in enumerate(traps)]
    cells, curve = [], {}
    for length in sorted({t.length for t in traps}):
        ctrl = np.asarray([scores[i] for i, t in enumerate(traps) if t.length == length and not t.is_member])
        if ctrl.size == 0:
            raise InvalidValueError(f"no control sequences of length {length}; a trap file holds controls "
                                    "(repetitions 0) for every length")
        table = {}
        for r in sorted({t.repetitions for t in traps if t.length == length and t.is_member}):
            idx = [i for i, t in enumerate(traps) if t.length == length and t.repetitions == r]
            mem = scores[idx]
            a = auc(np.concatenate([mem, ctrl]), np.r_[np.ones(len(mem), bool), np.zeros(len(ctrl), bool)])
            cells.append({"length": length, "repetitions": r, "auc": a, "p_value": one_sided_mannwhitney(mem, ctrl),
                          "members": len(mem), "controls": int(ctrl.size),
                          "median_ratio": float(np.exp(-np.median(mem))) if ref is not None else None})
            for i in idx:
                table[f"trap{i}"] = (float(r), float(((scores[i] > ctrl).sum() + 0.5 * (scores[i] == ctrl).sum())
                                                    / ctrl.size))
        if change_point and len({f for f, _ in table.values()}) >= 2 and len(table) >= 3:
            from ...imitation.threshold import find_threshold

            res = find_threshold(table, n_bootstrap=200, seed=0)
            curve[str(length)] = {"threshold": res.threshold, "interval": res.interval,
                                  "bootstrap_found": res.bootstrap_found}
    info = {"score": "reference_loss - loss (= -log ppl ratio)" if ref is not None else "-loss (LOSS test)",
            "paper": PAPER}
    return TrapResult(cells, curve, rows, info)


PROVENANCE = Provenance("traps", PAPER, TrapConfig, sys.modules[__name__])

__all__ = ["CONTROL", "PAPER", "PROVENANCE", "Trap", "TrapConfig", "TrapResult", "detect_traps", "inject_traps",
           "load_traps", "make_traps", "mean_losses", "one_sided_mannwhitney", "save_traps", "sequence_perplexity",
           "train_target"]
