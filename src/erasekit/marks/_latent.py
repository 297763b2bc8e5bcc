"""What in-generation (initial-latent) watermarks share: generation from given initial latents through the explicit
loop of `erasekit.sampling`, and the DDIM inversion that recovers an estimate of the initial latent from an image.

Inversion (as Tree-Ring's and Gaussian Shading's official code do it): encode the image with the VAE (the posterior
mean, `sample=False` in the official code), then run DDIM backwards with an empty prompt and no guidance (the prompt is
unknown to a detector), over the same number of steps as generation, with a DDIM scheduler built from the pipeline's
scheduler config. Written explicitly (not diffusers' DDIMInverseScheduler) so the update is visible:

    x_{t_i} = sqrt(a_{t_i}) * x0_hat + sqrt(1 - a_{t_i}) * eps(x_{t_{i-1}}, t_i),
    x0_hat  = (x_{t_{i-1}} - sqrt(1 - a_{t_{i-1}}) * eps) / sqrt(a_{t_{i-1}}),

with a_{t_{-1}} the scheduler's final alpha (what the last sampling step lands on), the noise evaluated at the current
latent and the next (higher) timestep - the usual approximation (eps(x_t) ~ eps(x_{t-1})), exact only in the limit of
many steps; its error is what limits the bit accuracy of exact-sign methods on few-step models.

Detector options beyond the papers (config fields; the defaults are the papers' detector): `inversion_prompt`
("caption": a caption of each image from the model's world, `World.caption`, since a detector never knows the prompt;
"given": texts the caller passes, e.g. the generation prompts, an upper bound), `inversion_guidance` (invert the
classifier-free-guided sampler) and `fixed_point` (solve each implicit DDIM step by fixed-point iteration, the exact
inversion of AIDI (Pan et al. ICCV 2023) / ReNoise (Garibi et al. ECCV 2024); Hong et al., "On Exact Inversion of
DPM-Solvers", CVPR 2024, solve the same equation by gradient descent), with `decoder_steps` (Hong et al.'s decoder
inversion). Measured on the toy model (notes bench_marks15.md): at guidance 1-2 conditioned fixed-point inversion
inverts the sampler exactly from the true final latent (correlation 0.99+) and the VAE is the remaining loss; at the
default guidance 5 the sampler contracts (exact inversion reproduces the output but not the initial latent).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from ..errors import InvalidValueError
from ..sampling import cfg_combine, decode, denoise, encode_prompts, resolve_sampling

INVERSION_PROMPT = ""  # the detector does not know the generation prompt (both papers)


def latent_shape(pipe: StableDiffusionPipeline) -> tuple[int, int, int]:
    """(C, h, w) of the pipeline's initial latent."""
    c, s = int(pipe.unet.config.in_channels), int(pipe.unet.config.sample_size)
    return c, s, s


def image_side(pipe: StableDiffusionPipeline) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def check_seeds(prompts: Sequence[str], seeds: Sequence[int] | int) -> tuple[list[str], list[int]]:
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InvalidValueError("prompts must be a non-empty list of strings")
    seeds = [seeds + i for i in range(len(prompts))] if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise InvalidValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    if any(s < 0 for s in seeds):
        raise InvalidValueError(f"seeds must be >= 0, got {min(seeds)}")
    return prompts, seeds


@torch.no_grad()
def generate_from_latents(pipe: StableDiffusionPipeline, prompts: Sequence[str], seeds: Sequence[int],
                          latents: torch.Tensor, steps: int | None = None, guidance: float | None = None,
                          batch_size: int = 64) -> np.ndarray:
    """(N, H, W, 3) uint8 images generated from the given unit-variance initial latents (N, C, h, w) through
    `erasekit.sampling.denoise` (scaled by the scheduler's initial sigma; stochastic schedulers draw their step noise
    from `seeds`), exactly as `erasekit.generate` does otherwise."""
    steps, guidance = resolve_sampling(pipe, steps, guidance)
    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps)
    sigma = float(sched.init_noise_sigma)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk, sd = list(prompts[i:i + batch_size]), list(seeds[i:i + batch_size])
        lat = latents[i:i + batch_size].to(pipe.unet.device, pipe.unet.dtype) * sigma
        cond = encode_prompts(pipe, chunk)
        if guidance > 1.0:
            uncond = encode_prompts(pipe, [""] * len(chunk))
            z = denoise(pipe, [uncond, cond], cfg_combine(guidance), sd, steps=steps, latents=lat)
        else:
            z = denoise(pipe, [cond], lambda j, t, eps: eps[0], sd, steps=steps, latents=lat)
        out.append(decode(pipe, z))
    return np.concatenate(out)


@torch.no_grad()
def encode_images(pipe: StableDiffusionPipeline, images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, C, h, w) VAE posterior means times the VAE scaling factor."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(pipe.vae.device, pipe.vae.dtype)
    x = x / 127.5 - 1.0
    return pipe.vae.encode(x).latent_dist.mode() * pipe.vae.config.scaling_factor


DECODER_LR = 0.05  # Adam step of the decoder inversion (measured on the toy model: 50 steps reach MSE ~1e-5)


def decoder_invert(pipe: StableDiffusionPipeline, images: np.ndarray, z: torch.Tensor, steps: int) -> torch.Tensor:
    """Refine VAE latents z (N, C, h, w) so that the decoder reproduces `images`: `steps` Adam steps on the MSE in
    pixel space (the decoder inversion of Hong et al., "On Exact Inversion of DPM-Solvers", CVPR 2024). The encoder
    is only approximately the decoder's inverse; on the toy model its error is amplified by the DDIM inversion."""
    target = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(pipe.vae.device, pipe.vae.dtype)
    target = target / 127.5 - 1.0
    sf = pipe.vae.config.scaling_factor
    z = z.detach().clone().to(pipe.vae.dtype).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=DECODER_LR)
    was = [p.requires_grad for p in pipe.vae.parameters()]
    pipe.vae.requires_grad_(False)
    try:
        with torch.enable_grad():
            for _ in range(steps):
                loss = ((pipe.vae.decode(z / sf).sample - target) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        for p, r in zip(pipe.vae.parameters(), was):
            p.requires_grad_(r)
    return z.detach()


INVERSION_PROMPTS = ("empty", "caption", "given")  # what the detector's inversion is conditioned on
INVERSION_HELP = {
    "inversion_prompt": "what the DDIM inversion is conditioned on: empty (both papers: the detector does not know "
                        "the prompt), caption (a caption of each image: the model's world's captioner, World.caption, "
                        "or the texts passed to detect(prompts=...)), given (the texts passed to detect(prompts=...), "
                        "e.g. the generation prompts: an upper bound)",
    "inversion_guidance": "classifier-free guidance of the inverted sampler (1: conditional only, as the papers; the "
                          "generation guidance inverts the guided sampler that made the image)",
    "fixed_point": "fixed-point iterations per inversion step (0: the papers' eps(x_t) ~ eps(x_t-1) approximation; "
                   "> 0: solve the implicit DDIM step, as exact-inversion methods do)",
}
MAX_FIXED_POINT = 100


def check_inversion_options(cfg: object) -> None:
    """Validate a latent-watermark config's inversion fields (inversion_steps, decoder_steps, inversion_prompt,
    inversion_guidance, fixed_point); one line naming the bad value."""
    from ..config import check_choice
    from ..sampling import check_sampling

    for name, hi in (("decoder_steps", None), ("fixed_point", MAX_FIXED_POINT)):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (hi is not None and v > hi):
            raise InvalidValueError(f"{name} must be an integer >= 0{f' and <= {hi}' if hi else ''}, got {v!r}")
    if cfg.inversion_steps is not None:  # type: ignore[attr-defined]
        check_sampling(cfg.inversion_steps, None, where="inversion_steps")  # type: ignore[attr-defined]
    check_choice("inversion_prompt", cfg.inversion_prompt, INVERSION_PROMPTS)  # type: ignore[attr-defined]
    check_sampling(None, cfg.inversion_guidance, where="inversion_guidance")  # type: ignore[attr-defined]


def _eps(pipe: StableDiffusionPipeline, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
         uncond: torch.Tensor | None, guidance: float) -> torch.Tensor:
    """The noise prediction the sampler would use at (x, t): conditional only, or classifier-free guided."""
    if uncond is None:
        return pipe.unet(x.to(pipe.unet.dtype), t, encoder_hidden_states=cond).sample.to(torch.float64)
    eu, ec = pipe.unet(torch.cat([x, x]).to(pipe.unet.dtype), t,
                       encoder_hidden_states=torch.cat([uncond, cond])).sample.to(torch.float64).chunk(2)
    return eu + guidance * (ec - eu)


@torch.no_grad()
def ddim_invert(pipe: StableDiffusionPipeline, images: np.ndarray, steps: int | None = None,
                batch_size: int = 64, prompt: str = INVERSION_PROMPT, decoder_steps: int = 0,
                prompts: Sequence[str] | None = None, guidance: float = 1.0, fixed_point: int = 0) -> torch.Tensor:
    """(N, C, h, w) estimate of the initial latents of `images` ((N, H, W, 3) uint8) by DDIM inversion over `steps`
    (None: the model's default sampling steps).

    Papers' detector (the defaults): `prompt` "" for every image, no guidance, no fixed-point iterations.
    `prompts` (N,): one conditioning text per image instead (the generation prompt when known, or a caption);
    `guidance` > 1: invert the classifier-free-guided sampler (eps_u + w (eps_c - eps_u), unconditional = "") rather
    than the conditional one; `fixed_point` > 0: per step, re-evaluate the noise at the new latent and recompute it
    that many times (fixed-point iteration of the implicit DDIM equation x_t = f(x_{t-1}, eps(x_t, t)), as AIDI /
    ReNoise / the exact inversion of Hong et al. 2024 do, instead of the eps(x_t) ~ eps(x_{t-1}) approximation);
    `decoder_steps` > 0 first refines the VAE encoding by decoder inversion."""
    steps = resolve_sampling(pipe, steps, 0.0)[0]
    pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise InvalidValueError(f"DDIM inversion here supports epsilon-prediction models; this scheduler predicts "
                                f"{pred!r}")
    if prompts is not None and len(prompts) != len(images):
        raise InvalidValueError(f"got {len(prompts)} inversion prompts for {len(images)} images; give one per image")
    out = []
    for i in range(0, len(images), batch_size):
        x = encode_images(pipe, images[i:i + batch_size])
        if decoder_steps > 0:
            x = decoder_invert(pipe, images[i:i + batch_size], x, decoder_steps)
        texts = list(prompts[i:i + batch_size]) if prompts is not None else [prompt] * x.shape[0]
        out.append(invert_latents(pipe, x, texts, steps, guidance, fixed_point))
    return torch.cat(out)


@torch.no_grad()
def invert_latents(pipe: StableDiffusionPipeline, z: torch.Tensor, prompts: Sequence[str], steps: int,
                   guidance: float = 1.0, fixed_point: int = 0) -> torch.Tensor:
    """(N, C, h, w) float32 CPU: DDIM inversion of final latents z (N, C, h, w) (VAE-scaled) conditioned on
    `prompts` (N,) (see `ddim_invert` for `guidance` and `fixed_point`), in float64."""
    return invert_loop(pipe, z.to(torch.float64), prompts, steps, guidance, fixed_point).float().cpu()


def invert_loop(pipe: StableDiffusionPipeline, x: torch.Tensor, prompts: Sequence[str], steps: int,
                guidance: float = 1.0, fixed_point: int = 0) -> torch.Tensor:
    """The DDIM inversion loop on latents x (N, C, h, w) in x's dtype, differentiable in x when called under
    torch.enable_grad() (the imprint forgery optimises through it)."""
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    acp = sched.alphas_cumprod.to(torch.float64)
    final = float(sched.final_alpha_cumprod)
    with torch.no_grad():
        cond = encode_prompts(pipe, list(prompts))
        uncond = encode_prompts(pipe, [""] * x.shape[0]) if guidance != 1.0 else None
    a_prev = final
    for t in sched.timesteps.flip(0):
        a_t = float(acp[int(t)])
        eps = _eps(pipe, x, t, cond, uncond, guidance).to(x.dtype)
        x0 = (x - (1 - a_prev) ** 0.5 * eps) / a_prev ** 0.5
        nxt = a_t ** 0.5 * x0 + (1 - a_t) ** 0.5 * eps
        for _ in range(fixed_point):  # solve x_t = f(x_{t-1}, eps(x_t, t)) by fixed-point iteration
            eps = _eps(pipe, nxt, t, cond, uncond, guidance).to(x.dtype)
            x0 = (x - (1 - a_prev) ** 0.5 * eps) / a_prev ** 0.5
            nxt = a_t ** 0.5 * x0 + (1 - a_t) ** 0.5 * eps
        x, a_prev = nxt, a_t
    return x


def check_latent_key(key_shape: Sequence[int], pipe: StableDiffusionPipeline, method: str) -> None:
    shape = latent_shape(pipe)
    if tuple(key_shape) != shape:
        raise InvalidValueError(f"this {method} key was made for {tuple(key_shape)} latents but the pipeline's "
                                f"latent is {shape}; make a key for this model (erasekit mark keygen --model ...)")


# ------------------------------------------------------------------------------------------------------- base class
from . import Detection, Key, Watermark, check_images, require_pipe  # noqa: E402  (the package defines the protocol)


class LatentWatermark(Watermark):
    """A watermark carried by the initial latent. Subclasses implement `keygen`, `initial_latents(key, seeds)` and
    `score_latents(key, z)`; generation, inversion, detection and identification are shared here. Configs have the
    inversion fields `inversion_steps` (None: the model's default sampling steps), `decoder_steps`, `inversion_prompt`,
    `inversion_guidance` and `fixed_point` (INVERSION_HELP; validated by `check_inversion_options`)."""

    kind = "latent"

    def initial_latents(self, key: Key, seeds: Sequence[int]) -> torch.Tensor:
        """(N, C, h, w) unit-variance marked initial latents, one per seed."""
        raise NotImplementedError

    def score_latents(self, key: Key, z: torch.Tensor) -> Detection:
        """Detection from (N, C, h, w) recovered initial latents."""
        raise NotImplementedError

    def generate(self, pipe: StableDiffusionPipeline, key: Key, prompts: Sequence[str],
                 seeds: Sequence[int] | int = 0, steps: int | None = None, guidance: float | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 marked images: the key's initial latents through the explicit sampling loop."""
        self.check_key(key)
        check_latent_key(key.shape, pipe, self.name)
        prompts, seeds = check_seeds(prompts, seeds)
        return generate_from_latents(pipe, prompts, seeds, self.initial_latents(key, seeds), steps, guidance)

    def inversion_prompts(self, pipe: StableDiffusionPipeline, images: np.ndarray,
                          prompts: Sequence[str] | None) -> list[str] | None:
        """The texts the inversion is conditioned on (None: the empty prompt), per `config.inversion_prompt`."""
        mode = self.config.inversion_prompt
        if mode == "empty":
            if prompts is not None:
                raise InvalidValueError(f"{self.name}: prompts were given but inversion_prompt='empty' ignores them; "
                                        "set inversion_prompt='given' (or 'caption') to condition the inversion")
            return None
        if prompts is None:
            if mode == "given":
                raise InvalidValueError(f"{self.name}: inversion_prompt='given' needs prompts=[...] (one per image); "
                                        "use inversion_prompt='caption' to caption the images instead")
            from ..worlds import world_of_model

            prompts = world_of_model(pipe).caption(images)
        prompts = list(prompts)
        if len(prompts) != len(images) or not all(isinstance(p, str) for p in prompts):
            raise InvalidValueError(f"{self.name}: need one prompt string per image, got {len(prompts)} for "
                                    f"{len(images)} images")
        return prompts

    def invert(self, pipe: StableDiffusionPipeline, images: np.ndarray, key: Key | None = None,
               prompts: Sequence[str] | None = None) -> torch.Tensor:
        """(N, C, h, w) recovered initial latents of (N, H, W, 3) uint8 images (checked against the pipeline's size),
        with the config's inversion settings; `prompts` (N,): texts for inversion_prompt 'given' / 'caption'."""
        pipe = require_pipe(pipe, self.name)
        if key is not None:
            check_latent_key(key.shape, pipe, self.name)
        images = check_images(images, image_side(pipe))
        cfg = self.config
        texts = self.inversion_prompts(pipe, images, prompts)
        return ddim_invert(pipe, images, steps=cfg.inversion_steps, decoder_steps=cfg.decoder_steps, prompts=texts,
                           guidance=float(cfg.inversion_guidance), fixed_point=cfg.fixed_point)

    def detect(self, key: Key, images: np.ndarray, pipe: StableDiffusionPipeline | None = None,
               latents: torch.Tensor | None = None, prompts: Sequence[str] | None = None) -> Detection:
        """Detection of `key` in `images` (DDIM inversion through `pipe`), or in already recovered `latents`."""
        self.check_key(key)
        if latents is None:
            latents = self.invert(pipe, images, key, prompts=prompts)
        elif tuple(latents.shape[1:]) != tuple(key.shape):
            raise InvalidValueError(f"latents of shape {tuple(latents.shape[1:])} do not match the key's "
                                    f"{tuple(key.shape)}")
        return self.score_latents(key, latents)

    def identify(self, keys: Sequence[Key], images: np.ndarray, pipe: StableDiffusionPipeline | None = None,
                 latents: torch.Tensor | None = None,
                 prompts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N,) index of the best-scoring key per image and the (N, K) scores; the inversion is done once."""
        if not keys:
            raise InvalidValueError("identify() needs at least one key")
        if latents is None:
            latents = self.invert(pipe, images, keys[0], prompts=prompts)
        scores = np.stack([self.detect(k, images, latents=latents).score for k in keys], axis=1)
        return scores.argmax(axis=1), scores


def key_generator(entropy: bytes | None) -> torch.Generator:
    """A torch generator seeded from 8 bytes of `entropy` (default: the OS's random source). Keys store the material
    they derive, so the seed is never needed again."""
    import hashlib
    import os

    raw = hashlib.sha256(entropy).digest() if entropy is not None else os.urandom(32)
    return torch.Generator("cpu").manual_seed(int.from_bytes(raw[:8], "little") & ((1 << 63) - 1))


def shape_of(pipe: StableDiffusionPipeline | None, shape: Sequence[int] | None) -> tuple[int, int, int]:
    """The (C, h, w) latent shape a key is made for: the pipeline's, or an explicit shape."""
    if pipe is not None:
        return latent_shape(pipe)
    if shape is None or len(tuple(shape)) != 3 or any(int(s) < 1 for s in shape):
        raise InvalidValueError(f"keygen needs pipe= (or shape=(C, h, w)), got shape {shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]
