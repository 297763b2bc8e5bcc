"""Provenance watermarks for generated images: embed a mark a provider can later prove, detect it, attack it.

    from erasekit.marks import get_mark, Key
    tr = get_mark("tree_ring")                      # a Watermark with its default config
    key = tr.keygen(pipe)                           # secret material from os.urandom; key.save("me.key")
    images = tr.generate(pipe, key, prompts, seeds) # (N, H, W, 3) uint8, marked in generation
    det = tr.detect(key, images, pipe=pipe)         # Detection: score, p_value / bit_acc, decision, rule
    det.decision, det.rule

Protocol (one for every method, registered lazily in `marks`, "module:Class"):

    name, paper, kind ("latent": the mark is the initial latent of the explicit denoising loop of
    `erasekit.sampling`; "pixel": post-hoc, the mark is written into finished images), config_cls (a frozen dataclass)
    keygen(pipe | image_size) -> Key      fresh secret material (never a fixed seed in code)
    generate(pipe, key, prompts, seeds)   marked images (latent methods: through their initial latents; pixel methods:
                                          plain generation, then `embed_images`)
    detect(key, images, pipe=None)        -> Detection; latent methods need the pipeline (DDIM inversion)
    identify(keys, images, pipe=None)     -> (N,) index of the best key and the (N, K) scores (multi-key tracing)

Attacks (`erasekit.marks.attacks`: distortions, VAE / img2img regeneration, averaging forgery; composable specs such as
"jpeg:quality=50+blur:sigma=1") and the methods x attacks measurement (`erasekit.marks.bench`, `erasekit mark bench`)
live beside the methods.

VideoMark (video diffusion) is a documented design only, not a registered method: docs/videomark.md says how it
would plug into this protocol and what must exist first.

Keys are user files (safetensors: the secret tensors + metadata naming the method, its config and the latent or image
shape), written atomically; loading a key for another method, another latent shape or another image size fails in
one line. Detection thresholds come from a stated rule (a p-value level or a binomial-tail false-positive rate), never
from a calibration set, and the rule is recorded in every Detection.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Configurable
from ..errors import ErasekitError, InvalidValueError
from ..registry import Registry

KEY_FORMAT = 1  # version of the key file layout
KINDS = ("latent", "pixel")

marks: Registry[type["Watermark"]] = Registry("watermark")
marks.add("tree_ring", "erasekit.marks.tree_ring:TreeRing",
          help="Tree-Ring (Wen et al. 2023): ring key in the FFT of the initial latent; DDIM-inversion detection")
marks.add("gaussian_shading", "erasekit.marks.gaussian_shading:GaussianShading",
          help="Gaussian Shading (Yang et al. CVPR 2024): ChaCha20-encrypted bits as signs of the initial latent")
marks.add("dwtdct", "erasekit.marks.dwtdct:DwtDct",
          help="DWT-DCT post-hoc pixel watermark (invisible-watermark's dwtDct, numpy, any size)")
marks.add("safe_sd", "erasekit.marks.safe_sd:SafeSD", help="Safe-SD (Ma et al. 2024): trigger word, decoder mark")
marks.add("peccavi", "erasekit.marks.peccavi:Peccavi", help="PECCAVI (Dixit et al. 2025): paraphrase-safe tiles")
marks.add("seal", "erasekit.marks.seal:Seal", help="SEAL (Arabi et al. 2025): patch noises keyed by caption SimHash")


# ------------------------------------------------------------------------------------------------------- keys
@dataclass
class Key:
    """A watermark key: `method`, its `config` (as a dict), the `shape` it was made for ((C, h, w) latent or
    (H, W) image), secret `tensors` and free `meta` (strings). Save with `save`, read with `Key.load`."""

    method: str
    config: dict[str, Any]
    shape: tuple[int, ...]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the key atomically as safetensors; refuses to replace an existing file without `overwrite`."""
        from ..io import check_writable, write_safetensors

        check_writable(path, overwrite, what="key file")
        header = {"erasekit_mark": self.method, "format": str(KEY_FORMAT), "config": json.dumps(self.config),
                  "shape": json.dumps(list(self.shape)), "meta": json.dumps(self.meta)}
        return write_safetensors(path, self.tensors, header)

    @classmethod
    def load(cls, path: str | Path, method: str | None = None) -> "Key":
        """Read a key file; with `method`, refuse a key made for another method."""
        from ..io import read_key_file

        path = Path(path)
        tensors, header = read_key_file(path, "erasekit watermark key", "erasekit mark keygen")
        if "erasekit_mark" not in header:
            raise InvalidValueError(f"{path} is a safetensors file but not an erasekit watermark key (no "
                                    "'erasekit_mark' metadata); make one with `erasekit mark keygen`")
        if header.get("format") != str(KEY_FORMAT):
            raise InvalidValueError(f"key {path} has format {header.get('format')!r}; this erasekit reads format "
                                    f"{KEY_FORMAT}")
        key = cls(method=header["erasekit_mark"], config=json.loads(header.get("config", "{}")),
                  shape=tuple(json.loads(header.get("shape", "[]"))), tensors=dict(tensors),
                  meta=json.loads(header.get("meta", "{}")))
        if method is not None:
            key.check_method(method, where=str(path))
        return key

    def check_method(self, method: str, where: str = "") -> None:
        if self.method != method:
            at = f" ({where})" if where else ""
            raise InvalidValueError(f"this key{at} was made for watermark {self.method!r}, not {method!r}; use a "
                                    f"{method} key (erasekit mark keygen --method {method})")

    def fingerprint(self) -> str:
        """First 16 hex digits of the sha256 of the key's tensors and config: a public identifier of the key."""
        import hashlib

        h = hashlib.sha256(self.method.encode() + json.dumps(self.config, sort_keys=True).encode())
        for k in sorted(self.tensors):
            h.update(k.encode() + self.tensors[k].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------------- detection
@dataclass
class Detection:
    """Detection of one key on N images. score: (N,) higher = more likely marked (the statistic ROC curves use);
    p_value: (N,) probability of a score at least this extreme on an unmarked image (None where the method has no
    null model); bit_acc: (N,) fraction of message bits recovered (bit methods, else None); decision: (N,) bool under
    `rule` (a dict naming the statistic, the threshold and where it comes from)."""

    method: str
    score: np.ndarray
    decision: np.ndarray
    rule: dict[str, Any]
    p_value: np.ndarray | None = None
    bit_acc: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def arr(a: np.ndarray | None) -> list | None:
            return None if a is None else [float(x) for x in np.asarray(a, dtype=np.float64)]

        return {"method": self.method, "score": arr(self.score), "p_value": arr(self.p_value),
                "bit_acc": arr(self.bit_acc), "decision": [bool(x) for x in self.decision], "rule": self.rule}


# ------------------------------------------------------------------------------------------------------- base class
class Watermark(Configurable):
    """Base class of registered watermarks (see the module docstring for the protocol)."""

    name: str = ""
    paper: str = ""
    kind: str = "latent"
    config_cls: type = object

    def __init__(self, config: Any = None, **options: Any):
        if config is not None and options:
            raise InvalidValueError(f"{self.name}: give a config object or options, not both")
        self.config = config if config is not None else self.make_config(options)

    # -- keys
    def keygen(self, pipe: Any = None, size: int | None = None) -> Key:
        raise NotImplementedError

    def check_key(self, key: Key) -> Key:
        if not isinstance(key, Key):
            raise InvalidValueError(f"expected an erasekit.marks.Key, got {type(key).__name__}; load one with "
                                    "Key.load(path)")
        key.check_method(self.name)
        return key

    # -- embedding / detection
    def generate(self, pipe: Any, key: Key, prompts: Sequence[str], seeds: Sequence[int] | int = 0,
                 steps: int | None = None, guidance: float | None = None) -> np.ndarray:
        raise NotImplementedError

    def detect(self, key: Key, images: np.ndarray, pipe: Any = None) -> Detection:
        raise NotImplementedError

    def identify(self, keys: Sequence[Key], images: np.ndarray, pipe: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(N,) index of the key with the highest score per image and the (N, K) scores."""
        if not keys:
            raise InvalidValueError("identify() needs at least one key")
        scores = np.stack([self.detect(k, images, pipe=pipe).score for k in keys], axis=1)
        return scores.argmax(axis=1), scores

    def marks_prompt(self, key: Key, prompt: str) -> bool:
        """Whether `generate` marks the image of `prompt` (always, except for methods switched on by a trigger word)."""
        return True

    def identity(self) -> dict[str, Any]:
        return {"method": self.name, "paper": self.paper, "kind": self.kind,
                "config": dataclasses.asdict(self.config)}


def get_mark(spec: str | Watermark, **options: Any) -> Watermark:
    """A watermark by registered name (options override its config: get_mark("tree_ring", radius=3)) or a spec
    "name:opt=value,..."; a Watermark object is returned as is."""
    if isinstance(spec, Watermark):
        if options:
            raise InvalidValueError(f"options {sorted(options)} given with a watermark object; set them on its config")
        return spec
    from ..config import parse_spec_options

    name, _, opts = str(spec).partition(":")
    cls = marks.get(name.strip())
    parsed = parse_spec_options(cls.name, cls.config_cls, opts) if opts else {}
    dup = set(parsed) & set(options)
    if dup:
        raise InvalidValueError(f"{cls.name}: option(s) {sorted(dup)} given twice (in the spec and as arguments)")
    return cls(**parsed, **options)


# ------------------------------------------------------------------------------------------------------- inputs
def check_images(images: Any, size: int | None = None, what: str = "images") -> np.ndarray:
    """(N, H, W, 3) uint8 images, or one line naming what is wrong: not an array of pixels, wrong dtype or layout,
    wrong side (`size`: the side the key was made for)."""
    if isinstance(images, (str, bytes, Path)) or images is None:
        raise InvalidValueError(f"{what} must be an (N, H, W, 3) uint8 array of RGB images, got {type(images).__name__}"
                                f" {str(images)[:60]!r}; load image files first (erasekit mark detect reads PNG/JPEG)")
    try:
        arr = np.asarray(images)
    except (ValueError, TypeError) as e:
        raise InvalidValueError(f"{what} are not an array of pixels ({str(e)[:80]})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidValueError(f"{what} must be an (N, H, W, 3) uint8 array of RGB images, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise InvalidValueError(f"{what} must be an (N, H, W, 3) uint8 array of RGB images, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidValueError(f"{what} must be uint8 (0-255), got {arr.dtype}; convert with "
                                "(x * 255).round().clip(0, 255).astype(np.uint8) for [0, 1] floats")
    if size is not None and arr.shape[1:3] != (size, size):
        raise InvalidValueError(f"{what} are {arr.shape[2]}x{arr.shape[1]} but the key was made for {size}x{size} "
                                "images; resize them to the key's size or use a key made for this size")
    return arr


# ------------------------------------------------------------------------------------------------------- metrics
def _roc(neg: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every threshold "score >= s" over the pooled scores, from (inf, inf) downwards."""
    neg = np.asarray(neg, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    thr = np.unique(np.concatenate([neg, pos]))[::-1]
    fpr = np.array([0.0] + [float((neg >= t).mean()) for t in thr])
    tpr = np.array([0.0] + [float((pos >= t).mean()) for t in thr])
    return fpr, tpr


def _check_scores(neg: Any, pos: Any) -> tuple[np.ndarray, np.ndarray]:
    neg, pos = np.asarray(neg, dtype=np.float64).ravel(), np.asarray(pos, dtype=np.float64).ravel()
    if neg.size == 0 or pos.size == 0:
        raise InvalidValueError(f"need scores of clean and marked images, got {neg.size} clean and {pos.size} marked")
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise InvalidValueError("scores contain NaN or inf")
    return neg, pos


def tpr_at_fpr(neg: Any, pos: Any, fpr: float) -> float:
    """True-positive rate at the strictest threshold whose false-positive rate on `neg` (clean scores) is <= `fpr`
    (higher score = marked). With n clean scores an FPR below 1/n is measured as 0 false positives: the threshold is
    then above every clean score (the WAVES/Tree-Ring convention of 'largest FPR not exceeding the target')."""
    neg, pos = _check_scores(neg, pos)
    if not 0.0 <= fpr <= 1.0:
        raise InvalidValueError(f"fpr must be in [0, 1], got {fpr}")
    f, t = _roc(neg, pos)
    return float(t[f <= fpr].max())


def auc(neg: Any, pos: Any) -> float:
    """Area under the ROC curve: P(score(marked) > score(clean)) + 0.5 P(tie) (Mann-Whitney)."""
    neg, pos = _check_scores(neg, pos)
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def binomial_threshold(n_bits: int, fpr: float) -> int:
    """The smallest number of matching bits k such that P(Binomial(n_bits, 1/2) >= k) <= fpr: an unmarked image
    (independent fair bits) matches k or more bits of a key with probability at most `fpr`. n_bits + 1 when even all
    bits matching is more likely than `fpr` (the message is too short for that rate)."""
    from scipy.stats import binom

    if n_bits < 1:
        raise InvalidValueError(f"n_bits must be >= 1, got {n_bits}")
    if not 0.0 < fpr < 1.0:
        raise InvalidValueError(f"fpr must be in (0, 1), got {fpr}")
    for k in range(n_bits + 1):
        if binom.sf(k - 1, n_bits, 0.5) <= fpr:
            return k
    return n_bits + 1


def bit_match_detection(method: str, msg: np.ndarray, bits: np.ndarray, fpr: float, n_keys: int = 1) -> Detection:
    """Detection of a bit message (n_bits,) in extracted bits (N, n_bits): score = bit accuracy, marked iff the matches
    pass the binomial-tail threshold at fpr / n_keys (no calibration set); shared by the bit-carrying marks."""
    n_bits = len(msg)
    matches = (bits == msg[None]).sum(axis=1)
    fpr = fpr / max(1, n_keys)
    k = binomial_threshold(n_bits, fpr)
    rule = {"statistic": "bit matches", "marked_if": f"matches >= {k} of {n_bits}", "threshold": k / n_bits,
            "fpr": fpr, "n_bits": n_bits,
            "source": "binomial tail P(Bin(n_bits, 1/2) >= k) <= fpr (no calibration set)"}
    acc = (matches / n_bits).astype(np.float64)
    return Detection(method, score=acc, decision=matches >= k, rule=rule, p_value=binomial_p_value(matches, n_bits),
                     bit_acc=acc)


def binomial_p_value(matches: np.ndarray, n_bits: int) -> np.ndarray:
    """P(Binomial(n_bits, 1/2) >= matches) per image: the p-value of a bit-accuracy detection."""
    from scipy.stats import binom

    return binom.sf(np.asarray(matches) - 1, n_bits, 0.5)


def check_fpr(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value < 1.0) \
            or not math.isfinite(value):
        raise InvalidValueError(f"{name} must be a probability in (0, 1), got {value!r}")


def require_pipe(pipe: Any, method: str) -> Any:
    if pipe is None:
        raise ErasekitError(f"{method} detection inverts the diffusion model: pass pipe= (the pipeline that made the "
                            "images, or one with the same VAE and scheduler)")
    return pipe


__all__ = ["Detection", "KINDS", "Key", "Watermark", "auc", "binomial_p_value", "binomial_threshold", "check_images",
           "get_mark", "marks", "tpr_at_fpr"]
