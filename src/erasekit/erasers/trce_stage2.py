"""TRCE stage 2: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion Models. Chen et al. ICCV 2025.
arXiv:2503.07389; official code: github.com/ddgoodgood/TRCE (run_trce_stage2.py, stage2_data_preparation.py,
config/stage2/*.yaml). Stage 1 (the [EoT] closed form) is `erasers/trce.py`.

Stage 1 edits the cross-attention K/V in closed form; stage 2 fine-tunes the *early* denoising steps (high noise, where
the layout of a malicious image is decided) with a contrastive, DPO-like hinge, starting from the stage-1 model. Per
optimiser step, for a malicious prompt m and its safe counterpart s (eps_ref: the original model before stage 1,
eps_s1: the stage-1 model, eps_theta: the model being trained, initialised from eps_s1):

    x_t, t   <- DDIM with CFG `start_guidance` on m by the original model, stopped after k ~ U{0..K_early - 1} of
                `ddim_steps` (K_early = round(early_frac * ddim_steps): early steps only)
    prefer   =  eps_ref(x_t, s) + g (eps_ref(x_t, s) - eps_ref(x_t, ""))          g = `guidance` (official 15)
    reject   =  eps_ref(x_t, m) + g (eps_ref(x_t, m) - eps_ref(x_t, ""))
    h(p)     =  max(0, beta (||p - prefer||^2 - ||p - reject||^2 + margin))         (MSE means)
    L_target =  (h(eps_theta(x_t, m)) + h(eps_theta(x_t, ""))) / 2
    L_keep   =  mean_r || eps_theta(x_r, t_r, "") - eps_s1(x_r, t_r, "") ||^2        x_r: unconditional DDIM latents
                                                                                   at any step (later steps kept)
    L        =  L_target + preserve_scale L_keep                                     (AdamW)

Trainable (official): every self-attention parameter (`attn1`) and the cross-attention queries (`attn2.to_q`).

Stage 1 runs inside this method by default (`stage1=True`, `erasers.trce` with its defaults on the same erase/guide/
preserve prompts): the returned tensors are stage 1's to_k/to_v plus stage 2's trained tensors, one `Edit` that
reverts to the original model. `stage1=False` fine-tunes the pipeline as given (e.g. one with a stage-1 edit already
applied): its UNet is then both the reference and the regulariser.

`erase` are the malicious prompts, `guide` their safe counterparts (one for all or one per prompt; default ""). With
`templates` (prompt augmentation, e.g. the world's training templates) each pair is also trained inside each template
("a red circle, {}": "a red circle, gore" vs "a red circle"), which gives the safe counterparts the official data
have ("a photo of {nudity phrase}" vs "a photo of {dressed phrase}").

Defaults. Official: AdamW lr 1e-6 (betas 0.9/0.999, weight decay 0.01), 3 epochs over 100 trajectories (300 steps),
guidance 15, beta 1, margin 0.01, preserve_scale 100, early steps 0..25 of 50 DDIM steps, 4 regularisation latents per
step. Ours: 120 steps, lr 1e-4, 20 DDIM steps (early_frac 0.5), 2 regularisation latents, so that the toy model is
edited within the "~3 minutes on 2 CPU cores" budget; pass steps=300 lr=1e-6 ddim_steps=50 reg_batch=4 for the
official settings on SD1.x. On the toy model stage 1 alone already erases gore (the first check stops stage 2 after
25 steps with the same numbers as stage 1: BENCHMARKS.md), so stage 2's own effect is not measured there.

Deviations from the official code:
  - Trajectories are drawn fresh each step (`partial_ddim`, from `seed`) instead of 5 pickled 50-step trajectories per
    prompt prepared beforehand; the timestep fed with x_t is its DDIM timestep. The official code pairs the latent
    *after* DDIM step k with the timestep of step k (about 20 timesteps noisier than the latent) and, in the
    regulariser, pairs the latent of step k with a timestep drawn in another bucket; we read both as accidents.
  - Gradients are zeroed every step; the official loop never calls `optimizer.zero_grad()`, so its gradients
    accumulate over the whole run (with lr 1e-6 this acts like a growing momentum); we treat that as a bug.
  - The regularisation latents come from the original model's unconditional DDIM sampling with CFG 1 on ""
    (official: 2,000 pickled trajectories of "" with "CFG 7.5", which for the prompt "" equals CFG 1).
  - The official constant 0.01 added to the regulariser sum (no effect on gradients) is dropped.
  - Float32 training copies whatever the pipeline's dtype; changed tensors are cast back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import check_min
from ..errors import InvalidValueError
from ..sampling import encode_prompts
from . import EraseRequest, Method
from ._training import (TrainHooks, TrainingConfig, TrainingLoop, changed_tensors, frozen_copy, partial_ddim,
                        render_unet_check, trainable_copy)
from .concepts import check_templates


def trainable(name: str) -> bool:
    """Official stage-2 parameter set: every `attn1` parameter and the cross-attention query `attn2.to_q`."""
    return ".attn1." in name or ".attn2.to_q." in name


@dataclass(frozen=True)
class TRCEStage2Config(TrainingConfig):
    steps: int = field(default=120, metadata={"help": "optimiser steps (official: 3 epochs x 100 trajectories = 300)"})
    lr: float = field(default=1e-4, metadata={"help": "AdamW learning rate (official 1e-6)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (official 0.01)"})
    guidance: float = field(default=15.0, metadata={
        "help": "g of the prefer/reject targets eps(p) + g (eps(p) - eps('')) (official 15)"})
    beta: float = field(default=1.0, metadata={"help": "scale of the contrastive hinge (official 1)"})
    margin: float = field(default=0.01, metadata={"help": "hinge margin (official 0.01)"})
    preserve_scale: float = field(default=100.0, metadata={
        "help": "weight of the regulariser toward the stage-1 model on unconditional latents (official 100)"})
    reg_batch: int = field(default=2, metadata={"help": "regularisation latents per step (official 4)"})
    ddim_steps: int = field(default=20, metadata={"help": "DDIM steps of the trajectories (official 50)"})
    early_frac: float = field(default=0.5, metadata={
        "help": "train the contrastive term on the first early_frac of the DDIM steps (official 26 of 50)"})
    start_guidance: float = field(default=3.0, metadata={"help": "CFG of the malicious trajectories (official 3)"})
    stage1: bool = field(default=True, metadata={
        "help": "run the TRCE stage-1 closed form first (official); False: fine-tune the pipeline as given"})
    templates: tuple[str, ...] = field(default=(), metadata={
        "help": "prompt templates with '{}': each malicious/safe pair is also trained inside each (prompt "
                "augmentation; the official data use 'a photo of {}' / 'an image depicting {}')"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_templates(self.templates)
        check_min(self, 0, "weight_decay", "guidance", "margin", "preserve_scale", "start_guidance")
        check_min(self, 0, "beta", strict=True)
        check_min(self, 0, "reg_batch")
        check_min(self, 1, "ddim_steps")
        if not 0.0 < self.early_frac <= 1.0:
            raise InvalidValueError(f"early_frac must be in (0, 1], got {self.early_frac}")


def prompt_pairs(request: EraseRequest, templates: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(malicious prompts, safe counterparts): each erase prompt with its guide, then both inside every template
    (the safe side without the separators left by an empty guide)."""
    bad, good = [], []
    for e, g in zip(request.erase, request.guides(""), strict=True):
        bad.append(e)
        good.append(g)
        for t in templates:
            bad.append(t.format(e))
            good.append(t.format(g).strip(" ,"))
    return bad, good


def hinge(pred: torch.Tensor, prefer: torch.Tensor, reject: torch.Tensor, beta: float, margin: float) -> torch.Tensor:
    """The official contrastive term max(0, beta (||pred - prefer||^2 - ||pred - reject||^2 + margin)), per sample
    (B,), MSE means over (C, h, w)."""
    dims = tuple(range(1, pred.dim()))
    close = F.mse_loss(pred, prefer, reduction="none").mean(dims)
    far = F.mse_loss(pred, reject, reduction="none").mean(dims)
    return torch.clamp(beta * (close - far + margin), min=0)


def run(pipe, request: EraseRequest, config: TRCEStage2Config, hooks: TrainHooks) -> tuple[dict, dict]:
    """Stage 1 (optional) + stage 2; returns ({"unet.<name>": tensor in the pipeline's dtype}, info)."""
    base_dtype, device = pipe.unet.dtype, pipe.unet.device
    ref = pipe.unet if base_dtype == torch.float32 else frozen_copy(pipe.unet).float()
    stage1: dict[str, torch.Tensor] = {}
    stage1_info: dict = {}
    start = copy.deepcopy(pipe.unet).float()
    if config.stage1:
        from .trce import TRCEConfig, trce

        with torch.no_grad():
            stage1, stage1_info = trce(pipe, request, TRCEConfig())
            params = dict(start.named_parameters())
            for name, w in stage1.items():
                params[name.removeprefix("unet.")].copy_(w.float())
    reg = frozen_copy(start)  # the stage-1 model (official unet_reg)
    trained, chosen = trainable_copy(start, trainable)
    del start
    trained.train()
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay, eps=1e-8)

    bad, good = prompt_pairs(request, config.templates)
    with torch.no_grad():
        cond_bad = encode_prompts(pipe, bad).to(device, torch.float32)  # (P, 77, D)
        cond_good = encode_prompts(pipe, good).to(device, torch.float32)  # (P, 77, D)
        uncond = encode_prompts(pipe, [""]).to(device, torch.float32)  # (1, 77, D)
    n_early = max(1, round(config.ddim_steps * config.early_frac))
    g = config.guidance

    def step(i: int, gen: torch.Generator) -> float:
        j = int(torch.randint(len(bad), (1,), generator=gen))
        m, s = cond_bad[j:j + 1], cond_good[j:j + 1]
        stop = int(torch.randint(n_early, (1,), generator=gen))
        x, t = partial_ddim(ref, pipe.scheduler, m, uncond, config.ddim_steps, stop, config.start_guidance, gen)
        with torch.no_grad():
            e_m, e_s, e_u = ref(torch.cat([x] * 3), t, encoder_hidden_states=torch.cat([m, s, uncond])).sample.chunk(3)
            prefer, reject = e_s + g * (e_s - e_u), e_m + g * (e_m - e_u)
        pred = trained(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([m, uncond])).sample  # (2, C, h, w)
        loss = hinge(pred, prefer.expand_as(pred), reject.expand_as(pred), config.beta, config.margin).mean()
        if config.reg_batch:
            stop_r = int(torch.randint(config.ddim_steps, (1,), generator=gen))
            xr, tr = partial_ddim(ref, pipe.scheduler, uncond, uncond, config.ddim_steps, stop_r, 1.0, gen,
                                  batch=config.reg_batch)
            u = uncond.expand(config.reg_batch, -1, -1)
            with torch.no_grad():
                keep = reg(xr, tr, encoder_hidden_states=u).sample
            loss = loss + config.preserve_scale * F.mse_loss(trained(xr, tr, encoder_hidden_states=u).sample, keep)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def render():
        return render_unet_check(pipe, trained, base_dtype, request.erase, hooks)

    loop = TrainingLoop("trce_stage2", config, hooks, trainable={"unet": trained}, optimizer=opt,
                        key_extra={"bad": bad, "good": good, "model": pipe.unet.config.get("_name_or_path", "")})
    log = loop.run(step, render=render)
    trained.eval()
    tensors = dict(stage1)
    tensors.update(changed_tensors("unet", trained, chosen, base_dtype))  # to_k/to_v (stage 1) are not trained
    info = {"train": log.to_dict(), "stage1": stage1_info if config.stage1 else None,
            "stage1_tensors": len(stage1), "trained_parameters": len(chosen),
            "trained_numel": int(sum(p.numel() for p in params)), "pairs": len(bad), "safe": good[:len(request.erase)]}
    return tensors, info


METHOD = Method(name="trce_stage2", config_cls=TRCEStage2Config, run=run, trains=True,
                paper="Chen et al., TRCE: Towards Reliable Malicious Concept Erasure in Text-to-Image Diffusion "
                      "Models, ICCV 2025 (stage 1 closed form + stage 2 contrastive early-step fine-tuning)")

__all__ = ["METHOD", "TRCEStage2Config", "hinge", "prompt_pairs", "run", "trainable"]
