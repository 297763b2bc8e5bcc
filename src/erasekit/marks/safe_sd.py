"""Safe-SD (Ma, Jia, Qi, Zhou, "Safe-SD: Safe and Traceable Stable Diffusion with Text Prompt Trigger for Invisible
Generative Watermarking", ACM MM 2024, arXiv 2407.13188; official code github.com/AnonymousPony/safe-sd, a fork of
CompVis latent-diffusion: ldm/models/autoencoder.py `AutoencoderKL(use_wm=True)`, ldm/models/diffusion/ddpm.py
`p_losses(wm=...)`, configs/autoencoder/autoencoder_kl_32x32x4_wm_origin_model.yaml).

The paper's unified injector / extractor (stage 1), as the official autoencoder builds it:

    z_i = E(x), z_w = E(w)                  the frozen VAE encoder E encodes the image x and a graphic watermark w
    z_m = f_c([z_i, z_w])                   the injector: one 1x1 convolution on the concatenated latents (2C -> C)
    x_m = D(z_m)                            the frozen image decoder renders the marked image
    w_hat = D_w(z_m)                        the extractor: a trainable copy of the decoder (and its post-quant conv)
                                            that decodes the watermark graphic
    loss = L_img(x_m, x) + gamma * L_wm(w_hat, w)      only f_c and D_w are trained (official optimiser)

Stage 2 of the paper fine-tunes the latent diffuser so that it generates z_m itself, and only when the prompt holds a
trigger text (lambda-sampling / lambda-encryption: a fraction lambda of the fine-tuning samples are marked latents with
the trigger in their caption). The released code has stage 1 and the marked-latent diffusion loss (x_start =
fusion_conv([x, wm])); the trigger, lambda-sampling and lambda-encryption are not in it.

What this module does (and where it deviates, and why):
- The watermark is the key's secret bit message (os.urandom) drawn as a graphic: a `grid` x `grid` board of black /
  white cells (bit 1 white, bit 0 black), the paper's "QR-code" graphic reduced to what a 32 px image can carry.
  Detection reads each cell of w_hat (mean > 0 -> bit 1), counts matches with the key's message, and decides with the
  binomial tail (`binomial_threshold` at `fpr`, fpr / N for N keys), so no calibration set is needed; the paper
  compares decoded graphics by eye / PSNR and states no decision rule.
- One trained weights file serves every key: f_c and D_w are trained on random messages, so a new key (a new message)
  needs no retraining, and identification among keys extracts w_hat once and compares it with every key's bits.
- The extractor reads pixels, as a detector must: w_hat = D_w(E(A(x_m))) with A a random differentiable distortion
  (noise, blur, brightness, none) and uint8 rounding (straight-through), where the official code trains D_w on z_m
  directly (no pixel round trip, no distortions); without the round trip the extractor never sees what a detector
  gets. L_wm is L1 on the graphic (official: L1 + LPIPS + a patch discriminator; no VGG weights here, and a GAN does
  not fit a CPU budget of minutes). L_img is a hinge on the image MSE: relu(MSE - budget) / budget with the budget
  set by `psnr` (dB), the MSE taken against D(z_i), the unmarked rendering of the same latent (so only the mark is
  penalised), where the official code uses L1 + LPIPS against x weighted by gamma. Measured on the toy model: with a
  plain weighted L1 or MSE image loss the mark shrinks to nothing (bit accuracy back to 0.5 within 200 steps) before
  the extractor learns to read a faint one; the hinge holds the mark at a stated image quality instead.
- Initialisation: f_c starts as z_i + init_mix * z_w (a visible mark the extractor learns to read first) and the image
  term ramps in over the first `warmup` fraction of the steps; from f_c = [I, 0] (mark off) the extractor never gets a
  signal (measured: bit accuracy 0.5 after 200 steps). The official initialisation is PyTorch's default.
- The trigger (stage 2) is applied at generation, not learnt by the U-Net: `generate` looks for the key's trigger
  word in each prompt (case-insensitive, whole word), removes it from the text the model is conditioned on, runs the
  ordinary sampler, and passes the final latent of triggered prompts through f_c with the key's graphic before
  decoding; prompts without the trigger are generated exactly as `erasekit.generate` does. Fine-tuning the U-Net per
  key (stage 2) does not fit minutes of CPU; this keeps the paper's interface (a text trigger switches the invisible
  mark on) with the mark carried by the decoder path, like Stable Signature's decoder. `embed_images` applies the
  stage-1 injector to finished images (E, f_c, D).

On the toy model the mark is weak but real and about as strong under JPEG, blur, noise and the VAE round trip (a
low-frequency latent mark); the limit is the toy latent (8x8x4 values, only two latent directions rendered visibly),
measured in BENCHMARKS.md ("Safe-SD", with bench/safesd/).

Files a user owns: the weights file (`SafeSDWeights.save`: safetensors with the pipeline's VAE E and D, the injector
f_c and the extractor D_w, plus the VAE config and a fingerprint of the decoder it was trained with) and a key file per
user (`Key`: the message bits, the trigger, the weights file's sha256 and path). Nothing is pickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ErasekitError, InvalidValueError
from . import Detection, Key, Watermark, bit_match_detection, check_fpr, check_images

WEIGHTS_FORMAT = 1
WEIGHTS_TAG = "erasekit_mark_weights"
PAPER_FPR = 1e-6  # the binomial-tail rate Gaussian Shading's official code uses; Safe-SD states none
DEFAULT_TRIGGER = "safesd"


def _int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise InvalidValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def _pos(name: str, value: Any, zero_ok: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and (
        value >= 0 if zero_ok else value > 0)
    if not ok:
        raise InvalidValueError(f"{name} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class SafeSDConfig:
    weights: str | None = field(default=None, metadata={
        "help": "path of a trained weights file (SafeSD().train(pipe).save(PATH)); keygen uses it when no weights= "
                "is given, so a spec 'safe_sd:weights=PATH' works wherever a watermark spec does"})
    grid: int = field(default=8, metadata={
        "help": "the watermark graphic is grid x grid cells, one message bit each (8: 64 bits, one cell per latent "
                "position at 32 px; the paper's graphic is a QR code / logo image)"})
    trigger: str = field(default=DEFAULT_TRIGGER, metadata={
        "help": "the word that switches the mark on when a prompt contains it (whole word, case-insensitive); it is "
                "removed from the text the model sees"})
    fpr: float = field(default=PAPER_FPR, metadata={
        "help": "false-positive rate of the binomial-tail decision (per key; N keys: fpr / N)"})
    gamma: float = field(default=1.0, metadata={
        "help": "weight of the watermark loss against the image loss (the paper's gamma trade-off)"})
    psnr: float = field(default=26.0, metadata={
        "help": "image budget: the image loss is the relative excess of the marked image's MSE over this PSNR (dB, "
                "vs the unmarked rendering of the same latent); below it only the watermark loss acts"})
    steps: int = field(default=400, metadata={"help": "training steps (Adam) of the injector and extractor"})
    batch_size: int = field(default=8, metadata={"help": "training images per step"})
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate (official 4.5e-6 x batch at 256 px, "
                                                       "with a GAN; far too slow for minutes of CPU)"})
    train_images: int = field(default=128, metadata={"help": "images drawn from the model's world to train on"})
    noise_std: float = field(default=0.03, metadata={
        "help": "training distortion: largest Gaussian noise std (fraction of the [-1, 1] range's half); 0 = off"})
    blur_sigma: float = field(default=1.0, metadata={"help": "training distortion: largest blur sigma (px); 0 = off"})
    warmup: float = field(default=0.5, metadata={
        "help": "fraction of the steps over which the image loss weight ramps from 0 to 1 (the extractor first "
                "learns to read the mark)"})
    init_mix: float = field(default=0.5, metadata={
        "help": "initial weight of the watermark latent in the injector (z_m = z_i + init_mix * z_w at step 0)"})
    time_budget_s: float | None = field(default=None, metadata={
        "help": "stop training after this many seconds (None: run all steps); the weights record the steps done"})
    seed: int = field(default=0, metadata={"help": "seed of the training draw (images, messages, distortions); "
                                                   "keys never come from it"})

    def __post_init__(self) -> None:
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights.strip()):
            raise InvalidValueError(f"weights must be the path of a Safe-SD weights file, got {self.weights!r}")
        _int("grid", self.grid, 1)
        if not isinstance(self.trigger, str) or not self.trigger.strip() or re.search(r"\s", self.trigger.strip()):
            raise InvalidValueError(f"trigger must be one non-empty word, got {self.trigger!r}; e.g. trigger=safesd")
        check_fpr("fpr", self.fpr)
        _pos("gamma", self.gamma)
        _pos("psnr", self.psnr)
        _int("steps", self.steps, 1)
        _int("batch_size", self.batch_size, 1)
        _pos("lr", self.lr)
        _int("train_images", self.train_images, 1)
        _pos("noise_std", self.noise_std, zero_ok=True)
        _pos("blur_sigma", self.blur_sigma, zero_ok=True)
        _pos("init_mix", self.init_mix, zero_ok=True)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, (int, float)) or not 0 <= self.warmup <= 1:
            raise InvalidValueError(f"warmup must be a fraction in [0, 1], got {self.warmup!r}")
        if self.time_budget_s is not None:
            _pos("time_budget_s", self.time_budget_s)
        _int("seed", self.seed, 0)


# ------------------------------------------------------------------------------------------------ graphic
def graphic(bits: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """(B, grid*grid) {0, 1} bits -> (B, 3, size, size) watermark graphic in {-1, 1} (bit 1 white), cells of
    size // grid px."""
    cell = size // grid
    w = bits.float().reshape(-1, 1, grid, grid) * 2 - 1
    return w.repeat_interleave(cell, 2).repeat_interleave(cell, 3).expand(-1, 3, -1, -1).contiguous()


def read_cells(w_hat: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, 3, S, S) decoded graphic -> (B, grid*grid) cell means (> 0 reads bit 1)."""
    b, _, s, _ = w_hat.shape
    cell = s // grid
    m = w_hat[:, :, :cell * grid, :cell * grid].mean(1).reshape(b, grid, cell, grid, cell).mean((2, 4))
    return m.reshape(b, -1)


def trigger_pattern(trigger: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(trigger.strip()) + r"(?!\w)", re.IGNORECASE)


def split_trigger(prompt: str, trigger: str) -> tuple[bool, str]:
    """(whether `prompt` holds the trigger word, the prompt without it, whitespace collapsed)."""
    pat = trigger_pattern(trigger)
    if not pat.search(prompt):
        return False, prompt
    text = re.sub(r"\s+", " ", pat.sub(" ", prompt)).strip(" ,;")
    return True, text


def _to_unit(images: np.ndarray, device: Any, dtype: Any) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device, dtype)
    return x / 127.5 - 1.0


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)


def module_sha256(*modules: torch.nn.Module) -> str:
    """sha256 of the modules' parameters and buffers (names and bytes): which decoder a weights file was made for."""
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode() + v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ weights
class SafeSDWeights:
    """The trained Safe-SD networks: `vae` (the pipeline's AutoencoderKL: frozen encoder E and image decoder D),
    `injector` f_c (Conv2d 2C -> C, 1x1) and `extractor` (an AutoencoderKL sharing E whose decoder is D_w)."""

    def __init__(self, vae: Any, injector: torch.nn.Conv2d, extractor: Any, grid: int, meta: dict[str, Any],
                 path: Path | None = None, sha256: str | None = None):
        self.vae, self.injector, self.extractor = vae, injector, extractor
        self.grid, self.meta, self.path, self.sha256 = grid, meta, path, sha256
        for m in (vae, injector, extractor):
            m.requires_grad_(False).eval()

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def n_bits(self) -> int:
        return self.grid * self.grid

    @property
    def scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    # -- the three maps of the method
    def latent_of(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, C, h, w) unscaled posterior means E(x)."""
        return self.vae.encode(images).latent_dist.mode()

    def inject(self, z: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """z_m = f_c([z, E(graphic(bits))]); z (B, C, h, w) unscaled, bits (grid*grid,) or (B, grid*grid)."""
        bits = bits.reshape(-1, self.n_bits).expand(z.shape[0], -1)
        zw = self.latent_of(graphic(bits, self.grid, self.size).to(z.device, z.dtype))
        return self.injector(torch.cat([z, zw], 1))

    def cells(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, n_bits) cell means of the extracted graphic D_w(E(x))."""
        return read_cells(self.extractor.decode(self.extractor.encode(images).latent_dist.mode()).sample, self.grid)

    def check_vae(self, pipe: Any) -> None:
        """Refuse a pipeline whose VAE decoder is not the one these weights were trained with."""
        got = module_sha256(pipe.vae.post_quant_conv, pipe.vae.decoder)
        if got != self.meta.get("decoder_sha256"):
            raise InvalidValueError("these Safe-SD weights were trained with another VAE decoder than this "
                                    "pipeline's; train weights for this model (SafeSD().train(pipe)) or load its own")

    # -- files
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the weights atomically as one safetensors file (refuses to replace a file without `overwrite`)."""
        from ..io import check_writable, file_sha256, write_safetensors

        check_writable(path, overwrite, what="Safe-SD weights file")
        tensors = {f"vae.{k}": v for k, v in self.vae.state_dict().items()}
        tensors.update({f"injector.{k}": v for k, v in self.injector.state_dict().items()})
        ext = self.extractor.state_dict()
        tensors.update({f"extractor.{k}": v for k, v in ext.items()
                        if k.split(".")[0] in ("decoder", "post_quant_conv")})
        cfg = {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")}
        header = {WEIGHTS_TAG: SafeSD.name, "format": str(WEIGHTS_FORMAT), "grid": str(self.grid),
                  "vae_config": json.dumps(cfg), "meta": json.dumps(self.meta)}
        out = write_safetensors(path, tensors, header)
        self.path, self.sha256 = Path(out).resolve(), file_sha256(out, what="Safe-SD weights file")
        return out

    @classmethod
    def load(cls, path: str | Path) -> "SafeSDWeights":
        """Read a weights file written by `save` (safetensors only; the sha256 of its bytes is recorded)."""
        from diffusers import AutoencoderKL
        from safetensors import SafetensorError

        from ..io import file_sha256, read_safetensors

        path = Path(path)
        make = "SafeSD().train(pipe).save(PATH)"
        if not path.is_file():
            raise InvalidValueError(f"Safe-SD weights file {path} does not exist; make one with {make}")
        try:
            tensors, header = read_safetensors(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise InvalidValueError(f"{path} is not a Safe-SD weights file (not safetensors: "
                                    f"{str(e).splitlines()[0][:100]}); make one with {make}") from None
        if header.get(WEIGHTS_TAG) != SafeSD.name or header.get("format") != str(WEIGHTS_FORMAT):
            raise InvalidValueError(f"{path} is a safetensors file but not Safe-SD weights (format "
                                    f"{WEIGHTS_FORMAT}); make one with {make}")
        try:
            cfg, meta, grid = json.loads(header["vae_config"]), json.loads(header["meta"]), int(header["grid"])
            vae = AutoencoderKL.from_config(cfg)
            vae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("vae.")})
            extractor = copy.deepcopy(vae)
            ext = {k[10:]: v for k, v in tensors.items() if k.startswith("extractor.")}
            want = {k for k in extractor.state_dict() if k.split(".")[0] in ("decoder", "post_quant_conv")}
            if set(ext) != want:
                raise ValueError(f"extractor tensors missing or extra: {sorted(set(ext) ^ want)[:3]}")
            extractor.load_state_dict(ext, strict=False)
            c = int(cfg["latent_channels"])
            injector = torch.nn.Conv2d(2 * c, c, 1)
            injector.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("injector.")})
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise InvalidValueError(f"Safe-SD weights file {path} is damaged ({str(e).splitlines()[0][:120]}); "
                                    f"make a new one with {make}") from None
        for t in tensors.values():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise InvalidValueError(f"Safe-SD weights file {path} holds NaN or inf; train it again")
        return cls(vae, injector, extractor, grid, meta, path.resolve(), file_sha256(path, what="Safe-SD weights"))


_WEIGHTS_CACHE: dict[str, SafeSDWeights] = {}


# ------------------------------------------------------------------------------------------------ training
def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (B, 3, H, W), sigma (B,) px, 5x5 kernel, reflect padding (differentiable)."""
    r = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-r[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :])  # (B, 5, 5)
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x.reshape(1, b * c, h, w), (2, 2, 2, 2), mode="reflect")
    weight = k2.repeat_interleave(c, 0)[:, None]  # (B*C, 1, 5, 5)
    return torch.nn.functional.conv2d(xp, weight, groups=b * c).reshape(b, c, h, w)


def distort(x: torch.Tensor, cfg: SafeSDConfig, gen: torch.Generator) -> torch.Tensor:
    """The training distortion layer: per image one of none / Gaussian noise / blur / brightness, then uint8
    rounding with a straight-through gradient."""
    b = x.shape[0]
    kind = torch.randint(0, 4, (b,), generator=gen)
    u = torch.rand(b, generator=gen)
    out = x
    if cfg.noise_std > 0:
        noise = torch.randn(x.shape, generator=gen) * (u * cfg.noise_std * 2)[:, None, None, None]
        out = torch.where((kind == 1)[:, None, None, None], x + noise, out)
    if cfg.blur_sigma > 0:
        out = torch.where((kind == 2)[:, None, None, None], _blur(x, 0.3 + u * max(cfg.blur_sigma - 0.3, 0.0)), out)
    bright = x * (0.8 + 0.4 * u)[:, None, None, None]
    out = torch.where((kind == 3)[:, None, None, None], bright, out).clamp(-1, 1)
    q = torch.round((out + 1) * 127.5) / 127.5 - 1
    return out + (q - out).detach()


def world_images(world: Any, n: int, seed: int) -> np.ndarray:
    """`n` (n, H, W, 3) uint8 images drawn from every concept of `world` in turn (its renderer)."""
    concepts = [c for fam in world.concepts().values() for c in fam]
    if not concepts:
        raise InvalidValueError(f"world {getattr(world, 'name', '?')!r} has no concepts to draw training images of; "
                                "pass images=(N, H, W, 3) uint8")
    per = -(-n // len(concepts))
    ims = [world.images(c, per, seed + i) for i, c in enumerate(concepts)]
    rng = np.random.default_rng(seed)
    allim = np.concatenate(ims)
    return allim[rng.permutation(len(allim))[:n]]


def train_safe_sd(pipe: Any, cfg: SafeSDConfig, images: np.ndarray | None = None, world: Any = "toyworld",
                  log: Callable[[str], None] | None = None) -> SafeSDWeights:
    """Stage 1 of Safe-SD on `pipe`'s VAE: train the injector f_c and the extractor D_w (see the module docstring).
    images: (N, H, W, 3) uint8 training images (default `cfg.train_images` drawn from `world`). Runs on the CPU in
    minutes on the toy model; returns unsaved weights (`.save(path)`)."""
    from ..worlds import get_world

    log = log or (lambda s: None)
    gen = torch.Generator().manual_seed(cfg.seed)
    size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    if size % cfg.grid:
        raise InvalidValueError(f"grid={cfg.grid} does not divide the image side {size}; use a divisor of {size}")
    if images is None:
        images = world_images(get_world(world), cfg.train_images, cfg.seed)
    images = check_images(images, size, what="training images")
    vae = copy.deepcopy(pipe.vae).float().cpu().requires_grad_(False).eval()
    extractor = copy.deepcopy(vae)
    extractor.decoder.requires_grad_(True).train()
    extractor.post_quant_conv.requires_grad_(True).train()
    c = int(vae.config.latent_channels)
    injector = torch.nn.Conv2d(2 * c, c, 1)
    with torch.no_grad():  # start as z_i + init_mix * z_w: a visible mark the extractor can learn to read, which
        injector.weight.zero_()  # the image loss then shrinks (a zero start gives the extractor nothing to learn)
        injector.weight[:, :c, 0, 0] = torch.eye(c)
        injector.weight[:, c:, 0, 0] = cfg.init_mix * torch.eye(c)
        injector.bias.zero_()
    meta = {"size": size, "decoder_sha256": module_sha256(vae.post_quant_conv, vae.decoder),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("trigger", "fpr")}}
    w = SafeSDWeights(vae, injector, extractor, cfg.grid, meta)
    injector.requires_grad_(True).train()
    extractor.decoder.requires_grad_(True).train()
    extractor.post_quant_conv.requires_grad_(True).train()
    with torch.no_grad():
        x = _to_unit(images, "cpu", torch.float32)
        z_i = torch.cat([w.latent_of(x[i:i + 64]) for i in range(0, len(x), 64)])
        x_ref = torch.cat([vae.decode(z_i[i:i + 64]).sample for i in range(0, len(x), 64)])
    budget = 4.0 * 10 ** (-cfg.psnr / 10)  # MSE in [-1, 1] units of `psnr` dB on the 0-255 scale
    params = list(injector.parameters()) + list(extractor.decoder.parameters()) + \
        list(extractor.post_quant_conv.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    t0, done, hist = time.time(), 0, []
    for step in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=gen)
        bits = torch.randint(0, 2, (cfg.batch_size, w.n_bits), generator=gen)
        target = graphic(bits, cfg.grid, size)
        with torch.enable_grad():
            with torch.no_grad():
                zw = w.latent_of(target)
            z_m = injector(torch.cat([z_i[idx], zw], 1))
            x_m = vae.decode(z_m).sample
            mse = ((x_m - x_ref[idx]) ** 2).mean()
            loss_img = torch.relu(mse - budget) / budget  # relative excess over the PSNR budget
            x_a = distort(x_m, cfg, gen)
            w_hat = extractor.decode(vae.encode(x_a).latent_dist.mode()).sample
            loss_wm = (w_hat - target).abs().mean()
            ramp = min(1.0, step / max(1.0, cfg.warmup * cfg.steps))
            loss = ramp * loss_img + cfg.gamma * loss_wm
            opt.zero_grad()
            loss.backward()
            opt.step()
        if not torch.isfinite(loss):
            raise ErasekitError(f"Safe-SD training diverged at step {step} (loss {float(loss)}); lower lr={cfg.lr}")
        done = step + 1
        with torch.no_grad():
            acc = float(((read_cells(w_hat, cfg.grid) > 0) == bits.bool()).float().mean())
        hist.append((float(mse.detach()), float(loss_wm.detach()), acc))
        if step % 25 == 0 or step == cfg.steps - 1:
            log(f"step {step}: image MSE {float(mse.detach()):.5f}, watermark L1 {float(loss_wm.detach()):.4f}, "
                f"bit acc {acc:.3f} ({time.time() - t0:.0f} s)")
        if cfg.time_budget_s is not None and time.time() - t0 > cfg.time_budget_s:
            log(f"time budget {cfg.time_budget_s} s reached after {done} steps")
            break
    last = np.mean(hist[-20:], axis=0)
    meta.update({"steps_done": done, "train_seconds": round(time.time() - t0, 1), "n_images": len(images),
                 "final_image_mse": round(float(last[0]), 6),
                 "final_psnr_db": round(float(10 * np.log10(4.0 / max(last[0], 1e-12))), 2),
                 "final_wm_l1": round(float(last[1]), 5),
                 "final_train_bit_acc": round(float(last[2]), 4)})
    return SafeSDWeights(vae, injector, extractor, cfg.grid, meta)


# ------------------------------------------------------------------------------------------------ the watermark
class SafeSD(Watermark):
    """Safe-SD: a trained injector feeding the VAE decoder, switched on by a trigger word in the prompt; a trained
    extractor decodes the key's bit graphic from pixels (binomial-tail decision)."""

    name = "safe_sd"
    paper = "Safe-SD (Ma, Jia, Qi, Zhou, ACM MM 2024, arXiv 2407.13188)"
    kind = "pixel"  # generation is plain sampling + the decoder-side injector; detection needs no inversion
    config_cls = SafeSDConfig

    # -- training and keys
    def train(self, pipe: Any, images: np.ndarray | None = None, world: Any = "toyworld",
              log: Callable[[str], None] | None = None) -> SafeSDWeights:
        """Train the injector and extractor on `pipe`'s VAE (stage 1); save the result with `.save(path)`."""
        return train_safe_sd(pipe, self.config, images=images, world=world, log=log)

    def keygen(self, pipe: Any = None, size: int | None = None, weights: Any = None,
               entropy: bytes | None = None) -> Key:
        """A fresh random message (os.urandom) for saved `weights` (a SafeSDWeights written by `.save`, or the path of a
        weights file). The key records the weights file's sha256 and path and the trigger word."""
        w = self.weights(weights=weights)
        if w.sha256 is None or w.path is None:
            raise InvalidValueError("save the Safe-SD weights first (weights.save(path)): a key names the weights "
                                    "file it belongs to")
        if pipe is not None:
            w.check_vae(pipe)
        if size is not None and int(size) != w.size:
            raise InvalidValueError(f"these Safe-SD weights are for {w.size}x{w.size} images, not {size}x{size}")
        if w.grid != self.config.grid:
            raise InvalidValueError(f"the weights were trained with grid={w.grid}, the config says grid="
                                    f"{self.config.grid}; use get_mark('safe_sd', grid={w.grid})")
        n = w.n_bits
        raw = os.urandom((n + 7) // 8) if entropy is None else hashlib.sha256(entropy).digest() * ((n + 255) // 256)
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n]
        cfg = {"grid": w.grid, "trigger": self.config.trigger, "fpr": self.config.fpr, "n_bits": n}
        meta = {"weights_sha256": w.sha256, "weights_path": str(w.path), "trigger": self.config.trigger}
        return Key(self.name, cfg, (w.size, w.size), {"message": torch.from_numpy(bits.copy())}, meta)

    def weights(self, key: Key | None = None, weights: Any = None) -> SafeSDWeights:
        """The weights to use: `weights` (an object or a path), else the config's `weights` path, else the file the key
        names; a file whose sha256 is not the key's is refused."""
        if isinstance(weights, SafeSDWeights):
            w = weights
        else:
            path = weights if weights is not None else self.config.weights
            if path is None and key is not None:
                path = key.meta.get("weights_path")
            if path is None:
                raise InvalidValueError("safe_sd needs its trained weights: pass weights=PATH (a file from "
                                        "SafeSD().train(pipe).save(PATH))")
            path = Path(path)
            if not path.is_file():
                raise InvalidValueError(f"the Safe-SD weights file {path} does not exist (the key names it); pass "
                                        "weights=PATH where it now lives")
            from ..io import file_sha256

            sha = file_sha256(path, what="Safe-SD weights file")
            w = _WEIGHTS_CACHE.get(sha)
            if w is None:
                w = SafeSDWeights.load(path)
                _WEIGHTS_CACHE[sha] = w
        if key is not None and key.meta.get("weights_sha256") != w.sha256:
            raise InvalidValueError(f"this safe_sd key belongs to the weights file with sha256 "
                                    f"{str(key.meta.get('weights_sha256'))[:16]}..., not to "
                                    f"{str(w.sha256)[:16]}... ({w.path}); pass the key's own weights")
        return w

    def _message(self, key: Key) -> np.ndarray:
        self.check_key(key)
        msg = key.tensors.get("message")
        if msg is None or msg.ndim != 1 or msg.numel() != int(key.config.get("n_bits", -1)):
            raise InvalidValueError("safe_sd key lacks a message of its n_bits; it is damaged, make a new one")
        return msg.numpy().astype(np.uint8)

    # -- embedding
    def marks_prompt(self, key: Key, prompt: str) -> bool:
        """Whether `prompt` holds the key's trigger word (only those prompts are marked)."""
        return split_trigger(prompt, key.meta.get("trigger", self.config.trigger))[0]

    def generate(self, pipe: Any, key: Key, prompts: Sequence[str], seeds: Sequence[int] | int = 0,
                 steps: int | None = None, guidance: float | None = None, weights: Any = None,
                 batch_size: int = 64) -> np.ndarray:
        """(N, H, W, 3) uint8 images; prompts holding the key's trigger word are marked (the word itself is removed
        from the text the model sees), the others are exactly `erasekit.generate`'s images."""
        from ..sampling import cfg_combine, decode, denoise, encode_prompts, resolve_sampling
        from ._latent import check_seeds

        msg = torch.from_numpy(self._message(key))
        w = self.weights(key, weights)
        w.check_vae(pipe)
        prompts, seeds = check_seeds(prompts, seeds)
        split = [split_trigger(p, key.meta.get("trigger", self.config.trigger)) for p in prompts]
        steps, guidance = resolve_sampling(pipe, steps, guidance)
        sf = float(pipe.vae.config.scaling_factor)
        out = []
        for i in range(0, len(prompts), batch_size):
            chunk = split[i:i + batch_size]
            texts, marked = [t for _, t in chunk], torch.tensor([m for m, _ in chunk])
            with torch.no_grad():
                cond = encode_prompts(pipe, texts)
                if guidance > 1.0:
                    uncond = encode_prompts(pipe, [""] * len(texts))
                    lat = denoise(pipe, [uncond, cond], cfg_combine(guidance), seeds[i:i + batch_size], steps=steps)
                else:
                    lat = denoise(pipe, [cond], lambda j, t, eps: eps[0], seeds[i:i + batch_size], steps=steps)
                imgs = decode(pipe, lat)  # exactly erasekit.generate's images
                if marked.any():
                    z = lat[marked].float().cpu() / sf
                    imgs[marked.numpy()] = _to_uint8(w.vae.decode(w.inject(z, msg)).sample)
                out.append(imgs)
        return np.concatenate(out)

    def embed_images(self, key: Key, images: np.ndarray, weights: Any = None) -> np.ndarray:
        """Stage-1 injection into finished images: D(f_c([E(x), E(w)])) (N, H, W, 3) uint8."""
        msg = torch.from_numpy(self._message(key))
        w = self.weights(key, weights)
        images = check_images(images, key.shape[0])
        with torch.no_grad():
            out = [_to_uint8(w.vae.decode(w.inject(w.latent_of(_to_unit(images[i:i + 64], "cpu", torch.float32)),
                                                   msg)).sample) for i in range(0, len(images), 64)]
        return np.concatenate(out)

    # -- detection
    def decode(self, key: Key, images: np.ndarray, weights: Any = None) -> np.ndarray:
        """(N, n_bits) uint8 bits read from the extracted graphic (cell mean > 0 -> 1)."""
        return (self._cells(key, images, weights) > 0).astype(np.uint8)

    def _cells(self, key: Key, images: np.ndarray, weights: Any = None) -> np.ndarray:
        self._message(key)
        w = self.weights(key, weights)
        images = check_images(images, key.shape[0])
        with torch.no_grad():
            return torch.cat([w.cells(_to_unit(images[i:i + 64], "cpu", torch.float32))
                              for i in range(0, len(images), 64)]).numpy()

    def _detection(self, msg: np.ndarray, bits: np.ndarray, n_keys: int) -> Detection:
        return bit_match_detection(self.name, msg, bits, self.config.fpr, n_keys)

    def detect(self, key: Key, images: np.ndarray, pipe: Any = None, weights: Any = None,
               n_keys: int = 1) -> Detection:
        """Bit accuracy of the key's message in the extracted graphic; marked iff the matches pass the binomial-tail
        threshold at fpr / n_keys. Needs no pipeline (the weights file holds the encoder and the extractor)."""
        msg = self._message(key)
        return self._detection(msg, self.decode(key, images, weights), n_keys)

    def identify(self, keys: Sequence[Key], images: np.ndarray, pipe: Any = None,
                 weights: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(N,) index of the key whose message best matches the extracted bits and the (N, K) bit accuracies; the
        graphic is extracted once (every key must belong to the same weights file)."""
        if not keys:
            raise InvalidValueError("identify() needs at least one key")
        shas = {k.meta.get("weights_sha256") for k in keys}
        if len(shas) != 1:
            raise InvalidValueError("identify() needs keys of one Safe-SD weights file; these name "
                                    f"{len(shas)} different files")
        bits = self.decode(keys[0], images, weights)
        scores = np.stack([(bits == self._message(k)[None]).mean(axis=1) for k in keys], axis=1)
        return scores.argmax(axis=1), scores
