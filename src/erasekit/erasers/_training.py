"""Machinery shared by the fine-tuning erasers (ESD, few-shot, AdvUnlearn, SPM): one training loop with a progress
bar, a seed, a step/time budget, resumable checkpoints and an early stop on a concept check.

A trainer method (registered with `Method(..., trains=True)`) is called as `run(pipe, request, config, hooks)`:

    config: a dataclass inheriting `TrainingConfig` (steps, lr, seed, max_seconds, check_every, stop_at, ...);
    hooks:  a `TrainHooks` (the success check, progress bar, checkpoint folder) - objects that are not config values.

and does, with its own trainable copy of the modules it changes:

    loop = TrainingLoop("esd", config, hooks, trainable={"unet": unet}, optimizer=opt)
    log = loop.run(step_fn, render=lambda: render_check(pipe_with(pipe, unet=unet), prompts, hooks))

`step_fn(i, gen) -> float` performs optimiser step i (gen: the loop's torch.Generator, checkpointed with it) and
returns the loss. The loop stops at `config.steps`, at `config.max_seconds`, or when the check's detection rate on
the erase prompts falls to `config.stop_at` or below (checked every `config.check_every` steps).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError
from ..io import load_checkpoint
from ..sampling import partial_ddim  # re-exported: ESD, SPM and AdvUnlearn import it from here

# images (N, H, W, 3) uint8 -> (N,) bool "the concept is present" (the toy oracle, NudeNet, any callable)
Check = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TrainingConfig:
    """Options every trainer has. Subclasses add their method's options (all with defaults)."""

    steps: int = field(default=200, metadata={"help": "budget: optimiser steps"})
    lr: float = field(default=1e-5, metadata={"help": "learning rate"})
    seed: int = field(default=0, metadata={"help": "seed of noise, timesteps and initialisation"})
    max_seconds: float | None = field(default=None, metadata={"help": "budget: wall seconds (none = no limit)"})
    check_every: int = field(default=0, metadata={
        "help": "steps between concept checks (0 = never; needs a check, e.g. the toy oracle)"})
    stop_at: float = field(default=0.0, metadata={
        "help": "early stop once the check's detection rate on the erase prompts is <= this"})
    checkpoint_every: int = field(default=0, metadata={"help": "steps between checkpoints (0 = none)"})

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InvalidValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise InvalidValueError(f"lr must be > 0, got {self.lr}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InvalidValueError(f"max_seconds must be > 0 or None, got {self.max_seconds}")
        for name in ("check_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.stop_at <= 1.0:
            raise InvalidValueError(f"stop_at must be in [0, 1], got {self.stop_at}")


@dataclass
class TrainHooks:
    """What a trainer gets besides its config: objects, not settings (so they stay out of the edit's manifest).

    check: images -> (N,) bool, the concept check for early stopping; check_prompts / check_seeds: what is rendered
    for it (default: the erase prompts, seeds 0..3); sample_steps / guidance: how; progress: show a tqdm bar;
    checkpoint_dir: where checkpoints go (a run with the same config resumes from them)."""

    check: Check | None = None
    check_prompts: Sequence[str] = ()
    check_seeds: Sequence[int] = (0, 1, 2, 3)
    sample_steps: int = 10  # early-stop renders are cheap previews, not evaluation images
    guidance: float | None = None  # None: the model's default
    progress: bool = False
    checkpoint_dir: str | os.PathLike | None = None


def concept_hooks(world: Any, evaluator: Any, concept: str, n_prompts: int = 4, seeds: Sequence[int] = (0, 1),
                  **hook_fields: Any) -> TrainHooks:
    """`TrainHooks` whose early-stop check is `evaluator.shows(images, concept)` on `n_prompts` direct prompts of
    `concept` from `world` x `seeds` (any world, any `erasekit.evaluators.Evaluator` or registered name);
    `hook_fields` set the other fields (progress, checkpoint_dir, ...)."""
    from ..evaluators import get_evaluator
    from ..worlds import get_world

    world, evaluator = get_world(world), get_evaluator(evaluator)
    name = world.concept(concept).name
    evaluator.target(name)  # an evaluator that cannot see the concept fails before any training
    prompts = list(dict.fromkeys(p.text for p in world.prompts(name, "direct", n_prompts, 0))) or [name]

    def check(images: Any) -> Any:
        return evaluator.shows(images, name)

    check.__name__ = f"{evaluator.name}[{name}]"
    return TrainHooks(check=check, check_prompts=tuple(prompts), check_seeds=tuple(seeds), **hook_fields)


@dataclass
class TrainLog:
    """What happened: steps done, wall seconds, loss per step, checks [{step, rate}], why it stopped
    ("steps" | "time" | "check"), the step it resumed from (0 = fresh)."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = dataclasses.field(default_factory=list)
    checks: list[dict] = dataclasses.field(default_factory=list)
    stopped: str = "steps"
    resumed_from: int = 0

    def to_dict(self, max_losses: int = 200) -> dict:
        """JSON-able summary; the loss curve is subsampled to at most `max_losses` points."""
        stride = max(1, -(-len(self.losses) // max_losses))
        return {"steps": self.steps, "seconds": round(self.seconds, 3), "stopped": self.stopped,
                "resumed_from": self.resumed_from, "loss_stride": stride,
                "losses": [round(x, 6) for x in self.losses[::stride]],
                "final_loss": self.losses[-1] if self.losses else None, "checks": self.checks}


# ------------------------------------------------------------------------------------------------ helpers
def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode with every parameter frozen (the "original model" of ESD-style targets)."""
    m = copy.deepcopy(module).eval()
    m.requires_grad_(False)
    return m


def trainable_copy(module: torch.nn.Module, names: Callable[[str], bool]) -> tuple[torch.nn.Module, list[str]]:
    """A float32 deep copy with only the parameters whose name satisfies `names` trainable; returns (copy, names).
    Raises when nothing matches (a parameter-set typo would otherwise train nothing)."""
    m = copy.deepcopy(module).float()
    m.requires_grad_(False)
    chosen = []
    for n, p in m.named_parameters():
        if names(n):
            p.requires_grad_(True)
            chosen.append(n)
    if not chosen:
        raise InvalidValueError(f"no parameter of {type(module).__name__} matches the selected parameter set")
    return m, chosen


def changed_tensors(prefix: str, module: torch.nn.Module, names: Sequence[str], dtype: torch.dtype) -> dict:
    """{"<prefix>.<name>": tensor cast back to the base dtype} for the trained parameters `names` of `module`."""
    params = dict(module.named_parameters())
    return {f"{prefix}.{n}": params[n].detach().to(dtype).clone() for n in names}


def pipe_with(pipe: StableDiffusionPipeline, **components: Any) -> StableDiffusionPipeline:
    """A pipeline sharing `pipe`'s components except those given (e.g. unet=trained_unet); `pipe` is unchanged."""
    comps = dict(pipe.components) | components
    out = StableDiffusionPipeline(**comps, requires_safety_checker=False)  # the base had none either (no warning)
    out.set_progress_bar_config(disable=True)
    return out


def render_check(pipe: StableDiffusionPipeline, prompts: Sequence[str], hooks: TrainHooks) -> np.ndarray:
    """Images of every check prompt x check seed (N, H, W, 3) uint8, no gradients."""
    from ..generation import generate

    prompts = list(hooks.check_prompts or prompts)
    ps = [p for p in prompts for _ in hooks.check_seeds]
    seeds = [int(s) for _ in prompts for s in hooks.check_seeds]
    with torch.no_grad():
        return generate(pipe, ps, seeds, steps=hooks.sample_steps, guidance=hooks.guidance)


def render_unet_check(pipe: StableDiffusionPipeline, unet: torch.nn.Module, dtype: torch.dtype,
                      prompts: Sequence[str], hooks: TrainHooks) -> np.ndarray:
    """`render_check` of `pipe` with the trained `unet` swapped in: eval mode, the pipeline's `dtype` (a copy only
    when it differs); the UNet is back in train mode afterwards. The `render` of the UNet fine-tuning methods."""
    unet.eval()
    try:
        shown = unet if next(unet.parameters()).dtype == dtype else copy.deepcopy(unet).to(dtype)
        return render_check(pipe_with(pipe, unet=shown), prompts, hooks)
    finally:
        unet.train()


def _config_key(method: str, config: Any, extra: Any = None) -> str:
    blob = json.dumps({"method": method, "config": dataclasses.asdict(config), "extra": extra}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ the loop
class TrainingLoop:
    """Runs `step_fn` under the config's budget with progress, checkpoints and early stopping.

    trainable: {name: module} whose trainable parameters are checkpointed; optimizer: checkpointed with them.
    key_extra: anything besides the config that identifies the run (e.g. the erase prompts) for resuming."""

    def __init__(self, method: str, config: TrainingConfig, hooks: TrainHooks | None,
                 trainable: Mapping[str, torch.nn.Module], optimizer: torch.optim.Optimizer, key_extra: Any = None):
        self.method, self.config, self.hooks = method, config, hooks or TrainHooks()
        self.trainable, self.optimizer = dict(trainable), optimizer
        self.gen = torch.Generator().manual_seed(int(config.seed))
        self.log = TrainLog()
        self.ckpt: Path | None = None
        if self.hooks.checkpoint_dir is not None and config.checkpoint_every:
            key = _config_key(method, config, key_extra)
            self.ckpt = Path(self.hooks.checkpoint_dir) / f"{method}-{key}.pt"

    # -------------------------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict:
        return {"modules": {k: {n: p.detach().clone() for n, p in m.named_parameters() if p.requires_grad}
                            for k, m in self.trainable.items()},
                "optimizer": self.optimizer.state_dict(), "gen": self.gen.get_state(),
                "log": dataclasses.asdict(self.log)}

    def save(self) -> None:
        """Write a checkpoint atomically (temp file + rename)."""
        if self.ckpt is None:
            return
        self.ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(f".tmp{os.getpid()}")
        torch.save(self._state(), tmp)
        os.replace(tmp, self.ckpt)

    def resume(self) -> int:
        """Load the checkpoint of this exact run if there is one; returns the step to continue from."""
        if self.ckpt is None or not self.ckpt.exists():
            return 0
        st = load_checkpoint(self.ckpt)
        for k, params in st["modules"].items():
            named = dict(self.trainable[k].named_parameters())
            with torch.no_grad():
                for n, v in params.items():
                    named[n].copy_(v)
        self.optimizer.load_state_dict(st["optimizer"])
        self.gen.set_state(st["gen"])
        self.log = TrainLog(**st["log"])
        self.log.resumed_from = self.log.steps
        return self.log.steps

    # -------------------------------------------------------------------------------------------- run
    def check(self, render: Callable[[], np.ndarray] | None) -> float | None:
        """Detection rate of the concept on the check images now (None without a check)."""
        if self.hooks.check is None or render is None:
            return None
        flags = np.asarray(self.hooks.check(render()), dtype=bool)
        rate = float(flags.mean()) if flags.size else 0.0
        self.log.checks.append({"step": self.log.steps, "rate": rate})
        return rate

    def run(self, step_fn: Callable[[int, torch.Generator], float],
            render: Callable[[], np.ndarray] | None = None) -> TrainLog:
        cfg = self.config
        start = self.resume()
        t0 = time.perf_counter() - self.log.seconds
        bar = None
        if self.hooks.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start, desc=self.method, unit="step")
        self.log.stopped = "steps"
        try:
            for i in range(start, cfg.steps):
                if cfg.max_seconds is not None and time.perf_counter() - t0 >= cfg.max_seconds:
                    self.log.stopped = "time"
                    break
                loss = float(step_fn(i, self.gen))
                self.log.losses.append(loss)
                self.log.steps = i + 1
                self.log.seconds = time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}")
                if cfg.checkpoint_every and self.log.steps % cfg.checkpoint_every == 0:
                    self.save()
                if cfg.check_every and self.log.steps % cfg.check_every == 0 and self.log.steps < cfg.steps:
                    rate = self.check(render)
                    if rate is not None and rate <= cfg.stop_at:
                        self.log.stopped = "check"
                        break
        finally:
            if bar is not None:
                bar.close()
        self.log.seconds = time.perf_counter() - t0
        if cfg.check_every and self.log.stopped != "check":
            self.check(render)  # the final state's rate, for the log
        return self.log


__all__ = ["Check", "TrainHooks", "TrainLog", "TrainingConfig", "TrainingLoop", "changed_tensors", "frozen_copy",
           "partial_ddim", "pipe_with", "render_check", "trainable_copy"]
