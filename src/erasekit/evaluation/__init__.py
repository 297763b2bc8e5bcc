"""The evaluation harness: suite x pipeline x edits x shield x attack -> results.json + samples.jsonl, in stages over
files.

    results = evaluate(load_suite("default"), [Variant("uce", edits=("e.safetensors",))], out="runs/eval")

1. plan      (`plan.py`)     every target becomes explicit prompt sets from the suite's world; edits are loaded and
                             hashed once per variant, shield/attack specs parsed once; every unit gets a content cache
                             key (base weights fingerprint, dtype, device, scheduler, steps, guidance, edit sha256s,
                             shield config, prompts, seeds; shielded and attack units also what is protected, the
                             world and the evaluator's identity; attack units also the attack config)
2. generate  (`generate.py`) what the cache lacks, under `<out>/cache/` (resumable; sharded under `accelerate launch`)
3. score     (`score.py`)    the evaluator labels each image once; metrics through `erasekit.metrics` Metric objects
4. aggregate (`results.py`)  means over targets, costs, provenance -> results.json (strict JSON) + samples.jsonl

The base model is always evaluated: drift is relative to it on the same seeds. Steps and guidance are the suite's,
else the model card's (`erasekit.sampling.resolve_sampling`). `erasekit report RUN_DIR` rebuilds the HTML report
from those files alone (`run_images` reads any prompt set's images back). Nothing here knows a particular world:
prompts come from `suite.world_for(evaluator)`, judgements from the suite's evaluator, and every number is named in
the one vocabulary of `erasekit.metrics.RESULT_METRICS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidValueError
from ..suite import Suite
from .generate import generate_missing, shard
from .plan import BASE, PIPELINE_OBJECT, Variant, build_plan, hash_seed, prepare_variants, prompt_sets
from .results import aggregate, run_images, write_results
from .score import label_units


def evaluator_for(suite: Suite, evaluator: Any = None) -> Any:
    """`evaluator` (an `erasekit.evaluators.Evaluator` or a registered name), else the suite's evaluator built with
    the suite's `evaluator_options`."""
    from ..evaluators import get_evaluator

    if evaluator is not None:
        return get_evaluator(evaluator)
    return get_evaluator(suite.evaluator, **suite.evaluator_options)


def clip_scorer_for(suite: Suite, clip: str | None = None) -> Any:
    """A `ClipScorer` for `clip` (a local CLIP folder), else the suite's `alignment.clip`, else None."""
    path = clip or suite.alignment.get("clip")
    if not path:
        return None
    from ..metrics.clip_score import ClipScorer

    return ClipScorer(path)


def evaluate(suite: Suite, variants: Sequence[Variant], out: str | Path, model: str | None = None,
             targets: Sequence[str] | None = None, progress: Callable[..., None] | None = None,
             pipe: Any = None, evaluator: Any = None, clip: str | None = None) -> dict:
    """Run `variants` (the base model is always added) on the suite's targets; write results.json and samples.jsonl
    under `out` and return the results (the same dict as results.json; {} on ranks > 0 of a multi-process launch).

    evaluator: an Evaluator or registered name replacing the suite's; clip: a local CLIP checkpoint folder for the
    clip_score metrics (default: the suite's `alignment.clip`); pipe: an already loaded pipeline (else `model` or
    the suite's model is loaded)."""
    from ..models import load_pipeline
    from ..sampling import resolve_sampling

    t_start = time.time()
    out = Path(out)
    model = model or suite.model or (PIPELINE_OBJECT if pipe is not None else "")
    if not model:
        raise InvalidValueError(f"suite {suite.name!r} names no model; pass one (--model PATH_OR_HUB_ID)")
    # everything a user can get wrong fails here, before the model is loaded
    judge = evaluator_for(suite, evaluator)
    world = suite.world_for(judge)
    targets = resolve_targets(world, judge, suite.targets if targets is None else targets)
    for c in suite.unsafe.get("categories", ()):
        judge.target(c)  # every unsafe category must be one the evaluator sees (else: its close matches)
    prepared = prepare_variants(variants)
    scorer = clip_scorer_for(suite, clip)
    pipe = pipe if pipe is not None else load_pipeline(model)
    steps, guidance = resolve_sampling(pipe, suite.steps, suite.guidance)

    plan = build_plan(suite, prepared, targets, pipe, model, judge, world, steps, guidance)
    if progress:
        progress(0, total=sum(len(u.prompts) for u in plan.units), description="evaluating")
    seconds = generate_missing(plan, pipe, out, progress)
    if shard()[0] != 0:
        return {}
    images, labels, samples = label_units(plan, out, scorer)
    results = aggregate(plan, out, images, labels, samples, seconds, scorer, t_start)
    return write_results(out, results, samples)


def resolve_targets(world: Any, evaluator: Any, targets: Sequence[str]) -> list[str]:
    """The targets' canonical names in `world` (duplicates dropped); an unknown concept, one the evaluator cannot
    see, or an empty list raises before any work."""
    if isinstance(targets, str):
        raise InvalidValueError(f"targets must be a list of concept names, got the string {targets!r}")
    if not targets:
        raise InvalidValueError("no target concept to evaluate (an empty --concepts list?); name at least one")
    names = []
    for t in targets:
        name = world.concept(t).name  # unknown concept -> UnknownNameError with close matches
        evaluator.target(name)  # the evaluator must see it (e.g. nudenet sees only "nudity")
        names.append(name)
    return list(dict.fromkeys(names))


def bench_methods(suite: Suite, methods: Sequence[str], concepts: Sequence[str], out: str | Path,
                  model: str | None = None, options: dict[str, dict] | None = None,
                  progress: Callable[..., None] | None = None, pipe: Any = None, evaluator: Any = None,
                  clip: str | None = None) -> dict:
    """Erase each concept with each method (world defaults for the request; fine-tuning stops early on the
    evaluator) and put base + every method on one leaderboard: `erasekit.benchmark.run_bench` with one variant per
    method."""
    from ..benchmark import BenchSpec, VariantSpec, run_bench

    methods = [m for m in methods if m]
    if not methods:
        raise InvalidValueError("no eraser given (an empty --methods list?); e.g. --methods uce,rece")
    spec = BenchSpec(name="methods", concepts=tuple(concepts),
                     variants=tuple(VariantSpec(m, method=m, options=dict((options or {}).get(m, {})))
                                    for m in methods))
    return run_bench(spec, out, pipe=pipe, model=model, progress=progress, suite=suite, evaluator=evaluator,
                     clip=clip)


__all__ = ["BASE", "Variant", "bench_methods", "clip_scorer_for", "evaluate", "evaluator_for", "hash_seed",
           "prompt_sets", "resolve_targets", "run_images"]
