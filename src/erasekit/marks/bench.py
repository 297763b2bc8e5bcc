"""`erasekit mark bench`: watermarks x attacks on one pipeline, same prompts and seeds for every method.

For each method: K fresh keys (image i is marked with key i mod K), N marked images and the N unmarked images of the
same prompts and seeds. Every attack is applied to clean and marked images alike (same seed), then:

    tpr@1%fpr, tpr@0.1%fpr, auc    ROC of the method's score (clean images scored against the same key as the marked
                                   image of their seed); with N clean images an FPR below 1/N is measured as 0 FP
    tpr_rule, fpr_rule             decision rates under the method's own threshold rule (no calibration)
    bit_acc                        mean bit accuracy of marked images (bit methods)
    ident_acc                      fraction of marked images whose best key among the K is their own
    forgery_success                (attack "none" row) fraction of clean images detected as key 0 after stamping the
                                   average pattern of key-0 marked images (attacks.average_forgery)
    drift                          mean |marked - unmarked same-seed| in pixel levels (0-255)
    label_acc_marked / _clean      evaluator labels matching the prompt's labels (mean over families), when the
                                   model's world has an evaluator (toy world: the oracle)
    embed_s, detect_s              wall seconds per image (detect_s without attacks, includes the inversion)

results.json (strict JSON, atomic) and a markdown table are written to the output folder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidValueError
from ..io import atomic_write_text
from . import auc, get_mark, tpr_at_fpr
from .attacks import apply_attack, average_forgery, parse_attack

DEFAULT_METHODS = ("tree_ring", "gaussian_shading", "dwtdct")
DEFAULT_ATTACKS = ("none", "jpeg:quality=50", "blur:sigma=1", "noise:std=0.05", "crop:scale=0.75", "vae",
                   "img2img:strength=0.3")
FPR_POINTS = (0.01, 0.001)


def bench_prompts(world: Any, n: int, seed: int) -> list[Any]:
    """`n` labelled prompts from the model's world (its unrelated-prompt pool around its first concept)."""
    fams = world.concepts()
    for fam in fams:
        for concept in fams[fam]:
            ps = world.unrelated(concept, n, seed)
            if len(ps) >= n:
                return ps[:n]
    raise InvalidValueError(f"world {getattr(world, 'name', '?')!r} gives no prompts; pass prompts=[...]")


def _label_acc(evaluator: Any, images: np.ndarray, labels: list[dict[str, str]]) -> float | None:
    if evaluator is None or not labels or not labels[0]:
        return None
    pred = evaluator.predict(images)
    return float(np.mean([np.mean([p.get(f) == v for f, v in lab.items()]) for p, lab in zip(pred, labels)]))


def _clean(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def run_bench(pipe: Any, methods: Sequence[str] = DEFAULT_METHODS, attacks: Sequence[str] = DEFAULT_ATTACKS,
              n: int = 32, n_keys: int = 4, seed: int = 0, prompts: Sequence[str] | None = None,
              evaluator: Any = None, world: Any = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the table; returns the results dict (see the module docstring). `methods` are specs ("tree_ring:radius=3").
    Keys are fresh (os.urandom) on every run, so numbers vary slightly between runs."""
    from ..generation import generate
    from ..sampling import sampling_defaults

    log = log or (lambda s: None)
    if n < 2 or n_keys < 1 or n_keys > n:
        raise InvalidValueError(f"need n >= 2 and 1 <= n_keys <= n, got n={n}, n_keys={n_keys}")
    chains = {a: parse_attack(a) for a in attacks}  # validate every spec before any work
    marks_ = {m: get_mark(m) for m in methods}
    labels: list[dict[str, str]] = []
    if prompts is None:
        ps = bench_prompts(world, n, seed)
        prompts, labels = [p.text for p in ps], [dict(p.labels) for p in ps]
    prompts = list(prompts)[:n]
    if len(prompts) < n:
        raise InvalidValueError(f"{len(prompts)} prompts for n={n}")
    seeds = [seed + i for i in range(n)]
    owner = np.arange(n) % n_keys
    t0 = time.time()
    log(f"generating {n} unmarked images")
    clean = generate(pipe, prompts, seeds)
    clean_gen_s = (time.time() - t0) / n
    lab_clean = _label_acc(evaluator, clean, labels)
    attacked_clean = {a: apply_attack(chains[a], clean, pipe=pipe, seed=seed) for a in attacks}
    inv_cache: dict[tuple, Any] = {}
    rows, per_method = [], {}
    for spec, mark in marks_.items():
        keys = [mark.keygen(pipe) for _ in range(n_keys)]
        log(f"{spec}: embedding {n} images with {n_keys} keys")
        t = time.time()
        marked = np.empty_like(clean)
        for k in range(n_keys):
            idx = np.flatnonzero(owner == k)
            if mark.kind == "latent":
                marked[idx] = mark.generate(pipe, keys[k], [prompts[i] for i in idx], [seeds[i] for i in idx])
            else:
                marked[idx] = mark.embed_images(keys[k], clean[idx])
        embed_s = (time.time() - t) / n + (clean_gen_s if mark.kind == "pixel" else 0.0)
        info = {"identity": mark.identity(), "key_fingerprints": [k.fingerprint() for k in keys],
                "drift": _clean(float(np.abs(marked.astype(np.float64) - clean).mean())),
                "label_acc_marked": _clean(_label_acc(evaluator, marked, labels)), "label_acc_clean": _clean(lab_clean),
                "embed_s": _clean(embed_s), "rule": None}
        inv_key = (mark.kind, getattr(mark.config, "inversion_steps", None), getattr(mark.config, "decoder_steps", 0))

        def scores(images: np.ndarray, cache: tuple | None = None) -> tuple[list[Any], Any]:
            """Detections per key (each image against its own key) and the latents (latent methods)."""
            lat = None
            if mark.kind == "latent":
                if cache is not None and cache in inv_cache:
                    lat = inv_cache[cache]
                else:
                    lat = mark.invert(pipe, images, keys[0])
                    if cache is not None:
                        inv_cache[cache] = lat
            dets = []
            for k in range(n_keys):
                idx = np.flatnonzero(owner == k)
                if mark.kind == "latent":
                    dets.append((idx, mark.detect(keys[k], images[idx], latents=lat[idx])))
                else:
                    dets.append((idx, mark.detect(keys[k], images[idx])))
            return dets, lat

        def gather(dets: list[Any], field_: str) -> np.ndarray | None:
            out = np.zeros(n)
            for idx, d in dets:
                v = getattr(d, field_)
                if v is None:
                    return None
                out[idx] = v
            return out

        for a in attacks:
            log(f"{spec}: attack {a}")
            t = time.time()
            m_att = apply_attack(chains[a], marked, pipe=pipe, seed=seed)
            pos, lat_m = scores(m_att)
            detect_s = (time.time() - t) / n
            neg, _ = scores(attacked_clean[a], cache=(inv_key, a))
            sp, sn = gather(pos, "score"), gather(neg, "score")
            dp, dn = gather(pos, "decision"), gather(neg, "decision")
            bits = gather(pos, "bit_acc")
            info["rule"] = pos[0][1].rule
            if mark.kind == "latent":
                ident, _ = mark.identify(keys, m_att, latents=lat_m)
            else:
                ident, _ = mark.identify(keys, m_att)
            row = {"method": spec, "attack": a, "n": n, "n_keys": n_keys,
                   "tpr@1%fpr": _clean(tpr_at_fpr(sn, sp, FPR_POINTS[0])),
                   "tpr@0.1%fpr": _clean(tpr_at_fpr(sn, sp, FPR_POINTS[1])), "auc": _clean(auc(sn, sp)),
                   "tpr_rule": _clean(float(dp.mean())), "fpr_rule": _clean(float(dn.mean())),
                   "bit_acc": _clean(float(bits.mean())) if bits is not None else None,
                   "ident_acc": _clean(float((ident == owner).mean())), "forgery_success": None,
                   "detect_s": _clean(detect_s) if a in ("none", "identity", "") else None}
            if a in ("none", "identity", ""):
                row["forgery_success"] = _clean(_forgery(mark, keys[0], pipe, marked[owner == 0], clean, seed))
            rows.append(row)
            log(f"  {row}")
        per_method[spec] = info
    sd = sampling_defaults(pipe)
    return {"pipeline": {"steps": sd.steps, "guidance": sd.guidance, "size": sd.size},
            "protocol": "attacks applied to clean and marked images alike (same seed); clean image i scored against "
                        "the key of marked image i; forgery: stamp mean(marked key-0) - mean(clean first half) on the "
                        "clean second half, success = detected as key 0 under the method's rule",
            "n": n, "n_keys": n_keys, "seed": seed, "methods": per_method, "rows": rows,
            "seconds": round(time.time() - t0, 1)}


def _forgery(mark: Any, key: Any, pipe: Any, marked_pool: np.ndarray, clean: np.ndarray, seed: int) -> float:
    half = len(clean) // 2
    forged = average_forgery(marked_pool, clean[:half], clean[half:])
    det = mark.detect(key, forged, pipe=pipe)
    return float(np.mean(det.decision))


COLUMNS = ("method", "attack", "tpr@1%fpr", "tpr@0.1%fpr", "auc", "tpr_rule", "fpr_rule", "bit_acc", "ident_acc",
           "forgery_success", "detect_s")


def markdown(results: dict[str, Any]) -> str:
    """The methods x attacks table and the per-method quality lines, as markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results["rows"]:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in COLUMNS) + " |")
    lines.append("")
    lines.append("| method | drift (0-255) | label acc marked | label acc clean | embed s/img | rule |")
    lines.append("|---|---|---|---|---|---|")
    for m, info in results["methods"].items():
        rule = (info.get("rule") or {}).get("marked_if", "")
        lines.append(f"| {m} | {info['drift']} | {info['label_acc_marked']} | {info['label_acc_clean']} | "
                     f"{info['embed_s']} | {rule} |")
    p = results["pipeline"]
    lines.append("")
    lines.append(f"n={results['n']} images per method, {results['n_keys']} keys, seed {results['seed']}, "
                 f"{p['steps']} steps, guidance {p['guidance']}, {p['size']} px; {results['seconds']} s in all.")
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    js = atomic_write_text(out / "results.json", json.dumps(results, indent=1, allow_nan=False))
    md = atomic_write_text(out / "table.md", markdown(results))
    return js, md
