"""Tree-Ring watermark (Wen, Kirchenbauer, Geiping, Goldstein, "Tree-Ring Watermarks: Fingerprints for Diffusion
Images that are Invisible and Robust", NeurIPS 2023; official code github.com/YuxinWenRick/tree-ring-watermark,
optim_utils.py and run_tree_ring_watermark.py).

Embed: a key pattern K (complex, in the centred 2-D FFT of one latent channel) is written into a disc mask M of the
FFT of the initial latent z_T: fft(z_T)[M] = K[M]; z_T' = real(ifft(...)). The "ring" pattern (the paper's) is
constant on each ring of radius r = R..1, taking the value at row 0, column r of the centred FFT of a random latent,
so it is invariant to rotations of the image. Detect: invert the image by DDIM with an empty prompt, score the
complex L1 distance mean |fft(z_hat)[M] - K[M]| (lower = marked; `score` is its negative), and the official p-value:
x = sum(((z - K) / sigma)^2) over the real and imaginary parts in M, sigma = their std, lambda = sum(K^2) / sigma^2,
p = ncx2.cdf(x, df=2|M|, nc=lambda); marked iff p < `p_value_level` (0.01 as in the official code).

Settings: the paper's are the ring pattern on channel 3 with radius 10 on a 64x64 latent (SD 512 px). MarkDiffusion's
TR config is pattern="zeros", channel=0 (same radius). The radius default here is derived from the latent side: the
paper's fraction 10/64 of the side, at least MIN_RADIUS (so 10 at 64x64; 2 at the toy model's 8x8, where the paper's
fraction would give a single-coefficient ring of 5 coefficients).

Deviations from the official code (and why):
- the disc is centred on the DC coefficient (row and column side // 2). The official `circle_mask` flips the rows
  (y = y[::-1]), which puts its centre one row off DC for even sides, so the disc is not conjugate-symmetric and the
  `.real` of the inverse FFT halves part of the key; at 8x8 that costs a large share of the mask. This argument holds
  for real-valued patterns ("zeros": kept exactly). For the complex "ring" pattern, `.real` on the symmetric disc
  keeps exactly Re(K) and loses all of Im(K), which at 8x8 is more than the official off-centre disc loses (measured
  side by side with MarkDiffusion: BENCHMARKS.md, Marks, peer check).
- the key's random latent comes from the key file's own entropy (os.urandom at keygen), not from a fixed w_seed.
- kept as in the official code: the `.real` that discards the imaginary part of the injected pattern, and the p-value
  that treats the conjugate-paired coefficients of a real latent as independent (so it is anti-conservative: the
  measured false-positive rate at p < 0.01 on clean images is reported by `erasekit mark bench`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import Detection, Key, check_fpr
from ._latent import INVERSION_HELP, LatentWatermark, check_inversion_options, key_generator, shape_of

PATTERNS = ("ring", "zeros", "rand")
PAPER_RADIUS_FRACTION = 10 / 64  # radius 10 on SD's 64x64 latent (official default w_radius=10)
MIN_RADIUS = 2  # below this a disc holds 5 coefficients and detection has little to measure


@dataclass(frozen=True)
class TreeRingConfig:
    channel: int = field(default=3, metadata={"help": "latent channel that carries the key (paper: 3; -1: all "
                                                      "channels; MarkDiffusion: 0)"})
    pattern: str = field(default="ring", metadata={"help": "key pattern: ring (paper), zeros (MarkDiffusion), rand"})
    radius: int | None = field(default=None, metadata={
        "help": "disc radius in FFT coefficients (None: 10/64 of the latent side, at least 2)"})
    p_value_level: float = field(default=0.01, metadata={"help": "decision: marked iff p-value < this (official 0.01)"})
    inversion_steps: int | None = field(default=None, metadata={
        "help": "DDIM inversion steps (None: the model's default sampling steps)"})
    decoder_steps: int = field(default=0, metadata={
        "help": "decoder-inversion Adam steps before DDIM inversion (0: VAE encoder only, as the official code)"})
    inversion_prompt: str = field(default="empty", metadata={"help": INVERSION_HELP["inversion_prompt"]})
    inversion_guidance: float = field(default=1.0, metadata={"help": INVERSION_HELP["inversion_guidance"]})
    fixed_point: int = field(default=0, metadata={"help": INVERSION_HELP["fixed_point"]})

    def __post_init__(self) -> None:
        check_choice("pattern", self.pattern, PATTERNS)
        if isinstance(self.channel, bool) or not isinstance(self.channel, int) or self.channel < -1:
            raise InvalidValueError(f"channel must be a latent channel index or -1 (all), got {self.channel!r}")
        if self.radius is not None and (isinstance(self.radius, bool) or not isinstance(self.radius, int)
                                        or self.radius < 1):
            raise InvalidValueError(f"radius must be an integer >= 1 (or None for the size-derived default), got "
                                    f"{self.radius!r}")
        check_fpr("p_value_level", self.p_value_level)
        check_inversion_options(self)


def default_radius(side: int) -> int:
    """The paper's radius scaled to a latent of side `side`, at least MIN_RADIUS and inside the spectrum."""
    return int(min(side // 2 - 1, max(MIN_RADIUS, round(side * PAPER_RADIUS_FRACTION))))


def disc(side: int, r: int) -> torch.Tensor:
    """(side, side) bool: coefficients of the centred spectrum within distance r of DC (row, column side // 2)."""
    c = side // 2
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    return (x - c) ** 2 + (y - c) ** 2 <= r ** 2


def fft_c(z: torch.Tensor) -> torch.Tensor:
    """Centred 2-D FFT over the last two dimensions."""
    return torch.fft.fftshift(torch.fft.fft2(z.to(torch.float64)), dim=(-1, -2))


class TreeRing(LatentWatermark):
    """Tree-Ring (Wen et al. 2023): a ring key in the Fourier transform of the initial latent."""

    name = "tree_ring"
    paper = "Wen et al., Tree-Ring Watermarks, NeurIPS 2023"
    config_cls = TreeRingConfig

    def radius_for(self, side: int) -> int:
        r = self.config.radius if self.config.radius is not None else default_radius(side)
        if r > side // 2 - 1:
            raise InvalidValueError(f"radius {r} does not fit a {side}x{side} latent spectrum (at most {side // 2 - 1})")
        return r

    def keygen(self, pipe: Any = None, shape: tuple[int, int, int] | None = None,
               entropy: bytes | None = None) -> Key:
        """A fresh key for the pipeline's latent shape: the mask and the complex pattern (from OS entropy)."""
        c, h, w = shape_of(pipe, shape)
        if h != w:
            raise InvalidValueError(f"Tree-Ring needs square latents, got {h}x{w}")
        if self.config.channel >= c:
            raise InvalidValueError(f"channel={self.config.channel} but the latent has {c} channels (0..{c - 1})")
        r = self.radius_for(h)
        gen = key_generator(entropy)
        ref = fft_c(torch.randn((c, h, w), generator=gen))  # (C, h, w) complex
        if self.config.pattern == "zeros":
            patch = torch.zeros_like(ref)
        elif self.config.pattern == "rand":
            patch = ref.clone()  # official 'rand': the random latent's spectrum itself
        else:  # ring: constant on each ring, from the outermost radius inwards
            patch = ref.clone()
            for i in range(r, 0, -1):
                d = disc(h, i)
                for j in range(c):
                    patch[j, d] = ref[j, 0, i]
        mask = torch.zeros((c, h, w), dtype=torch.bool)
        if self.config.channel == -1:
            mask[:] = disc(h, r)
        else:
            mask[self.config.channel] = disc(h, r)
        cfg = {**self.identity()["config"], "radius": r}
        return Key(self.name, cfg, (c, h, w), {"patch_real": patch.real.float(), "patch_imag": patch.imag.float(),
                                               "mask": mask.to(torch.uint8)})

    @staticmethod
    def _unpack(key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            patch = torch.complex(key.tensors["patch_real"].double(), key.tensors["patch_imag"].double())
            mask = key.tensors["mask"].bool()
        except KeyError as e:
            raise InvalidValueError(f"tree_ring key lacks tensor {e.args[0]!r}; it is damaged, make a new one") from None
        if patch.shape != mask.shape or tuple(mask.shape) != tuple(key.shape) or not mask.any():
            raise InvalidValueError("tree_ring key is inconsistent (mask/pattern shapes); make a new one")
        return patch, mask

    def initial_latents(self, key: Key, seeds: list[int]) -> torch.Tensor:
        """(N, C, h, w): the same-seed Gaussian latent with the key written into its spectrum (official injection)."""
        patch, mask = self._unpack(self.check_key(key))
        z = torch.cat([torch.randn((1, *key.shape), generator=torch.Generator("cpu").manual_seed(int(s)))
                       for s in seeds])
        f = fft_c(z)
        f[:, mask] = patch[mask]
        return torch.fft.ifft2(torch.fft.ifftshift(f, dim=(-1, -2))).real.float()

    def score_latents(self, key: Key, z: torch.Tensor) -> Detection:
        from scipy.stats import ncx2

        patch, mask = self._unpack(self.check_key(key))
        f = fft_c(z.cpu())[:, mask]  # (N, |M|) complex
        k = patch[mask]
        l1 = (f - k).abs().mean(dim=1).numpy()
        # official get_p_value: real and imaginary parts stacked, sigma from the recovered coefficients
        fr = torch.cat([f.real, f.imag], dim=1)
        kr = torch.cat([k.real, k.imag])
        sigma = fr.std(dim=1, keepdim=True)
        lam = ((kr[None] ** 2) / sigma ** 2).sum(dim=1).numpy()
        x = (((fr - kr[None]) / sigma) ** 2).sum(dim=1).numpy()
        p = np.asarray(ncx2.cdf(x, df=kr.numel(), nc=lam), dtype=np.float64)
        level = self.config.p_value_level
        rule = {"statistic": "p_value (non-central chi-square, official get_p_value)", "marked_if": f"p < {level}",
                "threshold": level, "source": "fixed significance level (no calibration set)"}
        return Detection(self.name, score=-l1, decision=p < level, rule=rule, p_value=p, extra={"l1": l1})
