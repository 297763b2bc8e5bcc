"""Score Forgetting Distillation on the shipped toy model (`toyworld`): train, then measure through the harness.

    .venv/bin/python bench/sfd/measure.py --concept Zorbo --max-seconds 300 --out runs/sfd/zorbo

1. SFD with the world's default request (erase, guide, preserve) and 8 training-style templates, under a wall budget;
   cost: wall / CPU seconds, peak RSS, parameters changed, edit bytes.
2. `erasekit.evaluation.evaluate` with the one-step pipeline (`sfd.one_step_pipeline`), steps=1, guidance=1: base
   variant = the teacher sampled the same way (the generator's initialisation), "sfd" = the trained generator.
3. The same harness at the model's own sampling (25 steps, CFG 5): the base model's multi-step reference
   (and, with --multistep-edit, the SFD generator forced through the multi-step sampler).
4. Sampling time of 16 images: one step vs the base's 25 steps with CFG (median of --repeats).
Writes <out>/summary.json; prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import erasekit  # noqa: E402
from erasekit.erasers import sfd  # noqa: E402
from erasekit.evaluation import Variant, evaluate  # noqa: E402
from erasekit.suite import load_suite  # noqa: E402
from erasekit.worlds import get_world  # noqa: E402

KEYS = ("detection", "accuracy_direct", "detection_heldout", "detection_keyword", "detection_indirect",
        "detection_generality", "accuracy_neighbours", "accuracy_unrelated", "image_drift")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def means(results: dict) -> dict:
    return {name: {k: v["mean"].get(k) for k in KEYS if v["mean"].get(k) is not None}
            for name, v in results["variants"].items()}


def timed(fn, repeats: int) -> dict:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_median": round(statistics.median(walls), 3), "cpu_median": round(statistics.median(cpus), 3),
            "walls": [round(x, 3) for x in walls]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concept", default="Zorbo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--options", default="{}", help="JSON SFD options (steps, lr, fake_lr, batch, ...)")
    ap.add_argument("--direct", type=int, default=16)
    ap.add_argument("--other", type=int, default=16, help="held-out / keyword / indirect images")
    ap.add_argument("--neighbours", type=int, default=8)
    ap.add_argument("--unrelated", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--multistep-edit", action="store_true")
    ap.add_argument("--guide", default=None, help="override concept (default: the world's guide for the concept)")
    ap.add_argument("--shared", default="", help="folder for the harness runs (its image cache is reused by later "
                    "runs: the base model's images are generated once); results.json is copied to --out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"concept": args.concept, "model": "toyworld", "threads": torch.get_num_threads(),
                     "load_avg_start": os.getloadavg()}

    world = get_world("toyworld")
    pipe = erasekit.load_pipeline("toyworld")
    req = world.concept(args.concept).request()
    if args.guide is not None:
        req["guide"] = args.guide
    opts = {"templates": world.templates(req["erase"][0], 8), "max_seconds": args.max_seconds,
            **json.loads(args.options)}
    rss0 = rss_mb()
    w0, c0 = time.perf_counter(), time.process_time()
    edit = erasekit.erase(pipe, "sfd", erase=req["erase"], guide=req["guide"], preserve=req["preserve"], **opts)
    train = edit.manifest["info"]["train"]
    summary["train"] = {"wall_s": round(time.perf_counter() - w0, 1), "cpu_s": round(time.process_time() - c0, 1),
                        "steps": train["steps"], "stopped": train["stopped"], "final_loss": train["final_loss"],
                        "losses_first5": train["losses"][:5], "losses_last5": train["losses"][-5:],
                        "peak_rss_mb_before": round(rss0, 1), "peak_rss_mb_after": round(rss_mb(), 1),
                        "parameters_changed": edit.num_parameters(), "edit_bytes": edit.num_bytes(),
                        "fake_score_numel": edit.manifest["info"]["fake_score_numel"],
                        "options": {k: v for k, v in opts.items() if k != "templates"},
                        "request": req}
    path = edit.save(out / "edit.safetensors")
    cost = {"edit_seconds": summary["train"]["wall_s"]}

    base_suite = load_suite("default")
    samples = {"direct": args.direct, "heldout": args.other, "keyword": args.other, "indirect": args.other,
               "neighbours": args.neighbours, "unrelated": args.unrelated}
    one = sfd.one_step_pipeline(pipe, edit)
    s1 = dataclasses.replace(base_suite, name="sfd-one-step", targets=(args.concept,), steps=1, guidance=1.0,
                             samples=samples)
    w = time.perf_counter()
    runs = Path(args.shared) if args.shared else out
    r1 = evaluate(s1, [Variant("sfd", edits=(str(path),), cost=cost)], runs / "one_step", pipe=one)
    (out / "one_step.results.json").write_text(json.dumps(r1, indent=1))
    summary["one_step"] = {"metrics": means(r1), "eval_wall_s": round(time.perf_counter() - w, 1),
                           "note": "base = the teacher sampled in one step (the generator's initialisation)"}

    s25 = dataclasses.replace(base_suite, name="sfd-multi-step", targets=(args.concept,), samples=samples)
    variants = [Variant("sfd-multistep", edits=(str(path),), cost=cost)] if args.multistep_edit else []
    w = time.perf_counter()
    r25 = evaluate(s25, variants, runs / "multi_step", pipe=pipe)
    (out / "multi_step.results.json").write_text(json.dumps(r25, indent=1))
    summary["multi_step"] = {"metrics": means(r25), "eval_wall_s": round(time.perf_counter() - w, 1),
                             "steps": r25.get("provenance", {}).get("steps", "model default (25)"),
                             "note": "base = the teacher with its own sampler (25 steps, CFG 5)"}

    prompts = [p.text for p in world.unrelated(args.concept, 16, 0)]
    with edit.applied(pipe):
        t_one = timed(lambda: erasekit.generate(one, prompts, 0, steps=1, guidance=1.0), args.repeats)
    t_multi = timed(lambda: erasekit.generate(pipe, prompts, 0), args.repeats)
    summary["sampling_16_images"] = {"one_step": t_one, "base_multi_step": t_multi,
                                     "speedup_wall": round(t_multi["wall_median"] / t_one["wall_median"], 1),
                                     "speedup_cpu": round(t_multi["cpu_median"] / max(t_one["cpu_median"], 1e-9), 1)}
    summary["load_avg_end"] = os.getloadavg()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
