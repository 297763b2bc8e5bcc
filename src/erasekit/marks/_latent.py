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


@torch.no_grad()
def ddim_invert(pipe: StableDiffusionPipeline, images: np.ndarray, steps: int | None = None,
                batch_size: int = 64, prompt: str = INVERSION_PROMPT, decoder_steps: int = 0) -> torch.Tensor:
    """(N, C, h, w) estimate of the initial latents of `images` ((N, H, W, 3) uint8) by DDIM inversion with `prompt`
    (default empty) and no guidance, over `steps` (None: the model's default sampling steps); `decoder_steps` > 0
    first refines the VAE encoding by decoder inversion."""
    steps = resolve_sampling(pipe, steps, 0.0)[0]
    pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise InvalidValueError(f"DDIM inversion here supports epsilon-prediction models; this scheduler predicts "
                                f"{pred!r}")
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    acp = sched.alphas_cumprod.to(torch.float64)
    final = float(sched.final_alpha_cumprod)
    ts = sched.timesteps.flip(0)
    out = []
    for i in range(0, len(images), batch_size):
        x = encode_images(pipe, images[i:i + batch_size])
        if decoder_steps > 0:
            x = decoder_invert(pipe, images[i:i + batch_size], x, decoder_steps)
        x = x.to(torch.float64)
        cond = encode_prompts(pipe, [prompt] * x.shape[0])
        a_prev = final
        for t in ts:
            eps = pipe.unet(x.to(pipe.unet.dtype), t, encoder_hidden_states=cond).sample.to(torch.float64)
            a_t = float(acp[int(t)])
            x0 = (x - (1 - a_prev) ** 0.5 * eps) / a_prev ** 0.5
            x = a_t ** 0.5 * x0 + (1 - a_t) ** 0.5 * eps
            a_prev = a_t
        out.append(x.float().cpu())
    return torch.cat(out)


def check_latent_key(key_shape: Sequence[int], pipe: StableDiffusionPipeline, method: str) -> None:
    shape = latent_shape(pipe)
    if tuple(key_shape) != shape:
        raise InvalidValueError(f"this {method} key was made for {tuple(key_shape)} latents but the pipeline's "
                                f"latent is {shape}; make a key for this model (erasekit mark keygen --model ...)")


# ------------------------------------------------------------------------------------------------------- base class
from . import Detection, Key, Watermark, check_images, require_pipe  # noqa: E402  (the package defines the protocol)


class LatentWatermark(Watermark):
    """A watermark carried by the initial latent. Subclasses implement `keygen`, `initial_latents(key, seeds)` and
    `score_latents(key, z)`; generation, inversion, detection and identification are shared here. Configs have an
    `inversion_steps` field (None: the model's default sampling steps)."""

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

    def invert(self, pipe: StableDiffusionPipeline, images: np.ndarray, key: Key | None = None) -> torch.Tensor:
        """(N, C, h, w) recovered initial latents of (N, H, W, 3) uint8 images (checked against the pipeline's size)."""
        pipe = require_pipe(pipe, self.name)
        if key is not None:
            check_latent_key(key.shape, pipe, self.name)
        images = check_images(images, image_side(pipe))
        return ddim_invert(pipe, images, steps=self.config.inversion_steps, decoder_steps=self.config.decoder_steps)

    def detect(self, key: Key, images: np.ndarray, pipe: StableDiffusionPipeline | None = None,
               latents: torch.Tensor | None = None) -> Detection:
        """Detection of `key` in `images` (DDIM inversion through `pipe`), or in already recovered `latents`."""
        self.check_key(key)
        if latents is None:
            latents = self.invert(pipe, images, key)
        elif tuple(latents.shape[1:]) != tuple(key.shape):
            raise InvalidValueError(f"latents of shape {tuple(latents.shape[1:])} do not match the key's "
                                    f"{tuple(key.shape)}")
        return self.score_latents(key, latents)

    def identify(self, keys: Sequence[Key], images: np.ndarray, pipe: StableDiffusionPipeline | None = None,
                 latents: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N,) index of the best-scoring key per image and the (N, K) scores; the inversion is done once."""
        if not keys:
            raise InvalidValueError("identify() needs at least one key")
        if latents is None:
            latents = self.invert(pipe, images, keys[0])
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
