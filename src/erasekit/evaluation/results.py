"""Stage 4 of an evaluation: aggregate per-target metrics into per-variant means and costs, record the provenance
(everything the cache key holds, and more), and write results.json (strict JSON) + samples.jsonl atomically."""

from __future__ import annotations

import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import InvalidValueError
from ..io import atomic_write_text
from ..metrics import TRIGGER_SET, metrics_info
from .plan import Plan
from .score import attack_metrics, target_metrics, trigger_ranking, unsafe_breakdown, unsafe_categories


def _edit_cost(edits: list) -> dict:
    if not edits:
        return {"parameters_changed": 0, "edit_bytes": 0}
    out = {"parameters_changed": int(sum(e.num_parameters() for e in edits)),
           "edit_bytes": int(sum(e.num_bytes() for e in edits))}
    secs = [e.manifest.get("edit_seconds") for e in edits]
    if all(isinstance(x, (int, float)) for x in secs):
        out["edit_seconds"] = round(float(sum(secs)), 4)
    return out


def means(rows: Any) -> dict[str, float]:
    """{metric: mean over the rows ({metric: value} dicts) that have it}."""
    rows = list(rows)
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def family_means(per_target: dict[str, dict[str, float]], families: dict[str, str]) -> dict[str, dict[str, float]]:
    """{family: means over that family's targets} (families: {target: the evaluator's family})."""
    out: dict[str, list[dict[str, float]]] = {}
    for t, m in per_target.items():
        out.setdefault(families.get(t, ""), []).append(m)
    return {f: means(rows) for f, rows in out.items()}


def aggregate(plan: Plan, out: Path, images: dict, labels: dict, samples: list[dict], seconds: dict[str, float],
              scorer: Any, t_start: float) -> dict:
    """The results dict (what results.json holds)."""
    clip: dict[tuple[str, str, str], list[float]] = {}
    for s in samples:
        if "clip_score" in s:
            clip.setdefault((s["variant"], s["target"], s["set"]), []).append(s["clip_score"])
    families = {t: plan.evaluator.target(t)[0] for t in plan.targets}
    results: dict[str, Any] = {"variants": {}, "targets": plan.targets, "families": families}
    counts = plan.world.training_counts(plan.model_ref)
    if counts:  # how often the model saw each target in training (the imitation threshold's x axis)
        known = {t: (plan.world.find(t) if plan.world.knows(t) else (None, None)) for t in plan.targets}
        results["training_counts"] = {t: int(counts[f][n]) for t, (f, n) in known.items()
                                      if f in counts and n in counts[f]}
    for pv in plan.variants:
        per_target: dict[str, dict[str, float]] = {}
        attacks: dict[str, dict] = {}
        for t in plan.targets:
            m = target_metrics(plan, pv.name, t, images, labels, clip)
            if pv.attack is not None:
                am, attacks[t] = attack_metrics(plan, out, pv.name, t)
                m |= am
            per_target[t] = m
        entry: dict[str, Any] = {
            "edits": pv.edit_info, "shield": pv.shield and pv.shield["spec"], "attack": pv.attack and pv.attack["spec"],
            "metrics": per_target,
            "mean": means(per_target.values()),
            "by_family": family_means(per_target, families),
            "cost": {**pv.variant.cost, "generation_seconds": round(seconds.get(pv.name, 0.0), 2),
                     **_edit_cost(pv.edits)},
        }
        if any(TRIGGER_SET in plan.sets[t] for t in plan.targets):  # CopyCat's keyword-trigger ranking
            entry["triggers"] = {t: trigger_ranking(plan, pv.name, t, labels) for t in plan.targets
                                 if TRIGGER_SET in plan.sets[t]}
        if plan.suite.unsafe:  # Unsafe Diffusion's per-category rates, per target and prompt set
            entry["unsafe"] = {t: unsafe_breakdown(plan, pv.name, t, labels) for t in plan.targets}
        if pv.attack is not None:
            entry["attacks"] = attacks
            entry["cost"]["attack_seconds"] = round(sum(a["attack_seconds"] for a in attacks.values()), 2)
        results["variants"][pv.name] = entry
    names = sorted({k for v in results["variants"].values() for k in list(v["mean"]) + list(v["cost"])})
    results["metrics_info"] = metrics_info(names)
    results["sets"] = {t: {s: len(p) for s, p in by_set.items()} for t, by_set in plan.sets.items()}
    if plan.suite.unsafe:  # the categories measured, as the suite names them and as the evaluator labels them
        results["unsafe_categories"] = {c: list(fl) for c, fl in zip(plan.suite.unsafe["categories"],
                                                                      unsafe_categories(plan))}
    results["provenance"] = provenance(plan, scorer, t_start)
    return results


def provenance(plan: Plan, scorer: Any, t_start: float) -> dict:
    """Everything that determined the numbers: versions, model fingerprint, sampling, suite, world, evaluator."""
    from dataclasses import asdict

    return {
        "erasekit_version": __version__, "model": plan.model, "weights": plan.fingerprint["weights"],
        "weights_sha256": plan.fingerprint["sha256"], "dtype": plan.fingerprint["dtype"],
        "device": plan.fingerprint["device"], "scheduler": plan.fingerprint["scheduler"],
        "steps": plan.steps, "guidance": plan.guidance, "seed": plan.suite.seed,
        "edits": {pv.name: pv.edit_info for pv in plan.variants if pv.edit_info},
        "shields": {pv.name: pv.shield for pv in plan.variants if pv.shield is not None},
        "attacks": {pv.name: pv.attack for pv in plan.variants if pv.attack is not None},
        "suite": plan.suite.name, "suite_sha256": plan.suite.sha256(), "suite_settings": asdict(plan.suite),
        "world": plan.world.identity(), "evaluator": plan.evaluator.identity(),
        **({"alignment": scorer.identity()} if scorer is not None else {}),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": round(time.time() - t_start, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _check_finite(x: Any, where: str = "results") -> None:
    if isinstance(x, float) and not math.isfinite(x):
        raise InvalidValueError(f"{where} is {x}: refusing to write a non-finite number into results.json")
    if isinstance(x, dict):
        for k, v in x.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _check_finite(v, f"{where}[{i}]")


def write_results(out: Path, results: dict, samples: list[dict]) -> dict:
    """results.json (strict JSON: NaN/inf refused, naming the key) and samples.jsonl, each written atomically;
    returns what results.json now holds (plain JSON types: lists, not tuples)."""
    _check_finite(results)
    text = json.dumps(results, indent=1, allow_nan=False)
    atomic_write_text(out / "results.json", text)
    atomic_write_text(out / "samples.jsonl", "".join(json.dumps(s, allow_nan=False) + "\n" for s in samples))
    return json.loads(text)


def run_images(run_dir: str | Path, variant: str, target: str, set_name: str) -> np.ndarray:
    """(N, H, W, 3) uint8 images of one prompt set of a finished run, read from its files alone: samples.jsonl names
    the cache file and index of every image; set_name "attacked" gives the attacked images (from results.json)."""
    run_dir = Path(run_dir)
    if set_name == "attacked":
        res = json.loads((run_dir / "results.json").read_text())
        att = res["variants"][variant].get("attacks", {}).get(target)
        if att is None:
            raise InvalidValueError(f"variant {variant!r} of {run_dir} was not attacked on {target!r}")
        with np.load(run_dir / att["images"]) as z:
            return z["images"]
    rows = [r for r in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())
            if (r["variant"], r["target"], r["set"]) == (variant, target, set_name)]
    if not rows:
        raise InvalidValueError(f"{run_dir} has no images of ({variant!r}, {target!r}, {set_name!r})")
    files = {r["cache"] for r in rows}
    batches = {}
    for f in files:
        with np.load(run_dir / "cache" / f) as z:
            batches[f] = z["images"]
    return np.stack([batches[r["cache"]][r["index"]] for r in sorted(rows, key=lambda r: r["index"])])


__all__ = ["aggregate", "family_means", "means", "provenance", "run_images", "write_results"]
