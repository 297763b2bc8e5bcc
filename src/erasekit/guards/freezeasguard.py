"""FreezeAsGuard: Mitigating Illegal Adaptation of Diffusion Models via Selective Tensor Freezing.
Kai Huang, Wei Gao, 2024. arXiv:2405.17472; official code: github.com/pittisl/FreezeAsGuard (`src/mask_learner.py`
learns the mask, `src/mixed_full_trainer.py` the "relearned" model it starts from, `src/target_trainer.py` /
`src/innocent_trainer.py` fine-tune with the mask applied).

A publisher-side protection that changes no weight. The publisher learns a binary mask over the UNet's tensors; the
tensors it selects are frozen in every user fine-tune (enforced by the publisher's fine-tuning API), chosen so that
fine-tuning can no longer adapt the model to an *illegal* domain while *legal* domains still adapt. It is therefore
not an `Edit` (nothing to apply at inference) but a `FreezeMask` (tensor names + soft scores, saved as JSON), and the
relearning attack enforces it: `run_attack("relearn", pipe, concept, freeze="mask.json", params="full")`.

Per UNet tensor i a soft mask m_i = sigmoid(x_i / T) (T = `temperature`, x_i ~ U(0, 1) at start: every m_i > 0.5).
With theta_pre the published weights and delta the simulated user's fine-tuned change, the weights seen are

    theta_i = theta_pre_i + (1 - m_i) delta_i             (m_i = 1: frozen at the published value)

and the two levels alternate, one releaser step every `user_interval` steps, the user otherwise:

    releaser:  x <- x - d/dx [ (-L_illegal(theta) + L_legal(theta)) / 2 + c_sparsity (r - mean_i m_i)^2 ]
    user:      delta <- delta - d/d(delta) [ (L_illegal(theta) + L_legal(theta)) / 2 ]

L_* is the standard denoising loss on the domain's images (VAE latents, captions naming the concept), r =
`freeze_ratio`. delta starts from a "relearned" model: `relearn_steps` steps of full fine-tuning on the mixed
illegal + legal images (official: a separate full fine-tune, mixed_full_trainer.py). The final mask freezes the
`round(r * n)` tensors with the largest m_i.

Defaults. Official (README example): freeze_ratio 0.2 (argparse default 0.8), temperature 0.2, c_sparsity 5e3,
mask_lr 10 (plain gradient step), user_lr 1e-5 (plain SGD), user_interval 5 (argparse default 2), 2000 steps, batch
16, 100 images per target person + 100 innocent images; relearned model 2000 steps of AdamW lr 1e-5, bf16, 512 px.
Ours (toy model, 2 CPU cores): freeze_ratio 0.2, temperature 0.2, c_sparsity 5e3, user_interval 2, 60 steps, 30
relearn steps, Adam for both levels (mask_lr 0.05, user_lr 1e-4, relearn_lr 1e-4), 8 images per domain, batch 2 per
domain.

What it does against relearning on the toy model (Zorbo illegal, Mossy legal) is measured in BENCHMARKS.md
("FreezeAsGuard on the toy model"), not quoted here.

Addition (not in the official code): `candidates` restricts the mask's domain to tensors matching fnmatch patterns,
so the mask can be learned over exactly the tensors a restricted attacker trains (e.g. the cross-attention K/V that
the `xattn-kv` relearning attack fine-tunes); the official mask chooses among every UNet tensor (the default).

Deviations from the official code:
- Adam on x and on delta instead of hand-written plain gradient steps with mask_lr 10 / user_lr 1e-5: the size of
  dL/dm_i = <grad_i, -delta_i> depends on the model and on how far the relearned model moved, so a plain step tuned
  for SD1.5 after 2000 steps is no step size for a 4 M-parameter toy after 30; Adam is scale-free. (Adam on delta also
  normalises away the official (1 - m)^2 gradient scaling; the weights still move only by (1 - m) delta.)
- The mask's gradient comes from autograd through theta = theta_pre + (1 - m) delta (the official code computes the
  same chain rule by hand: sum(param_diff * grad) m (1 - m) / T).
- The final mask is the top round(r n) tensors by m (exactly the requested share, so a random control of the same
  size is well defined); the official code thresholds m > 0.5 and relies on the sparsity penalty to land near r.
- The illegal and legal losses come from two batches (one per domain) instead of one mixed batch weighted by a
  per-sample "ffi" flag; same objective. Latents are the VAE posterior mean (official: a sample), no random flip.
- The relearned model is trained inside the call for `relearn_steps` steps on the same images (official: a separate
  2000-step run, possibly on an erased model: its README optionally erases the targets with UCE first; do that
  with `erasekit.erase(..., "uce", ...)` and `edit.apply(pipe)` before calling this).
- Only UNet tensors are masked (as the official code: `unet.parameters()`); text encoder and VAE are not fine-tuned.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from ..config import Configurable, check_min
from ..errors import ErasekitError, InvalidValueError
from ..optim import grad_step

FORMAT = "erasekit-freeze-mask/1"
MAKE = "erasekit.guards.freezeasguard.learn_freeze_mask(...).save(PATH)"
PAPER = ("Huang & Gao, FreezeAsGuard: Mitigating Illegal Adaptation of Diffusion Models via Selective Tensor "
         "Freezing, 2024 (arXiv:2405.17472)")
N_TEMPLATES = 16  # caption templates drawn per concept


@dataclass(frozen=True)
class FreezeAsGuardConfig:
    freeze_ratio: float = field(default=0.2, metadata={
        "help": "share of UNet tensors frozen (official README example 0.2; argparse default 0.8)"})
    steps: int = field(default=60, metadata={"help": "bilevel steps (releaser + simulated user); official 2000"})
    relearn_steps: int = field(default=30, metadata={
        "help": "steps of the simulated user's full fine-tune the mask starts from (official: a 2000-step run)"})
    user_interval: int = field(default=2, metadata={
        "help": "one releaser (mask) step every this many steps, user steps otherwise (official default 2)"})
    temperature: float = field(default=0.2, metadata={"help": "T in m = sigmoid(x / T) (official 0.2)"})
    c_sparsity: float = field(default=5e3, metadata={
        "help": "weight of (freeze_ratio - mean m)^2 (official README 5e3)"})
    mask_lr: float = field(default=0.05, metadata={"help": "Adam learning rate of the mask logits x"})
    user_lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the simulated user's fine-tune"})
    relearn_lr: float = field(default=1e-4, metadata={"help": "Adam learning rate of the relearned model"})
    n_images: int = field(default=8, metadata={"help": "images per concept, drawn by the pipeline's world"})
    batch_size: int = field(default=2, metadata={"help": "images per domain per step"})
    seed: int = field(default=0, metadata={"help": "seed of mask init, images, noise and timesteps"})
    candidates: tuple[str, ...] = field(default=(), metadata={
        "help": "fnmatch patterns over 'unet.<parameter name>' restricting the tensors the mask chooses from, e.g. "
                "('*attn2.to_k.*', '*attn2.to_v.*') to match an attacker who trains only those; () = every UNet "
                "tensor (official)"})

    def __post_init__(self) -> None:
        if isinstance(self.candidates, str):
            object.__setattr__(self, "candidates", tuple(c.strip() for c in self.candidates.split(",") if c.strip()))
        if not (0.0 < self.freeze_ratio < 1.0) or math.isnan(self.freeze_ratio):
            raise InvalidValueError(f"freeze_ratio must be in (0, 1), got {self.freeze_ratio!r}; e.g. 0.2")
        check_min(self, 1, "steps", "user_interval", "n_images", "batch_size")
        check_min(self, 0, "relearn_steps", "c_sparsity")
        check_min(self, 0, "temperature", "mask_lr", "user_lr", "relearn_lr", strict=True)
        for name in ("temperature", "c_sparsity", "mask_lr", "user_lr", "relearn_lr"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidValueError(f"{name} must be finite, got {getattr(self, name)!r}")


# ------------------------------------------------------------------------------------------------ the mask
@dataclass(frozen=True)
class FreezeMask:
    """Which UNet tensors a fine-tune must leave frozen. frozen: "unet.<parameter name>" of each frozen tensor;
    scores: every candidate tensor's soft mask value m in [0, 1] (1 = freeze; a random control stores 0/1);
    sizes: element count of every candidate tensor; info: how it was made (JSON-able)."""

    frozen: tuple[str, ...]
    scores: dict[str, float]
    sizes: dict[str, int]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [n for n in self.frozen if n not in self.sizes]
        if unknown:
            raise InvalidValueError(f"frozen tensor {unknown[0]!r} is not among the mask's {len(self.sizes)} "
                                    "candidate tensors")

    @property
    def share_tensors(self) -> float:
        """Frozen tensors / candidate tensors."""
        return len(self.frozen) / max(1, len(self.sizes))

    @property
    def share_parameters(self) -> float:
        """Frozen elements / candidate elements."""
        return sum(self.sizes[n] for n in self.frozen) / max(1, sum(self.sizes.values()))

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "frozen": list(self.frozen), "scores": self.scores,
                           "sizes": self.sizes, "info": self.info}, sort_keys=True, indent=1, allow_nan=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the mask as JSON (atomic); refuses an existing file unless `overwrite`."""
        from ..io import atomic_write_text, check_writable

        return atomic_write_text(check_writable(path, overwrite, "freeze mask"), self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> FreezeMask:
        from ..io import read_json_file

        def parse(d: dict) -> FreezeMask:
            scores = {str(k): float(v) for k, v in d["scores"].items()}
            if not all(math.isfinite(v) for v in scores.values()):
                raise ValueError("non-finite score")
            return cls(tuple(str(n) for n in d["frozen"]), scores, {str(k): int(v) for k, v in d["sizes"].items()},
                       dict(d.get("info", {})))

        return read_json_file(path, FORMAT, "freeze mask", MAKE, parse)

    def check(self, pipe: Any) -> None:
        """Raise unless every frozen tensor exists in `pipe` with the recorded size."""
        params = dict(pipe.unet.named_parameters())
        for name in self.frozen:
            p = params.get(name.removeprefix("unet."))
            if p is None or p.numel() != self.sizes[name]:
                raise InvalidValueError(f"freeze mask tensor {name!r} does not match this pipeline's UNet; learn the "
                                        "mask on the model you publish")

    def apply_to(self, pipe: Any) -> None:
        """The publisher's fine-tuning API: `requires_grad_(False)` on every frozen UNet tensor of `pipe` (as the
        official target_trainer.py does), so any ordinary optimiser leaves them unchanged."""
        self.check(pipe)
        params = dict(pipe.unet.named_parameters())
        for name in self.frozen:
            params[name.removeprefix("unet.")].requires_grad_(False)


def candidate_tensors(pipe: Any, patterns: Sequence[str] = ()) -> dict[str, torch.nn.Parameter]:
    """{"unet.<name>": parameter} of every floating-point UNet tensor, in module order (the official mask's domain);
    with `patterns` (fnmatch), only the tensors whose "unet.<name>" matches one of them. Refuses patterns that match
    nothing (a silent empty domain would learn no mask)."""
    from fnmatch import fnmatchcase

    cands = {f"unet.{n}": p for n, p in pipe.unet.named_parameters() if p.is_floating_point()}
    if patterns:
        cands = {n: p for n, p in cands.items() if any(fnmatchcase(n, pat) for pat in patterns)}
        if not cands:
            raise InvalidValueError(f"candidates {list(patterns)!r} match no UNet tensor; names look like "
                                    f"'unet.{next(iter(pipe.unet.state_dict()))}' (fnmatch patterns, e.g. "
                                    "'*attn2.to_k.*')")
    return cands


def random_mask(pipe: Any, n_frozen: int, seed: int = 0, candidates: Sequence[str] = ()) -> FreezeMask:
    """Control: `n_frozen` UNet tensors drawn uniformly at random from the candidate domain (every UNet tensor, or
    those matching `candidates`; the official target_trainer's "random_mask" scheme draws by ratio; pass
    round(ratio * n))."""
    cands = candidate_tensors(pipe, candidates)
    if not 0 < n_frozen <= len(cands):
        raise InvalidValueError(f"n_frozen must be in 1..{len(cands)}, got {n_frozen}")
    names = list(cands)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    frozen = tuple(sorted((names[i] for i in order[:n_frozen]), key=names.index))
    chosen = set(frozen)
    return FreezeMask(frozen, {n: float(n in chosen) for n in names}, {n: p.numel() for n, p in cands.items()},
                      {"method": "random", "seed": seed, "candidates": list(candidates)})


# ------------------------------------------------------------------------------------------------ learning
def _domain(pipe: Any, world: Any, concepts: Sequence[str], config: FreezeAsGuardConfig,
            offset: int) -> tuple[torch.Tensor, list[list[str]]]:
    """(latents (N, 4, h, w), per image its captions) of `n_images` world images of each concept."""
    from ..attacks._recovery import resize, templates, vae_latents, world_images
    from ..generation import image_size

    ims, caps = [], []
    for j, concept in enumerate(concepts):
        images = world_images(world, concept, config.n_images, config.seed + offset + 7919 * j)
        if images is None:
            raise InvalidValueError(f"world {getattr(world, 'name', None)!r} cannot draw images of {concept!r}; "
                                    "FreezeAsGuard needs images of every illegal and legal concept")
        name = world.concept(concept).name
        texts = [t.format(name) for t in templates(types.SimpleNamespace(world=world), name, N_TEMPLATES,
                                                      config.seed)]
        ims.append(resize(np.ascontiguousarray(images), image_size(pipe)))
        caps += [texts] * len(images)
    return vae_latents(pipe, np.concatenate(ims)), caps


def learn_freeze_mask(pipe: Any, illegal: Sequence[str] | str, legal: Sequence[str] | str = (),
                      config: FreezeAsGuardConfig | None = None, world: Any = None, **options: Any) -> FreezeMask:
    """Learn which UNet tensors of `pipe` to freeze so that fine-tuning cannot adapt to the `illegal` concepts while
    the `legal` ones still adapt (see the module docstring). `pipe` is never modified. world: where the concepts'
    images come from (default: the pipeline's). options: FreezeAsGuardConfig fields (when `config` is None)."""
    from ..worlds import world_of_model

    if config is not None and options:
        raise InvalidValueError("pass either config= or options, not both")
    cfg = config if config is not None else METHOD.make_config(options)
    illegal = (illegal,) if isinstance(illegal, str) else tuple(illegal)
    legal = (legal,) if isinstance(legal, str) else tuple(legal)
    if not illegal or not all(isinstance(c, str) and c.strip() for c in illegal + legal):
        raise InvalidValueError(f"illegal must name at least one concept and every name must be non-empty; got "
                                f"illegal={illegal!r} legal={legal!r}")
    world = world if world is not None else world_of_model(pipe)
    with torch.enable_grad():
        return _learn(pipe, illegal, legal, cfg, world)


def _learn(pipe: Any, illegal: tuple[str, ...], legal: tuple[str, ...], cfg: FreezeAsGuardConfig,
           world: Any) -> FreezeMask:
    from ..attacks._recovery import batch_indices, denoising_loss
    from ..sampling import encode_prompts

    t0 = time.perf_counter()
    with torch.no_grad():
        domains = [_domain(pipe, world, illegal, cfg, 0)] + ([_domain(pipe, world, legal, cfg, 104729)] if legal else [])
    cands = candidate_tensors(pipe, cfg.candidates)
    names = list(cands)
    pre = {n: p.detach() for n, p in cands.items()}
    gen = torch.Generator().manual_seed(cfg.seed)
    step_no = [0]

    def losses(weights: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Denoising loss of the next batch of each domain under `weights` (UNet-relative names)."""
        w = {k.removeprefix("unet."): v.to(pipe.unet.dtype) for k, v in weights.items()}

        def unet(x, t, encoder_hidden_states):
            return functional_call(pipe.unet, w, (x, t), {"encoder_hidden_states": encoder_hidden_states})

        out = []
        for d, (lat, caps) in enumerate(domains):
            idx = batch_indices(len(lat), cfg.batch_size, step_no[0], cfg.seed + d)
            texts = [caps[i][int(torch.randint(len(caps[i]), (1,), generator=gen))] for i in idx]
            loss = denoising_loss(pipe, lat[idx].to(pipe.unet.device), encode_prompts(pipe, texts), gen, unet=unet)
            if not torch.isfinite(loss):
                raise ErasekitError(f"FreezeAsGuard: non-finite loss at step {step_no[0]}; lower the learning rates")
            out.append(loss)
        step_no[0] += 1
        return out

    # 1. the relearned model: the simulated user's full fine-tune on the mixed domains (delta = theta_ft - theta_pre)
    delta = {n: torch.zeros_like(w, dtype=torch.float32, requires_grad=True) for n, w in pre.items()}
    opt = torch.optim.Adam(list(delta.values()), lr=cfg.relearn_lr)
    relearn_log = []
    for _ in range(cfg.relearn_steps):
        ls = losses({n: pre[n] + delta[n] for n in names})
        loss = sum(ls) / len(ls)
        grad_step(opt, loss, list(delta.values()))
        relearn_log.append(round(float(loss.detach()), 6))

    # 2. bilevel: releaser steps on the mask logits x, user steps on delta
    x = torch.rand(len(names), generator=torch.Generator().manual_seed(cfg.seed)).requires_grad_(True)
    opt_x = torch.optim.Adam([x], lr=cfg.mask_lr)
    opt_user = torch.optim.Adam(list(delta.values()), lr=cfg.user_lr)
    releaser_log: list[dict[str, float]] = []
    user_log: list[float] = []
    for step in range(cfg.steps):
        m = torch.sigmoid(x / cfg.temperature)  # (n,)
        if step % cfg.user_interval == 0:
            ls = losses({n: pre[n] + (1 - m[i]) * delta[n].detach() for i, n in enumerate(names)})
            mixed = (-ls[0] + (ls[1] if len(ls) > 1 else 0.0)) / 2
            sparsity = (cfg.freeze_ratio - m.mean()) ** 2
            (gx,) = torch.autograd.grad(mixed + cfg.c_sparsity * sparsity, [x])
            x.grad = gx
            opt_x.step()
            opt_x.zero_grad(set_to_none=True)
            releaser_log.append({"illegal": round(float(ls[0].detach()), 6),
                                 "legal": round(float(ls[1].detach()), 6) if len(ls) > 1 else None,
                                 "mean_m": round(float(m.detach().mean()), 4)})
        else:
            md = m.detach()
            ls = losses({n: pre[n] + (1 - md[i]) * delta[n] for i, n in enumerate(names)})
            loss = sum(ls) / len(ls)
            grad_step(opt_user, loss, list(delta.values()))
            user_log.append(round(float(loss.detach()), 6))

    m = torch.sigmoid(x.detach() / cfg.temperature)
    k = max(1, round(cfg.freeze_ratio * len(names)))
    top = set(torch.topk(m, k).indices.tolist())
    frozen = tuple(n for i, n in enumerate(names) if i in top)
    scores = {n: round(float(m[i]), 6) for i, n in enumerate(names)}
    info = {"method": "freezeasguard", "paper": PAPER, "illegal": list(illegal), "legal": list(legal),
            "config": {**asdict(cfg), "candidates": list(cfg.candidates)}, "seconds": round(time.perf_counter() - t0, 3), "relearn_losses": relearn_log,
            "releaser": releaser_log, "user_losses": user_log, "soft_above_half": int((m > 0.5).sum())}
    return FreezeMask(frozen, scores, {n: p.numel() for n, p in cands.items()}, info)


@dataclass(frozen=True)
class Guard(Configurable):
    """A registered fine-tuning guard: its config dataclass and `run(pipe, illegal, legal, config) -> FreezeMask`."""

    name: str
    config_cls: type
    run: Any
    paper: str = ""


METHOD = Guard("freezeasguard", FreezeAsGuardConfig, learn_freeze_mask, paper=PAPER)

__all__ = ["FORMAT", "FreezeAsGuardConfig", "FreezeMask", "Guard", "METHOD", "candidate_tensors",
           "learn_freeze_mask", "random_mask"]
