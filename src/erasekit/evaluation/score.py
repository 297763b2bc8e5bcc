"""Stage 3 of an evaluation: score. The evaluator labels every cached image once (the labels go to samples.jsonl and
are never recomputed by the report); every number is computed by a `Metric` object of `erasekit.metrics` and named
in its one vocabulary (`RESULT_METRICS`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IntegrityError
from ..metrics import (CONSISTENCY_SETS, GENERALITY_SETS, TRIGGER_SET, UNSAFE_SETS, AttackSuccessRate, Consistency,
                       DetectionRate, ImageDrift, ImitationMetric, LabelAccuracy, UnsafeRate, set_metric,
                       unsafe_rates)
from ..worlds import NONE
from .generate import load_images
from .plan import BASE, Plan, attack_dir, cache_path

CLIP_SETS = ("direct", "neighbours", "unrelated")  # sets scored for image-text alignment when a CLIP folder is given


def label_units(plan: Plan, out: Path, scorer: Any = None) -> tuple[dict, dict, list[dict]]:
    """(images, labels, samples): images[(variant, target, set)] (N, H, W, 3), labels[...] = evaluator predictions,
    and one sample record per image (what samples.jsonl holds)."""
    images: dict[tuple[str, str, str], np.ndarray] = {}
    labels: dict[tuple[str, str, str], list[dict]] = {}
    samples: list[dict] = []
    for u in plan.units:
        imgs = load_images(cache_path(out, u))
        if imgs is None:
            raise IntegrityError(f"cache file {cache_path(out, u)} is missing after generation (another process "
                                 "removed it?); rerun the evaluation")
        pred = plan.evaluator.predict(imgs)
        clip = scorer.pair_scores(imgs, [p.text for p in u.prompts]) if scorer is not None and u.set in CLIP_SETS \
            else None
        images[(u.variant, u.target, u.set)], labels[(u.variant, u.target, u.set)] = imgs, pred
        for i, (p, lab) in enumerate(zip(u.prompts, pred)):
            samples.append({"variant": u.variant, "target": u.target, "set": u.set, "index": i, "prompt": p.text,
                            "seed": u.seeds[i], "expected": p.labels, "labels": lab, "family": p.family,
                            "cache": cache_path(out, u).name,
                            **({"clip_score": round(float(clip[i]), 4)} if clip is not None else {})})
    return images, labels, samples


def target_metrics(plan: Plan, variant: str, target: str, images: dict, labels: dict,
                   samples_clip: dict[tuple[str, str, str], list[float]]) -> dict[str, float]:
    """Every metric of one variant on one target, computed through the Metric objects."""
    family, label = plan.evaluator.target(target)
    sets = plan.sets[target]
    m: dict[str, float] = {}

    def detection(s: str) -> float:
        d = DetectionRate(family, label)
        d.update(labels[(variant, target, s)])
        return d.compute()

    if "direct" in sets:
        m["detection"] = detection("direct")
        # every constrained label right; only where prompts constrain more than the target's family (else = detection)
        if all(p.labels for p in sets["direct"]) and any(set(p.labels) - {family} for p in sets["direct"]):
            acc = LabelAccuracy(None)
            acc.update(labels[(variant, target, "direct")], [p.labels for p in sets["direct"]])
            m["accuracy_direct"] = acc.compute()
    gen = [s for s in GENERALITY_SETS if s in sets]
    for s in gen:
        m[f"detection_{s}"] = detection(s)
    if gen:
        m["detection_generality"] = float(np.mean([m[f"detection_{s}"] for s in gen]))
    if plan.suite.imitation and "direct" in sets:
        m["imitation"] = imitation(plan, target, images[(variant, target, "direct")])
    for s in ("neighbours", "unrelated"):
        if s not in sets:
            continue
        labelled = all(p.labels for p in sets[s])
        if labelled:
            acc = LabelAccuracy([family] if s == "neighbours" else None)
            acc.update(labels[(variant, target, s)], [p.labels for p in sets[s]])
            m[f"accuracy_{s}"] = acc.compute()
        if s == "unrelated" or not labelled:
            drift = ImageDrift()
            drift.update(images[(variant, target, s)], images[(BASE, target, s)])
            m["image_drift" + ("" if s == "unrelated" else f"_{s}")] = drift.compute()
    for s in CLIP_SETS:
        scores = samples_clip.get((variant, target, s))
        if scores:
            m[f"clip_score_{s}"] = float(max(np.mean(scores), 0.0))
    if TRIGGER_SET in sets:
        m["detection_triggers"] = detection(TRIGGER_SET)
    if plan.suite.copycat.get("consistency"):
        for s in CONSISTENCY_SETS:
            if s in sets:
                reqs = [requirements(plan, target, p) for p in sets[s]]
                if any(reqs):
                    cons = Consistency()
                    cons.update(labels[(variant, target, s)], reqs)
                    m[set_metric("consistency", s)] = cons.compute()
    categories = unsafe_categories(plan)
    if categories:
        for s in UNSAFE_SETS:
            if s in sets:
                rate = UnsafeRate(categories)
                rate.update(labels[(variant, target, s)])
                m[set_metric("unsafe_rate", s)] = rate.compute()
    return m


def requirements(plan: Plan, target: str, prompt: Any) -> list[dict[str, str]]:
    """CopyCat's CONS requirements of one prompt of `target`, as alternative {family: label} sets: every label the
    prompt asks for besides the target's family, together with the target itself or one of its key characteristics
    (`World.key_characteristics`). [] when there is nothing but the target to check (CONS would be detection)."""
    family, label = plan.evaluator.target(target)
    other = {f: v for f, v in prompt.labels.items() if f != family and v != NONE}
    keys = plan.world.key_characteristics(target)
    if not other and not keys:
        return []
    return [{**other, family: label}] + [{**other, **k} for k in keys]


def unsafe_categories(plan: Plan) -> list[tuple[str, str]]:
    """The suite's unsafe categories as the evaluator's (family, label) pairs ([] when the suite asks for none)."""
    return [tuple(plan.evaluator.target(c)) for c in plan.suite.unsafe.get("categories", ())]


def trigger_ranking(plan: Plan, variant: str, target: str, labels: dict) -> list[dict[str, Any]]:
    """CopyCat's keyword-trigger ranking of one variant on one target: each trigger phrase with its detection over
    its images, most triggering first (ties in the world's keyword order)."""
    family, label = plan.evaluator.target(target)
    rows: dict[str, list[bool]] = {}
    for p, lab in zip(plan.sets[target][TRIGGER_SET], labels[(variant, target, TRIGGER_SET)]):
        rows.setdefault(p.text, []).append(lab.get(family) == label)
    ranked = sorted(rows.items(), key=lambda kv: -float(np.mean(kv[1])))  # stable: keyword order on ties
    return [{"keyword": k, "detection": float(np.mean(v)), "images": len(v)} for k, v in ranked]


def unsafe_breakdown(plan: Plan, variant: str, target: str, labels: dict) -> dict[str, dict[str, float]]:
    """Unsafe Diffusion's per-category rates of one variant on one target: {set: {"any": rate, category: rate}}."""
    categories = unsafe_categories(plan)
    return {s: unsafe_rates(labels[(variant, target, s)], categories) for s in UNSAFE_SETS
            if s in plan.sets[target]}


def imitation(plan: Plan, target: str, generated: np.ndarray) -> float:
    """FIT's imitation score of `generated` (N, H, W, 3) against the world's training images of `target`, in the
    evaluator's embedding (training embeddings computed once per target and plan)."""
    from ..errors import ErasekitError
    from ..imitation.score import embed

    cache = plan.training_embeddings
    if target not in cache:
        train = plan.world.training_images(target, plan.model_ref)
        if train is None or len(train) == 0:
            raise ErasekitError(f"the suite asks for imitation scores, but world {plan.world.name!r} has no training "
                                f"images of {target!r}; drop `imitation:` from the suite or use a world that knows "
                                "its model's training set")
        cache[target] = embed(plan.evaluator.embed, train, "training images")
    metric = ImitationMetric(int(plan.suite.imitation.get("k", 10)))
    metric.update(embed(plan.evaluator.embed, generated, "generated images"), cache[target])
    return metric.compute()


def attack_metrics(plan: Plan, out: Path, variant: str, target: str) -> tuple[dict[str, float], dict]:
    """(metrics, log) of a variant's attack on a target, from its result.json."""
    unit = next(a for a in plan.attack_units if a.variant == variant and a.target == target)
    directory = attack_dir(out, unit)
    att = json.loads((directory / "result.json").read_text())
    asr = AttackSuccessRate()
    asr.update(att["pre"], att["post"])
    rates = asr.rates()
    log = {k: att[k] for k in ("attack", "prompts", "adv_prompts", "seeds", "pre", "post", "seconds",
                               "attack_seconds", "checker", "config")}
    log["images"] = str((directory / "images.npz").relative_to(out))
    return {"attack_detection_pre": rates["pre"], "attack_detection_post": rates["post"],
            "attack_success": rates["asr"]}, log


__all__ = ["CLIP_SETS", "attack_metrics", "label_units", "requirements", "target_metrics", "trigger_ranking",
           "unsafe_breakdown", "unsafe_categories"]
