"""SFD: Score Forgetting Distillation: A Swift, Data-Free Method for Machine Unlearning in Diffusion Models.
Tianqi Chen, Shujian Zhang, Mingyuan Zhou. ICLR 2025. Official code:
github.com/tqch/score-forgetting-distillation (`SD/training/training_loop.py`, `SD/training/sd_util.py::
sid_sd_sampler / sid_sd_denoise`, `SD/run_sfd.sh`; class-conditional DDPM: `DDPM/runners/diffusion.py::train_sfd`,
`DDPM/functions/losses.py::sid_*_loss_conditional`, `DDPM/configs/cifar10_sfd.yml`). Built on Score identity
Distillation (SiD, Zhou et al. ICML 2024) and its SD version SiD-LSG.

Data-free: the pretrained UNet (the teacher, frozen) is distilled into a ONE-STEP generator G (a UNet initialised from
the teacher) whose conditional distribution for the forgotten concept is pushed to the teacher's distribution for a
safe/override concept, while every other prompt keeps the teacher's distribution. A second UNet, the fake score f
(initialised from the teacher, trained with denoising score matching on G's own samples), estimates the score of G's
distribution. Only prompts are used; no image is ever loaded.

One-step generator (shapes: z, x0 (B, 4, h, w); text embeddings (B, 77, D)):

    x0 = G(z, c) = (z - sqrt(1 - abar_init) eps_G(z, t_init, c)) / sqrt(abar_init)        z ~ N(0, I)

    = one step of an unmodified diffusers EulerDiscreteScheduler whose only sigma is sigma(t_init) (Karras sigmas
    with sigma_max = sqrt((1 - abar_init) / abar_init), final sigma 0: `one_step_scheduler`): erasekit samples the
    result through its standard path with `steps=1`, `guidance=1` and that scheduler (`one_step_pipeline`;
    `sampling` in the edit's info).

Per optimiser step, with t ~ U{t_min .. t_max - 1}, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n, and x0_s(x_t, c, w)
the clean prediction of score network s with classifier-free guidance w (w = 1: conditional only):

  fake score  L_f = sum || eps_f^w(x_t, t, c) - n ||^2 / B  on sg(G(z, c)); c from the remain prompts (weight
                    `remain_weight`) and the forget prompts (weight `forget_weight`); w = `fake_guidance`, with
                    `cond_dropout` of the prompts replaced by "" when w != 1 (official: context dropout 0.1)
  generator   L_G = sum (y_r - y_f) . ((y_r - x0) - alpha (y_r - y_f)) / omega / B        (SiD; alpha = 1 gives
                    (y_r - y_f) . (y_f - x0)), omega = mean |x0 - y_r| per sample (stop-gradient)
                    remain:  x0 = G(z, c),  y_r = x0_teacher(x_t, c, kappa),  y_f = x0_f(x_t, c, w_f)
                    forget:  x0 = G(z, c_u), y_r = x0_teacher(x_t, c_s, kappa), y_f = x0_f(x_t, c_u, w_f)
                    (c_u: a forget prompt, c_s: the same prompt with the concept replaced by the override/guide)

The forget term is the score-forgetting loss: the score of G's distribution for c_u (estimated by f) is aligned with
the teacher's score for c_s. Gradients reach G through x0 (also through the frozen networks' inputs); the fake score
and the teacher are not updated by L_G. Gradients are clipped by value (1.0: official DDPM both networks, SD the
generator under fp16) and Adam uses betas (0, 0.999) (official SD train.py and DDPM configs, as SiD).

Request mapping: erase prompts (expanded with `templates`) are the forget prompts c_u; the request's guide (one for
all or one per erase prompt; default "" = the unconditional prompt, as the toy world's defaults) replaces the concept
in them to give c_s (official `--concept_to_forget / --concept_to_override`, e.g. "brad pitt" -> "a middle aged man").
Remain prompts (the official Aesthetics-6+ caption list, i.e. prompts only) are `remain`, else the model's world's
`calibration_prompts` excluding the erase concepts (`n_remain` of them; the toy world's are varied captions that show
none of the concept), else its `retain_prompts`, else ""; plus the request's preserve prompts.

Output: an `Edit` of the trained generator parameters (`train_method`, default every UNet parameter as official).
It is a one-step generator, trained only for t_init: the pipeline's usual multi-step scheduler is not how it is meant
to be sampled (not measured here; the official code samples it in one step). The edit's info carries
`sampling = {"steps": 1, "guidance": 1.0, "t_init": ...}`; use `one_step_pipeline(pipe, edit)` (a pipeline sharing
`pipe`'s modules with the one-step scheduler) with `erasekit.generate(..., steps=1, guidance=1.0)` or
`erasekit.evaluation.evaluate(..., pipe=one_step, suite with steps=1, guidance=1.0)` (bench/sfd/measure.py);
`save_one_step_model` writes a diffusers folder whose erasekit.json names those sampling defaults, so
`erasekit eval --model FOLDER` samples it in one step.

Defaults. Official SD (run_sfd.sh; starts from the distilled SiD-LSG SD1.5 one-step generator): generator lr 1e-6,
fake-score lr 3e-6, batch 8, t_init 625, t in [20, 980), alpha 1, teacher CFG 4.5, fake CFG 4.5 (train and eval),
context dropout 0.1, all coefficients 1.0, fp16, EMA off, 1 kimg (~125 steps of batch 8) for unlearning after the
distillation stage. Official DDPM (one-stage, from the pretrained teacher): lr 1e-5 / 1e-5, batch 128, 50k steps,
t_init 440, t in [38, 712), alpha 1.2, forget coefficients 0.01. Ours (toy world, 2 CPU cores, no distilled checkpoint
exists): ONE stage from the teacher (distillation and forgetting at once, as the DDPM "SFD" row), 300 steps of batch
4 + 4, lr 3e-4 / 3e-4, t_init 625, t in [20, 980), alpha 1, teacher CFG = the model's sampling guidance (toy: 5),
fake CFG 1 (no guidance on the fake score: one UNet call instead of two, the DDPM code's unguided fake score), forget
weight 1. lr=1e-6 fake_lr=3e-6 fake_guidance=4.5 teacher_guidance=4.5 batch=8 are the official SD settings, which
assume a generator that is already a distilled one-step model (see the first deviation).

Measured on the toy model (bench/sfd/measure.py; numbers in BENCHMARKS.md, "Score Forgetting Distillation"): with
a concrete override (another character) the one-step generator stops drawing the concept and samples ~20x cheaper
than the multi-step teacher, at a quality cost at CPU budgets; with the unconditional override "" (the distribution
that still contains the concept) the concept comes back as the generator learns to draw, so an empty guide is
refused unless `allow_empty_guide` says it is meant.

Deviations from the official code (and why):
  - One stage from the teacher on every model: the SD code starts from a separately distilled one-step generator
    (SiD-LSG checkpoint, hundreds of GPU-hours); there is none for an arbitrary SD1.x model, and the toy model gets
    its one-step generator inside this run. Quality of the one-step samples therefore depends on `steps`.
  - Generator input: z itself at t_init (official: sqrt(1 - abar_init) z, the noise part of x_t only). With z the
    generator is exactly one step of a stock Euler scheduler from the pipeline's own initial latents, so no custom
    sampler is needed anywhere in erasekit; z also has the unit variance the teacher sees at t_init when
    latents are scaled to unit variance. Only the generator's initialisation differs (it is trained either way).
  - Remain and forget terms are computed in one batched call per network (same losses, fewer calls on CPU).
  - Losses are divided by the batch size as official (sum over latent elements), the fake-score and generator
    updates alternate once per step as official; no EMA (official SD `--ema 0`), no fp16, no NaN filtering (a
    non-finite loss raises instead: erasekit refuses NaN).
  - `train_method` may restrict the generator's trained parameters to an ESD parameter set (default "esd-all",
    official); the fake score always trains every parameter.
  - Nudity-style runs with positive/negative prompt lists (`--pos/neg_data_prompt_text`, `use_neg`) are not
    offered; the request's erase prompts (e.g. the world's nudity keywords) and guide cover the same forget/override
    pairs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import check_choice, check_min
from ..errors import InvalidValueError
from ..sampling import encode_prompts
from . import EraseRequest, Method
from ._training import TrainHooks, TrainingConfig, TrainingLoop, changed_tensors, pipe_with, render_check
from .concepts import check_templates
from .doco import _Optimizers
from .esd import PARAMETER_SETS, unet_pair

ONE_STEP_GUIDANCE = 1.0  # the generator is sampled with its conditional prediction alone (no CFG), as official


@dataclass(frozen=True)
class SFDConfig(TrainingConfig):
    steps: int = field(default=300, metadata={
        "help": "optimiser steps (each: one fake-score and one generator update; official SD 1 kimg = 125 x 8)"})
    lr: float = field(default=3e-4, metadata={"help": "generator Adam lr (official SD 1e-6, DDPM 1e-5)"})
    fake_lr: float = field(default=3e-4, metadata={"help": "fake-score Adam lr (official SD 3e-6, DDPM 1e-5)"})
    batch: int = field(default=4, metadata={
        "help": "remain prompts per step; as many forget prompts are added (official SD 8, DDPM 128)"})
    t_init: int = field(default=625, metadata={
        "help": "timestep at which the one-step generator denoises (official SD 625, DDPM 440)"})
    t_min: int = field(default=20, metadata={"help": "smallest diffusion timestep of the losses (official SD 20)"})
    t_max: int = field(default=980, metadata={"help": "largest diffusion timestep + 1 (official SD 980)"})
    alpha: float = field(default=1.0, metadata={"help": "SiD alpha (official SD 1.0, DDPM 1.2)"})
    teacher_guidance: float | None = field(default=None, metadata={
        "help": "CFG of the teacher's score (kappa4; official 4.5; none = the model's sampling guidance)"})
    fake_guidance: float = field(default=1.0, metadata={
        "help": "CFG of the fake score when trained and evaluated (kappa1-3; official SD 4.5; 1 = conditional)"})
    cond_dropout: float = field(default=0.1, metadata={
        "help": "share of fake-score training prompts replaced by '' when fake_guidance != 1 (official 0.1)"})
    remain_weight: float = field(default=1.0, metadata={"help": "remain-loss coefficient (official 1.0)"})
    forget_weight: float = field(default=1.0, metadata={
        "help": "forget-loss coefficient for both networks (official SD 1.0, DDPM 0.01)"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient clipping by value (official 1.0; 0 = off)"})
    train_method: str = field(default="esd-all", metadata={
        "help": "generator parameters trained: esd-all (official), esd-u, esd-x, esd-x-strict"})
    templates: tuple[str, ...] = field(default=(), metadata={
        "help": "forget-prompt templates with '{}' (the concept and its override are both put in each)"})
    remain: tuple[str, ...] = field(default=(), metadata={
        "help": "remain prompts (official: Aesthetics-6+ captions); empty = the world's calibration prompts"})
    n_remain: int = field(default=64, metadata={"help": "remain prompts drawn from the world when remain is empty"})
    allow_empty_guide: bool = field(default=False, metadata={
        "help": "accept the guide '' (override = the unconditional distribution); refused by default because it "
                "does not erase on the toy model (BENCHMARKS.md)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_templates(self.templates)
        check_choice("train_method", self.train_method, tuple(PARAMETER_SETS))
        check_min(self, 1, "batch", "n_remain")
        check_min(self, 0, "remain_weight", "forget_weight", "grad_clip", "alpha")
        check_min(self, 0, "fake_lr", strict=True)
        if not 0 < self.t_init < 1000:
            raise InvalidValueError(f"t_init must be in (0, 1000), got {self.t_init} (official SD 625)")
        if not 0 <= self.t_min < self.t_max <= 1000:
            raise InvalidValueError(f"need 0 <= t_min < t_max <= 1000, got t_min={self.t_min} t_max={self.t_max}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise InvalidValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        for name in ("fake_guidance", "teacher_guidance"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {v}")
        if self.remain_weight == 0 and self.forget_weight == 0:
            raise InvalidValueError("remain_weight and forget_weight are both 0: nothing would be trained")


# ------------------------------------------------------------------------------------------------ sampling
def one_step_scheduler(scheduler: Any, t_init: int) -> Any:
    """A stock `EulerDiscreteScheduler` with the beta schedule of `scheduler` whose one step starts at the noise level
    of timestep `t_init` (Karras sigmas with sigma_max = sigma(t_init), final sigma 0) and ends at the clean
    prediction: from the pipeline's initial latents z sqrt(sigma^2 + 1) it returns
    (z - sqrt(1 - abar) eps(z, t_init)) / sqrt(abar), the generator. Sample with steps=1, guidance=1.

    (A DDIM scheduler with steps_offset=t_init would do the same, but `StableDiffusionPipeline` resets any
    steps_offset != 1 when it is built; sigma_max survives the pipeline and save/load.)"""
    from diffusers import EulerDiscreteScheduler

    if scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise InvalidValueError(f"SFD's one-step sampler needs an epsilon-prediction model; this one predicts "
                                f"{scheduler.config.get('prediction_type')!r}")
    if not 0 < int(t_init) < scheduler.config.num_train_timesteps:
        raise InvalidValueError(f"t_init must be in (0, {scheduler.config.num_train_timesteps}), got {t_init}")
    abar = float(scheduler.alphas_cumprod[int(t_init)])
    return EulerDiscreteScheduler.from_config(
        scheduler.config, use_karras_sigmas=True, sigma_max=math.sqrt((1 - abar) / abar), sigma_min=None,
        final_sigmas_type="zero", timestep_spacing="leading", steps_offset=1, interpolation_type="linear",
        timestep_type="discrete", use_exponential_sigmas=False, use_beta_sigmas=False)


def sampling_of(edit: Any) -> dict:
    """{"steps": 1, "guidance": 1.0, "t_init": T} recorded in an SFD edit's info (raises for other edits)."""
    info = (edit.manifest.get("info") or {}) if hasattr(edit, "manifest") else {}
    s = info.get("sampling")
    if edit.manifest.get("method") != "sfd" or not s:
        raise InvalidValueError(f"edit of method {edit.manifest.get('method')!r} is not an SFD one-step generator")
    return dict(s)


def one_step_pipeline(pipe: Any, edit: Any = None, t_init: int | None = None) -> Any:
    """A pipeline sharing `pipe`'s modules (apply the edit to either) with the one-step scheduler of `edit` (or of
    `t_init`); sample it with `generate(..., steps=1, guidance=1.0)`."""
    if t_init is None:
        if edit is None:
            raise InvalidValueError("one_step_pipeline needs the SFD edit or t_init")
        t_init = sampling_of(edit)["t_init"]
    return pipe_with(pipe, scheduler=one_step_scheduler(pipe.scheduler, int(t_init)))


def save_one_step_model(pipe: Any, edit: Any, folder: str | Path, overwrite: bool = False) -> Path:
    """Write `pipe` with `edit` applied and the one-step scheduler as a diffusers folder, with an erasekit.json whose
    sampling defaults are one step without guidance (and the base model's world), so that `erasekit generate/eval
    --model FOLDER` sample the generator as it was trained. `pipe` is left unchanged."""
    import json

    from ..errors import ErasekitError
    from ..io import atomic_write_text, check_writable_dir
    from ..models import CARD, model_card
    from ..worlds import WORLD_ATTRIBUTE

    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ErasekitError(f"model folder {folder} exists and is not empty; pass overwrite=True or choose another")
    check_writable_dir(folder, "model folder")
    s = sampling_of(edit)
    card = dict(model_card(pipe))
    with edit.applied(pipe):
        out = one_step_pipeline(pipe, t_init=s["t_init"])
        out.save_pretrained(folder, safe_serialization=True)
    card["sampling"] = {"steps": s["steps"], "guidance": s["guidance"]}
    world = getattr(pipe, WORLD_ATTRIBUTE, None) or card.get("world")
    if world:
        card["world"] = world
    card["sfd"] = {"t_init": s["t_init"], "base_model": edit.manifest.get("base_model", "")}
    atomic_write_text(folder / CARD, json.dumps(card, indent=2))
    return folder


# ------------------------------------------------------------------------------------------------ training pieces
def generator_x0(unet: torch.nn.Module, z: torch.Tensor, enc: torch.Tensor, t_init: int,
                 abar: torch.Tensor) -> torch.Tensor:
    """The one-step generator: x0 (B, 4, h, w) from z (B, 4, h, w) and text embeddings enc (B, 77, D)."""
    a = abar[t_init]
    eps = unet(z, t_init, encoder_hidden_states=enc).sample
    return (z - (1 - a).sqrt() * eps) / a.sqrt()


def guided_eps(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, enc: torch.Tensor, uncond: torch.Tensor,
               guidance: float) -> torch.Tensor:
    """eps (B, 4, h, w) of `unet` at x_t with CFG `guidance` on [uncond, enc] (guidance 1: the conditional one)."""
    if guidance == 1.0:
        return unet(x, t, encoder_hidden_states=enc).sample
    b = x.shape[0]
    eu, ec = unet(torch.cat([x, x]), torch.cat([t, t]),
                  encoder_hidden_states=torch.cat([uncond.expand(b, -1, -1), enc])).sample.chunk(2)
    return eu + guidance * (ec - eu)


def sid_generator_loss(x0: torch.Tensor, y_real: torch.Tensor, y_fake: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-sample SiD generator loss (B,): sum over elements of (y_r - y_f) . ((y_r - x0) - alpha (y_r - y_f)) /
    omega, omega = mean |x0 - y_r| (stop-gradient, >= 1e-5); alpha = 1 is (y_r - y_f) . (y_f - x0)."""
    with torch.no_grad():
        omega = (x0 - y_real).abs().mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-5)
    d = y_real - y_fake
    return (d * ((y_real - x0) - alpha * d) / omega).sum(dim=(1, 2, 3))


def forget_pairs(request: EraseRequest, templates: Sequence[str]) -> tuple[list[str], list[str]]:
    """(forget prompts c_u, override prompts c_s): each erase prompt and each template filled with it, and the same
    with the erase prompt replaced by its guide (official concept_to_forget -> concept_to_override)."""
    guides = request.guides("")
    forget, override = [], []
    for e, g in zip(request.erase, guides):
        for t in ("{}",) + tuple(templates):
            forget.append(t.format(e))
            override.append(" ".join(t.format(g).split()))
    return forget, override


def remain_prompts(pipe: Any, request: EraseRequest, config: SFDConfig) -> list[str]:
    """config.remain, else the world's calibration prompts without the erase concepts, else its retain prompts,
    else [""]; plus the request's preserve prompts. Prompts that contain an erase prompt are dropped."""
    from ..worlds import UnsupportedError, world_of_model

    pool = list(config.remain)
    if not pool:
        world = world_of_model(pipe)
        try:
            pool = list(world.calibration_prompts(list(request.erase), config.n_remain, config.seed))
        except UnsupportedError:
            try:
                pool = list(world.retain_prompts(world.concept(request.erase[0]).name))
            except Exception:  # noqa: BLE001 - a world without retain prompts or without the concept
                pool = []
    erased = [e.lower() for e in request.erase if e.strip()]
    pool = [p for p in pool if not any(e in p.lower() for e in erased)]
    pool += [p for p in request.preserve if p not in pool]
    return pool or [""]


def _finite(loss: torch.Tensor, what: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise InvalidValueError(f"SFD {what} loss is {float(loss)} at step {step}: lower lr / fake_lr and rerun")


def run(pipe, request: EraseRequest, config: SFDConfig, hooks: TrainHooks) -> tuple[dict, dict]:
    """Distil `pipe`'s UNet into a one-step generator that forgets the erase prompts; returns ({"unet.<name>":
    tensor in the pipeline's dtype}, info)."""
    base_dtype, device = pipe.unet.dtype, pipe.unet.device
    if pipe.scheduler.config.get("prediction_type", "epsilon") != "epsilon":
        raise InvalidValueError("SFD here supports epsilon-prediction models (SD1.x); this one predicts "
                                f"{pipe.scheduler.config.get('prediction_type')!r}")
    one_step_scheduler(pipe.scheduler, config.t_init)  # validates t_init against the model's schedule early
    empty = [e for e, g in zip(request.erase, request.guides("")) if not g.strip()]
    if empty and not config.allow_empty_guide:
        raise InvalidValueError(f"SFD needs a concrete override concept for {empty[0]!r}, got guide '' (the "
                                "unconditional distribution still draws it); pass --guide NAME (e.g. another "
                                "character), or -o allow_empty_guide=true to override with '' anyway")
    teacher, gen_unet, chosen = unet_pair(pipe, config.train_method)
    # the teacher may be the pipeline's own UNet: gradients flow through its input, never into its weights
    grad_flags = [(p, p.requires_grad) for p in teacher.parameters()]
    teacher.requires_grad_(False)
    try:
        return _train(pipe, request, config, hooks, teacher, gen_unet, chosen)
    finally:
        for p, flag in grad_flags:
            p.requires_grad_(flag)


def _train(pipe, request: EraseRequest, config: SFDConfig, hooks: TrainHooks, teacher: torch.nn.Module,
           gen_unet: torch.nn.Module, chosen: list[str]) -> tuple[dict, dict]:
    base_dtype, device = pipe.unet.dtype, pipe.unet.device
    fake = copy.deepcopy(teacher).float().train()
    fake.requires_grad_(True)
    teacher_w = config.teacher_guidance
    if teacher_w is None:
        from ..sampling import resolve_sampling

        teacher_w = resolve_sampling(pipe, None, None)[1]
    g_params = [p for p in gen_unet.parameters() if p.requires_grad]
    f_params = list(fake.parameters())
    betas = (0.0, 0.999)  # official (SiD): no first-moment momentum
    opt_g = torch.optim.Adam(g_params, lr=config.lr, betas=betas)
    opt_f = torch.optim.Adam(f_params, lr=config.fake_lr, betas=betas)
    abar = pipe.scheduler.alphas_cumprod.to(device, torch.float32)

    forget, override = forget_pairs(request, config.templates)
    remain = remain_prompts(pipe, request, config)
    with torch.no_grad():
        enc_forget = encode_prompts(pipe, forget).to(device, torch.float32)  # (F, 77, D)
        enc_override = encode_prompts(pipe, override).to(device, torch.float32)  # (F, 77, D)
        enc_remain = encode_prompts(pipe, remain).to(device, torch.float32)  # (R, 77, D)
        uncond = encode_prompts(pipe, [""]).to(device, torch.float32)  # (1, 77, D)
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    b_r = config.batch if config.remain_weight > 0 else 0
    b_f = config.batch if config.forget_weight > 0 else 0
    weights = torch.cat([torch.full((b_r,), config.remain_weight), torch.full((b_f,), config.forget_weight)])
    bsz = b_r + b_f

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning of G and the fake score (bsz, 77, D), teacher's conditioning (bsz, 77, D))."""
        ir = torch.randint(len(remain), (b_r,), generator=gen)
        jf = torch.randint(len(forget), (b_f,), generator=gen)
        own = torch.cat([enc_remain[ir], enc_forget[jf]])
        target = torch.cat([enc_remain[ir], enc_override[jf]])
        return own, target

    def noised(x0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = torch.randint(config.t_min, config.t_max, (x0.shape[0],), generator=gen).to(device)
        n = torch.randn(x0.shape, generator=gen).to(device)
        a = abar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * n, t, n

    def x0_of(eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t].view(-1, 1, 1, 1)
        return (x - (1 - a).sqrt() * eps) / a.sqrt()

    def step(i: int, gen: torch.Generator) -> float:
        # ---- fake score: denoising score matching on the generator's current samples (no gradient to G)
        own, _ = draw(gen)
        z = torch.randn((bsz, c, s, s), generator=gen).to(device)
        with torch.no_grad():
            x0 = generator_x0(gen_unet, z, own, config.t_init, abar)
        enc = own
        if config.fake_guidance != 1.0 and config.cond_dropout > 0:
            drop = (torch.rand(bsz, generator=gen) < config.cond_dropout).to(device).view(-1, 1, 1)
            enc = torch.where(drop, uncond.expand(bsz, -1, -1), own)
        x_t, t, n = noised(x0, gen)
        eps_f = guided_eps(fake, x_t, t, enc, uncond, config.fake_guidance)
        loss_f = ((eps_f - n) ** 2).sum(dim=(1, 2, 3)).mul(weights.to(device)).sum() / config.batch
        _finite(loss_f, "fake-score", i)
        opt_f.zero_grad(set_to_none=True)
        loss_f.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_value_(f_params, config.grad_clip)
        opt_f.step()

        # ---- generator: SiD loss, remain prompts toward the teacher, forget prompts toward the override's score
        fake.requires_grad_(False)
        try:
            own, target = draw(gen)
            z = torch.randn((bsz, c, s, s), generator=gen).to(device)
            x0 = generator_x0(gen_unet, z, own, config.t_init, abar)
            x_t, t, _ = noised(x0, gen)
            y_fake = x0_of(guided_eps(fake, x_t, t, own, uncond, config.fake_guidance), x_t, t)
            y_real = x0_of(guided_eps(teacher, x_t, t, target, uncond, teacher_w), x_t, t)
            per = sid_generator_loss(x0, y_real, y_fake, config.alpha)
            loss_g = per.mul(weights.to(device)).sum() / config.batch
            _finite(loss_g, "generator", i)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        finally:
            fake.requires_grad_(True)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_value_(g_params, config.grad_clip)
        opt_g.step()
        return float(loss_g.detach())

    loop = TrainingLoop("sfd", config, hooks, trainable={"unet": gen_unet, "fake": fake},
                        optimizer=_Optimizers(g=opt_g, f=opt_f),
                        key_extra={"forget": forget, "override": override, "remain": remain,
                                   "model": pipe.unet.config.get("_name_or_path", "")})

    def render():
        gen_unet.eval()
        try:
            shown = gen_unet if base_dtype == torch.float32 else copy.deepcopy(gen_unet).to(base_dtype)
            one = pipe_with(pipe, unet=shown, scheduler=one_step_scheduler(pipe.scheduler, config.t_init))
            return render_check(one, request.erase, TrainHooks(
                check_prompts=hooks.check_prompts, check_seeds=hooks.check_seeds, sample_steps=1,
                guidance=ONE_STEP_GUIDANCE))
        finally:
            gen_unet.train()

    log = loop.run(step, render=render)
    gen_unet.eval()
    tensors = changed_tensors("unet", gen_unet, chosen, base_dtype)
    info = {"train": log.to_dict(), "parameters": len(chosen),
            "trained_numel": int(sum(p.numel() for p in g_params)),
            "fake_score_numel": int(sum(p.numel() for p in f_params)),
            "sampling": {"steps": 1, "guidance": ONE_STEP_GUIDANCE, "t_init": int(config.t_init),
                         "scheduler": "EulerDiscreteScheduler(use_karras_sigmas=True, sigma_max=sigma(t_init), "
                                      "final_sigmas_type='zero')"},
            "teacher_guidance": float(teacher_w), "forget_prompts": forget, "override_prompts": override,
            "remain_prompts": len(remain)}
    return tensors, info


METHOD = Method(name="sfd", config_cls=SFDConfig, run=run, trains=True,
                paper="Chen, Zhang, Zhou, Score Forgetting Distillation: A Swift, Data-Free Method for Machine "
                      "Unlearning in Diffusion Models, ICLR 2025")

__all__ = ["SFDConfig", "forget_pairs", "generator_x0", "one_step_pipeline", "one_step_scheduler", "remain_prompts",
           "sampling_of", "save_one_step_model", "sid_generator_loss"]
