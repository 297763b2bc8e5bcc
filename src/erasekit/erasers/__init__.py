"""Weight-editing erasers. `erase(pipe, method, erase=[...], preserve=[...], guide=..., **config) -> Edit`.

Each method is one file (config dataclass + function) registered lazily here, so `erasekit ls` imports nothing heavy:

    uce      Unified Concept Editing (Gandikota et al., WACV 2024), closed form
    rece     Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024), closed form, iterative
    mace     MACE stage 1 closed-form refinement (Lu et al., CVPR 2024)
    realera  RealEra neighbour-concept mining + beyond-concept regularisation (Liu et al., 2024), closed-form part
    speed    SPEED null-space-constrained closed form (Li et al., ICLR 2026)
    trce     TRCE stage 1, [EoT] closed-form edit of malicious prompts (Chen et al., ICCV 2025)
    leace    LEACE on text-encoder outputs folded into cross-attention (Belrose et al., NeurIPS 2023), baseline
    mempruning  Memorized-subspace pruning (Chavhan et al., 2024): Wanda-score pruning of UNet FFN weights

Fine-tuning methods (`Method(trains=True)`) share the loop of `_training.py` (progress, seed, budget, checkpoints,
early stop on a concept check passed as `erase(..., hooks=TrainHooks(check=...))`). Text-encoder trainers:

    fewshot     Few-shot erasing (Fuchi & Takagi, BMVC 2024): gradient ascent on textual inversion of a few images
    advunlearn  AdvUnlearn (Zhang et al., NeurIPS 2024): adversarial training, plug-and-play text encoder

UNet trainers:

    esd         Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023): esd-x / esd-u / esd-x-strict
    spm         One-dimensional adapters (Lyu et al., CVPR 2024); facilitated transport via `spm.Transport`
    coerasing   Co-Erasing (Li et al., ICML 2025): ESD-style erasing with text + self-generated images
    safegen     SafeGen (Li et al., CCS 2024): text-agnostic self-attention edit, unsafe -> mosaic
    trce_stage2 TRCE stage 1 + 2 (Chen et al., ICCV 2025): contrastive early-step fine-tuning
    doco        DoCo (Wu et al., AAAI 2025): adversarial concept-domain correction + gradient surgery
    allbutone   All but One (Hong et al., AAAI 2024): edit only the target's guidance term, keep the rest
    ant         ANT / Set You Straight (Li et al., ACM MM 2025): reversed late guidance, saliency-masked weights
    sfd         Score Forgetting Distillation (Chen et al., ICLR 2025): data-free distillation into a one-step
                generator whose score for the concept follows a safe concept's (sample with sfd.one_step_pipeline)

Fine-tuning guards (change no weight; a mask of tensors a user's fine-tune must leave frozen) live in
`erasekit.guards`.

The pipeline passed in is never modified: methods read its weights and return the changed tensors as an `Edit`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Configurable
from ..edits import Edit
from ..errors import InvalidValueError
from ..registry import Registry


@dataclass(frozen=True)
class EraseRequest:
    """What to erase: `erase` concept prompts, `preserve` prompts to keep, `guide` prompts the erased concepts should
    behave like (one for all, or one per erase prompt; None = the method's default)."""

    erase: tuple[str, ...]
    preserve: tuple[str, ...] = ()
    guide: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.erase:
            raise InvalidValueError("erase=[] is empty: name at least one concept to erase")
        for label, items in (("erase", self.erase), ("preserve", self.preserve), ("guide", self.guide or ())):
            for x in items:
                if not isinstance(x, str):
                    raise InvalidValueError(f"{label} items must be strings; got {x!r} ({type(x).__name__})")
        blank = [x for x in self.erase if not x.strip()]
        if blank:
            raise InvalidValueError(f"erase contains an empty concept {blank[0]!r}")
        if self.guide is not None and len(self.guide) not in (1, len(self.erase)):
            raise InvalidValueError(f"got {len(self.guide)} guide concepts for {len(self.erase)} erase concepts: give "
                                    "one guide for all, or one per erase concept")

    def guides(self, default: str | Sequence[str]) -> list[str]:
        """One guide prompt per erase prompt (`default` when none was given)."""
        g = self.guide if self.guide is not None else ((default,) if isinstance(default, str) else tuple(default))
        return list(g) * len(self.erase) if len(g) == 1 else list(g)


@dataclass(frozen=True)
class Method(Configurable):
    """A registered eraser: its config dataclass and `run(pipe, request, config)`, which returns the changed tensors
    {tensor name: new tensor} and a dict of facts for the manifest (JSON-able). trains=True: a fine-tuning method,
    called as `run(pipe, request, config, hooks)` with gradients enabled."""

    name: str
    config_cls: type
    run: Callable[..., tuple[dict, dict]]
    paper: str = ""
    trains: bool = False


erasers: Registry[Method] = Registry("eraser")
erasers.add("uce", "erasekit.erasers.uce:METHOD",
            help="Unified Concept Editing: closed-form edit of cross-attention K/V")
erasers.add("rece", "erasekit.erasers.rece:METHOD",
            help="RECE: UCE + iterative closed-form adversarial embeddings, erased in closed form")
erasers.add("mace", "erasekit.erasers.mace:METHOD",
            help="MACE stage 1: closed-form refinement of contexts without the concept words")
erasers.add("realera", "erasekit.erasers.realera:METHOD",
            help="RealEra closed-form part: neighbour-concept mining + beyond-concept regularisation")
erasers.add("speed", "erasekit.erasers.speed:METHOD",
            help="SPEED: UCE-style edit in the null space of a refined retain set (retained outputs kept exactly)")
erasers.add("trce", "erasekit.erasers.trce:METHOD",
            help="TRCE stage 1: closed-form edit of the [EoT] rows of malicious prompts toward safe counterparts")
erasers.add("leace", "erasekit.erasers.leace:METHOD",
            help="LEACE on text-encoder outputs, folded into cross-attention (baseline)")
erasers.add("esd", "erasekit.erasers.esd:METHOD",
            help="ESD: fine-tune the UNet towards negatively guided predictions (esd-x / esd-u / esd-x-strict)")
erasers.add("spm", "erasekit.erasers.spm:METHOD",
            help="SPM: rank-1 adapters, latent anchoring; facilitated transport at inference (generate --transport)")
erasers.add("fewshot", "erasekit.erasers.fewshot:METHOD",
            help="Few-shot erasing: gradient ascent on textual inversion of a few images, text encoder only")
erasers.add("advunlearn", "erasekit.erasers.advunlearn:METHOD",
            help="AdvUnlearn: adversarial training of the text encoder (soft-prompt attack inside), plug-and-play")
erasers.add("coerasing", "erasekit.erasers.coerasing:METHOD",
            help="Co-Erasing: ESD-style erasing with the concept's text and self-generated images (image tokens)")
erasers.add("safegen", "erasekit.erasers.safegen:METHOD",
            help="SafeGen: text-agnostic fine-tuning of self-attention (attn1): unsafe images -> mosaic")
erasers.add("trce_stage2", "erasekit.erasers.trce_stage2:METHOD",
            help="TRCE stage 1 + stage 2: contrastive fine-tuning of the early denoising steps")
erasers.add("doco", "erasekit.erasers.doco:METHOD",
            help="DoCo: discriminator aligns the concept's outputs with an anchor domain; concept-preserving gradient")
erasers.add("allbutone", "erasekit.erasers.allbutone:METHOD",
            help="All but One: change only the target's guidance term; keep unconditional and other scores")
erasers.add("geom_erasing", "erasekit.erasers.geom_erasing:METHOD",
            help="Geom-Erasing: detector's geometric tokens added to captions, fine-tune, tokens as negative prompt")
erasers.add("ant", "erasekit.erasers.ant:METHOD",
            help="ANT: reverse guidance in mid-to-late steps, keep early ones; saliency-masked weights")
erasers.add("sfd", "erasekit.erasers.sfd:METHOD",
            help="SFD: data-free distillation into a ONE-STEP generator; the concept's score follows a safe one's")
erasers.add("mempruning", "erasekit.erasers.mempruning:METHOD",
            help="Memorized-subspace pruning: zero FFN weights whose Wanda scores single out memorized prompts")


def get_eraser(name: str) -> Method:
    """The registered eraser `name` (close matches suggested for unknown names)."""
    return erasers.get(name)


def erase(pipe: Any, method: str, erase: Sequence[str] | str, preserve: Sequence[str] | str = (),
          guide: Sequence[str] | str | None = None, hooks: Any = None, **config: Any) -> Edit:
    """Erase concepts from `pipe` with `method`; returns an `Edit` (apply it with `edit.apply(pipe)`).

    erase / preserve / guide: prompts (a single string is one prompt). config: the method's options (see
    `erasekit erase --method NAME --show-config`); unknown options raise with close matches. hooks: a
    `erasekit.erasers._training.TrainHooks` for fine-tuning methods (concept check for early stopping, progress bar,
    checkpoint folder); `_training.concept_hooks(world, evaluator, concept)` builds one for any world and evaluator.
    """
    import torch

    m = get_eraser(method)
    def as_tuple(v: Sequence[str] | str) -> tuple[str, ...]:
        return (v,) if isinstance(v, str) else tuple(v)

    request = EraseRequest(as_tuple(erase), as_tuple(preserve), None if guide is None else as_tuple(guide))
    cfg = m.make_config(config)
    t0 = time.perf_counter()
    if m.trains:
        from ._training import TrainHooks

        with torch.enable_grad():
            tensors, info = m.run(pipe, request, cfg, hooks if hooks is not None else TrainHooks())
    else:
        if hooks is not None:
            raise InvalidValueError(f"method {m.name!r} does not train; hooks= is only for fine-tuning methods")
        with torch.no_grad():
            tensors, info = m.run(pipe, request, cfg)
    seconds = time.perf_counter() - t0
    return Edit.from_tensors(pipe, tensors, method=m.name, config=dataclasses.asdict(cfg), erase=request.erase,
                             preserve=request.preserve, guide=request.guide,
                             extra={"edit_seconds": round(seconds, 4), "paper": m.paper, "info": info})


# ------------------------------------------------------------------------------------------------ CLI helpers


def parse_options(method: str, pairs: Sequence[str]) -> dict[str, Any]:
    """Turn CLI "key=value" strings into typed config options of `method` (tuples: comma-separated)."""
    from ..config import parse_options as parse

    return parse(method, get_eraser(method).config_cls, pairs)


__all__ = ["EraseRequest", "Method", "erase", "erasers", "get_eraser", "parse_options"]
