"""The evaluation runner: suite x pipeline x edits x shield x attack -> results.json + samples.jsonl.

    results = evaluate(load_suite("default"), variants=[Variant("base"), Variant("uce", edits=("e.safetensors",))],
                       out="runs/eval")

For every target concept of the suite it builds the prompt sets (direct, held-out, keyword/indirect, neighbours,
unrelated; from the toy catalogue, or the target's own prompt lists for real models), generates them on fixed seeds
with every variant, labels them with the evaluator (`erasekit.evaluators`: toy oracle, NudeNet, a user callable) and
computes the metrics of `erasekit.metrics` (plus CLIP scores given a local CLIP folder). Generations are cached per (variant, concept, set) under `<out>/cache/` keyed by everything that
determines them, so a killed run continues where it stopped and reruns are free. The base model is always evaluated:
specificity deltas and image drift are relative to it, on the same seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import InvalidValueError
from .generation import generate
from .io import atomic_write_bytes, atomic_write_text
from .metrics import attack_success_rate, detection_rate, image_drift, label_accuracy
from .models import load_pipeline
from .sampling import default_guidance, encode_prompts
from .suite import Suite
from .world import CATALOGUE, Prompt, prompts_for

GENERALITY_SETS = ("heldout", "keyword", "indirect")


@dataclass(frozen=True)
class Variant:
    """One model under test: the base pipeline with `edits` applied in order (files or Edit objects), generating
    through `shield` (a spec of `erasekit.shields.get_shield`, protecting each target concept) if given, and attacked
    with `attack` (a spec of `erasekit.attacks.parse_spec`) for the robustness metrics if given."""

    name: str
    edits: tuple = ()
    shield: str | None = None
    attack: str | None = None  # attack spec "name[:key=value,...]" run on `suite.attack_prompts` direct prompts
    cost: dict = field(default_factory=dict, compare=False)  # e.g. edit time/memory measured by the caller

    def key(self) -> str:
        """What determines this variant's images: the edits' content hashes and the shield spec."""
        parts = [self._edit(e).manifest["edited_sha256"] for e in self.edits]
        return hashlib.sha256(json.dumps([parts, self.shield], sort_keys=True).encode()).hexdigest()[:16]

    @staticmethod
    def _edit(e):
        from .edits import Edit

        return e if isinstance(e, Edit) else Edit.load(e)

    def loaded_edits(self) -> list:
        return [self._edit(e) for e in self.edits]


# --------------------------------------------------------------------------------------------------- prompt sets
@torch.no_grad()
def nearest_concepts(pipe, family: str, concept: str, k: int, core_only: bool = True) -> list[str]:
    """The `k` same-family concepts whose text embedding ("a picture of X", mean over real tokens) in the base model
    is most similar to `concept`'s."""
    items = [c.name for c in CATALOGUE.items_by_family()[family]
             if not (family == "artist" and core_only and not c.core) and c.name != concept]
    if k <= 0 or not items:
        return []
    names = [concept] + items
    emb = encode_prompts(pipe, [f"a picture of {n}" for n in names]).float()
    lengths = pipe.tokenizer([f"a picture of {n}" for n in names], return_tensors=None)["input_ids"]
    vecs = torch.stack([emb[i, 1:len(ids) - 1].mean(0) for i, ids in enumerate(lengths)])
    sims = torch.nn.functional.cosine_similarity(vecs[:1], vecs[1:])
    return [items[i] for i in sims.argsort(descending=True)[:k].tolist()]


def unrelated_prompts(family: str, concept: str, n: int, seed: int) -> list[Prompt]:
    """`n` direct prompts of concepts from other families (objects, core artists, characters), round-robin."""
    pool = [(f, c.name) for f in ("object", "artist", "character") for c in CATALOGUE.items_by_family()[f]
            if f != family and not (f == "artist" and not c.core)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pool))
    out = []
    for i in range(n):
        f, c = pool[order[i % len(pool)]]
        out.append(prompts_for(f, c, "direct", n=1, seed=seed + i)[0])
    return out


def prompt_sets(suite: Suite, base_pipe, concept: str, evaluator=None) -> dict[str, list[Prompt]]:
    """The suite's prompt sets for one target concept (empty sets omitted): drawn from the toy catalogue, or the
    target's own prompt lists (`custom_prompt_sets`; `evaluator` names the labels they should show)."""
    if suite.is_custom(concept):
        return custom_prompt_sets(suite, concept, evaluator)
    family, c = CATALOGUE.find(concept)
    s = suite.samples
    sets: dict[str, list[Prompt]] = {}
    if s.get("direct"):
        sets["direct"] = prompts_for(family, c.name, "direct", s["direct"], suite.seed)
    if s.get("heldout"):
        sets["heldout"] = prompts_for(family, c.name, "heldout", s["heldout"], suite.seed + 1)
    if s.get("keyword") and family == "character":
        sets["keyword"] = prompts_for(family, c.name, "keyword", s["keyword"], suite.seed + 2)
    if s.get("indirect") and family == "unsafe":
        sets["indirect"] = prompts_for(family, c.name, "indirect", s["indirect"], suite.seed + 3)
    if s.get("neighbours") and suite.neighbours and family != "unsafe":
        sets["neighbours"] = [p for i, nb in enumerate(nearest_concepts(base_pipe, family, c.name, suite.neighbours))
                              for p in prompts_for(family, nb, "direct", s["neighbours"], suite.seed + 10 + i)]
    if s.get("unrelated"):
        sets["unrelated"] = unrelated_prompts(family, c.name, s["unrelated"], suite.seed + 100)
    return sets


SHOWING_SETS = ("direct", "heldout", "keyword", "indirect")  # sets whose images should show the target


def custom_prompt_sets(suite: Suite, concept: str, evaluator=None) -> dict[str, list[Prompt]]:
    """A target's own prompt lists as prompt sets: `suite.samples[set]` images if given (prompts cycled), else one per
    prompt. Sets that should show the concept are labelled {family: label} of `evaluator.target(concept)` (default
    {concept: concept}); neighbours/unrelated carry no labels (nothing is known about what they show)."""
    family, label = evaluator.target(concept) if evaluator is not None else (concept, concept)
    sets: dict[str, list[Prompt]] = {}
    for kind, texts in suite.prompts[concept].items():
        n = suite.samples.get(kind, len(texts))
        labels = {family: label} if kind in SHOWING_SETS else {}
        if n:
            sets[kind] = [Prompt(texts[i % len(texts)], dict(labels), family, label, kind) for i in range(n)]
    return sets


# ------------------------------------------------------------------------------------------------------- runner
def _cache_key(model: str, variant: Variant, prompts: list[Prompt], seeds: list[int], steps: int, guidance: float) -> str:
    blob = json.dumps({"model": model, "variant": variant.key(), "prompts": [p.text for p in prompts], "seeds": seeds,
                       "steps": steps, "guidance": guidance, "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _load_cached(path: Path) -> np.ndarray | None:
    if not path.exists():
        return None
    with np.load(path) as z:
        return z["images"]


def _save_cached(path: Path, images: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, images=images)
    atomic_write_bytes(path, buf.getvalue())


def evaluator_for(suite: Suite, evaluator=None):
    """`evaluator` (an `erasekit.evaluators.Evaluator` or a registered name), else the suite's evaluator built with
    the suite's `evaluator_options`. Toy world: the shipped oracle."""
    from .evaluators import get_evaluator

    if evaluator is not None:
        return get_evaluator(evaluator)
    return get_evaluator(suite.evaluator, **suite.evaluator_options)


def check_targets(suite: Suite, targets: Sequence[str], evaluator=None) -> None:
    """Every target is the suite's own (custom prompts) or a catalogue concept, and the evaluator can see it."""
    for t in targets:
        if not suite.is_custom(t):
            CATALOGUE.find(t)  # unknown concept -> UnknownNameError with suggestions
        if evaluator is not None:
            evaluator.target(t)  # e.g. nudenet sees only "nudity" -> UnknownNameError


CLIP_SETS = ("direct", "neighbours", "unrelated")  # sets scored for image-text alignment when a CLIP folder is given


def clip_scorer_for(suite: Suite, clip: str | None = None):
    """A `ClipScorer` for `clip` (a local CLIP folder), else the suite's `alignment.clip`, else None."""
    path = clip or suite.alignment.get("clip")
    if not path:
        return None
    from .metrics.clip_score import ClipScorer

    return ClipScorer(path)


def target_metrics(variant: str, target: str, sets: dict[str, list[Prompt]], preds: dict, images: dict,
                   clip_scores: dict, evaluator) -> dict[str, float]:
    """Efficacy, generality, specificity, image drift and CLIP scores of one variant on one target.

    Catalogue sets: specificity = label accuracy (neighbours on the family, unrelated on every labelled family) and
    image_drift on unrelated. Unlabelled sets (a target's own neighbours/unrelated prompts): image_drift(_neighbours)
    vs the base model only. clip_score_<set>: max(mean 100 cos, 0) on direct/neighbours/unrelated."""
    family, label = evaluator.target(target)
    m: dict[str, float] = {}
    if "direct" in sets:
        m["efficacy"] = detection_rate(preds[(variant, target, "direct")], family, label)
    gen = [s for s in GENERALITY_SETS if s in sets]
    for s in gen:
        m[f"generality_{s}"] = detection_rate(preds[(variant, target, s)], family, label)
    if gen:
        m["generality"] = float(np.mean([m[f"generality_{s}"] for s in gen]))
    for s in ("neighbours", "unrelated"):
        if s not in sets:
            continue
        labelled = all(p.labels for p in sets[s])
        if labelled:
            m[f"specificity_{s}"] = label_accuracy(preds[(variant, target, s)], [p.labels for p in sets[s]],
                                                   [family] if s == "neighbours" else None)
        if s == "unrelated" or not labelled:
            m["image_drift" + ("" if s == "unrelated" else f"_{s}")] = image_drift(images[(variant, target, s)],
                                                                                 images[("base", target, s)])
    for s in CLIP_SETS:
        scores = clip_scores.get((variant, target, s))
        if scores is not None:
            m[f"clip_score_{s}"] = float(max(scores.mean(), 0.0))
    return m


def evaluate(suite: Suite, variants: Sequence[Variant], out: str | Path, model: str | None = None,
             targets: Sequence[str] | None = None, progress: Callable[..., None] | None = None,
             pipe=None, evaluator=None, clip: str | None = None) -> dict:
    """Run `variants` (a base variant is added if missing) on the suite; write results.json and samples.jsonl.

    evaluator: an `erasekit.evaluators.Evaluator` (e.g. `CallableEvaluator`) or registered name replacing the suite's;
    clip: a local CLIP checkpoint folder for the clip_score metrics (default: the suite's `alignment.clip`)."""
    model = model or suite.model
    if not model:
        if pipe is None:
            raise InvalidValueError(f"suite {suite.name!r} names no model; pass one (--model PATH_OR_HUB_ID)")
        model = "<pipeline object>"
    out = Path(out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    targets = list(targets or suite.targets)
    oracle = evaluator_for(suite, evaluator)  # before any generation: a missing optional package fails here
    check_targets(suite, targets, oracle)
    scorer = clip_scorer_for(suite, clip)
    variants = list(variants)
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise InvalidValueError(f"variant names must be unique; got {names}")
    for v in variants:  # bad specs fail here, with suggestions, before any generation
        if v.attack:
            from .attacks import parse_spec

            parse_spec(v.attack)
        if v.shield:
            from .shields import parse_spec as parse_shield

            parse_shield(v.shield)
    if "base" not in names:
        variants.insert(0, Variant("base"))
    t_start = time.time()
    pipe = pipe if pipe is not None else load_pipeline(model)
    guidance = suite.guidance if suite.guidance is not None else default_guidance(model)
    sets_by_target = {t: prompt_sets(suite, pipe, t, oracle) for t in targets}
    total = len(variants) * sum(len(p) for s in sets_by_target.values() for p in s.values())
    if progress:
        progress(0, total=total, description="evaluating")

    # pass 1: generate what is not cached (in a multi-process launch, each process takes every world-th unit)
    rank, world, barrier = _shard()
    units = [(v, t, name, prompts) for v in variants for t, sets in sets_by_target.items()
             for name, prompts in sets.items()]
    gen_seconds: dict[str, float] = {v.name: 0.0 for v in variants}
    attack_seconds: dict[str, float] = {v.name: 0.0 for v in variants}
    paths: dict[tuple[str, str, str], tuple[Path, list[int]]] = {}
    attack_units = [(v, t) for v in variants if v.attack for t in targets]
    attack_paths = {(v.name, t): out / "cache" / f"attack-{_attack_key(model, v, t, suite, guidance)}"
                    for v, t in attack_units}
    base_copy = None  # the unedited model, for attacks that compare against it (made on first need)
    for v in variants:
        mine = [(k, u) for k, u in enumerate(units) if u[0] is v]
        todo = []
        for k, (_, t, name, prompts) in mine:
            seeds = [suite.seed * 100_003 + hash_seed(name, t) + i for i in range(len(prompts))]
            path = out / "cache" / f"{_cache_key(model, v, prompts, seeds, suite.steps, guidance)}.npz"
            paths[(v.name, t, name)] = (path, seeds)
            if k % world == rank and not path.exists():
                todo.append((t, name, prompts, seeds, path))
            elif progress and k % world == rank:
                progress(len(prompts), info=f"{v.name} {t} {name} (cached)")
        attacks_todo = [t for k, (av, t) in enumerate(attack_units) if av is v and k % world == rank
                        and not (attack_paths[(v.name, t)] / "result.json").exists()]
        if attacks_todo and base_copy is None:
            import copy

            from .attacks import get_attack, parse_spec

            if get_attack(parse_spec(v.attack)[0]).needs_base:
                base_copy = copy.deepcopy(pipe)
        if not todo and not attacks_todo:
            continue
        applied = []
        shields: dict[str, object] = {}  # target -> the shield protecting it (built, e.g. calibrated, once)

        def shield_for(target: str):
            if v.shield and target not in shields:
                from .shields import get_shield

                shields[target] = get_shield(v.shield, concepts=[target], pipe=pipe)
            return shields.get(target)

        t_v = time.time()
        try:
            for e in v.loaded_edits():
                e.apply(pipe)
                applied.append(e)
            for t, name, prompts, seeds, path in todo:
                texts = [p.text for p in prompts]
                if v.shield:  # the shield protects the target concept of this unit
                    from .shields import shielded_generate

                    imgs, _ = shielded_generate(pipe, texts, seeds, shields=shield_for(t), steps=suite.steps,
                                                guidance=guidance)
                else:
                    imgs = generate(pipe, texts, seeds, steps=suite.steps, guidance=guidance)
                _save_cached(path, imgs)
                if progress:
                    progress(len(prompts), info=f"{v.name} {t} {name}")
            gen_seconds[v.name] += time.time() - t_v
            for t in attacks_todo:
                t_a = time.time()
                _run_attack_unit(suite, v, t, pipe, base_copy, oracle, guidance, attack_paths[(v.name, t)],
                                 shield_for(t))
                attack_seconds[v.name] += time.time() - t_a
                if progress:
                    progress(0, info=f"{v.name} {t} attack {v.attack}")
        finally:
            for e in reversed(applied):
                e.revert(pipe)
    barrier()
    if rank != 0:
        return {}

    # pass 2: label every unit from the cache and compute metrics
    samples: list[dict] = []
    images: dict[tuple[str, str, str], np.ndarray] = {}
    preds: dict[tuple[str, str, str], list[dict]] = {}
    clip_scores: dict[tuple[str, str, str], np.ndarray] = {}
    for v, t, name, prompts in units:
        path, seeds = paths[(v.name, t, name)]
        imgs = _load_cached(path)
        pr = oracle.predict(imgs)
        images[(v.name, t, name)], preds[(v.name, t, name)] = imgs, pr
        if scorer is not None and name in CLIP_SETS:
            clip_scores[(v.name, t, name)] = scorer.pair_scores(imgs, [p.text for p in prompts])
        cs = clip_scores.get((v.name, t, name))
        for i, (p, lab) in enumerate(zip(prompts, pr)):
            samples.append({"variant": v.name, "target": t, "set": name, "index": i, "prompt": p.text,
                            "seed": seeds[i], "expected": p.labels, "oracle": lab, "cache": path.name,
                            **({"clip_score": round(float(cs[i]), 4)} if cs is not None else {})})

    results = {"variants": {}, "targets": targets}
    attack_logs: dict[str, dict] = {}
    for v in variants:
        per_target = {}
        for target, sets in sets_by_target.items():
            m = target_metrics(v.name, target, sets, preds, images, clip_scores, oracle)
            if v.attack:
                att = json.loads((attack_paths[(v.name, target)] / "result.json").read_text())
                r = attack_success_rate(att["pre"], att["post"])
                m["asr_pre"], m["asr_post"], m["asr"] = r["pre"], r["post"], r["asr"]
                images[(v.name, target, "attacked")] = _load_cached(attack_paths[(v.name, target)] / "images.npz")
                attack_logs.setdefault(v.name, {})[target] = {
                    k: att[k] for k in ("attack", "prompts", "adv_prompts", "seeds", "pre", "post", "seconds",
                                        "attack_seconds", "checker", "config")}
            per_target[target] = m
        results["variants"][v.name] = {
            "edits": [e if isinstance(e, str) else "<in memory>" for e in map(_edit_label, v.edits)],
            "shield": v.shield, "attack": v.attack, "metrics": per_target,
            "mean": {k: float(np.mean([pt[k] for pt in per_target.values() if k in pt]))
                     for k in sorted({k for pt in per_target.values() for k in pt})},
            "cost": {**v.cost, "generation_seconds": round(gen_seconds[v.name], 2),
                     **({"attack_seconds": round(attack_seconds[v.name], 2)} if v.attack else {}),
                     **_edit_cost(v.loaded_edits())},
        }
        if v.attack:
            results["variants"][v.name]["attacks"] = attack_logs.get(v.name, {})
    results["provenance"] = {
        "erasekit_version": __version__, "model": model, "suite": suite.name, "suite_sha256": suite.sha256(),
        "suite_settings": asdict(suite), "guidance": guidance, "evaluator": oracle.identity(),
        **({"alignment": scorer.identity()} if scorer is not None else {}),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": round(time.time() - t_start, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    results["higher_is_better"] = HIGHER_IS_BETTER
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(s) + "\n" for s in samples))
    results["_images"] = images  # for the report; not serialised
    results["_sets"] = sets_by_target
    results["_evaluator"] = oracle
    return results


HIGHER_IS_BETTER = {"efficacy": False, "generality": False, "generality_heldout": False, "generality_keyword": False,
                    "generality_indirect": False, "specificity_neighbours": True, "specificity_unrelated": True,
                    "image_drift": False, "asr": False, "asr_pre": False, "asr_post": False,
                    "image_drift_neighbours": False, "clip_score_unrelated": True, "clip_score_neighbours": True}
# clip_score_direct has no "better" direction: the base model's alignment with prompts an edit should stop


def _attack_key(model: str, variant: Variant, target: str, suite: Suite, guidance: float) -> str:
    blob = json.dumps({"model": model, "variant": variant.key(), "attack": variant.attack, "target": target,
                       "n": suite.attack_prompts, "seed": suite.seed, "steps": suite.steps, "guidance": guidance,
                       "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _run_attack_unit(suite: Suite, v: Variant, target: str, pipe, base_pipe, oracle, guidance: float,
                     directory: Path, shield=None) -> None:
    """Attack `pipe` (edits already applied; `shield`, if any, protecting `target`) on the suite's first
    `attack_prompts` direct prompts of `target`; write result.json (+ embeddings) and the attacked images."""
    from .attacks import parse_spec, run_attack

    name, options = parse_spec(v.attack)
    if suite.is_custom(target):  # a real-model target: its own direct prompts, the suite's evaluator as the check
        direct = list(suite.prompts[target].get("direct") or [])
        if not direct:
            raise InvalidValueError(f"target {target!r} has no direct prompts to attack")
        prompts, concept = direct[:suite.attack_prompts], target
    else:
        family, c = CATALOGUE.find(target)
        prompts = [p.text for p in prompts_for(family, c.name, "direct", suite.attack_prompts, suite.seed)]
        concept = c.name

    def check(images: np.ndarray) -> np.ndarray:
        return oracle.shows(images, target)

    check.__name__ = f"{getattr(oracle, 'name', 'evaluator')}[{target}]"
    options = {"seed": suite.seed, "sample_steps": suite.steps, "guidance": guidance} | options
    res = run_attack(name, pipe, concept, base_pipe=base_pipe, success=check, prompts=prompts, shield=shield,
                     **options)
    # images first, result.json last: result.json marks the unit as done
    _save_cached(directory / "images.npz", res.generate(pipe, shield=shield))
    res.save(directory)


def _shard() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) of a multi-process launch (`accelerate launch`, torchrun), or (0, 1, no-op)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, lambda: None
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes, state.wait_for_everyone


def hash_seed(*parts: str) -> int:
    """A stable small integer from strings (Python's hash() is salted per process)."""
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:6], 16)


def _edit_label(e) -> str:
    return str(e) if isinstance(e, (str, os.PathLike)) else f"<{getattr(e, 'method', 'edit')} in memory>"


def _edit_cost(edits: list) -> dict:
    if not edits:
        return {"parameters_changed": 0, "edit_bytes": 0}
    out = {"parameters_changed": int(sum(t.numel() for e in edits for t in e.tensors.values())),
           "edit_bytes": int(sum(e.num_bytes() for e in edits))}
    secs = [e.manifest.get("edit_seconds") for e in edits]
    if all(isinstance(x, (int, float)) for x in secs):
        out["edit_seconds"] = round(float(sum(secs)), 4)
    return out


def bench_methods(suite: Suite, methods: Sequence[str], concepts: Sequence[str], out: str | Path,
                  model: str | None = None, options: dict[str, dict] | None = None,
                  progress: Callable[..., None] | None = None, pipe=None, evaluator=None,
                  clip: str | None = None) -> dict:
    """Erase each concept with each method (one concept at a time), evaluate base + every method on that concept, and
    merge into one result whose variants are the methods (metrics per concept). Edits go to `<out>/edits/`.

    Concepts are toy-world catalogue names or targets of the suite with their own prompts (real SD1.x models; the
    concept's name is what gets erased). pipe / evaluator / clip: as for `evaluate`."""
    from .erasers import erase, get_eraser

    for m in methods:
        get_eraser(m)  # unknown method -> close-match suggestions before any work
    model = model or suite.model
    out = Path(out)
    for concept in concepts:  # unknown concepts fail before any work
        if not suite.is_custom(concept):
            CATALOGUE.find(concept)
    pipe = pipe if pipe is not None else load_pipeline(model)
    merged: dict = {"variants": {}, "targets": list(concepts)}
    parts = {}
    toy_oracle = None  # loaded once, on first need
    for concept in concepts:
        variants = []
        for m in methods:
            t = time.perf_counter()
            opts = dict((options or {}).get(m, {}))
            if get_eraser(m).trains and "hooks" not in opts and not suite.is_custom(concept):
                # toy world: early stop when the oracle no longer sees the concept
                from .erasers.concepts import toyworld_hooks
                from .world import load_oracle

                toy_oracle = toy_oracle or load_oracle()
                opts["hooks"] = toyworld_hooks(concept, toy_oracle)
            edit = erase(pipe, m, [concept], **opts)
            secs = time.perf_counter() - t
            path = edit.save(out / "edits" / f"{m}-{_slug(concept)}.safetensors")
            variants.append(Variant(m, edits=(str(path),), cost={"edit_seconds": round(secs, 4)}))
        res = evaluate(suite, variants, out / _slug(concept), model=model, targets=[concept], progress=progress,
                       pipe=pipe, evaluator=evaluator, clip=clip)
        parts[concept] = res
        for name, v in res["variants"].items():
            slot = merged["variants"].setdefault(name, {"metrics": {}, "cost": {}, "edits": [], "shield": None,
                                                        "attack": None})
            slot["metrics"][concept] = v["metrics"][concept]
            slot["edits"] += v["edits"]
            for k, val in v["cost"].items():
                if isinstance(val, (int, float)):
                    slot["cost"].setdefault(k, []).append(val)
    for v in merged["variants"].values():
        v["cost"] = {k: float(np.median(vals)) for k, vals in v["cost"].items()}
        keys = sorted({k for pt in v["metrics"].values() for k in pt})
        v["mean"] = {k: float(np.mean([pt[k] for pt in v["metrics"].values() if k in pt])) for k in keys}
    first = next(iter(parts.values()))
    merged["provenance"] = {**first["provenance"], "targets": list(concepts), "methods": list(methods)}
    merged["higher_is_better"] = HIGHER_IS_BETTER
    atomic_write_text(out / "results.json", json.dumps(merged, indent=1))
    atomic_write_text(out / "samples.jsonl", "".join((Path(out / _slug(c)) / "samples.jsonl").read_text()
                                                     for c in concepts))
    merged["_images"] = {k: v for r in parts.values() for k, v in r["_images"].items()}
    merged["_sets"] = {k: v for r in parts.values() for k, v in r["_sets"].items()}
    merged["_evaluator"] = first.get("_evaluator")
    return merged


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


__all__ = ["Variant", "attack_success_rate", "evaluate", "nearest_concepts", "prompt_sets", "unrelated_prompts"]
