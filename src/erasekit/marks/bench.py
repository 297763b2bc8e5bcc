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

Forgeries through a proxy model (`forgeries=["reprompt:prompt=...", "imprint:steps=..."]`, the pipeline itself as
the proxy): a second table with the share of forged other-content images detected as key 0 (success) next to the
share of unforged images of that content (cover_rate) and the median scores.

Detector settings are the methods' configs: the papers' (empty-prompt inversion) by default; inversion_prompt
"given" is told each image's generation prompt (an upper bound), "caption" captions each (attacked) image with the
model's world's captioner.

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
from .attacks import apply_attack, average_forgery, imprint_forgery, mark_attacks, parse_attack

DEFAULT_METHODS = ("tree_ring", "gaussian_shading", "dwtdct")
DEFAULT_ATTACKS = ("none", "jpeg:quality=50", "blur:sigma=1", "noise:std=0.05", "crop:scale=0.75", "vae",
                   "img2img:strength=0.3")
FPR_POINTS = (0.01, 0.001)
INVERSION_FIELDS = ("inversion_steps", "decoder_steps", "inversion_prompt", "inversion_guidance", "fixed_point")


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
              evaluator: Any = None, world: Any = None, log: Callable[[str], None] | None = None,
              guidance: float | None = None, forgeries: Sequence[str] = ()) -> dict[str, Any]:
    """Run the table; returns the results dict (see the module docstring). `methods` are specs ("tree_ring:radius=3").
    `guidance`: generation guidance of clean and marked images (None: the model's default). `forgeries`: specs of
    forgery attacks (registered with forgery=True, e.g. "reprompt:prompt=Zorbo", "imprint:steps=50") measured on
    the "forgeries" table. Keys are fresh (os.urandom) on every run, so numbers vary slightly between runs."""
    from ..generation import generate
    from ..sampling import sampling_defaults

    log = log or (lambda s: None)
    if n < 2 or n_keys < 1 or n_keys > n:
        raise InvalidValueError(f"need n >= 2 and 1 <= n_keys <= n, got n={n}, n_keys={n_keys}")
    chains = {a: parse_attack(a) for a in attacks}  # validate every spec before any work
    forge_chains = {f: parse_attack(f) for f in forgeries}
    for f, chain in forge_chains.items():
        if len(chain) != 1 or not chain[0][0].forgery:
            raise InvalidValueError(f"forgery {f!r} is not one registered forgery attack; use one of "
                                    f"{[a for a in mark_attacks.names() if mark_attacks.get(a).forgery]}")
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
    clean = generate(pipe, prompts, seeds, guidance=guidance)
    clean_gen_s = (time.time() - t0) / n
    lab_clean = _label_acc(evaluator, clean, labels)
    attacked_clean = {a: apply_attack(chains[a], clean, pipe=pipe, seed=seed) for a in attacks}
    inv_cache: dict[tuple, Any] = {}
    rows, per_method, forge_rows = [], {}, []
    for spec, mark in marks_.items():
        keys = [mark.keygen(pipe) for _ in range(n_keys)]
        log(f"{spec}: embedding {n} images with {n_keys} keys")
        t = time.time()
        marked = np.empty_like(clean)
        for k in range(n_keys):
            idx = np.flatnonzero(owner == k)
            if mark.kind == "latent":
                marked[idx] = mark.generate(pipe, keys[k], [prompts[i] for i in idx], [seeds[i] for i in idx],
                                            guidance=guidance)
            else:
                marked[idx] = mark.embed_images(keys[k], clean[idx])
        embed_s = (time.time() - t) / n + (clean_gen_s if mark.kind == "pixel" else 0.0)
        info = {"identity": mark.identity(), "key_fingerprints": [k.fingerprint() for k in keys],
                "drift": _clean(float(np.abs(marked.astype(np.float64) - clean).mean())),
                "label_acc_marked": _clean(_label_acc(evaluator, marked, labels)), "label_acc_clean": _clean(lab_clean),
                "embed_s": _clean(embed_s), "rule": None}
        inv_key = (mark.kind,) + tuple(getattr(mark.config, f, None) for f in INVERSION_FIELDS)
        # inversion_prompt "given": the detector is told each image's generation prompt (an upper bound)
        given = prompts if getattr(mark.config, "inversion_prompt", "empty") == "given" else None

        def scores(images: np.ndarray, cache: tuple | None = None) -> tuple[list[Any], Any]:
            """Detections per key (each image against its own key) and the latents (latent methods)."""
            lat = None
            if mark.kind == "latent":
                if cache is not None and cache in inv_cache:
                    lat = inv_cache[cache]
                else:
                    lat = mark.invert(pipe, images, keys[0], prompts=given)
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
                row["forgery_success"] = _clean(_forgery(mark, keys[0], pipe, marked[owner == 0], clean, given))
            rows.append(row)
            log(f"  {row}")
        for f, chain in forge_chains.items():
            log(f"{spec}: forgery {f}")
            forge_rows.append(_proxy_forgery(mark, keys[0], pipe, chain[0], marked[owner == 0], clean, owner,
                                             prompts, given, seed, spec, f))
            log(f"  {forge_rows[-1]}")
        per_method[spec] = info
    sd = sampling_defaults(pipe)
    return {"pipeline": {"steps": sd.steps, "guidance": sd.guidance if guidance is None else guidance, "size": sd.size},
            "protocol": "attacks applied to clean and marked images alike (same seed); clean image i scored against "
                        "the key of marked image i; forgery: stamp mean(marked key-0) - mean(clean first half) on the "
                        "clean second half, success = detected as key 0 under the method's rule",
            "n": n, "n_keys": n_keys, "seed": seed, "methods": per_method, "rows": rows, "forgeries": forge_rows,
            "seconds": round(time.time() - t0, 1)}


def _forgery(mark: Any, key: Any, pipe: Any, marked_pool: np.ndarray, clean: np.ndarray,
             given: Sequence[str] | None) -> float:
    half = len(clean) // 2
    forged = average_forgery(marked_pool, clean[:half], clean[half:])
    if mark.kind == "latent":
        det = mark.detect(key, forged, pipe=pipe, prompts=None if given is None else list(given)[half:])
    else:
        det = mark.detect(key, forged, pipe=pipe)
    return float(np.mean(det.decision))


def _proxy_forgery(mark: Any, key: Any, pipe: Any, attack: tuple[Any, Any], marked0: np.ndarray, clean: np.ndarray,
                   owner: np.ndarray, prompts: Sequence[str], given: Sequence[str] | None, seed: int, spec: str,
                   forgery: str) -> dict[str, Any]:
    """One forgery attack through the proxy `pipe` on the key-0 marked images. imprint: a clean image of another
    seed and prompt (other content) is optimised towards each marked image; reprompt: each marked image is inverted
    and regenerated with the attack's prompt. success = share of the forged images detected as key 0 under the
    method's rule; cover_rate = the same share on unmarked images of the same content (imprint: the covers before
    the attack; reprompt: the attack's prompt generated from fresh noise, seeds after the bench's)."""
    from ..generation import generate

    atk, cfg = attack
    t = time.time()
    n0 = len(marked0)
    if atk.name == "imprint":
        covers = clean[owner != 0][:n0]
        cover_texts = [p for p, o in zip(prompts, owner) if o != 0][:n0]
        if len(covers) < n0:
            raise InvalidValueError(f"need {n0} clean covers for the forgery, have {len(covers)}; raise n")
        forged = imprint_forgery(pipe, marked0, covers, cfg)
    else:
        cover_texts = [getattr(cfg, "prompt", "")] * n0
        covers = generate(pipe, cover_texts, [seed + len(clean) + i for i in range(n0)],
                          steps=getattr(cfg, "steps", None), guidance=getattr(cfg, "guidance", None))
        forged = atk.fn(marked0, cfg, pipe=pipe, seed=seed)

    def detect(images: np.ndarray) -> Any:
        if mark.kind != "latent":
            return mark.detect(key, images, pipe=pipe)
        return mark.detect(key, images, pipe=pipe, prompts=None if given is None else cover_texts)

    det, base = detect(forged), detect(covers)
    return {"method": spec, "forgery": forgery, "n": n0, "success": _clean(float(np.mean(det.decision))),
            "cover_rate": _clean(float(np.mean(base.decision))), "score_forged": _clean(float(np.median(det.score))),
            "score_covers": _clean(float(np.median(base.score))),
            "bit_acc": _clean(float(np.mean(det.bit_acc))) if det.bit_acc is not None else None,
            "drift_from_cover": _clean(float(np.abs(forged.astype(np.float64) - covers).mean()))
            if atk.name == "imprint" else None, "seconds": _clean(time.time() - t)}


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
    if results.get("forgeries"):
        cols = ("method", "forgery", "n", "success", "cover_rate", "score_forged", "score_covers", "bit_acc",
                "drift_from_cover", "seconds")
        lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in results["forgeries"]:
            lines.append("| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |")
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
