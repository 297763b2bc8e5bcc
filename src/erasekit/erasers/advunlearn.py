"""AdvUnlearn: Zhang, Chen, Jia, Zhang, Liu, Fan, Hong, Liu, "Defensive Unlearning with Adversarial Training for Robust
Concept Erasure in Diffusion Models", NeurIPS 2024. arXiv:2405.15234; official code: github.com/OPTML-Group/AdvUnlearn
(train-scripts/AdvUnlearn.py, utils/attack_util.py::soft_prompt_attack, utils/get_loss.py::get_train_loss_retain).

Adversarial training of the text encoder E_phi (UNet frozen), a min-max problem solved by alternation:

  inner (the soft-prompt attack, erasekit.attacks.softprompt): a prefix delta (k, D) in word-embedding space,
      [BOS, delta, c, EOS], minimising || eps(z_t, t, E_phi([delta; c])) - eps_o(z_t, t, E_o(c)) ||^2 (Adam, or signed
      gradients for "fast_at");
  outer (ESD objective + utility-retaining regularisation, retain_train="reg"):
      || eps(z_t, t, E_phi([delta*; c])) - [eps_o(z_t, "") - eta (eps_o(z_t, c) - eps_o(z_t, ""))] ||^2
      + w_r || eps(z_r, t, E_phi(c_r)) - eps_o(z_r, t, E_o(c_r)) ||^2,

z_t / z_r: partial DDIM trajectories (CFG `start_guidance`) of the original model conditioned on c / on a batch of
retain prompts c_r, stopped at a random step (fresh each attack and outer step). The first `warmup` iterations are
clean (delta empty). Trainable: every text-encoder layer + the final layer norm (token and position embeddings frozen).
The result is a text encoder only, so it can be swapped into any pipeline sharing the original text encoder
(plug-and-play): apply the edit there, or `export_text_encoder(pipe, edit, folder)` writes a `save_pretrained` folder.

Official defaults (README command): 1000 iterations, Adam lr 1e-5, eta 1, start guidance 3, DDIM 50, k = 1 prefix
token, 30 attack steps, attack lr 1e-3, pgd, random init, an attack every iteration, warmup 200, retain batch 5 of
243 COCO-object prompts ("a photo of chair"), retain weight 0.3. Ours are sized for the toy model (minutes on 2 CPU
cores, see `AdvUnlearnConfig`): 60 iterations, lr 5e-4, DDIM 10, 5 attack steps, warmup 10, and a concept check
(when one is given, e.g. the toy oracle) every 20 iterations, later than the warmup so that an early stop never ends
training before any adversarial iteration. On the toy world lr 1e-3 erases in 10-20 iterations but hurts neighbouring
characters more; 1e-4 still shows the concept in half the images after 60.

Retain prompts (the official coco_object list is not shipped): `retain=` if given; else the world's retain prompts for the
concept (`World.retain_prompts`; the toy world's 64 "a <colour> <object>" prompts), and otherwise "a photo of <object>"
for 24 COCO objects; prompts
containing an erase prompt are dropped, and the request's `preserve` prompts are added (`retain_preserve`).

Deviations from the official code:
  - Bug fixed: the official attack loop never zeroes the adversarial gradient (step k follows the sum of all earlier
    gradients); `accumulate_grads=True` reproduces it (erasekit.conditioning.gradient_step).
  - Prefix positions come from the tokenizer (official: the prompt's word count `len(word.split())`, which cuts or
    pads multi-token words such as most names).
  - The UNet is evaluated at the timestep the DDIM trajectory reached (official: DDIM steps sampled with the ESD code
    base's index -> DDPM time convention, pairing a latent with another noise level), as in erasekit's soft-prompt
    attack.
  - retain_train="iter" (a separate retain step after each update; the argparse default, with retain weight 1.0) is
    not offered; the README's "reg" is. The official `--lr` is declared `type=int` (a float on the command line
    fails), so its runs use the default 1e-5.
  - The request's `preserve` prompts join the retain pool (the official code has no preserve list); set
    `retain_preserve=False` for the official pool.
  - Retain prompts are drawn without replacement from per-epoch shuffles derived from (seed, epoch) (official: the same
    without a fixed order across restarts); the adversarial prefix is not checkpointed, so a resumed run re-attacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..conditioning import encode_embeds, fill, gradient_step, layout, token_table
from ..config import check_choice, check_min
from ..errors import InvalidValueError
from . import EraseRequest, Method
from ._text_encoder import epoch_batch, export_text_encoder, layer_selector, optimiser_step, tokenize
from ._training import TrainHooks, TrainingConfig, TrainingLoop, changed_tensors, partial_ddim, pipe_with, \
    render_check, trainable_copy

ATTACK_METHODS = ("pgd", "fast_at")
ATTACK_INITS = ("random", "latest")
# a stand-in for the official coco_object retain list (COCO category names, "a photo of <object>")
COCO_OBJECTS = ("chair", "fridge", "banana", "street sign", "printer", "handbag", "bicycle", "car", "bus", "train",
                "boat", "bench", "bird", "dog", "horse", "umbrella", "bottle", "cup", "bowl", "pizza", "clock", "vase",
                "laptop", "book")


@dataclass(frozen=True)
class AdvUnlearnConfig(TrainingConfig):
    steps: int = field(default=60, metadata={"help": "budget: outer iterations (official: 1000)"})
    lr: float = field(default=5e-4, metadata={"help": "Adam learning rate of the text encoder (official: 1e-5)"})
    check_every: int = field(default=20, metadata={
        "help": "iterations between concept checks (0 = never; used only with a check, e.g. the toy oracle)"})
    warmup: int = field(default=10, metadata={"help": "first iterations without attack (official: 200)"})
    negative_guidance: float = field(default=1.0, metadata={"help": "eta of the ESD target (official: 1)"})
    start_guidance: float = field(default=3.0, metadata={"help": "CFG of the z_t trajectories (official: 3)"})
    ddim_steps: int = field(default=10, metadata={"help": "DDIM steps of the z_t trajectories (official: 50)"})
    attack_steps: int = field(default=5, metadata={"help": "soft-prompt attack steps per attack (official: 30)"})
    attack_lr: float = field(default=1e-3, metadata={"help": "attack Adam learning rate (official: 1e-3)"})
    attack_method: str = field(default="pgd", metadata={"help": "'pgd' (Adam) or 'fast_at' (signed gradient)"})
    attack_init: str = field(default="random", metadata={
        "help": "'random' tokens (README) or the 'latest' prefix (argparse default)"})
    adv_tokens: int = field(default=1, metadata={"help": "k, prefix embeddings of the attack (official: 1)"})
    attack_every: int = field(default=1, metadata={"help": "iterations between attacks (official: 1)"})
    accumulate_grads: bool = field(default=False, metadata={
        "help": "never zero the attack's gradients (official bug; off)"})
    retain: tuple[str, ...] = field(default=(), metadata={
        "help": "retain prompts (default: the world's retain prompts, else 'a photo of <COCO object>')"})
    retain_preserve: bool = field(default=True, metadata={"help": "add the request's preserve prompts to retain"})
    retain_batch: int = field(default=5, metadata={"help": "retain prompts per iteration (official: 5)"})
    retain_weight: float = field(default=0.3, metadata={"help": "w_r of the retain term (README: 0.3)"})
    train_final_norm: bool = field(default=True, metadata={"help": "train the final layer norm too (official)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min(self, 1, "ddim_steps", "adv_tokens", "attack_every", "retain_batch")
        check_min(self, 0, "warmup", "attack_steps", "negative_guidance", "retain_weight")
        check_min(self, 0, "attack_lr", "start_guidance", strict=True)
        for name, valid in (("attack_method", ATTACK_METHODS), ("attack_init", ATTACK_INITS)):
            check_choice(name, getattr(self, name), valid)
        blank = [p for p in self.retain if not p.strip()]
        if blank:
            raise InvalidValueError(f"retain contains an empty prompt {blank[0]!r}")


def trainable_names(train_final_norm: bool = True):
    """Parameter-name predicate of the official 'text_encoder_full' set: every encoder layer (+ final layer norm)."""
    return layer_selector(lambda layer, rest: layer is not None
                          or (train_final_norm and rest.startswith("final_layer_norm.")))


def retain_prompts(request: EraseRequest, config: AdvUnlearnConfig, world: Any = None) -> list[str]:
    """The retain pool: config.retain, or the world's retain prompts for the concept (`World.retain_prompts`), else
    "a photo of <COCO object>"; minus prompts that contain an erase prompt, plus the request's preserve prompts (if
    retain_preserve)."""
    from ..errors import UnknownNameError
    from ..worlds import get_world

    world = get_world(world)
    if config.retain:
        pool = list(config.retain)
    else:
        try:
            pool = list(world.retain_prompts(world.concept(request.erase[0]).name))
        except UnknownNameError:
            pool = []
        pool = pool or [f"a photo of {o}" for o in COCO_OBJECTS]
    erased = [e.lower() for e in request.erase]
    pool = [p for p in pool if not any(e in p.lower() for e in erased)]
    if config.retain_preserve:
        pool += [p for p in request.preserve if p not in pool]
    if not pool:
        raise InvalidValueError(f"no retain prompt is left: every one of {list(config.retain)} contains an erase "
                                f"prompt of {list(request.erase)}")
    return pool


def esd_target(e_0: torch.Tensor, e_p: torch.Tensor, eta: float) -> torch.Tensor:
    """eps_o("") - eta (eps_o(c) - eps_o("")): the negatively guided ESD target (B, 4, h, w)."""
    return e_0 - eta * (e_p - e_0)


def outer_loss(e_n: torch.Tensor, e_0: torch.Tensor, e_p: torch.Tensor, eta: float, retain_n: torch.Tensor | None,
               retain_p: torch.Tensor | None, weight: float) -> tuple[torch.Tensor, float, float]:
    """AdvUnlearn's outer loss ("reg"): mse(e_n, esd_target) + weight * mse(retain_n, retain_p); also returns the
    two terms. e_*: (1, 4, h, w) at the (adversarial) concept prompt; retain_*: (B, 4, h, w) or None."""
    unlearn = F.mse_loss(e_n.float(), esd_target(e_0, e_p, eta).float())
    if retain_n is None or weight == 0:
        return unlearn, float(unlearn.detach()), 0.0
    retain = F.mse_loss(retain_n.float(), retain_p.float())
    return unlearn + weight * retain, float(unlearn.detach()), float(retain.detach())


@dataclass
class _Original:
    """The original model's pieces: frozen UNet / scheduler, and cached original text encodings E_o(prompt)."""

    pipe: Any

    def __post_init__(self) -> None:
        self.cache: dict[str, torch.Tensor] = {}

    def enc(self, prompts: list[str]) -> torch.Tensor:
        """(B, L, D) E_o(prompts), cached per prompt."""
        from ..sampling import encode_prompts

        missing = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if missing:
            for p, e in zip(missing, encode_prompts(self.pipe, missing), strict=True):
                self.cache[p] = e
        return torch.stack([self.cache[p] for p in prompts])

    def trajectory(self, cond: torch.Tensor, n_steps: int, guidance: float, gen: torch.Generator,
                   stop: int | None = None) -> tuple[torch.Tensor, int]:
        """(z (B, 4, h, w), its timestep) after `stop` (default: random) of `n_steps` DDIM steps from fresh noise,
        conditioned on cond (B, L, D) with CFG `guidance`."""
        if stop is None:
            stop = int(torch.randint(0, n_steps, (1,), generator=gen))
        return partial_ddim(self.pipe.unet, self.pipe.scheduler, cond, self.enc([""]), n_steps, stop, guidance, gen,
                            batch=cond.shape[0])

    @torch.no_grad()
    def eps(self, z: torch.Tensor, t: int, cond: torch.Tensor) -> torch.Tensor:
        return self.pipe.unet(z, t, encoder_hidden_states=cond.expand(len(z), -1, -1)).sample


def soft_prompt(te_pipe: Any, orig: _Original, word: str, config: AdvUnlearnConfig, gen: torch.Generator,
                init: torch.Tensor | None = None) -> tuple[torch.Tensor, list[float]]:
    """The inner attack against the current text encoder (`te_pipe.text_encoder`): returns the prefix delta (k, D)
    and the attack losses. z_t comes from the original model conditioned on E_o(word), fresh each step; the target is
    eps_o(z_t, t, E_o(word)); only delta gets gradients (the text encoder's `.grad` is untouched)."""
    lay = layout(te_pipe, word, config.adv_tokens, "prefix")
    table = token_table(te_pipe).detach()
    if init is None:
        delta = table[torch.randint(0, table.shape[0], (config.adv_tokens,), generator=gen)].clone()
    else:
        delta = init.detach().clone()
    delta.requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=config.attack_lr)
    cond_o = orig.enc([word])
    unet = orig.pipe.unet
    losses = []
    for _ in range(config.attack_steps):
        z, t = orig.trajectory(cond_o, config.ddim_steps, config.start_guidance, gen)
        e_p = orig.eps(z, t, cond_o)
        cond = encode_embeds(te_pipe, fill(te_pipe, lay, delta)).to(unet.dtype)
        loss = F.mse_loss(unet(z, t, encoder_hidden_states=cond).sample.float(), e_p.float())
        gradient_step(opt, delta, loss, accumulate=config.accumulate_grads, sign=config.attack_method == "fast_at")
        losses.append(float(loss.detach()))
    return delta.detach(), losses


def advunlearn(pipe: Any, request: EraseRequest, config: AdvUnlearnConfig,
               hooks: TrainHooks) -> tuple[dict[str, torch.Tensor], dict]:
    """Erase `request.erase` with AdvUnlearn; returns ({text_encoder.* name: new tensor}, info)."""
    from ..worlds import world_of_model

    pool = retain_prompts(request, config, world_of_model(pipe))
    words = list(request.erase)
    te, names = trainable_copy(pipe.text_encoder, trainable_names(config.train_final_norm))
    te.eval()  # CLIP has no dropout; eval = train here
    params = [p for p in te.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr)
    te_pipe = pipe_with(pipe, text_encoder=te)
    orig = _Original(pipe)
    unet = pipe.unet
    state: dict[str, Any] = {"word": None, "delta": None, "attacks": 0, "attack_losses": [], "terms": []}

    def step(i: int, gen: torch.Generator) -> float:
        if state["word"] is None or i % config.attack_every == 0:
            state["word"] = words[int(torch.randint(len(words), (1,), generator=gen))]
            if i >= config.warmup:
                init = state["delta"] if config.attack_init == "latest" else None
                state["delta"], losses = soft_prompt(te_pipe, orig, state["word"], config, gen, init)
                state["attacks"] += 1
                state["attack_losses"].append(losses[-1] if losses else None)
        elif i >= config.warmup and state["delta"] is None:  # warmup ended inside an attack block, or resumed
            state["delta"], _ = soft_prompt(te_pipe, orig, state["word"], config, gen)
            state["attacks"] += 1
        word = state["word"]
        retain = [pool[j] for j in epoch_batch(len(pool), config.retain_batch, i, config.seed)]
        cond_o, retain_o = orig.enc([word]), orig.enc(retain)
        stop = int(torch.randint(0, config.ddim_steps, (1,), generator=gen))  # one noise level for both (official)
        z, t = orig.trajectory(cond_o, config.ddim_steps, config.start_guidance, gen, stop)
        e_0, e_p = orig.eps(z, t, orig.enc([""])), orig.eps(z, t, cond_o)
        retain_z = None
        if config.retain_weight > 0:
            retain_z, _ = orig.trajectory(retain_o, config.ddim_steps, config.start_guidance, gen, stop)
        if i >= config.warmup:
            lay = layout(te_pipe, word, config.adv_tokens, "prefix")
            cond_n = encode_embeds(te_pipe, fill(te_pipe, lay, state["delta"]))
        else:
            cond_n = te(tokenize(pipe, [word]).to(te.device))[0]
        e_n = unet(z, t, encoder_hidden_states=cond_n.to(unet.dtype)).sample
        retain_n = retain_p = None
        if retain_z is not None:
            retain_p = orig.eps(retain_z, t, retain_o)
            cond_r = te(tokenize(pipe, retain).to(te.device))[0]
            retain_n = unet(retain_z, t, encoder_hidden_states=cond_r.to(unet.dtype)).sample
        loss, u, r = outer_loss(e_n, e_0, e_p, config.negative_guidance, retain_n, retain_p, config.retain_weight)
        optimiser_step(opt, params, loss)
        state["terms"].append((u, r))
        return float(loss.detach())

    loop = TrainingLoop("advunlearn", config, hooks, trainable={"text_encoder": te}, optimizer=opt,
                        key_extra={"erase": request.erase, "retain": pool})
    log = loop.run(step, render=lambda: render_check(te_pipe, words, hooks))
    tensors = changed_tensors("text_encoder", te, names, pipe.text_encoder.dtype)
    terms = state["terms"]
    info = {"trainable": len(names), "retain_pool": len(pool), "attacks": state["attacks"],
            "attack_final_losses": [round(x, 6) for x in state["attack_losses"][-20:] if x is not None],
            "final_unlearn_loss": terms[-1][0] if terms else None,
            "final_retain_loss": terms[-1][1] if terms else None, "train": log.to_dict()}
    return tensors, info


METHOD = Method("advunlearn", AdvUnlearnConfig, advunlearn, trains=True,
                paper="Zhang et al., Defensive Unlearning with Adversarial Training for Robust Concept Erasure in "
                      "Diffusion Models (AdvUnlearn), NeurIPS 2024")

__all__ = ["AdvUnlearnConfig", "METHOD", "advunlearn", "esd_target", "export_text_encoder", "outer_loss",
           "retain_prompts", "soft_prompt", "trainable_names"]
