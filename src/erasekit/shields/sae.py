"""Interpret then Deactivate (ItD): a sparse autoencoder as a zero-shot classifier for concept erasing.

Paper: "Sparse Autoencoder as a Zero-Shot Classifier for Concept Erasing in Text-to-Image Diffusion Models" (2025);
official code github.com/NANSirun/Interpret-then-deactivate (eval_scripts/generate_images_scripts/
generate_images.py: find_the_threshold_for_celebrity / _style, strength_with_feature_text_batch). Related: SAeUron
(SAE on UNet cross-attention blocks, ablation over timesteps) and Concept Steerers (k-SAE on text-encoder outputs,
steering); this file follows ItD, whose SAE reads the text encoder.

One TopK SAE (`_sae.py`) is trained once on one text-encoder layer's token outputs over an unlabelled prompt corpus.
Then, for any concept, without labels or training:

  features   F_c = U_{p in P_c} top_n(max_t z_t(p))  \\  U_{q in Q} top_n(max_t z_t(q))
             P_c: the concept's terms (name + keywords) alone and in the world's training templates; Q: neutral
             prompts (the world's calibration prompts without the concept); z_t(p): SAE latents of token t >= 1;
             only positive activations count. Several concepts: F = U_c F_c (one SAE serves them all).
  ablation   h~ = W_dec (z * s_F) + b_pre,  s_F = `strength` (official -8) on F, 1 elsewhere; tokens t >= 1
  score      MSE(h~, W_dec z + b_pre) over tokens t >= 1 and channels = what the deactivation changes; zero iff
             no feature of F fires -- the zero-shot classifier (score="official": MSE(h~, h), see deviations)
  threshold  tau = (1 - margin) * min_{p in P_c} score(p), at least 1e-12  (official margin 0.01)
  shield     a prompt whose score >= tau gets its layer output replaced by h~ and the remaining layers run on it;
             every other prompt is encoded exactly as without the shield (bit-exact).

It is a shield (`erasekit eval --shield "sae:file=sae.safetensors"`): no weight changes; it re-encodes the
conditional prompts of each batch with a forward hook on the chosen text-encoder layer (the unconditional /
negative prompt is untouched, as in the official code). `erase=A;B` adds concepts to the protected ones, so one
evaluation measures multi-concept erasure with one SAE. The SAE file's sha256 is part of the evaluation cache key
(`content_identity`).

Deviations from the official code:
  - threshold prompts: the concept's terms in the world's *training* templates (official: the target evaluation
    prompts themselves, i.e. the threshold is fit on the test prompts); evaluation wording is never used.
  - top features per prompt: 32 (official 128 for celebrities, 256 for styles, with its k = 64 of 524,288 SAE). On
    the toy SAE (k = 32 of 2,048) top-128 keeps features that fire on neutral text too and some concept prompts
    fire none of them (threshold at its floor); BENCHMARKS.md (SAE section) has the measured AUCs.
  - neutral prompts Q: the world's calibration prompts (random training-grammar scenes plus every other concept's
    name and keywords), `neutral` of them (official: the "remain" concepts' prompts, or 50 COCO captions).
  - classifier score: by default the change the deactivation makes to the SAE's reconstruction (official
    `score="official"`: the distance of h~ to the layer output h itself, which adds the SAE's reconstruction error
    of every prompt). On a small SAE that error varies across prompts more than the concept's features do and the
    official score then flags unrelated prompts (AUCs of both in the notes); on ItD's 524k-feature SAE it is small.
    The threshold is kept above 1e-12 so that prompts in which no concept feature fires are never deactivated
    (official: a concept prompt with no active feature would set tau = 0 and flag every prompt).
  - concept terms: the name plus the world's keywords by default (ItD does this for nudity: "nudity, naked, erotic,
    sexual"); `keywords=false` uses the name only (ItD's celebrities and styles). Keyword attacks (CopyCat) use the
    same keywords, so robustness to them is measured both ways (BENCHMARKS.md, SAE section).
  - BOS is never reconstructed (official: reconstructs it and counts it in the MSE); it is prompt-independent.
  - `keep_error=True` (off by default) adds the SAE's reconstruction error back (SAeUron's choice), so only the
    ablated features change; official: the output is replaced by the bare reconstruction.
  - a concept with no feature left after the neutral exclusion is refused with a message (official: silently
    erases nothing and fits its threshold on reconstruction error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from ..config import check_choice
from ..errors import InvalidValueError
from . import Plan, ProtectedConcept, Shield, protect
from ._sae import SparseAutoencoder, file_sha256, layer_hook, layer_outputs, load_record, load_sae

OFFICIAL_STRENGTH = -8.0  # official activation_modulation_batch(..., strength=-8)
OFFICIAL_TOP = 128  # official top features per prompt (celebrities; 256 for styles), for k = 64 of 524,288
DEFAULT_TOP = 32  # = the toy SAE's k; the official 128 is worse on the toy SAE (BENCHMARKS.md, SAE section)
OFFICIAL_MARGIN = 0.01  # threshold = (1 - 0.01) * min target score
MIN_THRESHOLD = 1e-12  # a prompt with no active concept feature (score 0) is never deactivated
SCORES = ("ablation", "official")


@dataclass(frozen=True)
class SAEShieldConfig:
    file: str = field(default="", metadata={"help": "SAE file made by `erasekit sae train` (safetensors)"})
    strength: float = field(default=OFFICIAL_STRENGTH, metadata={
        "help": "multiplier of the concept's features (official -8; 0 = zero them)"})
    top: int = field(default=DEFAULT_TOP, metadata={
        "help": "top features per prompt (by max activation over tokens) compared (official 128 / 256 styles, for "
                "its k = 64 SAE; default 32 = the toy SAE's k)"})
    neutral: int = field(default=200, metadata={"help": "neutral prompts whose top features are excluded"})
    templates: int = field(default=8, metadata={"help": "training templates per concept term (concept prompts)"})
    keywords: bool = field(default=True, metadata={
        "help": "concept terms = name + the world's keywords (ItD's nudity list); false = the name only (ItD's "
                "celebrities and styles)"})
    margin: float = field(default=OFFICIAL_MARGIN, metadata={
        "help": "threshold = (1 - margin) * min score of the concept prompts (official 0.01)"})
    score: str = field(default="ablation", metadata={
        "help": "classifier score: 'ablation' (what deactivation changes) or 'official' (MSE to the layer output)"})
    classify: bool = field(default=True, metadata={
        "help": "deactivate only prompts the SAE classifies as the concept (false: every prompt)"})
    keep_error: bool = field(default=False, metadata={
        "help": "add the SAE reconstruction error back (SAeUron); false = official bare reconstruction"})
    erase: tuple[str, ...] = field(default=(), metadata={
        "help": "more concepts erased with the same SAE, on top of the protected ones (A;B;C)"})
    seed: int = field(default=1234, metadata={"help": "seed of the neutral-prompt and template draws"})

    def __post_init__(self) -> None:
        if isinstance(self.erase, str):
            object.__setattr__(self, "erase", tuple(x.strip() for x in self.erase.split(";") if x.strip()))
        if not isinstance(self.file, str) or not self.file.strip():
            raise InvalidValueError("the sae shield needs an SAE file: sae:file=sae.safetensors (make one with "
                                    "`erasekit sae train --out sae.safetensors`)")
        if not math.isfinite(self.strength) or not math.isfinite(self.margin) or not 0 <= self.margin < 1:
            raise InvalidValueError(f"strength must be finite and margin in [0, 1), got strength={self.strength}, "
                                    f"margin={self.margin}")
        check_choice("score", self.score, SCORES)
        for name in ("top", "neutral", "templates"):
            if getattr(self, name) < 1:
                raise InvalidValueError(f"sae option {name} must be >= 1, got {getattr(self, name)}")


# ------------------------------------------------------------------------------------------------------ mechanics
def top_features(sae: SparseAutoencoder, acts: torch.Tensor, top: int) -> list[set[int]]:
    """Per prompt: the `top` features with the largest positive max activation over tokens 1.. of acts (B, L, D)."""
    z = sae.encode(acts[:, 1:].to(sae.pre_bias.device)).amax(1)  # (B, F)
    vals, inds = z.topk(min(top, z.shape[1]), dim=-1)
    return [set(i[v > 0].tolist()) for v, i in zip(vals, inds)]


def union_top(sae: SparseAutoencoder, pipe: Any, prompts: Sequence[str], top: int, chunk: int = 64) -> set[int]:
    """The union over `prompts` of their top features (`top_features`), `chunk` prompts at a time."""
    out: set[int] = set()
    for s in range(0, len(prompts), chunk):
        out = out.union(*top_features(sae, layer_outputs(pipe, prompts[s:s + chunk], sae.layer), top))
    return out


def find_features(sae: SparseAutoencoder, pipe: Any, concept_prompts: Sequence[str],
                  neutral: Sequence[str] | set[int], top: int = OFFICIAL_TOP) -> list[int]:
    """ItD's zero-shot feature search: the union of the concept prompts' top features minus the union of the neutral
    prompts' top features (or minus `neutral` itself when it is a set of features already found), sorted."""
    neg = neutral if isinstance(neutral, set) else union_top(sae, pipe, neutral, top)
    return sorted(union_top(sae, pipe, concept_prompts, top) - neg)


def deactivate(sae: SparseAutoencoder, h: torch.Tensor, features: Sequence[int], strength: float,
               keep_error: bool = False, score: str = "ablation") -> tuple[torch.Tensor, torch.Tensor]:
    """(h~ (B, L, D), score (B,)): layer output h (B, L, D) with the SAE features scaled by `strength` on tokens 1..
    (token 0, BOS, is h's), and the classifier score over tokens 1.. and channels: "ablation" MSE(h~, reconstruction)
    (what the deactivation changes), "official" MSE(h~, h)."""
    x = h[:, 1:].float()
    z = sae.encode(x)
    rec = sae.decode(z)
    idx = torch.as_tensor(list(features), dtype=torch.long, device=z.device)
    z[..., idx] = z[..., idx] * strength
    ablated = sae.decode(z)
    if keep_error:
        ablated = ablated + (x - rec)
    ref = x if score == "official" else (x if keep_error else rec)
    out = h.clone()
    out[:, 1:] = ablated.to(h.dtype)
    return out, ((ablated - ref) ** 2).mean(dim=(1, 2))


def encode_deactivated(pipe: Any, sae: SparseAutoencoder, prompts: Sequence[str], features: Sequence[int],
                       strength: float, threshold: float | None, keep_error: bool = False,
                       score: str = "ablation") -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(cond (B, 77, D) in the UNet's dtype, score (B,), deactivated (B,) bool): the prompts encoded with the SAE
    hook on `sae.layer`; rows whose score is below `threshold` (None: no row) keep their original layer output."""
    from ..conditioning import tokenize

    seen: dict[str, torch.Tensor] = {}

    def fn(h: torch.Tensor) -> torch.Tensor:
        new, s = deactivate(sae, h, features, strength, keep_error, score)
        on = torch.ones_like(s, dtype=torch.bool) if threshold is None else s >= threshold
        seen["score"], seen["on"] = s, on
        return torch.where(on[:, None, None], new, h)

    ids = tokenize(pipe, list(prompts)).to(pipe.text_encoder.device)
    with torch.no_grad(), layer_hook(pipe, sae.layer, fn):
        cond = pipe.text_encoder(ids)[0].to(pipe.unet.dtype)
    return cond, seen["score"].cpu().numpy(), seen["on"].cpu().numpy()


def concept_prompts(world: Any, concept: ProtectedConcept, templates: int, seed: int, keywords: bool = True
                    ) -> list[str]:
    """The concept's terms (name + keywords, or the name only) alone and in `templates` of the world's training
    templates (when the world has them): the prompts that define it, never evaluation wording."""
    from ..worlds import UnsupportedError
    from ..errors import UnknownNameError

    try:
        tpl = list(world.templates(concept.name, templates, seed)) if world is not None else []
    except (UnsupportedError, UnknownNameError):
        tpl = []
    out = []
    for term in (concept.terms if keywords else (concept.name,)):
        out.append(term)
        out += [t.format(term) for t in tpl]
    return list(dict.fromkeys(out))


def check_compatible(sae: SparseAutoencoder, pipe: Any, file: str) -> None:
    """One line when the SAE was trained for another text encoder shape."""
    from ._sae import text_layers

    d = pipe.text_encoder.config.hidden_size
    n = len(text_layers(pipe))
    if sae.d_model != d or sae.layer >= n:
        raise InvalidValueError(f"SAE {file} reads layer {sae.layer} of width {sae.d_model}, but this text encoder has "
                                f"{n} layers of width {d}; train an SAE on this model (`erasekit sae train`)")


# ------------------------------------------------------------------------------------------------------ the shield
class SAEShield(Shield):
    """ItD: deactivate a concept's SAE features in the text encoder for prompts the SAE classifies as the concept."""

    name = "sae"
    config_cls = SAEShieldConfig
    primary = "file"
    needs_pipe = True

    def __init__(self, config: SAEShieldConfig | None = None, concepts: Sequence[str | ProtectedConcept] = (),
                 pipe: StableDiffusionPipeline | None = None, world: Any = None,
                 negatives: Sequence[str] | None = None):
        if config is None:
            raise InvalidValueError("the sae shield needs file=SAE (made with `erasekit sae train`)")
        super().__init__(config, concepts)
        from ..worlds import get_world, world_of_model

        self.world = get_world(world) if world is not None else (world_of_model(pipe) if pipe is not None
                                                                 else get_world())
        self.concepts = protect(list(concepts), world=self.world)  # names the world knows get their keywords
        if self.config.erase:
            known = {c.name.lower() for c in self.concepts}
            extra = [c for c in protect(list(self.config.erase), world=self.world) if c.name.lower() not in known]
            self.concepts = (*self.concepts, *extra)
        if not self.concepts:
            raise InvalidValueError("the sae shield needs a concept to erase: pass concepts=[...] or erase=A;B")
        self.sae = load_sae(self.config.file)
        self.sha256 = file_sha256(self.config.file)
        self.record = load_record(self.config.file)
        self.negatives = list(negatives) if negatives is not None else None
        self.features: dict[str, list[int]] = {}
        self.threshold: float | None = None
        self._fitted_on: int | None = None
        if pipe is not None:
            self.fit(pipe)

    def neutral_prompts(self) -> list[str]:
        if self.negatives is not None:
            return self.negatives
        from .detector import world_negatives

        return world_negatives(self.world, self.concepts, n=self.config.neutral, seed=self.config.seed)

    def fit(self, pipe: Any) -> "SAEShield":
        """Find each concept's features and the classifier threshold on `pipe`'s text encoder."""
        check_compatible(self.sae, pipe, self.config.file)
        self.sae.to(pipe.text_encoder.device)
        neutral = self.neutral_prompts()
        excluded = union_top(self.sae, pipe, neutral, self.config.top)
        targets: list[str] = []
        for c in self.concepts:
            prompts = concept_prompts(self.world, c, self.config.templates, self.config.seed, self.config.keywords)
            feats = find_features(self.sae, pipe, prompts, excluded, self.config.top)
            if not feats:
                raise InvalidValueError(f"sae: no feature of {c.name!r} is left after excluding the {len(neutral)} "
                                        f"neutral prompts' top-{self.config.top} features; lower neutral or top, or "
                                        "train a larger SAE")
            self.features[c.name] = feats
            targets += prompts
        self.threshold = None
        self._fitted_on = id(pipe)
        if self.config.classify:
            self.threshold = max(MIN_THRESHOLD, float((1 - self.config.margin) * self.scores(pipe, targets).min()))
        return self

    @property
    def all_features(self) -> list[int]:
        return sorted(set().union(*self.features.values()))

    def scores(self, pipe: Any, prompts: Sequence[str], chunk: int = 64) -> np.ndarray:
        """(B,) the zero-shot classifier's score of each prompt (higher = more of the protected concepts)."""
        if self._fitted_on != id(pipe):
            self.fit(pipe)
        prompts = list(prompts)
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([encode_deactivated(pipe, self.sae, prompts[s:s + chunk], self.all_features,
                                                  self.config.strength, None, self.config.keep_error,
                                                  self.config.score)[1] for s in range(0, len(prompts), chunk)])

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        if self._fitted_on != id(pipe):
            self.fit(pipe)
        cond, score, on = encode_deactivated(pipe, self.sae, plan.prompts, self.all_features, self.config.strength,
                                             self.threshold, self.config.keep_error, self.config.score)
        mask = torch.as_tensor(on, device=plan.cond.device)[:, None, None]
        plan.cond = torch.where(mask, cond.to(plan.cond.dtype), plan.cond)
        return plan, {"score": [float(s) for s in score], "deactivated": [bool(x) for x in on]}

    def identity(self) -> dict:
        return {**super().identity(), "sae_sha256": self.sha256, "layer": self.sae.layer,
                "n_features": {k: len(v) for k, v in self.features.items()}, "threshold": self.threshold,
                "sae_train_seconds": self.record.get("train_seconds")}

    @classmethod
    def content_identity(cls, config: SAEShieldConfig) -> dict:
        """The SAE file's sha256: the evaluation cache follows its content, not its path."""
        return {"sae_sha256": file_sha256(config.file)}


__all__ = ["SAEShield", "SAEShieldConfig", "concept_prompts", "deactivate", "encode_deactivated", "find_features",
           "top_features", "union_top"]
