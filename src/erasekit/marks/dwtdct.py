"""DWT-DCT post-hoc pixel watermark: the classic frequency-domain baseline that Stable Diffusion's reference scripts
ship (the `invisible-watermark` package, github.com/ShieldMnt/invisible-watermark, imwatermark/maxDct.py
`EmbedMaxDct`, method "dwtDct"; Cox et al. 1997 / Al-Haj 2007 for the DWT-DCT family), implemented in numpy for any
image size.

Embed: RGB -> YUV (BT.601); per chosen chromatic channel a one-level Haar DWT; its LL band is cut into `block` x
`block` tiles; in each tile's 2-D DCT the largest-magnitude AC coefficient is quantised with step `scale` so that its
magnitude modulo `scale` sits at 1/4 (bit 0) or 3/4 (bit 1) of the step; bit b of the message goes to tiles
b, b + L, b + 2L, ... (cyclic, as the package does). Detect: the same transform, each tile votes 1 if |c| mod scale >
scale / 2, votes are averaged per bit (bit = mean > 1/2), bit accuracy against the key's message; marked iff the
matches pass the binomial-tail threshold at `fpr` (no calibration set), as for Gaussian Shading.

Capacity: one bit per tile: (H / 2 / block) * (W / 2 / block) per channel. At the toy model's 32x32 with 4x4 tiles,
16 bits per channel, 32 bits with U and V; 32 bits can reach fpr 1e-6 only with >= 30 matching bits, so this baseline
has almost no slack for attacks at that size. At 256x256 (the package's minimum) it is 1024 bits per channel.

Deviations from the package (and why): both chromatic channels U and V carry bits by default (the package's loop
`for channel in range(2)` with scales [0, 36, 36] embeds only U; at 32x32 U alone holds 16 bits, which cannot reach a
1e-6 false-positive rate at all); float BT.601 YUV instead of OpenCV's uint8 conversion; embedding is repeated (`passes`, default 3)
on images whose bits do not read back after rounding to uint8; the message is a random secret from the key file (os.urandom), not a user string. The `invisible-watermark` package itself is not used (it is
not installed here and needs OpenCV); the algorithm is the same.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError
from . import Detection, Key, Watermark, bit_match_detection, check_fpr, check_images
from .gaussian_shading import PAPER_FPR

PACKAGE_SCALE = 36.0  # invisible-watermark's default quantisation step for U and V
PACKAGE_BLOCK = 4

# BT.601 RGB <-> YUV (analogue form; U, V centred on 128 for 8-bit images)
_RGB2YUV = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])
_YUV2RGB = np.linalg.inv(_RGB2YUV)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


@dataclass(frozen=True)
class DwtDctConfig:
    scale: float = field(default=PACKAGE_SCALE, metadata={"help": "quantisation step of the DCT coefficient "
                                                                  "(invisible-watermark: 36); larger = robust, visible"})
    block: int = field(default=PACKAGE_BLOCK, metadata={"help": "DCT tile side in the DWT LL band (package: 4)"})
    channels: tuple[int, ...] = field(default=(1, 2), metadata={
        "help": "YUV channels that carry bits (0 Y, 1 U, 2 V; the package embeds U only)"})
    n_bits: int | None = field(default=None, metadata={"help": "message length (None: one bit per tile = capacity)"})
    fpr: float = field(default=PAPER_FPR, metadata={"help": "false-positive rate of the binomial-tail threshold"})
    passes: int = field(default=3, metadata={
        "help": "embed again on the rounded uint8 result up to this many times while bits read back wrong "
                "(package: 1)"})

    def __post_init__(self) -> None:
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise InvalidValueError(f"passes must be an integer >= 1, got {self.passes!r}")
        if not self.scale > 0:
            raise InvalidValueError(f"scale must be > 0, got {self.scale!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 2:
            raise InvalidValueError(f"block must be an integer >= 2, got {self.block!r}")
        if not self.channels or any(c not in (0, 1, 2) for c in self.channels) or len(set(self.channels)) != \
                len(self.channels):
            raise InvalidValueError(f"channels must be distinct YUV indices among 0, 1, 2, got {self.channels!r}")
        if self.n_bits is not None and (isinstance(self.n_bits, bool) or not isinstance(self.n_bits, int)
                                        or self.n_bits < 1):
            raise InvalidValueError(f"n_bits must be an integer >= 1 or None, got {self.n_bits!r}")
        check_fpr("fpr", self.fpr)


def haar2(x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One-level orthonormal 2-D Haar DWT of (..., H, W) (H, W even): LL and (HL, LH, HH), each (..., H/2, W/2)."""
    a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, ((a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2)


def ihaar2(ll: np.ndarray, bands: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    hl, lh, hh = bands
    out = np.empty(ll.shape[:-2] + (ll.shape[-2] * 2, ll.shape[-1] * 2), dtype=ll.dtype)
    out[..., 0::2, 0::2] = (ll + hl + lh + hh) / 2
    out[..., 0::2, 1::2] = (ll - hl + lh - hh) / 2
    out[..., 1::2, 0::2] = (ll + hl - lh - hh) / 2
    out[..., 1::2, 1::2] = (ll - hl - lh + hh) / 2
    return out


class DwtDct(Watermark):
    """DWT-DCT post-hoc watermark (invisible-watermark's dwtDct, numpy, any size)."""

    name = "dwtdct"
    paper = "invisible-watermark dwtDct (ShieldMnt; Stable Diffusion's reference watermark)"
    kind = "pixel"
    config_cls = DwtDctConfig

    def capacity(self, h: int, w: int) -> int:
        """Message bits one image of h x w pixels holds (one per tile per channel)."""
        b = self.config.block
        return (h // 2 // b) * (w // 2 // b) * len(self.config.channels)

    def keygen(self, pipe: Any = None, size: int | None = None, entropy: bytes | None = None) -> Key:
        """A fresh random message for images of side `size` (or the pipeline's image side)."""
        if pipe is not None:
            size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
        if size is None or isinstance(size, bool) or int(size) < 1:
            raise InvalidValueError(f"dwtdct keygen needs pipe= or size= (image side in pixels), got {size!r}")
        size = int(size)
        cap = self.capacity(size, size)
        if cap == 0:
            raise InvalidValueError(f"{size}x{size} images hold no {self.config.block}x{self.config.block} tile of "
                                    "the DWT band; use larger images or a smaller block")
        n = self.config.n_bits or cap
        if n > cap:
            raise InvalidValueError(f"n_bits={n} exceeds the capacity of {size}x{size} images ({cap} bits)")
        raw = os.urandom((n + 7) // 8) if entropy is None else hashlib.sha256(entropy).digest() * ((n + 255) // 256)
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n]
        return Key(self.name, {**self.identity()["config"], "n_bits": n}, (size, size),
                   {"message": torch.from_numpy(bits.copy())})

    def _message(self, key: Key) -> np.ndarray:
        self.check_key(key)
        msg = key.tensors.get("message")
        if msg is None or msg.ndim != 1 or msg.numel() < 1:
            raise InvalidValueError("dwtdct key lacks a message; it is damaged, make a new one")
        return msg.numpy().astype(np.uint8)

    def _tiles(self, band: np.ndarray) -> np.ndarray:
        """(N, H2, W2) band -> (N, T, b, b) tiles in raster order (the band is cropped to whole tiles)."""
        b = self.config.block
        n, h, w = band.shape
        t = band[:, :h // b * b, :w // b * b].reshape(n, h // b, b, w // b, b).transpose(0, 1, 3, 2, 4)
        return t.reshape(n, -1, b, b)

    def _untile(self, tiles: np.ndarray, band: np.ndarray) -> np.ndarray:
        b = self.config.block
        n, h, w = band.shape
        out = band.copy()
        out[:, :h // b * b, :w // b * b] = tiles.reshape(n, h // b, w // b, b, b).transpose(0, 1, 3, 2, 4).reshape(
            n, h // b * b, w // b * b)
        return out

    def _bands(self, images: np.ndarray) -> tuple[np.ndarray, int, int]:
        yuv = images.astype(np.float64) @ _RGB2YUV.T + _CHROMA_OFFSET  # (N, H, W, 3)
        return yuv, images.shape[1] // 2 * 2, images.shape[2] // 2 * 2

    @staticmethod
    def _max_ac(d: np.ndarray) -> np.ndarray:
        """(N, T) flat index of the largest-magnitude AC coefficient of each (N, T, b, b) DCT tile."""
        flat = np.abs(d.reshape(d.shape[0], d.shape[1], -1))
        return flat[..., 1:].argmax(axis=-1) + 1

    def embed_images(self, key: Key, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 marked copies of `images` (of the key's size). Rounding to uint8, clipping and a change
        of the largest AC coefficient can flip bits; images whose bits do not all read back are embedded again (up to
        `passes` times in all)."""
        msg = self._message(key)
        images = check_images(images, key.shape[0])
        out = self._embed_once(msg, images)
        for _ in range(self.config.passes - 1):
            bad = (self.decode(key, out) != msg[None]).any(axis=1)
            if not bad.any():
                break
            out[bad] = self._embed_once(msg, out[bad])
        return out

    def _embed_once(self, msg: np.ndarray, images: np.ndarray) -> np.ndarray:
        from scipy.fft import dctn, idctn

        yuv, h2, w2 = self._bands(images)
        s = self.config.scale
        for ci, ch in enumerate(self.config.channels):
            ll, bands = haar2(yuv[:, :h2, :w2, ch])
            tiles = dctn(self._tiles(ll), axes=(-2, -1), norm="ortho")
            n, t = tiles.shape[:2]
            bits = msg[(np.arange(t) + ci * t) % len(msg)]  # tiles of all channels in one cyclic order
            pos = self._max_ac(tiles)
            flat = tiles.reshape(n, t, -1)
            val = np.take_along_axis(flat, pos[..., None], axis=-1)[..., 0]
            q = (np.abs(val) // s + 0.25 + 0.5 * bits[None]) * s
            np.put_along_axis(flat, pos[..., None], (np.where(val >= 0, 1.0, -1.0) * q)[..., None], axis=-1)
            ll = self._untile(idctn(flat.reshape(tiles.shape), axes=(-2, -1), norm="ortho"), ll)
            yuv[:, :h2, :w2, ch] = ihaar2(ll, bands)
        rgb = (yuv - _CHROMA_OFFSET) @ _YUV2RGB.T
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)

    def decode(self, key: Key, images: np.ndarray) -> np.ndarray:
        """(N, n_bits) uint8 message bits read from images (tile votes averaged per bit)."""
        from scipy.fft import dctn

        msg = self._message(key)
        images = check_images(images, key.shape[0])
        yuv, h2, w2 = self._bands(images)
        s = self.config.scale
        votes = np.zeros((len(images), len(msg)))
        counts = np.zeros(len(msg))
        for ci, ch in enumerate(self.config.channels):
            ll, _ = haar2(yuv[:, :h2, :w2, ch])
            tiles = dctn(self._tiles(ll), axes=(-2, -1), norm="ortho")
            n, t = tiles.shape[:2]
            pos = self._max_ac(tiles)
            val = np.abs(np.take_along_axis(tiles.reshape(n, t, -1), pos[..., None], axis=-1)[..., 0])
            idx = (np.arange(t) + ci * t) % len(msg)
            np.add.at(votes.T, idx, ((val % s) > s / 2).astype(np.float64).T)
            np.add.at(counts, idx, 1.0)
        return (votes / np.maximum(counts, 1) > 0.5).astype(np.uint8)

    def generate(self, pipe: Any, key: Key, prompts: list[str], seeds: list[int] | int = 0,
                 steps: int | None = None, guidance: float | None = None) -> np.ndarray:
        """Plain generation (`erasekit.generate`), then `embed_images`."""
        from ..generation import generate

        return self.embed_images(key, generate(pipe, prompts, seeds, steps=steps, guidance=guidance))

    def detect(self, key: Key, images: np.ndarray, pipe: Any = None, n_keys: int = 1) -> Detection:
        msg = self._message(key)
        return bit_match_detection(self.name, msg, self.decode(key, images), self.config.fpr, n_keys)
