"""Detectors: a prompt/embedding detector of protected concepts, and an image-side output filter.

Prompt side (`ConceptDetector`, shield "detector"): a prompt is flagged when it names a protected concept or one of its
trigger keywords (whole-word token match), or when its text embedding is close to one of those phrases: cosine
similarity of the L2-normalised EOS state of the pipeline's own CLIP text encoder (CLIP's pooled output; or the mean
of the token states, pooling="mean"), max over the concept's phrases (and, spans=True, over every word span of the
prompt). The similarity threshold is calibrated on unprotected prompts to a target false-positive rate and recorded,
with the encoder's fingerprint, in `identity()`. Defaults measured on the toy world (7 concepts, 132 unseen
unprotected prompts each): EOS + whole prompt keeps the false-positive rate near its 0.05 target (0.046); word spans
catch more paraphrases by similarity alone but roughly triple the false positives (0.10-0.13).

Image side (`ImageFilter`, shield "image_filter"): the toy world's oracle, NudeNet (optional, AGPL: `pip install
nudenet`, imported only when asked for) or any user callable `(N, H, W, 3) uint8 -> (N,) bool` flags outputs, which
`shielded_generate` blocks or regenerates.

Sources: the detection rule follows Guardians of Generation (sohambuilds/gogpipeline, detection/detection_manager.py:
cosine >= 0.8 between an OpenAI text embedding of the prompt and of each concept name/synonym, then an LLM YES/NO
check);
refusal and output filtering follow the moderation pipelines studied in "Advancing Content Moderation" (LLM moderators)
and the Stable Diffusion safety checker. Deviations: no LLM and no external embedding service (CLIP text states of the
pipeline instead, so it runs offline on any SD1.x model); a calibrated threshold instead of the fixed 0.8 (cosines of a
77-token CLIP encoder are not on the ada-002 scale); optional word-span matching (off by default, see above).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError
from ..evaluators import NUDENET_CLASSES
from . import ProtectedConcept, Shield, protect

# ------------------------------------------------------------------------------------------------- text utilities
STOPWORDS = frozenset("a an the of in on with and by to for at its it his her their this that is are as from or "
                      "style art picture image painting drawing photo".split())
CONNECTORS = ("in the style of", "made by", "art by", "by", "of", "with", "in", "and", "behind", "from")
_CONNECTOR_RE = "|".join(re.escape(c) for c in CONNECTORS)


def _term_pattern(term: str) -> re.Pattern:
    """Whole-word, case-insensitive match of `term` (words separated by any whitespace), with an optional "'s"."""
    words = [re.escape(w) for w in term.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?:'s)?(?!\w)", re.IGNORECASE)


def find_terms(prompt: str, terms: Sequence[str]) -> list[str]:
    """The `terms` that occur in `prompt` as whole words (case-insensitive)."""
    return [t for t in terms if t.strip() and _term_pattern(t).search(prompt)]


def tidy(text: str) -> str:
    """Whitespace and punctuation clean-up: collapse spaces, no space before punctuation, no empty list items."""
    prev = None
    while prev != text:
        prev = text
        text = re.sub(r"\s+", " ", text).strip()
        text = re.sub(r"\s+([,.;:])", r"\1", text)
        text = re.sub(r"([,;])(\s*[,;])+", r"\1", text)
        text = re.sub(r"^[\s,;.]+|[\s,;]+$", "", text)
    return text


_MARK = "\x00"


def _clean_removed(text: str) -> str:
    """Remove what a deleted reference (marked by _MARK) leaves dangling: the connector before it when nothing follows
    ("a circle in the style of X" -> "a circle", "a painting of X by Y" -> "a painting by Y", "art by X, a circle" ->
    "art, a circle"), a following "style" ("a circle, X style"), and an article left alone before it."""
    conn = rf"(?:{_CONNECTOR_RE})"
    prev = None
    while prev != text:
        prev = text
        text = re.sub(rf"(?<!\w){conn}\s*{_MARK}(?=\s*(?:$|[,;.]|{conn}(?!\w)|{_MARK}))", _MARK, text,
                      flags=re.IGNORECASE)
        text = re.sub(rf"{_MARK}\s+style(?!\w)", _MARK, text, flags=re.IGNORECASE)
        text = re.sub(rf"(?<!\w)(?:a|an|the)\s*{_MARK}", _MARK, text, flags=re.IGNORECASE)
        text = re.sub(rf"{_MARK}(\s*{_MARK})+", _MARK, text)
    return text


def drop_terms(prompt: str, terms: Sequence[str], anchor: str = "", words: bool = False) -> str:
    """Remove every whole-word occurrence of `terms` (longest first) from `prompt` with what it leaves dangling; the
    first removal is replaced by `anchor` instead, if given. words=True also removes remaining single words of the
    terms' vocabulary (stopwords excepted). A prompt without the terms comes back unchanged."""
    out = prompt
    for term in sorted({t for t in terms if t.strip()}, key=len, reverse=True):
        out = _term_pattern(term).sub(_MARK, out)
    if words:
        vocab = {w.lower() for t in terms for w in re.findall(r"[\w'-]+", t)} - STOPWORDS
        for w in sorted(vocab, key=len, reverse=True):
            out = _term_pattern(w).sub(_MARK, out)
    if _MARK not in out:
        return prompt
    if anchor:
        out = re.sub(rf"{_MARK}(\s*{_MARK})*", f" {anchor} ", out, count=1)
    return tidy(_clean_removed(out).replace(_MARK, " "))


def word_spans(prompt: str, max_len: int) -> list[str]:
    """The prompt itself plus every contiguous window of 1..max_len words (punctuation stripped), except windows made
    only of stopwords ("this", "of the"), which name nothing."""
    words = re.findall(r"[\w'-]+", prompt)
    spans = [prompt]
    for n in range(1, max_len + 1):
        spans += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)
                  if any(w.lower() not in STOPWORDS for w in words[i:i + n])]
    return list(dict.fromkeys(spans))


# -------------------------------------------------------------------------------------------------- text embeddings
class TextEmbedder:
    """(N, D) unit vectors from a CLIP text encoder: mean of the last hidden states over the prompt's tokens (BOS
    excluded, EOS included), or the EOS state (pooling="eos")."""

    def __init__(self, pipe: StableDiffusionPipeline, pooling: str = "eos", batch_size: int = 256):
        if pooling not in ("mean", "eos"):
            raise InvalidValueError(f"pooling must be 'mean' or 'eos', got {pooling!r}")
        self.tokenizer, self.text_encoder = pipe.tokenizer, pipe.text_encoder
        self.pooling, self.batch_size = pooling, batch_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt")
            ids = tok.input_ids.to(self.text_encoder.device)
            mask = tok.attention_mask.to(ids.device).float()  # (B, 77): BOS, tokens, EOS are 1
            h = self.text_encoder(ids)[0].float()  # (B, 77, D)
            if self.pooling == "eos":
                v = h[torch.arange(len(ids)), mask.sum(1).long() - 1]
            else:
                mask[:, 0] = 0
                v = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            out.append(torch.nn.functional.normalize(v, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.text_encoder.config.hidden_size)

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the text encoder's weights: which encoder the threshold belongs to."""
        h = hashlib.sha256()
        for name, p in sorted(self.text_encoder.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ calibration data
def world_negatives(world: Any, concepts: Sequence[ProtectedConcept], n: int = 400, seed: int = 1234) -> list[str]:
    """Unprotected calibration prompts from the world (`World.calibration_prompts`: never its evaluation wording);
    a world that has none raises a message saying to pass negatives or a fixed threshold."""
    from ..errors import UnknownNameError
    from ..worlds import UnsupportedError, get_world

    world = get_world(world)
    names = [c.name for c in concepts]
    try:
        return list(world.calibration_prompts(names, n, seed))
    except (UnsupportedError, UnknownNameError):
        raise InvalidValueError(f"cannot calibrate a detector for {names}: they are not concepts of world "
                                f"{world.name!r}, which draws the calibration prompts; pass negatives=[unprotected "
                                "prompts] or a fixed threshold") from None


def calibrate_threshold(scores: np.ndarray, already: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold such that at most floor(target_fpr * n) negatives are flagged in total, counting the
    `already` flagged ones (token matches) first. scores, already: (n,) over unprotected prompts."""
    n = len(scores)
    budget = int(np.floor(target_fpr * n)) - int(already.sum())
    rest = np.sort(scores[~already])[::-1]
    if budget < 0 or len(rest) == 0:
        return float(np.nextafter(np.float32(rest[0] if len(rest) else 1.0), np.float32(np.inf)))
    if budget >= len(rest):
        return float(rest[-1])
    return float(np.nextafter(np.float32(rest[budget]), np.float32(np.inf)))


@dataclass
class Detection:
    """Per prompt: flagged, which concept (index or -1), its best similarity, and whether a term matched."""

    flagged: np.ndarray  # (B,) bool
    concept: np.ndarray  # (B,) int, -1 where none
    score: np.ndarray  # (B,) float: max similarity over concepts
    token: np.ndarray  # (B,) bool: a name/keyword matched as words
    scores: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))  # (B, C)


class ConceptDetector:
    """Token match + calibrated embedding similarity against each protected concept's name and keywords."""

    def __init__(self, pipe: StableDiffusionPipeline | None, concepts: Sequence[ProtectedConcept],
                 threshold: float | None = None, target_fpr: float = 0.05, tokens: bool = True,
                 embedding: bool = True, spans: bool = False, pooling: str = "eos",
                 negatives: Sequence[str] | None = None, n_calibration: int = 400, calibration_seed: int = 1234,
                 world: Any = None):
        if not concepts:
            raise InvalidValueError("a detector needs at least one protected concept; got none")
        if not (tokens or embedding):
            raise InvalidValueError("a detector needs tokens=True or embedding=True; both are False")
        self.concepts = tuple(concepts)
        self.tokens, self.embedding, self.spans = tokens, embedding, spans
        self.target_fpr = target_fpr
        self.calibration: dict = {}
        self.embedder: TextEmbedder | None = None
        self.threshold = threshold
        if not embedding:
            return
        if pipe is None:
            raise InvalidValueError("embedding detection needs a pipeline (its text encoder): pass pipe=..., or "
                                    "use tokens only (embedding=False)")
        self.embedder = TextEmbedder(pipe, pooling)
        self._cache: dict[str, torch.Tensor] = {}
        self.encoder_fingerprint = self.embedder.fingerprint()  # the encoder the threshold belongs to
        self.refs = [(ci, t) for ci, c in enumerate(self.concepts) for t in c.terms]
        self.ref_emb = self.embedder([t for _, t in self.refs])  # (R, D)
        self.ref_concept = torch.tensor([ci for ci, _ in self.refs])
        self.max_span = max(len(t.split()) for _, t in self.refs) + 1
        if threshold is None:
            source = "user negatives"
            if negatives is None:
                negatives = world_negatives(world, self.concepts, n_calibration, calibration_seed)
                source = (f"world {getattr(world, 'name', world)!r} calibration prompts without the protected "
                          f"concepts (seed {calibration_seed})")
            negatives = list(negatives)
            if len(negatives) < 20:
                raise InvalidValueError(f"calibration needs >= 20 unprotected prompts, got {len(negatives)}")
            s = self._similarity(negatives).max(1).values.numpy()
            tok = self._token_match(negatives).any(1) if tokens else np.zeros(len(negatives), dtype=bool)
            self.threshold = calibrate_threshold(s, tok, target_fpr)
            flagged = tok | (s >= self.threshold)
            self.calibration = {"source": source, "n": len(negatives), "target_fpr": target_fpr,
                                "achieved_fpr": float(flagged.mean()), "token_fp": int(tok.sum()),
                                "negative_score_quantiles": {f"p{round(q * 100)}": float(np.quantile(s, q))
                                                             for q in (0.5, 0.9, 0.99)}}

    def _token_match(self, prompts: Sequence[str]) -> np.ndarray:
        """(B, C) bool: concept c's name or a keyword occurs in the prompt as words."""
        return np.array([[bool(find_terms(p, c.terms)) for c in self.concepts] for p in prompts], dtype=bool)\
            .reshape(len(prompts), len(self.concepts))

    def _embed_cached(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) embeddings, each distinct text encoded once per detector (prompts share many word spans)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            if len(self._cache) + len(todo) > 200_000:
                self._cache.clear()
            self._cache.update(zip(todo, self.embedder(todo)))
        return torch.stack([self._cache[t] for t in texts])

    def _similarity(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, C) max cosine between any word span of the prompt (or the prompt only) and any phrase of concept c."""
        spans = [word_spans(p, self.max_span) if self.spans else [p] for p in prompts]
        emb = self._embed_cached([x for s in spans for x in s])  # (S, D)
        sim = emb @ self.ref_emb.T  # (S, R)
        per_concept = torch.full((len(emb), len(self.concepts)), -1.0)
        per_concept = per_concept.scatter_reduce(1, self.ref_concept.expand(len(emb), -1), sim, reduce="amax")
        counts = [len(x) for x in spans]
        return torch.stack([blk.max(0).values for blk in per_concept.split(counts)])

    def detect(self, prompts: Sequence[str]) -> Detection:
        prompts = list(prompts)
        b, c = len(prompts), len(self.concepts)
        tok = self._token_match(prompts) if self.tokens else np.zeros((b, c), dtype=bool)
        sim = self._similarity(prompts).numpy() if self.embedding and b else np.full((b, c), -1.0)
        hit = tok | (sim >= (self.threshold if self.threshold is not None else np.inf))
        # the concept a prompt is attributed to: a token match first, else the most similar
        key = np.where(tok, 2.0, 0.0) + np.where(hit, 1.0, 0.0) + sim * 1e-3
        concept = np.where(hit.any(1), key.argmax(1) if c else -1, -1)
        return Detection(hit.any(1), concept, sim.max(1) if c else np.zeros(b), tok.any(1), sim)

    def identity(self) -> dict:
        return {"rule": "token match OR max span cosine >= threshold", "threshold": self.threshold,
                "tokens": self.tokens, "embedding": self.embedding, "spans": self.spans,
                "pooling": self.embedder.pooling if self.embedder else None,
                "encoder_sha256_16": self.encoder_fingerprint if self.embedder else None,
                "calibration": self.calibration}


# ---------------------------------------------------------------------------------------------- prompt detector
@dataclass(frozen=True)
class DetectorConfig:
    action: str = field(default="refuse", metadata={
        "help": "refuse: do not generate flagged prompts; flag: only record"})
    threshold: float | None = field(default=None, metadata={"help": "fixed cosine threshold; None calibrates it"})
    target_fpr: float = field(default=0.05, metadata={
        "help": "false-positive rate on unprotected prompts to calibrate to"})
    tokens: bool = field(default=True, metadata={"help": "flag whole-word matches of names/keywords"})
    embedding: bool = field(default=True, metadata={"help": "flag text-embedding similarity above the threshold"})
    spans: bool = field(default=False, metadata={"help": "compare every word span of the prompt, not only the whole"})
    pooling: str = field(default="eos", metadata={"help": "mean (over tokens, BOS excluded) or eos"})
    n_calibration: int = field(default=400, metadata={
        "help": "calibration prompts drawn from the world (World.calibration_prompts)"})
    calibration_seed: int = field(default=1234, metadata={"help": "seed of the calibration prompts"})

    def __post_init__(self) -> None:
        check_detection_fields(self)
        if self.action not in ("refuse", "flag"):
            raise InvalidValueError(f"detector action must be 'refuse' or 'flag', got {self.action!r}")


def check_detection_fields(cfg: Any) -> None:
    """Shared checks of the detection fields of DetectorConfig / GuardiansConfig."""
    if not 0.0 <= cfg.target_fpr < 1.0:
        raise InvalidValueError(f"target_fpr must be in [0, 1), got {cfg.target_fpr}")
    if cfg.threshold is not None and not -1.0 <= cfg.threshold <= 1.0:
        raise InvalidValueError(f"threshold is a cosine in [-1, 1], got {cfg.threshold}")
    if cfg.pooling not in ("mean", "eos"):
        raise InvalidValueError(f"pooling must be 'mean' or 'eos', got {cfg.pooling!r}")
    if cfg.n_calibration < 20:
        raise InvalidValueError(f"n_calibration must be >= 20, got {cfg.n_calibration}")


def build_detector(cfg: Any, concepts: Sequence[ProtectedConcept], pipe: StableDiffusionPipeline | None,
                   negatives: Sequence[str] | None, world: Any = None) -> ConceptDetector:
    """A `ConceptDetector` from the detection fields of a DetectorConfig / GuardiansConfig."""
    return ConceptDetector(pipe, concepts, threshold=cfg.threshold, target_fpr=cfg.target_fpr, tokens=cfg.tokens,
                           embedding=cfg.embedding, spans=cfg.spans, pooling=cfg.pooling, negatives=negatives,
                           n_calibration=cfg.n_calibration, calibration_seed=cfg.calibration_seed, world=world)


class PromptDetector(Shield):
    """Prompt/embedding classifier for protected concepts; refuses (or only records) flagged requests.

    Guardians of Generation's detection module without its LLM check (see the module docstring for deviations).
    """

    name = "detector"
    config_cls = DetectorConfig
    primary = "action"
    needs_pipe = True

    def __init__(self, config: DetectorConfig | None = None, concepts: Sequence[str | ProtectedConcept] = (),
                 pipe: StableDiffusionPipeline | None = None, negatives: Sequence[str] | None = None,
                 world: Any = None):
        super().__init__(config, concepts)
        self.detector = build_detector(self.config, self.concepts, pipe, negatives, world)

    def prepare(self, prompts: list[str]) -> tuple[list[str], np.ndarray, dict[str, list]]:
        d = self.detector.detect(prompts)
        refused = d.flagged.copy() if self.config.action == "refuse" else np.zeros(len(prompts), dtype=bool)
        names = [self.concepts[i].name if i >= 0 else None for i in d.concept]
        return prompts, refused, {"detected": d.flagged.tolist(), "concept": names, "score": d.score.tolist(),
                                  "token_match": d.token.tolist()}

    def identity(self) -> dict:
        return {**super().identity(), "detector": self.detector.identity()}


# ------------------------------------------------------------------------------------------------- image filter
NUDENET_EXPOSED = NUDENET_CLASSES  # the pinned nudity classes of `erasekit.evaluators` (one NudeNet wrapper)


@dataclass(frozen=True)
class ImageFilterConfig:
    action: str = field(default="block", metadata={"help": "block (black image) or regenerate with a fresh seed"})
    classifier: str = field(default="world", metadata={
        "help": "'world' (the world's evaluator, e.g. the toy oracle), a registered evaluator name (nudenet, ...), "
                "or custom (a callable); 'oracle' = 'world'"})
    max_tries: int = field(default=2, metadata={"help": "regenerations per flagged image before blocking it"})
    nudenet_threshold: float = field(default=0.6, metadata={"help": "NudeNet detection score threshold"})
    nudenet_classes: tuple[str, ...] = field(default=NUDENET_EXPOSED, metadata={"help": "NudeNet classes that flag"})

    def __post_init__(self) -> None:
        if self.action not in ("block", "regenerate"):
            raise InvalidValueError(f"image_filter action must be 'block' or 'regenerate', got {self.action!r}")
        if self.classifier not in ("world", "oracle", "custom"):
            from ..evaluators import evaluators

            evaluators.get(self.classifier)  # unknown names raise with close matches
        if self.max_tries < 0:
            raise InvalidValueError(f"max_tries must be >= 0, got {self.max_tries}")
        if not 0.0 < self.nudenet_threshold < 1.0:
            raise InvalidValueError(f"nudenet_threshold must be in (0, 1), got {self.nudenet_threshold}")


class ImageFilter(Shield):
    """Output filter: flags generated images showing a protected concept; `shielded_generate` blocks (black image) or
    regenerates them. Classifiers: an `erasekit.evaluators.Evaluator` — the world's own (default; the toy world's
    oracle), a registered one by name, or `evaluator=` an object — flags an image that `evaluator.shows` a protected
    concept; NudeNet takes `nudenet_classes` / `nudenet_threshold` (AGPL, optional, lazily imported); or a callable
    `(N, H, W, 3) uint8 -> (N,) bool` (classifier="custom")."""

    name = "image_filter"
    config_cls = ImageFilterConfig
    primary = "action"
    is_filter = True

    def __init__(self, config: ImageFilterConfig | None = None, concepts: Sequence[str | ProtectedConcept] = (),
                 classifier: Callable[[np.ndarray], np.ndarray] | None = None, evaluator: Any = None,
                 world: Any = None):
        super().__init__(config, concepts)
        kind = self.config.classifier
        self._fn: Callable[[np.ndarray], np.ndarray]
        if classifier is not None and kind != "custom":
            raise InvalidValueError(f"a classifier callable was given but classifier={kind!r}; use classifier=custom")
        if kind == "custom":
            if classifier is None or not callable(classifier):
                raise InvalidValueError("image_filter:classifier=custom needs classifier=<callable (N,H,W,3) uint8 -> "
                                        f"(N,) bool>, got {classifier!r}")
            self._fn, self._id = classifier, {"classifier": "custom", "callable": getattr(classifier, "__qualname__",
                                                                                        repr(classifier))}
            return
        self._init_evaluator(self._evaluator(kind, evaluator, world))

    def _evaluator(self, kind: str, evaluator: Any, world: Any) -> Any:
        from ..evaluators import get_evaluator
        from ..worlds import get_world

        if evaluator is not None:
            return get_evaluator(evaluator)
        if kind == "nudenet":
            return get_evaluator("nudenet", threshold=self.config.nudenet_threshold,
                                 classes=self.config.nudenet_classes, allow_unpinned=True)  # a defence may run unpinned
        if kind not in ("world", "oracle"):
            return get_evaluator(kind)
        w = get_world(world)
        if not w.evaluator:
            raise InvalidValueError(f"world {w.name!r} has no evaluator for the image filter; use "
                                    "image_filter:classifier=<evaluator name> (e.g. nudenet) or classifier=custom")
        return get_evaluator(w.evaluator)

    def _init_evaluator(self, ev: Any) -> None:
        if not self.concepts:
            raise InvalidValueError(f"the {ev.name} image filter needs protected concepts (--protect NAME); got none")
        names = [c.name for c in self.concepts]
        for n in names:
            ev.target(n)  # an evaluator that cannot see a protected concept fails here, naming it

        def flag(images: np.ndarray) -> np.ndarray:
            hits = np.zeros(len(images), dtype=bool)
            for n in names:
                hits |= ev.shows(images, n)
            return hits

        ident = ev.identity()
        self._fn, self._id = flag, {"classifier": ev.name, "evaluator": {k: v for k, v in ident.items()
                                                                         if k != "classes"},
                                    "rule": "flag if the evaluator shows any protected concept"}

    def flag(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        out = np.asarray(self._fn(images), dtype=bool).reshape(-1)
        if out.shape != (len(images),):
            raise InvalidValueError(f"the image classifier returned {out.shape} flags for {len(images)} images")
        return out

    @property
    def on_flag(self) -> str:
        return self.config.action

    @property
    def max_tries(self) -> int:
        return self.config.max_tries if self.config.action == "regenerate" else 0

    def identity(self) -> dict:
        return {**super().identity(), "filter": self._id}


__all__ = ["ConceptDetector", "Detection", "DetectorConfig", "ImageFilter", "ImageFilterConfig", "PromptDetector",
           "TextEmbedder", "calibrate_threshold", "drop_terms", "find_terms", "protect", "tidy", "world_negatives",
           "word_spans"]
