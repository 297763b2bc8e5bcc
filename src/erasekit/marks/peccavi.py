"""PECCAVI (Dixit, Aziz, Bajpai, Sharma, Chadha, Jain, Das, "Peccavi: Visual Paraphrase Attack Safe and Distortion
Free Image Watermarking Technique for AI-Generated Images", arXiv 2506.22960, 2025; CVPR 2026 as "PECCAVI: Overcoming
the Brittleness of AI Image Watermarking Under Visual Paraphrasing Attacks"): a post-hoc watermark written into the
image regions a visual paraphrase keeps (Non-Melting Points, NMPs), in several colour channels of a frequency domain,
with "noisy burnishing" so that an attacker cannot tell where the NMPs are.

No official code: the paper says its code "will be open-sourced"; we found no repository (GitHub search for PECCAVI /
peccavi / the project page pragyaai.github.io/PECCAVI, 2026-11-29). This is an implementation from the paper's public
text and project page, with the parts the text leaves open filled in as stated below.

Embed (per image, (H, W, 3) uint8, RGB -> BT.601 YUV as `dwtdct`):
1. tiles: the image is cut into `patch` x `patch` tiles (T = (H // patch) * (W // patch)); the candidate regions.
2. NMPs (`nmp`): "paraphrase" (the paper's procedure, needs the pipeline): the clean image is visually paraphrased
   `nmp_paraphrases` times through the pipeline (`erasekit.marks.attacks.paraphrase` at `nmp_strength`, other seeds)
   and the `n_nmp` tiles whose mark-band coefficients (step 3) move least are kept: the regions that do not melt,
   measured on exactly the signal the mark lives in. "saliency" (no pipeline): the `n_nmp` tiles of highest spectral-
   residual saliency (Hou & Zhang, CVPR 2007) of the luminance, the paper's premise being that a paraphrase keeps the
   salient regions.
3. multi-channel frequency-domain mark: in every NMP tile and every channel of `channels` (Y, U, V), the orthonormal
   2-D DCT coefficients (u, v) with u, v < `band` (DC excluded) are the slots; slot s = channel-major index carries
   message bit s mod n_bits by dithered quantisation index modulation (QIM): c -> nearest point of
   step * Z + bit * step / 2 + dither[t, s] (dither: secret, from the key, independent per tile t and slot, so that
   two NMP tiles of one image do not agree modulo the step). Every NMP tile carries the whole message.
4. noisy burnishing (`burnish`): every other tile gets the same treatment with random bits and random dithers (drawn
   from a hash of the key's secret and the image, so repeatable for the owner, unpredictable without the key): the
   quantisation footprint an attacker would look for to find the NMPs is in every tile, and only the key's dithers
   tell the marked tiles from the decoys.

Detect (no original image, no pipeline): per tile and slot the soft value cos(2 pi (c - dither) / step) (+1 on the
bit-0 lattice, -1 on the bit-1 lattice); a tile's fit is the mean |soft value| over its slots under the key's dithers
(~1 for a tile marked with this key, ~2/pi for decoys, unmarked tiles and other keys); the `n_nmp` best-fitting tiles
vote per bit (sum of soft values), bit = vote < 0; marked iff the bit matches pass the binomial-tail threshold at
`fpr` (`marks.bit_match_detection`). The tile choice and the bits depend on the key's dithers and the image only,
never on the message bits, so on an unmarked image the matches are Binomial(n_bits, 1/2) exactly: the rule needs no
calibration set.

Deviations from the paper (and why):
- NMP search: the paper runs XRAI saliency (an ImageNet classifier's integrated gradients) on each paraphrase and
  aggregates non-overlapping bounding boxes; here a fixed tile grid, ranked by the stability of the mark's own
  coefficients under the paraphrases ("paraphrase") or by spectral-residual saliency ("saliency"): no classifier is
  shipped, a grid keeps the detector free of stored locations, and stability of the carried signal is what the NMPs
  are for. XRAI's boxes are not reproduced.
- the frequency-domain mark: the project page describes Fourier-ring marks (ZoDiac / Tree-Ring style, strength set
  by the distance between rings) in several channels; here a multi-bit dithered-QIM message in low-frequency DCT
  coefficients of Y, U and V, so that detection is a bit-match test with a stated false-positive rate (the paper's
  ring detector has no null model we could reproduce without its code).
- noisy burnishing: the paper does not say how its noise is made; decoy quantisation of every non-NMP tile is our
  reading of "hide the NMP locations against reverse engineering".
- the detector re-finds the marked tiles by their fit to the key's lattice instead of recomputing NMPs (which would
  need the pipeline and the unattacked image).

Size: at the toy model's 32x32 with 16 px tiles there are only 4 candidate tiles (2 NMPs by default), so "locating
NMPs" is a choice among 4 quarters; at 512 px the same settings give 1024 tiles. DCT index u of a p-px tile is u / 2p
cycles per pixel: the default band (u, v < 4 of 16 px, up to 3/32) lies below the Nyquist frequency of the toy VAE's
latent (downsampling 4: 1/8), the only detail a regeneration can keep; an SD VAE (downsampling 8: 1/16) needs
patch >= 32 for the same band. What it survives on the toy model is measured in
BENCHMARKS.md (Marks, Peccavi), not quoted here.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import Detection, Key, Watermark, bit_match_detection, check_fpr, check_images
from .dwtdct import _CHROMA_OFFSET, _RGB2YUV, _YUV2RGB
from .gaussian_shading import PAPER_FPR

NMP_MODES = ("paraphrase", "saliency")
SALIENCY_BLUR = 1.0 / 16  # saliency-map blur sigma / image side (Hou & Zhang: 8 at 64 px; half that: few tiles here)


@dataclass(frozen=True)
class PeccaviConfig:
    patch: int = field(default=16, metadata={"help": "side in pixels of the candidate tiles (the NMP grid)"})
    n_nmp: int = field(default=2, metadata={"help": "tiles that carry the mark (the NMPs) per image"})
    band: int = field(default=4, metadata={
        "help": "DCT coefficients (u, v) with u, v < band (no DC) of each tile and channel carry bits"})
    channels: tuple[int, ...] = field(default=(0, 1, 2), metadata={
        "help": "YUV channels that carry the mark (0 Y, 1 U, 2 V): the multi-channel mark"})
    step: float = field(default=48.0, metadata={
        "help": "QIM quantisation step of a coefficient (larger = more robust, more visible)"})
    n_bits: int | None = field(default=None, metadata={
        "help": "message length (None: one bit per slot = channels x (band^2 - 1); fewer repeats bits across slots)"})
    fpr: float = field(default=PAPER_FPR, metadata={"help": "false-positive rate of the binomial-tail threshold"})
    nmp: str = field(default="saliency", metadata={
        "help": "how NMPs are found: paraphrase (the paper's: paraphrase the image through the pipeline, keep the most "
                "stable tiles; needs pipe=) or saliency (spectral residual, no pipeline)"})
    nmp_paraphrases: int = field(default=3, metadata={
        "help": "paraphrases per image of the NMP search (nmp=paraphrase)"})
    nmp_strength: float = field(default=0.4, metadata={"help": "paraphrasing strength of the NMP search"})
    nmp_prompt: str = field(default="", metadata={
        "help": "paraphrase text of the NMP search when the model's world has no captioner"})
    burnish: bool = field(default=True, metadata={"help": "noisy burnishing: decoy marks in every non-NMP tile"})

    def __post_init__(self) -> None:
        def posint(name: str, value: Any, lo: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise InvalidValueError(f"{name} must be an integer >= {lo}, got {value!r}")

        posint("patch", self.patch, 2)
        posint("n_nmp", self.n_nmp, 1)
        posint("band", self.band, 2)
        if self.band > self.patch:
            raise InvalidValueError(f"band must be <= patch ({self.patch}), got {self.band!r}")
        if not self.channels or any(c not in (0, 1, 2) for c in self.channels) or \
                len(set(self.channels)) != len(self.channels):
            raise InvalidValueError(f"channels must be distinct YUV indices among 0, 1, 2, got {self.channels!r}")
        if isinstance(self.step, bool) or not isinstance(self.step, (int, float)) or not 0 < self.step < 1e4:
            raise InvalidValueError(f"step must be a number in (0, 10000), got {self.step!r}")
        if self.n_bits is not None:
            posint("n_bits", self.n_bits, 1)
            if self.n_bits > self.slots:
                raise InvalidValueError(f"n_bits={self.n_bits} exceeds the {self.slots} slots of a tile (channels x "
                                        f"(band^2 - 1)); lower n_bits or raise band")
        check_fpr("fpr", self.fpr)
        check_choice("nmp", self.nmp, NMP_MODES)
        posint("nmp_paraphrases", self.nmp_paraphrases, 1)
        if isinstance(self.nmp_strength, bool) or not isinstance(self.nmp_strength, (int, float)) or \
                not 0 < self.nmp_strength <= 1:
            raise InvalidValueError(f"nmp_strength must be in (0, 1], got {self.nmp_strength!r}")
        if not isinstance(self.nmp_prompt, str):
            raise InvalidValueError(f"nmp_prompt must be a string, got {self.nmp_prompt!r}")
        if not isinstance(self.burnish, bool):
            raise InvalidValueError(f"burnish must be true or false, got {self.burnish!r}")

    @property
    def positions(self) -> list[tuple[int, int]]:
        """The (u, v) DCT positions of a tile that carry bits (u, v < band, DC excluded)."""
        return [(u, v) for u in range(self.band) for v in range(self.band) if (u, v) != (0, 0)]

    @property
    def slots(self) -> int:
        return len(self.channels) * len(self.positions)


class Peccavi(Watermark):
    """PECCAVI post-hoc watermark: multi-channel DCT QIM in Non-Melting-Point tiles, decoys elsewhere."""

    name = "peccavi"
    paper = "Dixit et al. 2025, Peccavi: Visual Paraphrase Attack Safe and Distortion Free Image Watermarking"
    kind = "pixel"
    config_cls = PeccaviConfig
    embed_uses_pipe = True  # nmp="paraphrase" paraphrases through the pipeline (erasekit.marks.bench passes it)

    # ---------------------------------------------------------------------------------------------- keys
    def n_tiles(self, h: int, w: int) -> int:
        return (h // self.config.patch) * (w // self.config.patch)

    def keygen(self, pipe: Any = None, size: int | None = None, entropy: bytes | None = None) -> Key:
        """A fresh key for images of side `size` (or the pipeline's): random message bits, dithers per tile and slot."""
        if pipe is not None:
            size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
        if size is None or isinstance(size, bool) or int(size) < 1:
            raise InvalidValueError(f"peccavi keygen needs pipe= or size= (image side in pixels), got {size!r}")
        size, cfg = int(size), self.config
        t = self.n_tiles(size, size)
        if t < cfg.n_nmp:
            raise InvalidValueError(f"{size}x{size} images hold {t} tiles of {cfg.patch} px, fewer than n_nmp="
                                    f"{cfg.n_nmp}; lower patch or n_nmp")
        n, s = cfg.n_bits or cfg.slots, cfg.slots
        need = (n + 7) // 8 + 8 * s * t
        raw = os.urandom(need) if entropy is None else b"".join(
            hashlib.sha256(entropy + i.to_bytes(4, "little")).digest() for i in range(need // 32 + 1))[:need]
        bits = np.unpackbits(np.frombuffer(raw[:(n + 7) // 8], dtype=np.uint8))[:n]
        u = (np.frombuffer(raw[(n + 7) // 8:], dtype=np.uint64).astype(np.float64) / 2.0 ** 64).reshape(t, s)
        return Key(self.name, {**self.identity()["config"], "n_bits": n}, (size, size),
                   {"message": torch.from_numpy(bits.copy()), "dither": torch.from_numpy(u * cfg.step)})

    def _secret(self, key: Key) -> tuple[np.ndarray, np.ndarray]:
        """The key's message (n_bits,) and dithers (T, S)."""
        self.check_key(key)
        msg, dither = key.tensors.get("message"), key.tensors.get("dither")
        want = (self.n_tiles(*key.shape[:2]) if len(key.shape) == 2 else -1, self.config.slots)
        if msg is None or dither is None or msg.ndim != 1 or tuple(dither.shape) != want or msg.numel() < 1:
            raise InvalidValueError(f"this peccavi key does not match the config ({want[0]} tiles x {want[1]} slots: "
                                    "channels x (band^2 - 1)) or is damaged; load the key's own config or make a "
                                    "new key")
        if msg.numel() > self.config.slots:
            raise InvalidValueError(f"key message has {msg.numel()} bits, more than the {self.config.slots} slots")
        return msg.numpy().astype(np.uint8), dither.numpy().astype(np.float64)

    # ---------------------------------------------------------------------------------------------- transforms
    def _coeffs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, 3) uint8 -> YUV (N, H, W, 3) float and tile DCTs (N, T, C, p, p) of the marked channels."""
        from scipy.fft import dctn

        p, ch = self.config.patch, list(self.config.channels)
        yuv = images.astype(np.float64) @ _RGB2YUV.T + _CHROMA_OFFSET
        n, h, w = images.shape[:3]
        th, tw = h // p, w // p
        x = yuv[:, :th * p, :tw * p][..., ch]  # (N, th*p, tw*p, C)
        x = x.reshape(n, th, p, tw, p, len(ch)).transpose(0, 1, 3, 5, 2, 4).reshape(n, th * tw, len(ch), p, p)
        return yuv, dctn(x, axes=(-2, -1), norm="ortho")

    def _write(self, yuv: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
        """Tile DCTs (N, T, C, p, p) back into the YUV images -> (N, H, W, 3) uint8 RGB."""
        from scipy.fft import idctn

        p, ch = self.config.patch, list(self.config.channels)
        n, h, w = yuv.shape[:3]
        th, tw = h // p, w // p
        x = idctn(coeffs, axes=(-2, -1), norm="ortho")
        x = x.reshape(n, th, tw, len(ch), p, p).transpose(0, 1, 4, 2, 5, 3).reshape(n, th * p, tw * p, len(ch))
        yuv = yuv.copy()
        yuv[:, :th * p, :tw * p, ch] = x
        rgb = (yuv - _CHROMA_OFFSET) @ _YUV2RGB.T
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)

    def _slots(self, coeffs: np.ndarray) -> np.ndarray:
        """(N, T, C, p, p) -> (N, T, S) slot coefficients, channel-major (slot = c * positions + position)."""
        u, v = np.array(self.config.positions).T
        return coeffs[..., u, v].reshape(coeffs.shape[0], coeffs.shape[1], -1)

    def _put_slots(self, coeffs: np.ndarray, values: np.ndarray) -> np.ndarray:
        u, v = np.array(self.config.positions).T
        out = coeffs.copy()
        out[..., u, v] = values.reshape(*coeffs.shape[:3], len(u))
        return out

    def _qim(self, c: np.ndarray, bits: np.ndarray, dither: np.ndarray) -> np.ndarray:
        """Dithered QIM: each coefficient to the nearest point of step * Z + bit * step / 2 + dither."""
        s = self.config.step
        off = dither + bits * (s / 2)
        return off + s * np.round((c - off) / s)

    def _soft(self, c: np.ndarray, dither: np.ndarray) -> np.ndarray:
        """cos(2 pi (c - dither) / step): +1 on the bit-0 lattice, -1 on the bit-1 lattice, 0 half-way."""
        return np.cos(2 * np.pi * (c - dither) / self.config.step)

    # ---------------------------------------------------------------------------------------------- NMPs
    def saliency(self, images: np.ndarray) -> np.ndarray:
        """(N, T) mean spectral-residual saliency (Hou & Zhang 2007) of each tile's luminance."""
        from scipy.ndimage import gaussian_filter, uniform_filter

        y = images.astype(np.float64) @ _RGB2YUV[0]
        f = np.fft.fft2(y)
        logamp = np.log(np.abs(f) + 1e-8)
        resid = logamp - uniform_filter(logamp, size=(1, 3, 3), mode="wrap")
        sal = np.abs(np.fft.ifft2(np.exp(resid + 1j * np.angle(f)))) ** 2
        sigma = max(images.shape[1:3]) * SALIENCY_BLUR
        sal = gaussian_filter(sal, sigma=(0, sigma, sigma))
        return self._tile_mean(sal)

    def _tile_mean(self, m: np.ndarray) -> np.ndarray:
        p = self.config.patch
        n, h, w = m.shape
        th, tw = h // p, w // p
        return m[:, :th * p, :tw * p].reshape(n, th, p, tw, p).mean(axis=(2, 4)).reshape(n, th * tw)

    def instability(self, images: np.ndarray, pipe: Any, seed: int = 0) -> np.ndarray:
        """(N, T) mean squared change of each tile's mark-band coefficients over `nmp_paraphrases` visual paraphrases
        of the images through `pipe` (lower = a Non-Melting Point)."""
        from .attacks import ParaphraseConfig, paraphrase

        cfg = self.config
        pcfg = ParaphraseConfig(strength=float(cfg.nmp_strength), prompt=cfg.nmp_prompt)
        base = self._slots(self._coeffs(images)[1])
        out = np.zeros(base.shape[:2])
        for r in range(cfg.nmp_paraphrases):
            para = paraphrase(images, pcfg, pipe=pipe, seed=seed + r * len(images))
            out += ((self._slots(self._coeffs(para)[1]) - base) ** 2).mean(axis=-1)
        return out / cfg.nmp_paraphrases

    def locate_nmps(self, images: np.ndarray, pipe: Any = None) -> np.ndarray:
        """(N, n_nmp) tile indices (raster order) of the Non-Melting Points of each image, per `nmp`."""
        images = check_images(images)
        k = self.config.n_nmp
        if self.config.nmp == "paraphrase":
            if pipe is None:
                raise InvalidValueError("peccavi nmp='paraphrase' paraphrases each image through the model: pass "
                                        "pipe= (or use nmp=saliency, which needs no pipeline)")
            order = np.argsort(self.instability(images, pipe), axis=1, kind="stable")
        else:
            order = np.argsort(-self.saliency(images), axis=1, kind="stable")
        return order[:, :k]

    # ---------------------------------------------------------------------------------------------- embed / detect
    def embed_images(self, key: Key, images: np.ndarray, pipe: Any = None,
                     nmps: np.ndarray | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 marked copies of `images` (of the key's size). `pipe`: for nmp="paraphrase"; `nmps`
        (N, n_nmp): tile indices to use instead of locating them."""
        msg, dither = self._secret(key)
        images = check_images(images, key.shape[0])
        cfg = self.config
        if nmps is None:
            nmps = self.locate_nmps(images, pipe)
        nmps = np.asarray(nmps)
        yuv, coeffs = self._coeffs(images)
        n, t = coeffs.shape[:2]
        if nmps.shape != (n, cfg.n_nmp) or nmps.min() < 0 or nmps.max() >= t:
            raise InvalidValueError(f"nmps must be ({n}, {cfg.n_nmp}) tile indices in [0, {t}), got shape "
                                    f"{nmps.shape}")
        slots = self._slots(coeffs)  # (N, T, S)
        s = slots.shape[-1]
        bits = msg[np.arange(s) % len(msg)].astype(np.float64)
        new = slots.copy()
        mask = np.zeros((n, t), dtype=bool)
        np.put_along_axis(mask, nmps, True, axis=1)
        new[mask] = self._qim(slots[mask], bits[None], np.broadcast_to(dither[None], slots.shape)[mask])
        if cfg.burnish:
            rng = np.random.default_rng(np.frombuffer(hashlib.sha256(
                dither.tobytes() + images.tobytes()).digest(), dtype=np.uint32))
            decoy_bits = rng.integers(0, 2, size=slots.shape).astype(np.float64)
            decoy_dither = rng.uniform(0.0, cfg.step, size=slots.shape)
            new[~mask] = self._qim(slots[~mask], decoy_bits[~mask], decoy_dither[~mask])
        return self._write(yuv, self._put_slots(coeffs, new))

    def read(self, key: Key, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bits (N, n_bits) uint8 read from the `n_nmp` tiles that fit the key's lattice best, those tiles (N, n_nmp)
        and every tile's fit (N, T)."""
        msg, dither = self._secret(key)
        images = check_images(images, key.shape[0])
        soft = self._soft(self._slots(self._coeffs(images)[1]), dither[None])  # (N, T, S)
        fit = np.abs(soft).mean(axis=-1)
        best = np.argsort(-fit, axis=1, kind="stable")[:, :self.config.n_nmp]
        chosen = np.take_along_axis(soft, best[..., None], axis=1).sum(axis=1)  # (N, S)
        n_bits = len(msg)
        votes = np.zeros((len(images), n_bits))
        np.add.at(votes.T, np.arange(chosen.shape[1]) % n_bits, chosen.T)
        return (votes < 0).astype(np.uint8), best, fit

    def decode(self, key: Key, images: np.ndarray) -> np.ndarray:
        """(N, n_bits) uint8 message bits read from images (no original image, no pipeline)."""
        return self.read(key, images)[0]

    def generate(self, pipe: Any, key: Key, prompts: list[str], seeds: list[int] | int = 0,
                 steps: int | None = None, guidance: float | None = None) -> np.ndarray:
        """Plain generation (`erasekit.generate`), then `embed_images` (NMPs through `pipe` for nmp=paraphrase)."""
        from ..generation import generate

        return self.embed_images(key, generate(pipe, prompts, seeds, steps=steps, guidance=guidance), pipe=pipe)

    def detect(self, key: Key, images: np.ndarray, pipe: Any = None, n_keys: int = 1) -> Detection:
        """Bit-match detection (binomial tail at `fpr` / n_keys); `pipe` is not needed and ignored."""
        msg, _ = self._secret(key)
        return bit_match_detection(self.name, msg, self.decode(key, images), self.config.fpr, n_keys)
