"""ESD: Erasing Concepts from Diffusion Models. Gandikota, Materzynska, Fiotto-Kaufman, Bau. ICCV 2023.
arXiv:2303.07345; official code: github.com/rohitgandikota/erasing (current `esd_sd.py`; paper-era
`train-scripts/train-esd.py::train_esd`).

Fine-tunes a copy of the UNet so that its prediction for the concept c follows negatively guided predictions of the
frozen original model eps_o. Per optimiser step (batch 1):

    x_t, t  <- `partial_ddim`: `ddim_steps`-step DDIM from fresh noise, CFG `start_guidance` on c (or on
               `erase_from`), stopped after k ~ U{0, ..., K - 1} steps (K = ddim_steps, or its first
               `max_stop_frac` part); t is the DDIM timestep of x_t
    target  =  eps_o(x_t, c_from) - eta (eps_o(x_t, c) - eps_o(x_t, ""))      target="current" (esd_sd.py)
               eps_o(x_t, "")     - eta (eps_o(x_t, c) - eps_o(x_t, ""))      target="paper"   (train-esd.py)
    loss    =  || eps_theta(x_t, t, c_from) - target ||^2                      (Adam)

c_from = c unless `erase_from` is set (current code only). Without erase_from the two targets coincide when
eta_current = eta_paper + 1: eta=2 with target="current" (the current default) is eta=1 with target="paper" (the
paper's default). Several erase prompts: one is drawn per step (the paper-era `--seperator` behaviour).

Parameter sets (`train_method`, diffusers parameter names):
    esd-x         every parameter of the cross-attentions (`.attn2.`: to_q, to_k, to_v, to_out.0)
    esd-u         the paper's "noxattn": every parameter except the cross-attentions, the time embedding
                  (`time_embedding.`) and the output head (`conv_norm_out.`, `conv_out.`; CompVis `out.`)
    esd-x-strict  cross-attention to_k and to_v only
    esd-all       every parameter ("full")

Trajectory: the current code samples x_t with the frozen model (`trajectory="frozen"`, our default: the targets then
come from a fixed distribution of latents and the objective does not drift while training); the paper-era code samples
with the model being trained (`trajectory="trained"`, offered as an option: on-policy, it keeps pushing where the
edited model still goes).

Defaults. Official current: 200 iterations, Adam lr 5e-5, eta 2, start guidance 3, 50 DDIM steps, bf16 weights;
paper-era: 1000 iterations, lr 1e-5, eta 1 (paper target), start guidance 3, 50 DDIM steps. Our defaults keep eta 2,
start guidance 3, esd-x, the frozen trajectory and 200 steps, but use lr 1e-3 and 20 DDIM steps so that the shipped
toy model erases within the "~2 minutes on 2 CPU cores" budget (see bench/erasure.py); pass lr=5e-5 ddim_steps=50
for the official settings on SD1.x (lr 1e-3 is far too high for SD-sized cross-attentions).

On the toy world, training on the bare name alone erases the bare name but not the name inside longer prompts
("Zorbo by Greta Lund" stays ~90% detected after 150 steps at lr 1e-3): the toy text encoder's padding/EOS rows, which
differ between contexts, carry the concept. `templates` (prompt augmentation, as UCE's expand_prompts; not in the
official code) fixes that: with 8 toy training-caption templates the direct prompts fall to ~10% in 150 steps.

Where ESD trains matters for styles (measured on the toy world, bench/erasure.py): a toy artist's style is fixed in
the first ~2 of 10 sampling steps, while uniform stops put 1/2 of the training latents at noise levels where the
style is already decided and the MSE weights levels by the size of eps(c) - eps("") there, which is smallest early
for the artist (RMS 0.048 vs 0.078 late; a character's gap is 2-3x larger). The target itself erases (sampling with
ESD's target in place of eps(c) gives 0% detection). With the default uniform stops esd-x+templates leaves the artist
at 75% after 200 steps; `max_stop_frac=0.5` (training latents only from t >= 501) erases it to 0% with specificity
100% in 75 steps. Characters are decided later, so 0.5 is worse for them and stays off by default.

Deviations from the official code:
  - Training runs in float32 copies whatever the pipeline's dtype (official: bf16 weights); the changed tensors are
    cast back to the pipeline's dtype. The frozen model is the pipeline's own UNet when it is float32, else a float32
    copy.
  - The current code samples SD1.4 latents at 1024 px (`height=width=1024`, apparently copied from its SDXL script);
    we sample at the UNet's native `sample_size`.
  - The paper-era code feeds a timestep drawn uniformly inside the DDIM bucket (t ~ U[20k, 20k + 20) for 50 steps),
    roughly matching the noise level of x_t; we feed the DDIM timestep of x_t exactly, as the current code does.
  - `esd-u` is the paper's parameter set. The current code's `esd-u` (every Linear/Conv2d outside attn2, including
    the time embedding and conv_in/conv_out, excluding norms) is not offered.
  - `guide` and `preserve` of the request are not used: ESD has no preservation term (recorded in the edit's info).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import check_choice, check_min
from ..errors import InvalidValueError
from ..sampling import encode_prompts
from . import EraseRequest, Method
from .concepts import check_templates, expand
from ._training import (TrainHooks, TrainingConfig, TrainingLoop, changed_tensors, frozen_copy, partial_ddim,
                        render_unet_check, trainable_copy)

TARGETS = ("current", "paper")
TRAJECTORIES = ("frozen", "trained")


def _esd_u(name: str) -> bool:
    return ".attn2." not in name and not name.startswith(("time_embedding.", "conv_norm_out.", "conv_out."))


# parameter-name predicates over `UNet2DConditionModel.named_parameters()`
PARAMETER_SETS: dict[str, Callable[[str], bool]] = {
    "esd-x": lambda n: ".attn2." in n,
    "esd-u": _esd_u,
    "esd-x-strict": lambda n: ".attn2.to_k." in n or ".attn2.to_v." in n,
    "esd-all": lambda n: True,
}


@dataclass(frozen=True)
class ESDConfig(TrainingConfig):
    steps: int = field(default=200, metadata={"help": "optimiser steps (official: 200 current, 1000 paper-era)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (official: 5e-5 current, 1e-5 paper-era)"})
    train_method: str = field(default="esd-x", metadata={
        "help": "parameters trained: esd-x (attn2), esd-u (paper: all but attn2, time embedding, output head), "
                "esd-x-strict (attn2 to_k/to_v), esd-all"})
    negative_guidance: float = field(default=2.0, metadata={
        "help": "eta; target='current' eta=2 equals target='paper' eta=1 (official: 2 current, 1 paper)"})
    target: str = field(default="current", metadata={
        "help": "'current': eps(c_from) - eta (eps(c) - eps('')); 'paper': eps('') - eta (eps(c) - eps(''))"})
    start_guidance: float = field(default=3.0, metadata={"help": "CFG scale of the partial sampling of x_t (official 3)"})
    ddim_steps: int = field(default=20, metadata={"help": "DDIM steps of the partial sampling of x_t (official 50)"})
    max_stop_frac: float = field(default=1.0, metadata={
        "help": "draw the stop step k from the first max_stop_frac of the DDIM steps, i.e. train only at the "
                "highest noise levels (official 1.0; 0.5 erases toy artists, whose style is set early)"})
    trajectory: str = field(default="frozen", metadata={
        "help": "model that samples x_t: 'frozen' original (current code) or 'trained' (paper-era code)"})
    templates: tuple[str, ...] = field(default=(), metadata={
        "help": "prompt templates with '{}' ('a painting of {}'): each erase prompt is also trained inside each "
                "(prompt augmentation; not in the official code)"})
    erase_from: str = field(default="", metadata={
        "help": "prompt to erase the concept from (current code's --erase_from; '' = the concept itself)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_templates(self.templates)
        for name, valid in (("train_method", tuple(PARAMETER_SETS)), ("target", TARGETS),
                            ("trajectory", TRAJECTORIES)):
            check_choice(name, getattr(self, name), valid)
        check_min(self, 1, "ddim_steps")
        if not 0.0 < self.max_stop_frac <= 1.0:
            raise InvalidValueError(f"max_stop_frac must be in (0, 1], got {self.max_stop_frac}")
        check_min(self, 0, "start_guidance")
        if self.erase_from and self.target == "paper":
            raise InvalidValueError(f"erase_from={self.erase_from!r} needs target='current' (the paper-era target "
                                    "has no erase-from prompt)")


def parameter_names(unet: torch.nn.Module, train_method: str) -> list[str]:
    """Names of the UNet parameters that `train_method` trains, in `named_parameters()` order."""
    check_choice("train_method", train_method, tuple(PARAMETER_SETS))
    pick = PARAMETER_SETS[train_method]
    return [n for n, _ in unet.named_parameters() if pick(n)]


def esd_target(eps_c: torch.Tensor, eps_null: torch.Tensor, eps_from: torch.Tensor, eta: float,
               target: str) -> torch.Tensor:
    """The ESD regression target (B, 4, h, w) from the frozen model's predictions on c, "" and c_from."""
    base = eps_from if target == "current" else eps_null
    return base - eta * (eps_c - eps_null)


def unet_pair(pipe, train_method: str) -> tuple[torch.nn.Module, torch.nn.Module, list[str]]:
    """(frozen, trained, chosen): the frozen reference UNet in float32 (the pipeline's own when it is float32), a
    trainable float32 copy whose `train_method` parameters (`parameter_names`) alone require grad, in train mode,
    and those parameters' names. What ESD and the UNet fine-tuning methods built on its loop start from."""
    frozen = pipe.unet if pipe.unet.dtype == torch.float32 else frozen_copy(pipe.unet).float()
    names = set(parameter_names(pipe.unet, train_method))
    trained, chosen = trainable_copy(pipe.unet, lambda n: n in names)
    trained.train()
    return frozen, trained, chosen


def run(pipe, request: EraseRequest, config: ESDConfig, hooks: TrainHooks) -> tuple[dict, dict]:
    """Train ESD; returns ({"unet.<name>": tensor in the pipeline's dtype}, info)."""
    base_dtype, device = pipe.unet.dtype, pipe.unet.device
    frozen, trained, chosen = unet_pair(pipe, config.train_method)
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)

    erase = expand(request.erase, config.templates)
    with torch.no_grad():
        cond = encode_prompts(pipe, erase).to(device, torch.float32)  # (P, 77, D)
        uncond = encode_prompts(pipe, [""]).to(device, torch.float32)  # (1, 77, D)
        src = encode_prompts(pipe, [config.erase_from]).to(device, torch.float32) if config.erase_from else None

    def step(i: int, gen: torch.Generator) -> float:
        j = int(torch.randint(len(erase), (1,), generator=gen))
        c = cond[j:j + 1]
        c_from = c if src is None else src
        stop = int(torch.randint(max(1, round(config.ddim_steps * config.max_stop_frac)), (1,), generator=gen))
        sampler = frozen if config.trajectory == "frozen" else trained
        x, t = partial_ddim(sampler, pipe.scheduler, c_from, uncond, config.ddim_steps, stop,
                            config.start_guidance, gen)
        with torch.no_grad():
            encs = [c, uncond] + ([] if src is None else [src])
            eps = frozen(torch.cat([x] * len(encs)), t, encoder_hidden_states=torch.cat(encs)).sample
            eps_c, eps_null = eps[0:1], eps[1:2]
            eps_from = eps_c if src is None else eps[2:3]
            goal = esd_target(eps_c, eps_null, eps_from, config.negative_guidance, config.target)
        pred = trained(x, t, encoder_hidden_states=c_from).sample
        loss = F.mse_loss(pred, goal)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    loop = TrainingLoop("esd", config, hooks, trainable={"unet": trained}, optimizer=opt,
                        key_extra={"erase": erase, "model": pipe.unet.config.get("_name_or_path", "")})

    def render():
        return render_unet_check(pipe, trained, base_dtype, request.erase, hooks)

    log = loop.run(step, render=render)
    trained.eval()
    tensors = changed_tensors("unet", trained, chosen, base_dtype)
    info = {"train": log.to_dict(), "parameters": len(chosen),
            "trained_numel": int(sum(p.numel() for p in params)),
            "unused": {"guide": list(request.guide or ()), "preserve": list(request.preserve)}}
    return tensors, info


METHOD = Method(name="esd", config_cls=ESDConfig, run=run, trains=True,
                paper="Gandikota et al., Erasing Concepts from Diffusion Models, ICCV 2023")
