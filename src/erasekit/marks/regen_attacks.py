"""Two attacks from 2024-25 papers: regeneration from clean noise under a structure control (removal) and one-shot
forgery / removal through a preference model trained without any key.

    ctrlregen   Liu et al., "Image Watermarks are Removable Using Controllable Regeneration from Clean Noise", ICLR 2025
                (official code yepengliu/CtrlRegen). Regenerate each image from *fresh* Gaussian noise - not from its
                noised latent, which is what img2img does - while a control keeps the image's structure. The paper's
                control is trained (a ControlNet on Canny edges + an IP-adapter on DINOv2 features); SD1.x pipelines
                here ship no such adapter, so the control is training-free: at every step the predicted clean
                latent's low spatial frequencies (radius <= `cutoff` x the largest) are pulled, with weight `control`,
                to those of the image's VAE latent (ILVR-style low-pass conditioning, Choi et al. ICCV 2021, on the x0
                prediction). `strength` < 1 is the paper's CtrlRegen+ (start from the image latent noised to that
                fraction of the schedule).
    prefforge   Soucek et al. (Meta), "Transferable Black-Box One-Shot Forging of Watermarks via Image Preference
                Models", NeurIPS 2025 (official code facebookresearch/videoseal, wmforger/). The attacker trains a
                preference model to rank clean above watermarked images, where "watermarked" means procedurally
                generated watermark-like Fourier patterns added to clean images (no real watermark, no key); from ONE
                marked image it estimates the mark as (image - the image optimised to look clean to the preference
                model) and adds it to a clean cover. Registered with forgery=True.
    prefremove  the same estimate subtracted from the marked image (`alpha` = 2 as in the official notebook).

Both need the pipeline: ctrlregen regenerates through it; prefforge / prefremove generate the attacker's clean training
images with it (seeds far from any bench seed, empty prompt) - the stand-in for the paper's SA-1B photos.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidValueError
from . import check_images
from .attacks import GREY, IMPRINT_COVERS, _count, _range, _register


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidValueError(f"{name} must be true or false, got {value!r}")


# ------------------------------------------------------------------------------------------------ CtrlRegen
# Default control band (fraction of the latent's largest frequency radius kept): chosen by a quality sweep on the toy
# model's 8 x 8 latent, where 0.75 is the smallest cutoff that keeps the Nyquist-axis radius 4 (BENCHMARKS.md, Marks,
# CtrlRegen: drift and oracle labels per cutoff).
CTRL_CUTOFF = 0.75


@dataclass(frozen=True)
class CtrlRegenConfig:
    strength: float = field(default=1.0, metadata={
        "help": "start point: 1 = clean Gaussian noise (CtrlRegen); < 1 = the image latent noised to this fraction "
                "of the schedule (CtrlRegen+ 'step')"})
    control: float = field(default=1.0, metadata={
        "help": "weight in [0, 1] of the structure control at every step (0: unconditional regeneration)"})
    cutoff: float = field(default=CTRL_CUTOFF, metadata={
        "help": "control band: latent frequencies up to this fraction of the largest radius are kept (1: all)"})
    prompt: str = field(default="", metadata={"help": "prompt of the regeneration (default empty: content unknown)"})
    steps: int | None = field(default=None, metadata={"help": "DDIM steps of the full schedule (None: the model's)"})
    color_match: bool = field(default=True, metadata={
        "help": "match each output's per-channel mean/std to its input (official: histogram colour matching)"})

    def __post_init__(self) -> None:
        from ..sampling import check_sampling

        _range("strength", self.strength, 0.0, 1.0, lo_open=True)
        _range("control", self.control, 0.0, 1.0)
        _range("cutoff", self.cutoff, 0.0, 1.0, lo_open=True)
        check_sampling(self.steps, None, where="ctrlregen steps")
        if not isinstance(self.prompt, str):
            raise InvalidValueError(f"ctrlregen prompt must be a string, got {self.prompt!r}")
        _flag("color_match", self.color_match)


def _lowpass(z: torch.Tensor, cutoff: float) -> torch.Tensor:
    """(B, C, h, w) -> the same shape keeping the spatial frequencies of radius <= cutoff x the largest (the corner
    (h/2, w/2)); an ideal radial low-pass, real and idempotent (a projection)."""
    h, w = z.shape[-2:]
    fy, fx = torch.fft.fftfreq(h)[:, None] * h, torch.fft.fftfreq(w)[None, :] * w
    keep = (fy ** 2 + fx ** 2).sqrt() <= cutoff * ((h / 2) ** 2 + (w / 2) ** 2) ** 0.5 + 1e-6
    return torch.fft.ifft2(torch.fft.fft2(z.float()) * keep.to(z.device)).real


def _match_colors(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per image and channel, shift/scale `out` (N, H, W, 3) uint8 to the mean and std of `ref`."""
    o, r = out.astype(np.float64), ref.astype(np.float64)
    mo, so = o.mean(axis=(1, 2), keepdims=True), o.std(axis=(1, 2), keepdims=True)
    mr, sr = r.mean(axis=(1, 2), keepdims=True), r.std(axis=(1, 2), keepdims=True)
    return np.clip(np.round((o - mo) / np.maximum(so, 1e-6) * sr + mr), 0, 255).astype(np.uint8)


@_register("ctrlregen", CtrlRegenConfig, needs_pipe=True,
           help="regenerate from clean noise under a training-free low-frequency structure control (CtrlRegen)")
@torch.no_grad()
def ctrlregen(images: np.ndarray, cfg: CtrlRegenConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    """Controllable regeneration from clean noise (Liu et al., ICLR 2025). (N, H, W, 3) uint8 -> same.

    DDIM (eta 0, a scheduler built from the pipeline's config) from x_T = fresh noise (seed + i); at each step the
    noise prediction eps gives x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), the control sets
    x0_c = x0_hat + control * (LP(z_image) - LP(x0_hat)) with LP the radial low-pass at `cutoff`, and the step continues
    with the eps consistent with x0_c. With strength 1 the image enters only through LP(z_image) (and the colour
    match): the watermarked latent's noise is never the starting point.

    Deviations from the official code (stated): no trained spatial ControlNet (Canny edges) or semantic IP-adapter
    (DINOv2) exists for these pipelines, so the control is the training-free low-pass guidance above; no classifier-
    free guidance with a quality prompt (official: guidance 2, "best quality, high quality"; here `prompt` without
    guidance, as img2img); DDIM instead of UniPC; colour matching by per-channel mean/std instead of the
    color-matcher package's hm-mkl-hm."""
    from diffusers import DDIMScheduler

    from ..sampling import decode, encode_prompts, resolve_sampling
    from ._latent import encode_images

    steps = resolve_sampling(pipe, cfg.steps, 0.0)[0]
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    if sched.config.prediction_type != "epsilon":
        raise InvalidValueError(f"ctrlregen needs an epsilon-prediction model, this one predicts "
                                f"{sched.config.prediction_type!r}")
    sched.set_timesteps(steps)
    n_run = steps if cfg.strength >= 1.0 else max(1, min(steps, int(round(steps * cfg.strength))))
    ts = sched.timesteps[steps - n_run:]
    z0 = encode_images(pipe, images).float()
    target = _lowpass(z0, cfg.cutoff)
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(images))]
    noise = torch.cat([torch.randn((1, *z0.shape[1:]), generator=g) for g in gens]).to(z0.device)
    if cfg.strength >= 1.0:
        x = noise * sched.init_noise_sigma  # clean noise: no trace of the image's latent
    else:
        x = sched.add_noise(z0, noise, ts[:1].repeat(len(images)))
    cond = encode_prompts(pipe, [cfg.prompt] * len(images))
    acp = sched.alphas_cumprod.to(z0.device, torch.float32)
    dtype = pipe.unet.dtype
    for t in ts:
        eps = pipe.unet(sched.scale_model_input(x, t).to(dtype), t, encoder_hidden_states=cond).sample.float()
        if cfg.control > 0:
            a = acp[int(t)]
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x0 = x0 + cfg.control * (target - _lowpass(x0, cfg.cutoff))
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        x = sched.step(eps, t, x, eta=0.0).prev_sample
    out = decode(pipe, x.to(pipe.vae.dtype))
    return _match_colors(out, images) if cfg.color_match else out


# ------------------------------------------------------------------------------------------------ preference model
PATTERN_FAMILIES = ("waves", "gaussian", "lines")  # the official FFTWatermark{Waves,Gaussian,Lines} generators
PREF_SEED_OFFSET = 1_000_003  # attacker's training-image seeds: seed + this + i, far from any bench seed


@dataclass(frozen=True)
class PrefModelConfig:
    """Training of the preference model and the one-shot estimate (shared by prefforge and prefremove)."""

    train_images: int = field(default=32, metadata={
        "help": "clean images the attacker generates with the pipeline (empty prompt) to train on"})
    gen_steps: int | None = field(default=None, metadata={
        "help": "sampling steps of those images (None: the model's)"})
    train_steps: int = field(default=300, metadata={"help": "Adam steps of the preference model (batch of pairs)"})
    batch: int = field(default=32, metadata={"help": "clean/watermarked pairs per training step"})
    width: int = field(default=16, metadata={"help": "channels of the preference CNN's first layer"})
    amp_min: float = field(default=2.0, metadata={"help": "smallest peak amplitude of a procedural mark (0-255)"})
    amp_max: float = field(default=8.0, metadata={"help": "largest peak amplitude of a procedural mark (0-255)"})
    opt_steps: int = field(default=50, metadata={"help": "steps optimising the image towards 'clean' (official 50)"})
    lr: float = field(default=0.1, metadata={
        "help": "Adam step of that optimisation in pixel levels (0-255); 0.1 x 50 steps gives estimates of ~2 levels, "
                "the scale of the procedural marks"})
    edge_mask: bool = field(default=True, metadata={
        "help": "damp the estimate on edges, (1 - sqrt(sobel^2)) as the official notebook's optional cleaning"})

    def __post_init__(self) -> None:
        from ..sampling import check_sampling

        _count("train_images", self.train_images, 100_000, lo=1)
        check_sampling(self.gen_steps, None, where="gen_steps")
        _count("train_steps", self.train_steps, 1_000_000, lo=1)
        _count("batch", self.batch, 4096, lo=1)
        _count("width", self.width, 512, lo=1)
        _range("amp_min", self.amp_min, 0.0, 255.0, lo_open=True)
        _range("amp_max", self.amp_max, 0.0, 255.0, lo_open=True)
        if self.amp_max < self.amp_min:
            raise InvalidValueError(f"amp_max={self.amp_max} must be >= amp_min={self.amp_min}")
        _count("opt_steps", self.opt_steps, 100_000, lo=1)
        _range("lr", self.lr, 0.0, 255.0, lo_open=True)
        _flag("edge_mask", self.edge_mask)

    def training_key(self) -> tuple:
        return astuple(self)[:7]


@dataclass(frozen=True)
class PrefForgeConfig(PrefModelConfig):
    alpha: float = field(default=1.0, metadata={"help": "strength of the stamped estimate (official notebook: 1)"})
    cover: str = field(default="roll", metadata={
        "help": "as a plain attack, the cover of image i: roll (image i+1 of the batch, other content) or grey"})

    def __post_init__(self) -> None:
        from ..config import check_choice

        super().__post_init__()
        _range("alpha", self.alpha, 0.0, 100.0, lo_open=True)
        check_choice("cover", self.cover, IMPRINT_COVERS)


@dataclass(frozen=True)
class PrefRemoveConfig(PrefModelConfig):
    alpha: float = field(default=2.0, metadata={"help": "strength of the subtracted estimate (official notebook: 2)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        _range("alpha", self.alpha, 0.0, 100.0, lo_open=True)


HP_GAIN = 16.0  # scale of the high-pass residual fed to the preference CNN (a 2-level mark -> ~0.1)
PREF_LR = 3e-3  # Adam learning rate of the preference model


class PreferenceNet(torch.nn.Module):
    """A small CNN: (B, 3, H, W) images in [0, 1] -> (B, ) score, higher = judged clean. Its input is the residual of
    a 3 x 3 box blur (a fixed high-pass front end, as steganalysis CNNs use; on the toy images it lifts held-out
    ranking accuracy after 40 steps from ~0.8 to ~0.99). Official: a ConvNeXt-tiny on raw pixels."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, w, 3, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), torch.nn.GELU(),
            torch.nn.Conv2d(2 * w, 2 * w, 3, padding=1), torch.nn.GELU())
        self.head = torch.nn.Linear(2 * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return self.head(self.body(res * HP_GAIN).mean(dim=(2, 3)))[:, 0]


def procedural_marks(n: int, h: int, w: int, rng: np.random.Generator, amp: tuple[float, float]) -> np.ndarray:
    """(n, 3, h, w) float32 watermark-like patterns in [0, 1] units, peak |value| drawn in amp (0-255 levels).

    Each is the real part of an inverse FFT of a sparse or band-limited spectrum, after the official generators:
    'waves' (2-50 random Fourier peaks), 'gaussian' (random spectrum under a generalised-Gaussian radial envelope),
    'lines' (a few full rows/columns of the spectrum); grey (same in every channel) or RGB with probability 1/2.
    Deviation: frequencies are drawn over the whole band of the small image (official: fixed 512-px scales) and the
    JND attenuation of half the official patterns is left out."""
    fy = np.fft.fftfreq(h)[:, None] * h
    fx = np.fft.fftfreq(w)[None, :] * w
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        fam = PATTERN_FAMILIES[rng.integers(len(PATTERN_FAMILIES))]
        chans = []
        for _ in range(1 if rng.random() < 0.5 else 3):
            spec = np.zeros((h, w), np.complex128)
            if fam == "waves":
                k = int(rng.integers(2, 51))
                spec[rng.integers(0, h, k), rng.integers(0, w, k)] = rng.normal(size=k) + 1j * rng.normal(size=k)
            elif fam == "gaussian":
                p, sigma = 4 - np.sqrt(rng.random()) * 3, 1 + rng.random() * max(h, w) / 4
                env = np.exp(-((np.abs(fy / sigma) ** p + np.abs(fx / sigma) ** p) ** (1 / p)) / 2)
                spec = env * (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w)))
            else:
                for axis in (0, 1):
                    for c in rng.integers(0, (h, w)[axis], int(rng.integers(1, 6))):
                        vals = 1.5 + rng.random((h, w)[1 - axis])
                        if axis == 0:
                            spec[c] = vals * np.exp(2j * np.pi * rng.random())
                        else:
                            spec[:, c] = vals * np.exp(2j * np.pi * rng.random())
            spec[0, 0] = 0  # no global brightness shift
            chans.append(np.real(np.fft.ifft2(spec)))
        pat = np.stack(chans * 3 if len(chans) == 1 else chans)
        pat = pat / max(float(np.abs(pat).max()), 1e-12)
        out[i] = pat * rng.uniform(*amp) / 255.0
    return out


def _to_unit(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


def train_preference_model(clean: np.ndarray, cfg: PrefModelConfig, seed: int = 0,
                           log: Any = None) -> tuple[PreferenceNet, float]:
    """Train on (N, H, W, 3) uint8 clean images: Bradley-Terry loss -log sigmoid(s(clean) - s(clean + pattern)) over
    random flips of the clean images and fresh procedural patterns (official loss "bt_nll"). Returns the model and its
    ranking accuracy on fresh held-out pairs. Deviation: no augmentations of the pair, no gradient-matching term."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_all = _to_unit(check_images(clean, what="clean training images"))
    n, _, h, w = x_all.shape
    net = PreferenceNet(cfg.width)
    opt = torch.optim.Adam(net.parameters(), lr=PREF_LR)

    def pairs(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = x_all[torch.from_numpy(rng.integers(0, n, b))]
        flip = torch.from_numpy(rng.random(b) < 0.5)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        xw = (x + torch.from_numpy(procedural_marks(b, h, w, rng, (cfg.amp_min, cfg.amp_max)))).clamp(0, 1)
        return x, (xw * 255).round() / 255  # watermarked images are stored as 8-bit, as the official embedder does

    with torch.enable_grad():
        for i in range(cfg.train_steps):
            x, xw = pairs(cfg.batch)
            loss = F.softplus(net(xw) - net(x)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if log is not None and (i % 100 == 0 or i == cfg.train_steps - 1):
                log(f"preference model step {i}: loss {loss.item():.4f}")
    net.eval().requires_grad_(False)
    with torch.no_grad():
        x, xw = pairs(256)
        acc = float((net(x) > net(xw)).float().mean())
    return net, acc


_PREF_CACHE: dict[tuple, tuple[Any, PreferenceNet, float]] = {}  # one trained model per (pipe, training config, seed)
PREF_CACHE_SIZE = 2


def preference_model(pipe: Any, cfg: PrefModelConfig, seed: int = 0, log: Any = None) -> tuple[PreferenceNet, float]:
    """The attacker's preference model: `cfg.train_images` clean images generated with `pipe` (empty prompt, seeds
    seed + PREF_SEED_OFFSET + i), then `train_preference_model`. Cached per (pipe object, training fields, seed) so a
    bench trains it once for all methods; an edited pipe should be a new object."""
    from ..generation import generate

    key = (id(pipe), cfg.training_key(), seed)
    hit = _PREF_CACHE.get(key)
    if hit is not None and hit[0] is pipe:
        return hit[1], hit[2]
    clean = generate(pipe, [""] * cfg.train_images, seed + PREF_SEED_OFFSET, steps=cfg.gen_steps)
    net, acc = train_preference_model(clean, cfg, seed=seed, log=log)
    if log is not None:
        log(f"preference model: held-out ranking accuracy {acc:.3f}")
    while len(_PREF_CACHE) >= PREF_CACHE_SIZE:
        _PREF_CACHE.pop(next(iter(_PREF_CACHE)))
    _PREF_CACHE[key] = (pipe, net, acc)
    return net, acc


def estimate_marks(net: PreferenceNet, images: np.ndarray, cfg: PrefModelConfig) -> torch.Tensor:
    """One-shot estimate per image: (N, H, W, 3) uint8 -> (N, 3, H, W) float, image - (image optimised to maximise
    the preference score), in [0, 1] units. Deviation: Adam with a step in pixel levels (official: SGD, lr 0.05 on a
    ConvNeXt whose gradient scale differs from this small CNN's)."""
    x = _to_unit(images)
    delta = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr / 255.0)
    with torch.enable_grad():
        for _ in range(cfg.opt_steps):
            loss = -net((x + delta).clamp(0, 1)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    wm = (x - (x + delta.detach()).clamp(0, 1))
    if cfg.edge_mask:
        grey = (x * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])[None, None]
        g = F.pad(grey, (1, 1, 1, 1), mode="reflect")
        edge = (F.conv2d(g, kx) ** 2 + F.conv2d(g, kx.transpose(-1, -2)) ** 2).clamp(0, 1)
        wm = wm * (1 - edge.sqrt())
    return wm


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)


def prefforge_forgery(pipe: Any, marked: np.ndarray, covers: np.ndarray, cfg: PrefForgeConfig | None = None,
                      seed: int = 0, log: Any = None) -> np.ndarray:
    """One-shot forgery (Soucek et al., NeurIPS 2025): for each marked image i (N, H, W, 3) uint8 alone, estimate its
    mark through the preference model and add alpha x that estimate to cover i. Returns (N, H, W, 3) uint8."""
    cfg = cfg or PrefForgeConfig()
    marked, covers = check_images(marked, what="marked images"), check_images(covers, what="cover images")
    if marked.shape != covers.shape:
        raise InvalidValueError(f"prefforge needs one cover per marked image of the same size, got {covers.shape} "
                                f"covers for {marked.shape} marked images")
    net, _ = preference_model(pipe, cfg, seed=seed, log=log)
    return _to_uint8(_to_unit(covers) + cfg.alpha * estimate_marks(net, marked, cfg))


@_register("prefforge", PrefForgeConfig, needs_pipe=True, forgery=True,
           help="forgery: estimate each image's mark through a key-free preference model, stamp it on a cover")
def prefforge(images: np.ndarray, cfg: PrefForgeConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    covers = np.roll(images, 1, axis=0) if cfg.cover == "roll" else np.full_like(images, GREY)
    return prefforge_forgery(pipe, images, covers, cfg, seed=seed)


@_register("prefremove", PrefRemoveConfig, needs_pipe=True,
           help="removal: subtract each image's mark as estimated through a key-free preference model")
def prefremove(images: np.ndarray, cfg: PrefRemoveConfig, pipe: Any = None, seed: int = 0) -> np.ndarray:
    net, _ = preference_model(pipe, cfg, seed=seed)
    return _to_uint8(_to_unit(images) - cfg.alpha * estimate_marks(net, images, cfg))


__all__ = ["CtrlRegenConfig", "PrefForgeConfig", "PrefRemoveConfig", "PreferenceNet", "ctrlregen", "estimate_marks",
           "prefforge_forgery", "preference_model", "procedural_marks", "train_preference_model"]
