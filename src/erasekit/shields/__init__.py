"""Inference-time shields: no weight change, they wrap any SD1.x pipeline (base or edited).

A shield acts at up to three points of one generation, each an explicit hook of `Shield`:

    prepare(prompts)          text in, text out: rewrite prompts, refuse some (refused ones are never generated)
    condition(pipe, plan)     the conditioning of the explicit denoising loop (`erasekit.sampling`): the negative
                              prompt of the unconditional slot, a per-step hook on the conditional embedding, extra
                              guidance terms with their own conditionings (SLD)
    flag(images, prompts)     image filter: flagged images are blocked (black) or regenerated with fresh seeds

Registered: negative_prompt, rewrite, sld, guardians, detector, adavd, spm_transport (SPM's facilitated transport of
adapters from edit files), sae (ItD's sparse-autoencoder feature deactivation), image_filter.

Shields compose left to right ("detector+sld:strong"): prompts flow through every `prepare`, the plan through every
`condition`, and an image is flagged if any filter flags it. `shielded_generate` runs a chain end to end:

    from erasekit.shields import get_shield, shielded_generate
    shield = get_shield("negative_prompt+sld:strong", concepts=["Zorbo"])
    images, info = shielded_generate(pipe, ["a picture of Zorbo"], seeds=[0], shields=shield)

Spec grammar: shields joined by "+"; each is `name` or `name:opts`, opts comma-separated `key=value` pairs of the
shield's config (tuple values separated by ";"), or one bare value for the shield's primary option
(sld -> preset, detector -> action, image_filter -> action, guardians -> mix_weight).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from ..errors import InvalidValueError, UnknownNameError
from ..registry import Registry
from ..sampling import decode, denoise, encode_prompts

shields: Registry[type["Shield"]] = Registry("shield")
shields.add("negative_prompt", "erasekit.shields.negative_prompt:NegativePrompt",
            help="CopyCat negative prompt: the concept's name plus its trigger keywords")
shields.add("rewrite", "erasekit.shields.negative_prompt:PromptRewrite",
            help="prompt rewriting that drops named protected concepts (CopyCat's DALL-E-style baseline)")
shields.add("sld", "erasekit.shields.sld:SLD",
            help="Safe Latent Diffusion guidance away from a safety concept (presets weak/medium/strong/max)")
shields.add("guardians", "erasekit.shields.guardians:Guardians",
            help="Guardians of Generation: detect, rewrite, mix c = (1-w) E(p) + w E(p_rewrite); no LLM")
shields.add("detector", "erasekit.shields.detector:PromptDetector",
            help="prompt/embedding detector of protected concepts (token match + calibrated similarity); refuses")
shields.add("adavd", "erasekit.shields.adavd:AdaVD",
            help="AdaVD: project cross-attention values off the concept's value, adaptive shift (no weight change)")
shields.add("spm_transport", "erasekit.shields.spm_transport:SPMTransport",
            help="SPM adapters from edit files, scaled per prompt by facilitated transport (no weight change)")
shields.add("sae", "erasekit.shields.sae:SAEShield",
            help="ItD: one sparse autoencoder on the text encoder; deactivate a concept's features in prompts it "
                 "classifies as the concept (zero-shot)")
shields.add("geom_negative", "erasekit.shields.geom_negative:GeomNegative",
            help="Geom-Erasing's negative prompt of learned geometric tokens (existence + location; from its edit)")
shields.add("image_filter", "erasekit.shields.detector:ImageFilter",
            help="output filter (toy oracle, NudeNet or a user classifier): blocks or regenerates flagged images")


# ------------------------------------------------------------------------------------------------ protected concepts
@dataclass(frozen=True)
class ProtectedConcept:
    """A concept a shield protects: its name, trigger keywords, and the text rewriting puts in its place."""

    name: str
    keywords: tuple[str, ...] = ()
    anchor: str = ""  # replacement text for a removed reference ("" drops it)
    family: str = ""  # the world's family (evaluator head) when a world knows the concept, else ""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidValueError(f"a protected concept needs a non-empty name, got {self.name!r}")

    @property
    def terms(self) -> tuple[str, ...]:
        """Name then keywords: the phrases detectors and negative prompts use."""
        return (self.name, *self.keywords)


def protect(concepts: Sequence[str | ProtectedConcept],
            keywords: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
            anchors: Mapping[str, str] | None = None, world: Any = None) -> tuple[ProtectedConcept, ...]:
    """Resolve concept names into `ProtectedConcept`s.

    A name the `world` knows (an `erasekit.worlds.World` or registered name; default none) gets its canonical name,
    family and trigger keywords (`ConceptInfo.keywords`); any other name (a real-model concept such as "nudity" on
    SD1.5) is taken as given. `keywords` replaces the keywords: a {name: [...]} mapping, or a flat list when exactly
    one concept is given. `anchors` maps names to replacement text for rewriting.
    """
    from ..worlds import get_world

    world = get_world(world)
    out: list[ProtectedConcept] = []
    names = [c.name if isinstance(c, ProtectedConcept) else str(c) for c in concepts]
    if keywords is not None and not isinstance(keywords, Mapping):
        if len(names) != 1:
            raise InvalidValueError(f"a flat keyword list needs exactly one concept, got {len(names)}: {names}; "
                                    "pass {concept: [keywords]} instead")
        keywords = {names[0]: list(keywords)}
    keywords = {k.lower(): v for k, v in (keywords or {}).items()}
    anchors = {k.lower(): v for k, v in (anchors or {}).items()}
    for k in list(keywords) + list(anchors):
        if k not in [n.lower() for n in names]:
            raise InvalidValueError(f"keywords/anchor given for {k!r}, which is not among the protected concepts "
                                    f"{names}")
    for c in concepts:
        if isinstance(c, ProtectedConcept):
            base = c
        else:
            try:
                info = world.concept(str(c))
                base = ProtectedConcept(info.name, tuple(info.keywords),
                                        family=info.family if world.name != "none" else "")
            except UnknownNameError:
                base = ProtectedConcept(str(c).strip())
        kws = keywords.get(base.name.lower())
        base = dataclasses.replace(
            base, keywords=tuple(k.strip() for k in kws if k.strip()) if kws is not None else base.keywords,
            anchor=anchors.get(base.name.lower(), base.anchor))
        out.append(base)
    return tuple(out)


# --------------------------------------------------------------------------------------------------- the plan
class GuidanceTerm:
    """An extra term of the guidance direction g = eps_c - eps_u: it brings its own conditionings (`conds`, each
    (B or 1, 77, D)) and, per step, returns a tensor subtracted from g (or None for no change). May keep state
    (momentum); a fresh term is made for every batch."""

    conds: list[torch.Tensor]

    def __call__(self, i: int, t: torch.Tensor, eps_u: torch.Tensor, eps_c: torch.Tensor,
                 eps_extra: list[torch.Tensor]) -> torch.Tensor | None:
        raise NotImplementedError


# cond_hook(i, t, cond) -> the conditional embedding (B, 77, D) used at step i
CondHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Plan:
    """One batch's conditioning: what the loop evaluates and how the predictions are combined.

    The loop evaluates [E(negative), cond_at(i), *term conditionings] and combines
    eps = eps_u + guidance * (eps_c - eps_u - sum of terms). With no hooks and no terms this is plain CFG, bit-exact
    with `pipe(prompt, negative_prompt=...)`.
    """

    prompts: list[str]  # the text the model is conditioned on (after every `prepare`)
    cond: torch.Tensor  # (B, 77, D) E(prompts)
    negative: list[str]  # text of the unconditional slot per prompt ("" = plain classifier-free guidance)
    steps: int
    guidance: float
    cond_hooks: list[CondHook] = field(default_factory=list)
    terms: list[GuidanceTerm] = field(default_factory=list)
    # context managers entered around the denoising loop, each made by wrap(pipe) (AdaVD's attention processors)
    wraps: list[Callable[[StableDiffusionPipeline], contextlib.AbstractContextManager]] = field(default_factory=list)


def make_combine(guidance: float, terms: Sequence[GuidanceTerm]) -> Callable[[int, torch.Tensor, list[torch.Tensor]],
                                                                                torch.Tensor]:
    """Guidance rule on [uncond, cond, *term conds]: g = eps_c - eps_u; g -= term(...) per term; eps_u + w g.
    (The operation order equals diffusers' CFG and StableDiffusionPipelineSafe, so results match bit for bit.)"""
    sizes = [len(term.conds) for term in terms]

    def combine(i: int, t: torch.Tensor, eps: list[torch.Tensor]) -> torch.Tensor:
        eps_u, eps_c = eps[0], eps[1]
        g = eps_c - eps_u
        k = 2
        for term, n in zip(terms, sizes):
            corr = term(i, t, eps_u, eps_c, eps[k:k + n])
            k += n
            if corr is not None:
                g = g - corr
        return eps_u + guidance * g

    return combine


# -------------------------------------------------------------------------------------------------- the base
class Shield:
    """Base class: every hook does nothing; a shield overrides the ones it needs.

    Subclasses set `name`, `config_cls` (a frozen dataclass) and optionally `primary` (the config field a bare spec
    value sets), `needs_pipe` (its constructor calibrates on a pipeline's text encoder) and `is_filter`.
    """

    name: ClassVar[str] = "shield"
    config_cls: ClassVar[type] = type(None)
    primary: ClassVar[str | None] = None
    needs_pipe: ClassVar[bool] = False
    is_filter: ClassVar[bool] = False

    def __init__(self, config: Any = None, concepts: Sequence[str | ProtectedConcept] = (),
                 pipe: StableDiffusionPipeline | None = None):
        self.config = self.config_cls() if config is None else config
        if not isinstance(self.config, self.config_cls):
            raise InvalidValueError(f"{self.name} takes a {self.config_cls.__name__}, got {type(config).__name__}")
        self.concepts = protect(concepts)

    # hooks ---------------------------------------------------------------------------------------------------
    def prepare(self, prompts: list[str]) -> tuple[list[str], np.ndarray, dict[str, list]]:
        """(prompts to generate, refused (B,) bool, per-prompt details {column: [B values]})."""
        return prompts, np.zeros(len(prompts), dtype=bool), {}

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        """(plan for this batch, per-prompt details)."""
        return plan, {}

    def flag(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """(N,) bool: which of the (N, H, W, 3) uint8 images to block or regenerate. Filters only."""
        return np.zeros(len(images), dtype=bool)

    @property
    def on_flag(self) -> str:
        """"block" or "regenerate" (filters)."""
        return "block"

    @property
    def max_tries(self) -> int:
        """Extra generations a regenerating filter allows per image."""
        return 0

    @classmethod
    def content_identity(cls, config: Any) -> dict:
        """What the config refers to by path (files), as content hashes: part of the evaluation cache key, so a
        file changed under the same name is a cache miss. Default: nothing."""
        return {}

    def identity(self) -> dict:
        """What a result must record to be reproducible: name, config (None for a shield with no options, such as the
        base class's no-op), protected concepts (+ calibration)."""
        config = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else None
        return {"name": self.name, "config": config,
                "concepts": [dataclasses.asdict(c) for c in self.concepts]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, concepts={[c.name for c in self.concepts]})"


class Chain(Shield):
    """Several shields applied left to right; itself a shield."""

    name = "chain"

    def __init__(self, members: Sequence[Shield]):
        self.members = tuple(members)
        for m in self.members:
            if not isinstance(m, Shield):
                raise InvalidValueError(f"a shield chain takes Shield objects, got {type(m).__name__}: {m!r}")
        self.config = None
        self.concepts = tuple(c for m in self.members for c in m.concepts)
        self.is_filter = any(m.is_filter for m in self.members)  # type: ignore[misc]

    def prepare(self, prompts: list[str]) -> tuple[list[str], np.ndarray, dict[str, list]]:
        refused = np.zeros(len(prompts), dtype=bool)
        details: dict[str, list] = {}
        for m in self.members:
            prompts, r, d = m.prepare(prompts)
            refused |= r
            details.update({f"{m.name}.{k}": v for k, v in d.items()})
        return prompts, refused, details

    def condition(self, pipe: StableDiffusionPipeline, plan: Plan) -> tuple[Plan, dict[str, list]]:
        details: dict[str, list] = {}
        for m in self.members:
            plan, d = m.condition(pipe, plan)
            details.update({f"{m.name}.{k}": v for k, v in d.items()})
        return plan, details

    def flag(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        out = np.zeros(len(images), dtype=bool)
        for m in self.members:
            if m.is_filter:
                out |= m.flag(images, prompts)
        return out

    @property
    def on_flag(self) -> str:
        return "regenerate" if any(m.on_flag == "regenerate" for m in self.members if m.is_filter) else "block"

    @property
    def max_tries(self) -> int:
        return max([m.max_tries for m in self.members if m.is_filter] or [0])

    def identity(self) -> dict:
        return {"name": "+".join(m.name for m in self.members), "members": [m.identity() for m in self.members]}

    def __repr__(self) -> str:
        return "Chain(" + ", ".join(repr(m) for m in self.members) + ")"


# ------------------------------------------------------------------------------------------------ spec parsing
def parse_options(cls: type[Shield], opts: str) -> Any:
    """The config of shield class `cls` from the option string of a spec ("strong", "w=0.7,action=flag")."""
    from ..config import parse_spec_options

    return cls.config_cls(**parse_spec_options(cls.name, cls.config_cls, opts, cls.primary))


def parse_spec(spec: str) -> list[tuple[type[Shield], Any]]:
    """(shield class, config) for each shield of a spec string, without building anything (no concepts, no pipeline
    needed): validates a spec early, e.g. in a CLI before any generation. Raises with close matches on bad names."""
    parts = [p.strip() for p in str(spec).split("+")]
    if not str(spec).strip() or not all(parts):
        raise InvalidValueError(f"empty shield in spec {spec!r}; known shields: {', '.join(shields.names())}")
    out = []
    for part in parts:
        name, _, opts = part.partition(":")
        cls = shields.get(name.strip())
        out.append((cls, parse_options(cls, opts)))
    return out


def get_shield(spec: str | Shield | Sequence[str | Shield], concepts: Sequence[str | ProtectedConcept] = (),
               pipe: StableDiffusionPipeline | None = None, keywords: Mapping[str, Sequence[str]] | Sequence[str] | None
               = None, world: Any = None, **objects: Any) -> Shield:
    """A shield (or a `Chain`) from a spec such as "sld:strong", "negative_prompt" or "detector+sld:medium".

    concepts: protected concept names (names the world knows resolve to their keywords) or `ProtectedConcept`s;
    keywords: replaces their keywords (see `protect`); pipe: the pipeline whose text encoder detectors calibrate on
    (needed by "detector" and "guardians" unless a fixed threshold is given); world: where concepts, calibration
    prompts and the image filter's evaluator come from (default: the pipeline's world from its model card, else
    none); objects: extra constructor arguments passed to shields that accept them (e.g. image_filter's
    `classifier=callable`, detector's `negatives=[...]`).
    """
    if isinstance(spec, Shield):
        return spec
    parts: list[Shield | tuple[type[Shield], Any]] = []
    for item in ([spec] if isinstance(spec, str) else list(spec)):
        parts += [item] if isinstance(item, Shield) else parse_spec(item)
    from ..worlds import get_world, world_of_model

    world = get_world(world) if world is not None else (world_of_model(pipe) if pipe is not None else get_world())
    protected = protect(concepts, keywords, world=world)
    built: list[Shield] = []
    for part in parts:
        if isinstance(part, Shield):
            built.append(part)
            continue
        cls, config = part
        accepted = set(inspect.signature(cls.__init__).parameters)
        kw = {k: v for k, v in objects.items() if k in accepted}
        if "world" in accepted:
            kw["world"] = world
        built.append(cls(config, protected, pipe=pipe, **kw) if "pipe" in accepted else cls(config, protected, **kw))
    unused = set(objects) - {k for p in built for k in inspect.signature(type(p).__init__).parameters}
    if unused:
        raise InvalidValueError(f"no shield in {spec!r} takes the argument(s) {sorted(unused)}")
    return built[0] if len(built) == 1 else Chain(built)


def as_shield(shields_: Shield | str | Sequence[Shield] | None) -> Shield | None:
    """None, a Shield, or a list of Shields (-> Chain)."""
    if shields_ is None or isinstance(shields_, Shield):
        return shields_
    if isinstance(shields_, str):
        return get_shield(shields_)
    members = list(shields_)
    if not members:
        return None
    return members[0] if len(members) == 1 else Chain(members)


# ------------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def run_plan(pipe: StableDiffusionPipeline, plan: Plan, seeds: Sequence[int],
             latents: torch.Tensor | None = None) -> np.ndarray:
    """Images (B, H, W, 3) uint8 of a (conditioned) plan: CFG against E(plan.negative), plus the plan's extra
    guidance terms and per-step conditioning hooks, through the explicit sampling loop. `latents`: the initial
    latents (B, C, h, w), already scaled by the scheduler's init sigma (None: drawn from `seeds`), e.g. a latent
    watermark's (`erasekit.marks.compose`)."""
    uncond = encode_prompts(pipe, plan.negative)
    extra = [c for term in plan.terms for c in term.conds]
    combine = make_combine(plan.guidance, plan.terms)
    hooks = list(plan.cond_hooks)

    def hooked(i: int, t: torch.Tensor) -> list[torch.Tensor]:
        """The conditionings of step i when a shield varies the conditional embedding over steps."""
        c = plan.cond
        for hook in hooks:
            c = hook(i, t, c)
        return [uncond, c, *extra]

    with contextlib.ExitStack() as stack:
        for wrap in plan.wraps:
            stack.enter_context(wrap(pipe))
        z = denoise(pipe, [uncond, plan.cond, *extra], combine, list(seeds), steps=plan.steps, latents=latents,
                    cond_fn=hooked if hooks else None)
    return decode(pipe, z)


@torch.no_grad()
def _generate_rows(pipe: StableDiffusionPipeline, shield: Shield | None, prompts: list[str], seeds: list[int],
                   steps: int, guidance: float, latents: torch.Tensor | None = None) -> tuple[np.ndarray, dict[str, list]]:
    """Images (B, H, W, 3) uint8 for one batch through the shield's `condition` and the explicit loop (`latents`:
    scaled initial latents, see `run_plan`)."""
    cond = encode_prompts(pipe, prompts)
    plan = Plan(prompts=list(prompts), cond=cond, negative=[""] * len(prompts), steps=steps, guidance=guidance)
    details: dict[str, list] = {}
    if shield is not None:
        plan, details = shield.condition(pipe, plan)
    if latents is None:  # the seeds' own noise (run_plan draws it)
        return run_plan(pipe, plan, seeds), details
    return run_plan(pipe, plan, seeds, latents=latents), details


def regenerated_seed(seed: int, attempt: int) -> int:
    """The seed of the `attempt`-th regeneration of an image first drawn with `seed` (deterministic, 31-bit)."""
    return (int(seed) + 1_000_003 * attempt) % (2**31 - 1)


@torch.no_grad()
def shielded_generate(pipe: StableDiffusionPipeline, prompts: Sequence[str], seeds: Sequence[int] | int = 0,
                      shields: Shield | str | Sequence[Shield] | None = None, steps: int | None = None,
                      guidance: float | None = None,
                      batch_size: int = 64, progress: Callable[[int], None] | None = None,
                      latents_fn: Callable[[Sequence[int]], torch.Tensor] | None = None) -> tuple[np.ndarray, dict]:
    """Generate (N, H, W, 3) uint8 images for `prompts` through a shield chain and the explicit sampling loop.

    seeds: one per prompt, or a base seed (prompt i -> base + i), as `erasekit.generate`. With no shield the images
    equal `erasekit.generate(pipe, prompts, seeds, steps, guidance)` bit for bit. Refused prompts are not generated and
    come back black; flagged images are regenerated with `regenerated_seed` (if the filter says so) and, if still
    flagged, blocked (black). `info` records per prompt: the text generated, refused / flagged / blocked, attempts,
    the seed of the returned image, each shield's details; plus the shields' identities and the wall time.
    `latents_fn(seeds)`: the (B, C, h, w) unit-variance initial latents of those seeds instead of their noise (a
    latent watermark's, `erasekit.marks.compose`); regenerations draw theirs for the regenerated seeds too.
    """
    t0 = time.perf_counter()
    prompts = list(prompts)
    if not prompts:
        raise InvalidValueError("shielded_generate() needs at least one prompt; got an empty list")
    if isinstance(seeds, int):
        seeds = [seeds + i for i in range(len(prompts))]
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(prompts):
        raise InvalidValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    if batch_size < 1:
        raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}")
    from ..sampling import resolve_sampling

    steps, guidance = resolve_sampling(pipe, steps, guidance)  # None -> the model's defaults
    if guidance <= 1.0:
        raise InvalidValueError(f"shielded generation uses classifier-free guidance; guidance must be > 1, "
                                f"got {guidance}")
    shield = as_shield(shields)
    n = len(prompts)
    if shield is not None:
        used, refused, details = shield.prepare(list(prompts))
        if len(used) != n or len(refused) != n:
            raise InvalidValueError(f"shield {shield.name!r} returned {len(used)} prompts for {n}")
    else:
        used, refused, details = list(prompts), np.zeros(n, dtype=bool), {}
    size = int(pipe.unet.config.sample_size * pipe.vae_scale_factor)
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    seeds_used = list(seeds)
    attempts = np.zeros(n, dtype=int)
    cond_details: dict[str, list] = {}
    sigma = None
    if latents_fn is not None:
        sched = copy.deepcopy(pipe.scheduler)
        sched.set_timesteps(steps)
        sigma = float(sched.init_noise_sigma)

    def run(rows: list[int]) -> None:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            sd = [seeds_used[r] for r in chunk]
            lat = None if latents_fn is None else latents_fn(sd).to(pipe.unet.device, pipe.unet.dtype) * sigma
            imgs, d = _generate_rows(pipe, shield, [used[r] for r in chunk], sd, steps, guidance, latents=lat)
            images[chunk] = imgs
            attempts[chunk] += 1
            for k, v in d.items():
                col = cond_details.setdefault(k, [None] * n)
                for r, val in zip(chunk, v):
                    col[r] = val
            if progress is not None:
                progress(len(chunk))

    rows = [i for i in range(n) if not refused[i]]
    if rows:
        run(rows)
    flagged = np.zeros(n, dtype=bool)
    flagged_first = np.zeros(n, dtype=bool)
    if shield is not None and shield.is_filter and rows:
        todo = rows
        for attempt in range(1, shield.max_tries + 2):
            f = np.asarray(shield.flag(images[todo], [prompts[r] for r in todo]), dtype=bool)
            if f.shape != (len(todo),):
                raise InvalidValueError(f"shield {shield.name!r} flagged {f.shape} for {len(todo)} images")
            flagged[todo] = f
            if attempt == 1:
                flagged_first[todo] = f
            todo = [r for r, fl in zip(todo, f) if fl]
            if not todo or shield.on_flag != "regenerate" or attempt > shield.max_tries:
                break
            for r in todo:
                seeds_used[r] = regenerated_seed(seeds[r], attempt)
            run(todo)
    blocked = flagged.copy()
    images[blocked] = 0
    info = {
        "shield": shield.identity() if shield is not None else None,
        "prompts": prompts, "prompts_used": used, "seeds": seeds, "seeds_used": seeds_used,
        "refused": refused.tolist(), "flagged_first": flagged_first.tolist(), "flagged": flagged.tolist(),
        "blocked": blocked.tolist(),
        "attempts": attempts.tolist(), "details": {**details, **cond_details},
        "steps": steps, "guidance": guidance, "seconds": time.perf_counter() - t0,
    }
    return images, info


__all__ = ["Chain", "GuidanceTerm", "Plan", "ProtectedConcept", "Shield", "as_shield",
           "get_shield", "make_combine", "parse_options", "parse_spec", "protect", "regenerated_seed", "run_plan",
           "shielded_generate", "shields"]
