"""SEAL: semantic-aware initial-noise watermark (Arabi et al., "SEAL: Semantic Aware Image Watermarking", 2025;
the reference implementation read here is MarkDiffusion's
(github.com/THU-BPM/MarkDiffusion @9f4cf18: watermark/seal/seal.py, detection/seal/seal_detection.py,
config/SEAL.json), whose defaults are k=1024, b=7, patch_distance_threshold=3, theta_mid=70).

Embed (per prompt and seed):
1. generate the *unmarked* image of the prompt (the proxy), caption it, embed the caption: v (D,), unit norm;
2. SimHash: patch j gets b bits, bit i = [r_ji . v > 0] with r_ji ~ N(0, I_D) hyperplanes drawn from the key;
3. the initial latent is cut into k square patches (a sqrt(k) x sqrt(k) grid, all channels); patch j is a standard
   normal draw from a PRNG seeded by H(salt, j, bits_j): z_T = concat_j randn_{H(salt, j, bits_j)}(C, p, p);
4. generate from z_T with the same prompt. Every latent is exactly N(0, I) (distortion-free), and two images whose
   caption embeddings are at angle theta share patch j with probability (1 - theta / 180)^b.

Detect: invert the received image to z_hat (DDIM, the shared `_latent` inversion), caption *the received image*,
re-derive the reference noise r from its embedding, and count the patches with ||z_hat_j - r_j||_2 < tau
(`patch_distance_threshold`). No key database: the expected noise is inferred from the content. A mark transplanted
onto other content (re-prompt forgery: invert, regenerate with another prompt) no longer matches, because the new
content's SimHash selects other patch noises; only patches whose b bits happen to agree still match.

Sizes: the official grid is 32 x 32 patches of 2 x 2 latent pixels x 4 channels (16 entries) on SD's 64 x 64
latent; tau = 3 is meant for 16-entry patches (||a - b|| of two independent 16-dim standard normals is ~5.7). The
default `k` here keeps the official *patch geometry* (2 x 2 latent pixels, all channels): k = (side / 2)^2, i.e. 1024
at 64 x 64 and 16 at the toy model's 8 x 8 (a 4 x 4 grid), so tau = 3 keeps its meaning. b = 7 is kept.

Threshold rule (`match_rule`):
- "tail" (default here): a stated null model, no calibration set. For an image not made with this key and content,
  the reference patches r_j are standard normal draws independent of the inverted latent, so given z_hat
  ||z_hat_j - r_j||^2 is non-central chi-square (d = C p^2 dof, non-centrality ||z_hat_j||^2) and patch j matches
  with probability p_j = ncx2.cdf(tau^2, d, ||z_hat_j||^2) (exact, whatever the inversion does to z_hat). The
  number of matches is then Poisson-binomial(p_1..p_k); p-value = P(M >= matches); marked iff p-value <= `fpr`
  (1e-6, the Gaussian Shading paper's level; SEAL states none). Tracing among N keys uses fpr / N.
- "theta_mid": the official rule, marked iff matches >= floor(k (1 - theta_mid / 180)^b): the count expected of an
  image whose content embedding is theta_mid = 70 degrees from the original (32 of 1024 officially). At k = 16 it is
  floor(0.51) = 0 (every image marked), so it is raised to 1 and the Detection's rule carries a warning.

`statistic` "correlation" (not in the paper; for weak inversions, as Gaussian Shading's option here):
T = sum(z_hat * r) / ||z_hat||, exactly N(0, 1) under the same null (r independent of z_hat), marked iff
P(N(0,1) >= T) <= fpr. It uses every entry instead of hard per-patch distances.

Deviations from the official code (and why):
- semantic embedding: the pipeline's own text encoder (CLIPTextModel pooler output, L2-normalised) of the caption,
  not the official sentence-transformer fine-tuned on captions (`finetuned-caption-embedding`), so the method runs
  unchanged on any SD1.x pipeline with no extra download. Its angles between captions are what matter (toy
  model: `bench/seal/caption_angles.py`, numbers in BENCHMARKS.md, Marks, SEAL). Wherever a real CLIP text
  encoder's caption angles are smaller than the official embedder's, forgeries by similar content share more patches.
- captioner: the model's world's captioner (`erasekit.worlds.world_of_model(pipe).caption`, the toy world's is its
  oracle's labels in the evaluation grammar), not BLIP-2 flan-t5-xl; or texts the caller passes (`captions=`).
- the patch seed is SHA-256(salt, j, bits_j). The official seeds torch with Python's hash(tuple(bits_i + i + 1e4 j)),
  which does not contain the salt (the salt only seeds the SimHash hyperplanes), so anyone can enumerate the 2^b
  candidate noises of every patch; keying the seed with the salt keeps the noises secret.
- the salt is 32 bytes from os.urandom in a key file (official: the integer 42 in config/SEAL.json); hyperplanes
  are drawn from a generator seeded by SHA-256(salt) for the embedding's dimension D (not stored).
- `k` must be a square whose root divides the latent side (the official loop leaves zero-filled latent entries when
  it is not), and the threshold rule above (the official theta_mid rule is an option).
- known property kept as in the paper: the initial latent depends only on the caption, so every image with the same
  caption gets the same initial noise (and, with a deterministic sampler and the same prompt, the same image): SEAL
  trades diversity for key-less detection; the toy world's captions are discrete, so this happens there.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import check_choice
from ..errors import ErasekitError, InvalidValueError
from . import Detection, Key, check_fpr, check_images, require_pipe
from ._latent import (INVERSION_HELP, LatentWatermark, check_inversion_options, check_latent_key, check_seeds,
                      generate_from_latents, image_side, shape_of)

PAPER_PATCH_SIDE = 2  # official: 64x64 latent / 32 patches per side
PAPER_B = 7
PAPER_TAU = 3.0
PAPER_THETA_MID = 70.0
DEFAULT_FPR = 1e-6  # Gaussian Shading's level (SEAL states no false-positive rate)
SALT_BYTES = 32
MAX_B = 64
MATCH_RULES = ("tail", "theta_mid")
STATISTICS = ("patches", "correlation")


@dataclass(frozen=True)
class SealConfig:
    k: int | None = field(default=None, metadata={
        "help": "number of patches, a square whose root divides the latent side (official 1024 at 64x64; None: "
                "(side/2)^2, the official 2x2-pixel patch: 16 on the toy model's 8x8 latent)"})
    b: int = field(default=PAPER_B, metadata={"help": "SimHash bits per patch (official 7)"})
    patch_distance_threshold: float = field(default=PAPER_TAU, metadata={
        "help": "a patch matches if ||z_hat_j - r_j||_2 < this (official 3, for 2x2x4 = 16-entry patches)"})
    match_rule: str = field(default="tail", metadata={
        "help": "tail: Poisson-binomial tail of the match count under the null (p-value <= fpr); theta_mid: the "
                "official matches >= floor(k (1 - theta_mid/180)^b)"})
    theta_mid: float = field(default=PAPER_THETA_MID, metadata={
        "help": "degrees, the official match rule's angle (official 70)"})
    fpr: float = field(default=DEFAULT_FPR, metadata={
        "help": "false-positive rate of the tail rule and of the correlation statistic; tracing uses fpr / N keys"})
    statistic: str = field(default="patches", metadata={
        "help": "patches: count of matching patches (paper); correlation: sum(z_hat * r) / |z_hat| ~ N(0,1) "
                "under the null (not in the paper; for weak inversions)"})
    inversion_steps: int | None = field(default=None, metadata={
        "help": "DDIM inversion steps (None: the model's default sampling steps)"})
    decoder_steps: int = field(default=0, metadata={
        "help": "decoder-inversion Adam steps before DDIM inversion (0: VAE encoder only)"})
    inversion_prompt: str = field(default="empty", metadata={"help": INVERSION_HELP["inversion_prompt"]})
    inversion_guidance: float = field(default=1.0, metadata={"help": INVERSION_HELP["inversion_guidance"]})
    fixed_point: int = field(default=0, metadata={"help": INVERSION_HELP["fixed_point"]})

    def __post_init__(self) -> None:
        if self.k is not None:
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
                raise InvalidValueError(f"k must be a positive square number of patches (or None), got {self.k!r}")
            if math.isqrt(self.k) ** 2 != self.k:
                raise InvalidValueError(f"k must be a square number of patches (a g x g grid), got {self.k}; e.g. "
                                        f"{math.isqrt(self.k) ** 2} or {(math.isqrt(self.k) + 1) ** 2}")
        if isinstance(self.b, bool) or not isinstance(self.b, int) or not 1 <= self.b <= MAX_B:
            raise InvalidValueError(f"b must be an integer number of SimHash bits in [1, {MAX_B}], got {self.b!r}")
        tau = self.patch_distance_threshold
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
            raise InvalidValueError(f"patch_distance_threshold must be a finite number > 0, got {tau!r}")
        th = self.theta_mid
        if isinstance(th, bool) or not isinstance(th, (int, float)) or not math.isfinite(th) or not 0 < th < 180:
            raise InvalidValueError(f"theta_mid must be an angle in degrees in (0, 180), got {th!r}")
        check_choice("match_rule", self.match_rule, MATCH_RULES)
        check_choice("statistic", self.statistic, STATISTICS)
        check_fpr("fpr", self.fpr)
        check_inversion_options(self)


# ------------------------------------------------------------------------------------------------ semantics
@torch.no_grad()
def semantic_embeddings(pipe: Any, texts: Sequence[str]) -> torch.Tensor:
    """(N, D) float64 CPU unit vectors: the pipeline's text encoder's pooled output (CLIPTextModel: the final-layer-
    normed EOS token) of each text, L2-normalised (the official normalises its sentence embedding the same way)."""
    from ..conditioning import tokenize

    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidValueError("SEAL needs one caption string per image")
    out = pipe.text_encoder(tokenize(pipe, texts).to(pipe.text_encoder.device))
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        pooled = getattr(out, "text_embeds", None)
    if pooled is None:
        raise ErasekitError(f"SEAL embeds captions with the text encoder's pooled output; "
                               f"{type(pipe.text_encoder).__name__} returns none")
    v = pooled.detach().to("cpu", torch.float64)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


@functools.lru_cache(maxsize=8)
def _hyperplanes(salt: bytes, k: int, b: int, dim: int) -> torch.Tensor:
    """(k, b, D) standard normal SimHash hyperplanes from the key's salt (official: k*b draws of randn_like(v) after
    seeding with the salt, in the same order)."""
    seed = int.from_bytes(hashlib.sha256(salt + b"seal-simhash").digest()[:8], "little") & ((1 << 63) - 1)
    gen = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((k, b, dim), generator=gen, dtype=torch.float64)


def _patch_seed(salt: bytes, j: int, bits: np.ndarray) -> int:
    """63-bit PRNG seed of patch j with SimHash bits `bits` (b,) uint8: SHA-256(salt, j, bits)."""
    h = hashlib.sha256(salt + b"seal-patch" + int(j).to_bytes(4, "little") + np.packbits(bits).tobytes())
    return int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1)


def poisson_binomial_sf(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """P(M >= m_n) per row for M = sum of independent Bernoulli(p_nj): p (N, k) probabilities, m (N,) counts."""
    n, k = p.shape
    pmf = np.zeros((n, k + 1))
    pmf[:, 0] = 1.0
    for j in range(k):
        pj = p[:, j:j + 1]
        pmf[:, 1:] = pmf[:, 1:] * (1 - pj) + pmf[:, :-1] * pj
        pmf[:, 0] *= 1 - p[:, j]
    tail = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]  # tail[:, i] = P(M >= i)
    return np.clip(tail[np.arange(n), np.asarray(m, dtype=int)], 0.0, 1.0)


class Seal(LatentWatermark):
    """SEAL (Arabi et al. 2025): patch noises keyed by the SimHash of the image's caption embedding."""

    name = "seal"
    paper = "Arabi et al., SEAL: Semantic Aware Image Watermarking, 2025"
    config_cls = SealConfig

    # -- geometry and key
    def grid(self, shape: Sequence[int], k: int | None = None) -> tuple[int, int]:
        """(patches per side g, patch side p) for a (C, h, w) latent: k = g^2, p = side / g."""
        c, h, w = shape
        if h != w:
            raise InvalidValueError(f"SEAL needs square latents, got {h}x{w}")
        k = k if k is not None else (self.config.k if self.config.k is not None else (h // PAPER_PATCH_SIDE) ** 2)
        g = math.isqrt(k)
        if g < 1 or g * g != k or h % g:
            raise InvalidValueError(f"k={k} patches ({g}x{g} grid) do not tile the {h}x{w} latent; choose a square k "
                                    f"whose root divides {h} (e.g. {(h // PAPER_PATCH_SIDE) ** 2})")
        return g, h // g

    def keygen(self, pipe: Any = None, shape: tuple[int, int, int] | None = None,
               entropy: bytes | None = None) -> Key:
        """A fresh key: a 32-byte secret salt (os.urandom, or SHA-256 of `entropy`) for the pipeline's latent."""
        shape = shape_of(pipe, shape)
        g, _ = self.grid(shape)
        salt = os.urandom(SALT_BYTES) if entropy is None else hashlib.sha256(b"seal" + entropy).digest()
        meta = {}
        if pipe is not None and getattr(pipe, "text_encoder", None) is not None:
            meta["embedding_dim"] = str(int(pipe.text_encoder.config.hidden_size))
        cfg = {**self.identity()["config"], "k": g * g}
        return Key(self.name, cfg, shape, {"salt": torch.frombuffer(bytearray(salt), dtype=torch.uint8)}, meta)

    def _unpack(self, key: Key) -> tuple[bytes, int, int, int]:
        """(salt, k, b, patch side) of a key, or one line saying it is damaged."""
        self.check_key(key)
        try:
            salt = bytes(key.tensors["salt"].numpy().tobytes())
            k, b = int(key.config["k"]), int(key.config["b"])
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidValueError(f"seal key lacks {e}; it is damaged, make a new one (erasekit mark keygen "
                                    "--method seal)") from None
        if len(salt) != SALT_BYTES or not 1 <= b <= MAX_B or len(key.shape) != 3:
            raise InvalidValueError("seal key is inconsistent (salt size, b or shape); make a new one")
        return salt, k, b, self.grid(key.shape, k)[1]

    # -- the semantic hash and the noise it selects
    def simhash(self, key: Key, embeddings: torch.Tensor) -> np.ndarray:
        """(N, k, b) uint8 SimHash bits of (N, D) unit embeddings under the key's hyperplanes."""
        salt, k, b, _ = self._unpack(key)
        v = self._check_embeddings(key, embeddings)
        planes = _hyperplanes(salt, k, b, v.shape[1])
        return (torch.einsum("kbd,nd->nkb", planes, v) > 0).numpy().astype(np.uint8)

    def _check_embeddings(self, key: Key, embeddings: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(embeddings).detach().to("cpu", torch.float64)
        if v.ndim != 2 or v.shape[0] == 0:
            raise InvalidValueError(f"embeddings must be (N, D), got shape {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise InvalidValueError("embeddings contain NaN or inf")
        want = key.meta.get("embedding_dim")
        if want is not None and int(want) != v.shape[1]:
            raise InvalidValueError(f"this seal key was made for {want}-dim caption embeddings (its model's text "
                                    f"encoder) but got {v.shape[1]}; use a key made for this model")
        return v

    def initial_latents(self, key: Key, seeds: Sequence[int] | None = None,
                        embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(N, C, h, w) float32 unit-variance initial latents selected by the SimHash of (N, D) caption `embeddings`;
        `seeds` play no part (SEAL's noise is a function of the content and the key only)."""
        if embeddings is None:
            raise InvalidValueError("SEAL's initial latent depends on the image content: pass embeddings= (N, D) "
                                    "(semantic_embeddings(pipe, captions))")
        salt, k, _, p = self._unpack(key)
        bits = self.simhash(key, embeddings)
        c, h, w = key.shape
        g = h // p
        z = torch.empty((len(bits), c, h, w), dtype=torch.float32)
        for n in range(len(bits)):
            for j in range(k):  # row-major over the grid, as the official loop
                gen = torch.Generator("cpu").manual_seed(_patch_seed(salt, j, bits[n, j]))
                y, x = (j // g) * p, (j % g) * p
                z[n, :, y:y + p, x:x + p] = torch.randn((c, p, p), generator=gen)
        return z

    # -- captions
    def captions_of(self, pipe: Any, images: np.ndarray, captions: Sequence[str] | None = None) -> list[str]:
        """One caption per image: the given texts, else the model's world's captioner (`World.caption`)."""
        if captions is None:
            from ..worlds import UnsupportedError, world_of_model

            world = world_of_model(pipe)
            try:
                captions = world.caption(images)
            except UnsupportedError:
                raise ErasekitError(f"seal captions images with the model's world's captioner, and world "
                                       f"{world.name!r} has none; pass captions=[...] (one text per image)") from None
        captions = list(captions)
        if len(captions) != len(images) or not all(isinstance(t, str) for t in captions):
            raise InvalidValueError(f"seal needs one caption string per image, got {len(captions)} for "
                                    f"{len(images)} images")
        return captions

    # -- generation
    def generate(self, pipe: Any, key: Key, prompts: Sequence[str], seeds: Sequence[int] | int = 0,
                 steps: int | None = None, guidance: float | None = None,
                 captions: Sequence[str] | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 marked images: the unmarked image of each prompt and seed is generated and captioned
        (or `captions` are given), and the caption's patch noises are the initial latent of the marked image."""
        from ..generation import generate

        self.check_key(key)
        check_latent_key(key.shape, pipe, self.name)
        prompts, seeds = check_seeds(prompts, seeds)
        if captions is None:
            captions = self.captions_of(pipe, generate(pipe, prompts, seeds, steps=steps, guidance=guidance))
        elif len(list(captions)) != len(prompts):
            raise InvalidValueError(f"got {len(list(captions))} captions for {len(prompts)} prompts")
        z = self.initial_latents(key, seeds, semantic_embeddings(pipe, list(captions)))
        return generate_from_latents(pipe, prompts, seeds, z, steps, guidance)

    # -- detection
    def detect(self, key: Key, images: np.ndarray, pipe: Any = None, latents: torch.Tensor | None = None,
               prompts: Sequence[str] | None = None, captions: Sequence[str] | None = None) -> Detection:
        """Detection of `key` in `images` ((N, H, W, 3) uint8): each image is captioned (or `captions` given), its
        caption embedded by `pipe`'s text encoder, and its inverted latent (or the given `latents` (N, C, h, w))
        compared with the noise that caption selects. `prompts`: inversion texts (config.inversion_prompt)."""
        self.check_key(key)
        pipe = require_pipe(pipe, self.name)
        check_latent_key(key.shape, pipe, self.name)
        images = check_images(images, image_side(pipe))
        caps = self.captions_of(pipe, images, captions)
        latents = self._latents(pipe, key, images, latents, prompts, caps)
        det = self.score_latents(key, latents, semantic_embeddings(pipe, caps))
        det.extra["captions"] = caps
        return det

    def _latents(self, pipe: Any, key: Key, images: np.ndarray, latents: torch.Tensor | None,
                 prompts: Sequence[str] | None, caps: list[str]) -> torch.Tensor:
        if latents is None:  # caption inversion reuses the captions already made
            use = caps if prompts is None and self.config.inversion_prompt == "caption" else prompts
            return self.invert(pipe, images, key, prompts=use)
        if tuple(latents.shape[1:]) != tuple(key.shape) or len(latents) != len(images):
            raise InvalidValueError(f"latents of shape {tuple(latents.shape)} do not match {len(images)} images of "
                                    f"the key's {tuple(key.shape)}")
        return latents

    def identify(self, keys: Sequence[Key], images: np.ndarray, pipe: Any = None,
                 latents: torch.Tensor | None = None, prompts: Sequence[str] | None = None,
                 captions: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N,) index of the best-scoring key per image and the (N, K) scores; captions and inversion done once."""
        if not keys:
            raise InvalidValueError("identify() needs at least one key")
        pipe = require_pipe(pipe, self.name)
        images = check_images(images, image_side(pipe))
        caps = self.captions_of(pipe, images, captions)
        latents = self._latents(pipe, self.check_key(keys[0]), images, latents, prompts, caps)
        emb = semantic_embeddings(pipe, caps)
        scores = np.stack([self.score_latents(k, latents, emb).score for k in keys], axis=1)
        return scores.argmax(axis=1), scores

    def score_latents(self, key: Key, z: torch.Tensor, embeddings: torch.Tensor | None = None,
                      n_keys: int = 1) -> Detection:
        """Detection from (N, C, h, w) recovered initial latents and the (N, D) caption embeddings of the images."""
        from scipy.stats import ncx2, norm

        if embeddings is None:
            raise InvalidValueError("SEAL scores a latent against the noise its content selects: pass embeddings= "
                                    "(N, D) of the images' captions")
        salt, k, b, p = self._unpack(key)
        z = torch.as_tensor(z).detach().to("cpu", torch.float64)
        if z.ndim != 4 or tuple(z.shape[1:]) != tuple(key.shape) or len(z) != len(embeddings):
            raise InvalidValueError(f"latents of shape {tuple(z.shape)} do not match {len(embeddings)} embeddings "
                                    f"and the key's {tuple(key.shape)}")
        if not torch.isfinite(z).all():
            raise InvalidValueError("latents contain NaN or inf")
        ref = self.initial_latents(key, None, embeddings).double()
        c, h, _ = key.shape
        g = h // p

        def patches(x: torch.Tensor) -> torch.Tensor:  # (N, C, h, w) -> (N, k, C p p), row-major patches
            return x.reshape(len(x), c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(len(x), k, c * p * p)

        zp, rp = patches(z), patches(ref)
        dist = (zp - rp).norm(dim=2).numpy()  # (N, k)
        tau = float(self.config.patch_distance_threshold)
        matches = (dist < tau).sum(axis=1)
        acc = (matches / k).astype(np.float64)
        # null: r_j ~ N(0, I) independent of z_hat  ->  |z_hat_j - r_j|^2 ~ ncx2(d, |z_hat_j|^2)
        d = c * p * p
        p_null = ncx2.cdf(tau ** 2, d, np.maximum((zp ** 2).sum(dim=2).numpy(), 1e-12))
        p_val = poisson_binomial_sf(p_null, matches)
        fpr = self.config.fpr / max(1, n_keys)
        extra = {"matches": matches, "patch_l2_median": np.median(dist, axis=1), "k": k}
        if self.config.statistic == "correlation":
            t = ((z.reshape(len(z), -1) * ref.reshape(len(z), -1)).sum(dim=1)
                 / z.reshape(len(z), -1).norm(dim=1).clamp_min(1e-12)).numpy()
            thr = float(norm.isf(fpr))
            rule = {"statistic": "correlation T = sum(z_hat * r) / |z_hat| with the caption's reference noise r "
                                 "(N(0,1) when unmarked)", "marked_if": f"T >= {thr:.3f}", "threshold": thr,
                    "fpr": fpr, "source": "normal tail P(N(0,1) >= T) <= fpr, r independent of z_hat under the null "
                                          "(no calibration set)"}
            pt = norm.sf(t)
            return Detection(self.name, score=t.astype(np.float64), decision=pt <= fpr, rule=rule, p_value=pt,
                             extra={**extra, "patch_acc": acc})
        rule: dict[str, Any] = {"statistic": f"patch matches (||z_hat_j - r_j|| < {tau:g}, {k} patches of {d})",
                                "k": k, "b": b, "tau": tau}
        if self.config.match_rule == "theta_mid":
            m_official = math.floor(k * (1 - self.config.theta_mid / 180) ** b)
            m = max(1, m_official)
            rule.update({"marked_if": f"matches >= {m} of {k}", "threshold": m / k,
                         "source": f"official floor(k (1 - theta_mid/180)^b), theta_mid {self.config.theta_mid:g}"})
            if m_official < 1:
                rule["warning"] = (f"the official threshold is {m_official} at k={k}, b={b} (every image marked); "
                                   "raised to 1")
            decision = matches >= m
        else:
            rule.update({"marked_if": f"P(M >= matches) <= {fpr:g}", "threshold": fpr, "fpr": fpr,
                         "source": "M ~ Poisson-binomial(p_j), p_j = P(||z_hat_j - r|| < tau) for r ~ N(0, I) "
                                   "independent of z_hat (exact null given the inverted latent; no calibration set)"})
            decision = p_val <= fpr
        return Detection(self.name, score=acc, decision=decision, rule=rule, p_value=p_val, extra=extra)
