"""Memorized-subspace pruning (Chavhan et al. 2024, `erasekit.erasers.mempruning`) and its critique Finding Dori
(Kowalczuk et al. 2025, `erasekit.attacks.finding_dori`) on a toy-world v2 model trained with memorized pairs
(issue 18). Ground truth: the model's duplicated image-caption pairs (`World.memorized_pairs`) at known counts.

  1. detection: AUC of Wen et al.'s conditional-magnitude detector, memorized captions (per duplicate count) against
     fresh captions of the training grammar -- before and after pruning;
  2. pruning: the captions of the pairs duplicated >= --prune-min-count times are the memorized set (or, with
     --detect-quantile Q, those of all pairs the detector flags above the Q quantile of the fresh captions), another
     set of fresh captions the ordinary one; time and weights changed;
  3. verbatim reproduction rate per duplicate count (generations closer to the training image than any of 16 other
     renderings of its scene) before and after pruning;
  4. collateral: the oracle's detection rate of a few object/character concepts from their direct prompts, before
     and after pruning;
  5. Finding Dori: on the pruned model, for each pruned pair, the text-embedding search from its caption; the
     verbatim rate of the found embedding over --seeds seeds, against a random perturbation of the same size.

    python bench/memorization_pruning.py --model /work/runs/train-v2g --out runs/mempruning.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

COLLATERAL = ("circle", "square", "triangle", "Mossy", "Kiko", "Zorbo")


def fresh_captions(n: int, seed: int) -> list[str]:
    """`n` captions of the v2 training grammar for fresh scenes (never duplicated), as bench/memorization.py makes."""
    from erasekit.toyworld.captions_v2 import caption_v2
    from erasekit.toyworld.eval_grammar import protected_pattern
    from erasekit.toyworld.oracle import random_scenes

    rng = np.random.default_rng(12345 + seed)
    avoid = protected_pattern()
    return [caption_v2(s, rng, avoid=avoid) for s in random_scenes(n, seed)]


def verbatim_rates(pipe, pairs, seeds: int) -> list[dict]:
    """Per pair: share of `seeds` generations of its caption that are verbatim copies, median RMSE, threshold."""
    from erasekit import generate
    from erasekit.memorization import verbatim_copies

    out = []
    for p in pairs:
        imgs = generate(pipe, [p.caption] * seeds, list(range(seeds)))
        is_copy, dist, thr = verbatim_copies(imgs, p.image, p.references)
        out.append({"caption": p.caption, "count": p.count, "verbatim_rate": float(is_copy.mean()),
                    "median_rmse": float(np.median(dist)), "threshold": thr})
    return out


def by_count(rows: list[dict], key: str) -> dict[str, float]:
    counts = sorted({r["count"] for r in rows})
    return {str(c): float(np.mean([r[key] for r in rows if r["count"] == c])) for c in counts}


def detection(pipe, pairs, others: list[str], seeds: int) -> dict:
    """Detector AUC per duplicate count against the fresh captions, and the magnitudes."""
    from erasekit.membership import auc
    from erasekit.memorization import prompt_magnitudes

    d_mem = prompt_magnitudes(pipe, [p.caption for p in pairs], seeds)
    d_oth = prompt_magnitudes(pipe, others, seeds)
    res = {"others_median": float(np.median(d_oth)), "magnitudes": [float(x) for x in d_mem], "auc": {}}
    for c in sorted({p.count for p in pairs}):
        dm = np.array([d for d, p in zip(d_mem, pairs) if p.count == c])
        res["auc"][str(c)] = auc(np.r_[dm, d_oth], np.r_[np.ones(len(dm), bool), np.zeros(len(d_oth), bool)])
    return res


def collateral(pipe, evaluator, world, concepts, n: int) -> dict[str, float]:
    """The evaluator's detection rate of each concept over `n` direct prompts (seeds 0..n-1)."""
    from erasekit import generate

    out = {}
    for c in concepts:
        prompts = [p.text for p in world.prompts(c, "direct", n, 0)]
        imgs = generate(pipe, prompts, list(range(len(prompts))))
        out[c] = float(np.mean(evaluator.shows(imgs, c)))
    return out


def dori(pipe, pairs, seeds: int, steps: int, radius: float | None, lr: float, objective: str = "magnitude",
         base=None) -> list[dict]:
    """Finding Dori on `pipe` for each pair: attack seed 0, then the found embedding (and a random perturbation of
    the same norm) replayed over `seeds` seeds. base: the unpruned model (objective "denoise")."""
    from erasekit.attacks import AttackContext, run_attack
    from erasekit.memorization import verbatim_copies
    from erasekit.sampling import encode_prompts, resolve_sampling

    rows = []
    for p in pairs:
        def copies(images, p=p):
            return verbatim_copies(images, p.image, p.references)[0]

        t0 = time.perf_counter()
        r = run_attack("finding_dori", pipe, p.caption, prompts=[p.caption], success=copies, steps=steps,
                       radius=radius, lr=lr, seed=0, objective=objective, base_pipe=base)
        sec = time.perf_counter() - t0
        emb = r.embeddings[:1]
        e0 = encode_prompts(pipe, [p.caption]).float()
        delta = emb - e0
        gen = torch.Generator().manual_seed(0)
        rnd = torch.randn(e0.shape, generator=gen)
        rnd = e0 + rnd * (delta.norm() / rnd.norm())
        s, g = resolve_sampling(pipe)
        ctx = AttackContext(pipe, None, p.caption, None, None, None, s, g)
        adv = ctx.render_embeddings(emb.expand(seeds, -1, -1), list(range(seeds)))
        ctl = ctx.render_embeddings(rnd.expand(seeds, -1, -1), list(range(seeds)))
        lg = r.logs[0]
        rows.append({"caption": p.caption, "count": p.count, "success_seed0": bool(r.broken[0]),
                     "pre_seed0": bool(r.pre[0]), "steps": lg.steps, "seconds": round(sec, 1),
                     "relative_distance": lg.extra.get("relative_distance"),
                     "start_loss": lg.extra.get("start_loss"), "end_loss": lg.extra.get("end_loss"),
                     "verbatim_rate_adv": float(copies(adv).mean()), "verbatim_rate_random": float(copies(ctl).mean())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a toy-world training folder (manifest.json + pipeline/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--others", type=int, default=32, help="fresh captions for the detector AUC")
    ap.add_argument("--preserve", type=int, default=16, help="fresh captions, the ordinary set pruning contrasts")
    ap.add_argument("--det-seeds", type=int, default=2, help="generations per prompt for the detector")
    ap.add_argument("--seeds", type=int, default=8, help="generations per pair for the verbatim rate")
    ap.add_argument("--prune-min-count", type=int, default=100, help="pairs duplicated this often are pruned for")
    ap.add_argument("--detect-quantile", type=float, default=None,
                    help="instead: prune for the pairs the detector flags above this quantile of fresh captions")
    ap.add_argument("--skill-ratio", type=float, default=0.01)
    ap.add_argument("--select-ratio", type=float, default=0.5)
    ap.add_argument("--prune-seeds", type=int, default=2, help="generations per prompt whose activations are recorded")
    ap.add_argument("--layers", default="ffn", help="scored layers: ffn (official), attn_k, attn_v, attn_kv")
    ap.add_argument("--collateral", type=int, default=8, help="direct prompts per collateral concept (0: skip)")
    ap.add_argument("--dori-steps", type=int, default=50, help="Finding Dori Adam steps per pair (0: skip)")
    ap.add_argument("--dori-radius", type=float, default=None)
    ap.add_argument("--dori-lr", type=float, default=0.05)
    ap.add_argument("--dori-objective", default="magnitude", help="magnitude (image-free) or denoise (the unpruned "
                                                                  "model's image of the caption as target)")
    ap.add_argument("--skip-detection", action="store_true")
    ap.add_argument("--counts", default="", help="evaluate only the pairs with these duplicate counts, e.g. 1000,1 "
                                                 "(pruning still uses every pair it selects)")
    ap.add_argument("--dori-pairs", type=int, default=0, help="attack at most this many pruned pairs (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    # heavily pruned models produce float32 subnormals on CPU, which made generation >10x slower here (measured:
    # 3.7 s per image with flushing, not done after 30 s without); flushing them to zero changes values < 1.2e-38
    torch.set_flush_denormal(True)
    from erasekit import erase, load_pipeline
    from erasekit.evaluators import get_evaluator
    from erasekit.worlds import get_world

    out = Path(a.out)
    if out.exists():
        raise SystemExit(f"error: {out} exists; choose another --out")
    folder = Path(a.model)
    world = get_world("toyworld")
    pairs = world.memorized_pairs(str(folder), references=16)
    if not pairs:
        raise SystemExit(f"error: {folder} was trained without memorized pairs (manifest dataset.v2.memorized)")
    pipe = load_pipeline(str(folder / "pipeline"))
    all_pairs = pairs
    if a.counts:
        keep = {int(c) for c in a.counts.split(",")}
        pairs = [p for p in pairs if p.count in keep]
    t_all = time.perf_counter()
    others, preserve = fresh_captions(a.others, 777), fresh_captions(a.preserve, 778)
    res: dict = {"model": str(folder), "args": vars(a), "pairs": [{"caption": p.caption, "count": p.count}
                                                                  for p in all_pairs]}
    if not a.skip_detection:
        t = time.perf_counter()
        res["detection_before"] = detection(pipe, pairs, others, a.det_seeds)
        res["detection_before"]["seconds"] = round(time.perf_counter() - t, 1)
    # pruning
    if a.detect_quantile is None:
        erase_set = [p.caption for p in all_pairs if p.count >= a.prune_min_count]
        kw = {}
    else:
        erase_set, kw = [p.caption for p in all_pairs], {"detect_quantile": a.detect_quantile}
    t = time.perf_counter()
    edit = erase(pipe, "mempruning", erase=erase_set, preserve=preserve, skill_ratio=a.skill_ratio,
                 select_ratio=a.select_ratio, seeds=a.prune_seeds, layers=a.layers, **kw)
    info = edit.manifest["info"]
    unet_params = sum(x.numel() for x in pipe.unet.parameters())
    res["pruning"] = {"seconds": round(time.perf_counter() - t, 1), "erase": erase_set,
                      "pruned_weights": info["pruned_weights"], "scored_weights": info["scored_weights"],
                      "pruned_fraction_of_scored": info["pruned_fraction"],
                      "pruned_fraction_of_unet": info["pruned_weights"] / unet_params,
                      "per_layer": info["per_layer"], "detected": info.get("detected")}
    pruned_set = set(info.get("detected") or erase_set)
    print(f"pruned {info['pruned_weights']} weights ({info['pruned_fraction']:.4%} of the scored layers) in "
          f"{res['pruning']['seconds']} s", flush=True)
    # verbatim + collateral before / after
    evaluator = get_evaluator("toyworld-oracle")
    t = time.perf_counter()
    before = verbatim_rates(pipe, pairs, a.seeds)
    col_before = collateral(pipe, evaluator, world, COLLATERAL, a.collateral) if a.collateral else {}
    base = copy.deepcopy(pipe) if a.dori_steps and a.dori_objective == "denoise" else None
    edit.apply(pipe)
    try:
        after = verbatim_rates(pipe, pairs, a.seeds)
        col_after = collateral(pipe, evaluator, world, COLLATERAL, a.collateral) if a.collateral else {}
        if not a.skip_detection:
            res["detection_after"] = detection(pipe, pairs, others, a.det_seeds)
        res["verbatim_seconds"] = round(time.perf_counter() - t, 1)
        print("verbatim before", by_count(before, "verbatim_rate"), "after", by_count(after, "verbatim_rate"),
              flush=True)
        if a.dori_steps:
            t = time.perf_counter()
            targets = [p for p in pairs if p.caption in pruned_set]
            targets = sorted(targets, key=lambda p: -p.count)[:a.dori_pairs or None]
            res["dori"] = dori(pipe, targets, a.seeds, a.dori_steps, a.dori_radius, a.dori_lr, a.dori_objective, base)
            res["dori_seconds"] = round(time.perf_counter() - t, 1)
    finally:
        edit.revert(pipe)
    res.update(verbatim_before=before, verbatim_after=after, collateral_before=col_before, collateral_after=col_after,
               seconds=round(time.perf_counter() - t_all, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    # tables
    vb, va = by_count(before, "verbatim_rate"), by_count(after, "verbatim_rate")
    print("| duplicates | pairs | AUC before | AUC after | verbatim before | verbatim after |")
    print("|---|---|---|---|---|---|")
    for c in vb:
        n = sum(p.count == int(c) for p in pairs)
        ab = res.get("detection_before", {}).get("auc", {}).get(c, float("nan"))
        aa = res.get("detection_after", {}).get("auc", {}).get(c, float("nan"))
        print(f"| {c} | {n} | {ab:.3f} | {aa:.3f} | {vb[c]:.2f} | {va[c]:.2f} |")
    if col_before:
        print("collateral (oracle detection, before -> after):",
              ", ".join(f"{c} {col_before[c]:.2f}->{col_after[c]:.2f}" for c in col_before))
    for r in res.get("dori", []):
        moved = "not attacked (still copies at seed 0)" if r["relative_distance"] is None else (
            f"dist {r['relative_distance']:.3f} loss {r['start_loss']:.3f}->{r['end_loss']:.3f}")
        print(f"dori count={r['count']}: adv {r['verbatim_rate_adv']:.2f} random {r['verbatim_rate_random']:.2f} "
              f"{moved} ({r['seconds']} s)")
    print(f"total {res['seconds']} s")


if __name__ == "__main__":
    main()
