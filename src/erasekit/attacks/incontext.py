"""In-context re-introduction: Hu et al. (Shumailov, Hayes, Yona, ... Papernot), "UnUnlearning: Unlearning is not
sufficient for content regulation in advanced generative AI", 2024. An erased concept can come back through the
*context* instead of the weights or the prompt: here, img2img from a reference image of the concept.

Each attacked prompt i is replaced by a `neutral_prompt` that never names the concept (checked against the concept's
name, erase prompts and keywords); the image starts from reference image i mod R (R = `n_images`, drawn by the world or
given) noised to `strength` (diffusers' StableDiffusionImg2ImgPipeline schedule: the last round(steps x strength)
steps of the sampler, x_start = add_noise(z_ref, eps_seed, t_start)) and is denoised with classifier-free guidance on
the neutral prompt. Success = the evaluator sees the concept in the output.

Control (recorded in `Replay.info["control"]`): the same procedure, seeds and prompt from a reference image of an
unrelated concept (`control`, default: the world's first unrelated concept it can draw); its detection rate of the
*attacked* concept is the false-positive floor the post-attack rate should be compared with.

Shields: the neutral prompt goes through the shield's `prepare` (a refused prompt gives a black image) and
`condition` hooks, the outputs through its image filter (blocked, not regenerated). No paper-official code exists for
images (UnUnlearning argues the point for LLMs); the img2img setting follows diffusers' pipeline.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError
from . import AttackContext, AttackMethod, AttackResult, Outcome, Replay
from ._recovery import RecoveryConfig, concept_images, concept_names, images_digest, names_pattern, world_images


@dataclass(frozen=True)
class InContextConfig(RecoveryConfig):
    steps: int = field(default=0, metadata={"help": "unused (no optimisation); the budget is strength x n_images"})
    strength: float = field(default=0.6, metadata={
        "help": "budget: img2img strength in (0, 1] (1 = start from pure noise, the reference is ignored)"})
    n_images: int = field(default=4, metadata={"help": "reference images of the concept (prompt i uses i mod n)"})
    neutral_prompt: str = field(default="a picture", metadata={"help": "the prompt; must not name the concept"})
    control: str = field(default="", metadata={
        "help": "unrelated concept whose images are the control references ('' = the world's first unrelated "
                "concept it can draw; 'none' = no control)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        import math

        if not (isinstance(self.strength, (int, float)) and math.isfinite(self.strength) and 0 < self.strength <= 1):
            raise InvalidValueError(f"strength must be in (0, 1], got {self.strength!r}")
        if not self.neutral_prompt.strip():
            raise InvalidValueError("neutral_prompt must be a non-empty text that does not name the concept")


def check_neutral(ctx: AttackContext, text: str) -> None:
    """Refuse a neutral prompt that names the concept (name, erase prompts) or uses one of its keywords."""
    words = concept_names(ctx)
    if ctx.world is not None and ctx.world.knows(ctx.concept):
        words += list(ctx.world.concept(ctx.concept).keywords)
    hit = names_pattern(words).search(text) if words else None
    if hit:
        raise InvalidValueError(f"neutral_prompt={text!r} names the attacked concept ({hit.group(0)!r}); in-context "
                                "re-introduction needs a prompt that never names it, e.g. neutral_prompt='a picture'")


def control_concept(ctx: AttackContext, config: InContextConfig) -> str | None:
    """The control concept: `config.control`, or the world's first unrelated concept it can draw; None: no control."""
    if config.control.lower() == "none" or ctx.world is None:
        return None
    if config.control:
        if ctx.world.concept(config.control).name == ctx.concept:
            raise InvalidValueError(f"control={config.control!r} is the attacked concept; name an unrelated one")
        return ctx.world.concept(config.control).name
    for p in ctx.world.unrelated(ctx.concept, 8, config.seed):
        if world_images(ctx.world, p.concept, 1, config.seed) is not None:
            return p.concept
    return None


@torch.no_grad()
def img2img(ctx: AttackContext, references: torch.Tensor, prompts: list[str], seeds: list[int],
            strength: float) -> np.ndarray:
    """(B, H, W, 3) uint8: references (B, 4, h, w) VAE latents noised to `strength` and denoised with CFG on
    `prompts` through the target (and its shield: prepare, condition hooks, image filter)."""
    from ..sampling import decode, encode_prompts, step_kwargs
    from ..shields import Plan, as_shield, make_combine

    pipe = ctx.target
    shield = as_shield(ctx.shield) if ctx.shield is not None else None
    refused = np.zeros(len(prompts), dtype=bool)
    if shield is not None:
        prompts, refused, _ = shield.prepare(list(prompts))
        refused = np.asarray(refused, dtype=bool)
    plan = Plan(prompts=list(prompts), cond=encode_prompts(pipe, prompts), negative=[""] * len(prompts),
                steps=ctx.sample_steps, guidance=ctx.guidance)
    if shield is not None:
        plan, _ = shield.condition(pipe, plan)
    uncond = encode_prompts(pipe, plan.negative)
    extra = [c for term in plan.terms for c in term.conds]
    combine = make_combine(plan.guidance, plan.terms)
    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(plan.steps, device=pipe.unet.device)
    init = min(int(round(plan.steps * strength)), plan.steps)
    timesteps = sched.timesteps[(plan.steps - init) * sched.order:]
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, *references.shape[1:]), generator=g) for g in gens]).to(pipe.unet.device)
    x0 = references.to(pipe.unet.device, torch.float32)
    x = sched.add_noise(x0, noise, timesteps[:1].repeat(len(x0))).to(pipe.unet.dtype)
    kw = step_kwargs(sched, gens)
    b = len(x)
    with contextlib.ExitStack() as stack:
        for wrap in plan.wraps:
            stack.enter_context(wrap(pipe))
        for i, t in enumerate(timesteps):
            c = plan.cond
            for hook in plan.cond_hooks:
                c = hook(i, t, c)
            cs = [u.expand(b, -1, -1) if u.shape[0] == 1 else u for u in (uncond, c, *extra)]
            inp = sched.scale_model_input(torch.cat([x] * len(cs)), t)
            eps = pipe.unet(inp, t, encoder_hidden_states=torch.cat(cs).to(pipe.unet.dtype)).sample.chunk(len(cs))
            x = sched.step(combine(i, t, list(eps)), t, x, **kw).prev_sample
    images = decode(pipe, x)
    images[refused] = 0
    if shield is not None and shield.is_filter:
        images = ctx._filter(images, list(prompts))
    return images


def references(replay: Replay, key: str, seeds: list[int], seed0: int) -> torch.Tensor:
    """(B, 4, h, w): the reference latents of prompt i (seed seed0 + i) = tensors[key][i mod R]."""
    refs = replay.tensors[key]
    return refs[[(s - seed0) % len(refs) for s in seeds]]


def prepare(ctx: AttackContext, prompts: list[str], config: InContextConfig) -> Replay:
    """Reference latents of the concept (and of the control concept), and the control's detection rate."""
    from ._recovery import vae_latents

    check_neutral(ctx, config.neutral_prompt)
    images, source = concept_images(ctx, config)
    tensors = {"reference": vae_latents(ctx.target, images)}
    info: dict[str, Any] = {"strength": config.strength, "neutral_prompt": config.neutral_prompt,
                            "images": {"source": source, "count": len(images), "sha256": images_digest(images)},
                            "control": None}
    other = control_concept(ctx, config)
    if other is not None:
        cimg, _ = concept_images(ctx, config, concept=other, seed_offset=1)
        tensors["control"] = vae_latents(ctx.target, cimg)
        seeds = [config.seed + i for i in range(len(prompts))]
        out = img2img(ctx, references(Replay(tensors), "control", seeds, config.seed),
                      [config.neutral_prompt] * len(seeds), seeds, config.strength)
        hits = ctx.detected(out)
        info["control"] = {"concept": other, "detection": float(np.mean(hits)), "per_prompt": hits.tolist()}
    return Replay(tensors, info)


def incontext(ctx: AttackContext, prompt: str, seed: int, config: InContextConfig, state: Replay) -> Outcome:
    """The neutral prompt, rendered from the concept's reference image (see `render`)."""
    control = state.info["control"]
    extra = {"strength": config.strength}
    if control is not None:
        extra["control"] = control["concept"]
        extra["control_detection"] = control["detection"]
    return Outcome(prompt=config.neutral_prompt, steps=0, extra=extra)


def render(ctx: AttackContext, result: AttackResult, seeds: list[int]) -> np.ndarray:
    """(K, H, W, 3) img2img images of the result's (neutral) prompts from the concept's reference latents."""
    strength = float(result.config["strength"])
    refs = references(result.replay, "reference", list(seeds), int(result.config["seed"]))
    return img2img(ctx, refs, list(result.adv_prompts), list(seeds), strength)


METHOD = AttackMethod("incontext", InContextConfig, incontext, kind="replay", prepare=prepare, render=render,
                      paper="Hu et al., UnUnlearning: Unlearning is not sufficient for content regulation in "
                            "advanced generative AI, 2024")

__all__ = ["InContextConfig", "METHOD", "check_neutral", "control_concept", "img2img", "incontext", "prepare",
           "references", "render"]
