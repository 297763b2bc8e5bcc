"""Gaussian Shading (Yang, Zeng, Chen, Wu, Chen, Fang, Zhang, "Gaussian Shading: Provable Performance-Lossless Image
Watermarking for Diffusion Models", CVPR 2024; official code github.com/bsmhmmlf/Gaussian-Shading, watermark.py
`Gaussian_Shading_chacha` and run_gaussian_shading.py).

Embed: the user's message s (C/ch x h/hw x w/hw bits) is tiled ch x hw x hw times over the latent (diffusion), XORed
with a ChaCha20 keystream (m = s_d XOR ks), and each latent entry is drawn from the standard normal truncated to the
half-line of its bit (bit 1 -> z > 0, bit 0 -> z < 0): marginally every entry is N(0, 1), so the marked latent has the
same distribution as an unmarked one (distribution-preserving). Detect: DDIM-invert with an empty prompt, bits =
z_hat > 0, decrypt, majority vote over the copies (ties -> 0, as the official `vote > copies / 2`), bit accuracy
against s. Threshold from the binomial tail, no calibration set: an unmarked image matches each bit with probability
1/2, so "marked iff matches >= k" with k the smallest count whose tail P(Binomial(L, 1/2) >= k) <= `fpr` (official
fpr 1e-6); tracing among N keys uses fpr / N.

Message size: the official 4x64x64 latent with ch=1, hw=8 gives 256 bits, each copied 64 times. The default copy
factor here is derived from the latent side so that the message side is min(8, side // 2): hw=8 at 64x64 (the
paper's), hw=2 at the toy model's 8x8 (64 bits, 4 copies each). A 64-bit message cannot reach the paper's 1e-6 with
fewer than 53 of 64 bits matching.

Deviations from the official code (and why):
- sampling: z = sign(m) * |n| with n the same-seed standard normal draw. |N(0,1)| is exactly the normal truncated to
  [0, inf) (the official samples scipy truncnorm per entry from an unseeded state), and reusing the seed's magnitudes
  makes the marked image directly comparable with the unmarked same-seed image.
- ChaCha20 from the `cryptography` package (a 16-byte nonce = a zero 32-bit block counter + 12 random bytes, which is
  PyCryptodome's ChaCha20 with a 12-byte nonce as the official code uses).
- the threshold is the exact binomial tail P(X >= k) <= fpr; the official loop compares "correct >= i / L" with
  betainc(i + 1, L - i, 0.5) = P(X >= i + 1), one bit laxer.
- the key (message, ChaCha20 key and nonce) lives in a key file from os.urandom, not in the process's torch RNG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import check_choice
from ..errors import ErasekitError, InvalidValueError
from . import Detection, Key, binomial_p_value, binomial_threshold, check_fpr
from ._latent import INVERSION_HELP, LatentWatermark, check_inversion_options, shape_of

PAPER_MESSAGE_SIDE = 8  # official: 64x64 latent / hw_copy 8
PAPER_FPR = 1e-6  # official detection false-positive rate
CHACHA_KEY_BYTES, CHACHA_NONCE_BYTES = 32, 12
STATISTICS = ("bits", "correlation")


@dataclass(frozen=True)
class GaussianShadingConfig:
    channel_copy: int = field(default=1, metadata={"help": "copies of the message along channels (official 1)"})
    hw_copy: int | None = field(default=None, metadata={
        "help": "copies along height and width (official 8 at 64x64; None: side // min(8, side // 2))"})
    fpr: float = field(default=PAPER_FPR, metadata={
        "help": "false-positive rate of the binomial-tail threshold (official 1e-6); tracing uses fpr / N keys"})
    statistic: str = field(default="bits", metadata={
        "help": "bits: majority-voted bit accuracy (paper); correlation: sum(z_hat * sign) / |z_hat| (not in the "
                "paper; uses the magnitudes, for weak inversions)"})
    inversion_steps: int | None = field(default=None, metadata={
        "help": "DDIM inversion steps (None: the model's default sampling steps)"})
    decoder_steps: int = field(default=0, metadata={
        "help": "decoder-inversion Adam steps before DDIM inversion (0: VAE encoder only, as the official code)"})
    inversion_prompt: str = field(default="empty", metadata={"help": INVERSION_HELP["inversion_prompt"]})
    inversion_guidance: float = field(default=1.0, metadata={"help": INVERSION_HELP["inversion_guidance"]})
    fixed_point: int = field(default=0, metadata={"help": INVERSION_HELP["fixed_point"]})

    def __post_init__(self) -> None:
        for name in ("channel_copy", "hw_copy"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidValueError(f"{name} must be an integer >= 1, got {v!r}")
        check_fpr("fpr", self.fpr)
        check_choice("statistic", self.statistic, STATISTICS)
        check_inversion_options(self)


def keystream_bits(key: bytes, nonce: bytes, n_bits: int) -> np.ndarray:
    """(n_bits,) uint8 ChaCha20 keystream bits (key 32 bytes, nonce 12 bytes, block counter from 0)."""
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    except ImportError as e:
        raise ErasekitError("Gaussian Shading needs the `cryptography` package (ChaCha20): pip install cryptography") \
            from e
    enc = Cipher(algorithms.ChaCha20(key, b"\x00" * 4 + nonce), mode=None).encryptor()
    stream = enc.update(b"\x00" * ((n_bits + 7) // 8))
    return np.unpackbits(np.frombuffer(stream, dtype=np.uint8))[:n_bits]


class GaussianShading(LatentWatermark):
    """Gaussian Shading (Yang et al. CVPR 2024): encrypted message bits as the signs of the initial latent."""

    name = "gaussian_shading"
    paper = "Yang et al., Gaussian Shading, CVPR 2024"
    config_cls = GaussianShadingConfig

    def copies(self, shape: tuple[int, int, int]) -> tuple[int, int]:
        """(channel copies, spatial copies) for a (C, h, w) latent; the message is (C/ch, h/hw, w/hw)."""
        c, h, w = shape
        ch = self.config.channel_copy
        hw = self.config.hw_copy if self.config.hw_copy is not None else h // max(1, min(PAPER_MESSAGE_SIDE, h // 2))
        if c % ch or h % hw or w % hw:
            raise InvalidValueError(f"channel_copy={ch}, hw_copy={hw} do not divide the {c}x{h}x{w} latent; choose "
                                    "divisors of the channel count and the side")
        return ch, hw

    def keygen(self, pipe: Any = None, shape: tuple[int, int, int] | None = None,
               entropy: bytes | None = None) -> Key:
        """A fresh key: random message bits, a ChaCha20 key and nonce (os.urandom, or derived from `entropy`)."""
        import hashlib

        shape = shape_of(pipe, shape)
        ch, hw = self.copies(shape)
        c, h, w = shape
        n = (c // ch) * (h // hw) * (w // hw)
        if entropy is None:
            raw = os.urandom(CHACHA_KEY_BYTES + CHACHA_NONCE_BYTES + (n + 7) // 8)
        else:  # deterministic expansion of the given entropy (tests, reproducible benchmarks)
            raw = b""
            while len(raw) < CHACHA_KEY_BYTES + CHACHA_NONCE_BYTES + (n + 7) // 8:
                raw += hashlib.sha256(entropy + len(raw).to_bytes(4, "little")).digest()
        k, nonce = raw[:CHACHA_KEY_BYTES], raw[CHACHA_KEY_BYTES:CHACHA_KEY_BYTES + CHACHA_NONCE_BYTES]
        bits = np.unpackbits(np.frombuffer(raw[CHACHA_KEY_BYTES + CHACHA_NONCE_BYTES:], dtype=np.uint8))[:n]
        msg = torch.from_numpy(bits.copy()).reshape(c // ch, h // hw, w // hw)
        cfg = {**self.identity()["config"], "channel_copy": ch, "hw_copy": hw}
        return Key(self.name, cfg, shape, {"message": msg.to(torch.uint8),
                                           "chacha_key": torch.frombuffer(bytearray(k), dtype=torch.uint8),
                                           "nonce": torch.frombuffer(bytearray(nonce), dtype=torch.uint8)})

    def _unpack(self, key: Key) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(message (C/ch, h/hw, w/hw), keystream (C*h*w,), ch, hw) of a key."""
        self.check_key(key)
        try:
            msg = key.tensors["message"].numpy().astype(np.uint8)
            k = bytes(key.tensors["chacha_key"].numpy().tobytes())
            nonce = bytes(key.tensors["nonce"].numpy().tobytes())
        except KeyError as e:
            raise InvalidValueError(f"gaussian_shading key lacks tensor {e.args[0]!r}; it is damaged, make a new "
                                    "one") from None
        ch, hw = int(key.config.get("channel_copy", 0)), int(key.config.get("hw_copy", 0))
        c, h, w = key.shape
        if len(k) != CHACHA_KEY_BYTES or len(nonce) != CHACHA_NONCE_BYTES or ch < 1 or hw < 1 \
                or msg.shape != (c // ch, h // hw, w // hw):
            raise InvalidValueError("gaussian_shading key is inconsistent (key, nonce or message size); make a new one")
        return msg, keystream_bits(k, nonce, c * h * w), ch, hw

    def signs(self, key: Key) -> np.ndarray:
        """(C, h, w) uint8: the encrypted tiled message m = tile(s) XOR keystream (1 -> positive entry)."""
        msg, ks, ch, hw = self._unpack(key)
        tiled = np.tile(msg, (ch, hw, hw))  # the official `repeat(1, ch, hw, hw)`
        return tiled ^ ks.reshape(tiled.shape)

    def initial_latents(self, key: Key, seeds: list[int]) -> torch.Tensor:
        """(N, C, h, w): |same-seed normal draw| with the sign of each entry's encrypted bit."""
        sign = torch.from_numpy(self.signs(key).astype(np.float32) * 2 - 1)
        z = torch.cat([torch.randn((1, *key.shape), generator=torch.Generator("cpu").manual_seed(int(s)))
                       for s in seeds])
        return z.abs() * sign

    def decode(self, key: Key, z: torch.Tensor) -> np.ndarray:
        """(N, C/ch, h/hw, w/hw) uint8 message bits recovered from (N, C, h, w) latents (sign, decrypt, vote)."""
        msg, ks, ch, hw = self._unpack(key)
        c, h, w = key.shape
        bits = (z.detach().cpu().numpy() > 0).astype(np.uint8)  # (N, C, h, w)
        sd = bits ^ ks.reshape(1, c, h, w)
        votes = sd.reshape(-1, ch, c // ch, hw, h // hw, hw, w // hw).sum(axis=(1, 3, 5))
        return (votes > ch * hw * hw / 2).astype(np.uint8)

    def score_latents(self, key: Key, z: torch.Tensor, n_keys: int = 1) -> Detection:
        msg = self._unpack(key)[0]
        rec = self.decode(key, z)
        n_bits = msg.size
        matches = (rec == msg[None]).reshape(len(rec), -1).sum(axis=1)
        fpr = self.config.fpr / max(1, n_keys)
        k = binomial_threshold(n_bits, fpr)
        acc = matches / n_bits
        rule = {"statistic": "bit matches", "marked_if": f"matches >= {k} of {n_bits}", "threshold": k / n_bits,
                "fpr": fpr, "n_bits": n_bits,
                "source": "binomial tail P(Bin(n_bits, 1/2) >= k) <= fpr (no calibration set)"}
        if k > n_bits:
            rule["warning"] = f"a {n_bits}-bit message cannot reach fpr {fpr:g}: nothing is ever declared marked"
        if self.config.statistic == "correlation":
            return self._correlation(key, z, fpr, acc)
        return Detection(self.name, score=acc.astype(np.float64), decision=matches >= k, rule=rule,
                         p_value=binomial_p_value(matches, n_bits), bit_acc=acc.astype(np.float64))

    def _correlation(self, key: Key, z: torch.Tensor, fpr: float, acc: np.ndarray) -> Detection:
        """Score T = sum(z_hat * s) / |z_hat| with s = +-1 the key's signs. For an unmarked image the signs are
        independent fair coins given z_hat (the keystream), so T has mean 0 and variance 1, and is close to N(0, 1)
        over hundreds of entries: p = P(N(0,1) >= T), marked iff p <= fpr. Not in the paper (whose extractor keeps
        only the signs); it also uses how far each entry is from zero, which matters when inversion is poor."""
        from scipy.stats import norm

        s = torch.from_numpy(self.signs(key).astype(np.float64) * 2 - 1).reshape(1, -1)
        zf = z.detach().cpu().double().reshape(len(z), -1)
        t = ((zf * s).sum(dim=1) / zf.norm(dim=1).clamp_min(1e-12)).numpy()
        p = norm.sf(t)
        thr = float(norm.isf(fpr))
        rule = {"statistic": "sign correlation T = sum(z_hat * s) / |z_hat| (N(0,1) when unmarked)",
                "marked_if": f"T >= {thr:.3f}", "threshold": thr, "fpr": fpr,
                "source": "normal tail P(N(0,1) >= T) <= fpr (no calibration set)"}
        return Detection(self.name, score=t.astype(np.float64), decision=p <= fpr, rule=rule, p_value=p,
                         bit_acc=acc.astype(np.float64))

    def trace(self, keys: list[Key], images: np.ndarray, pipe: Any = None,
              latents: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Traceability among N users: (N_img,) index of the best key, or -1 where it does not pass the threshold
        at fpr / N keys; and the (N_img, K) bit accuracies."""
        idx, scores = self.identify(keys, images, pipe=pipe, latents=latents)
        n_bits = self._unpack(keys[0])[0].size
        k = binomial_threshold(n_bits, self.config.fpr / len(keys))
        best = scores[np.arange(len(idx)), idx]
        return np.where(np.round(best * n_bits) >= k, idx, -1), scores
