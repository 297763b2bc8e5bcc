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

Composition (`edit=`, `shield=`; `erasekit mark bench --edit FILE --shield SPEC --protect CONCEPT`, see
`erasekit.marks.compose`): clean and marked images are generated with the edit applied and through the shield (half
the prompts then show the erased / protected concept); latent methods are detected by inverting with the edited model
and with the base model (rows' `detector_model`); a reference without edit and shield (attack "none", base model,
same prompts, seeds and keys) is measured per method, and a composed row whose TPR@1%FPR, AUC or own-rule TPR falls
more than compose.STRIP_TOLERANCE below it is marked `stripped` (with `strip_z`, the drop in standard errors) and
gets a warning line in results["compose"]["warnings"]. Attacks that need a model (vae, img2img) run on the edited
model (the deployed one); proxy forgeries use the base model as the proxy.

results.json (strict JSON, atomic) and a markdown table are written to the output folder; with `grid_dir`, one
same-seed PNG grid per method (rows: clean, marked, marked after each attack, residual |marked - clean| x
GRID_RESIDUAL_GAIN), refused if it exists unless `overwrite`.
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
from .compose import STRIP_TOLERANCE, composed_generate, describe, prepare_composition, strip_warnings, weights

DEFAULT_METHODS = ("tree_ring", "gaussian_shading", "dwtdct")
DEFAULT_ATTACKS = ("none", "jpeg:quality=50", "blur:sigma=1", "noise:std=0.05", "crop:scale=0.75", "vae",
                   "img2img:strength=0.3")
FPR_POINTS = (0.01, 0.001)
FORMAT = "erasekit.mark_bench/1"  # results["format"]: how `erasekit report` recognises a mark bench folder
GRID_RESIDUAL_GAIN = 10  # residual row of the grids: |marked - clean| x this, clipped to 255 (marks are faint)
INVERSION_FIELDS = ("inversion_steps", "decoder_steps", "inversion_prompt", "inversion_guidance", "fixed_point")


def bench_prompts(world: Any, n: int, seed: int, focus: str | None = None) -> list[Any]:
    """`n` labelled prompts from the model's world (its unrelated-prompt pool around its first concept); with `focus`
    (a concept the world knows: an erased or protected one), the first n // 2 are its direct prompts, the rest
    prompts of other families."""
    if focus is not None:
        own = world.prompts(focus, "direct", n // 2, seed)[:n // 2]
        rest = world.unrelated(focus, n - len(own), seed)
        if len(own) + len(rest) >= n:
            return (own + rest)[:n]
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
              guidance: float | None = None, forgeries: Sequence[str] = (), edit: Any = None, shield: Any = None,
              protect: Sequence[str] = (), detectors: Sequence[str] | None = None,
              grid_dir: str | Path | None = None, grid_images: int = 8, overwrite: bool = False) -> dict[str, Any]:
    """Run the table; returns the results dict (see the module docstring). `methods` are specs ("tree_ring:radius=3").
    `edit`: an Edit or edit file applied while generating; `shield`: a Shield or spec protecting `protect`;
    `detectors`: models latent methods invert with ("edited", "base"; default both with an edit); `grid_dir`: folder
    of the per-method same-seed grids (`grid_images` columns).
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
    comp = prepare_composition(pipe, edit, shield, protect, world, detectors)
    if comp.shield is not None:
        from ._latent import LatentWatermark

        for m, mk in marks_.items():
            if mk.kind == "latent" and type(mk).generate is not LatentWatermark.generate:
                raise InvalidValueError(f"{m} generates its own way (not from initial latents), so it cannot be run "
                                        "through a shield here; drop --shield or the method")
    grid_files = {}
    if grid_dir is not None:
        if grid_images < 1:
            raise InvalidValueError(f"grid_images must be >= 1, got {grid_images}")
        from ..io import check_writable, slug

        grid_files = {m: f"grid_{slug(m)}.png" for m in marks_}
        for f in grid_files.values():
            check_writable(Path(grid_dir) / f, overwrite, what="image grid")
    labels: list[dict[str, str]] = []
    if prompts is None:
        ps = bench_prompts(world, n, seed, focus=comp.focus)
        prompts, labels = [p.text for p in ps], [dict(p.labels) for p in ps]
    prompts = list(prompts)[:n]
    if len(prompts) < n:
        raise InvalidValueError(f"{len(prompts)} prompts for n={n}")
    seeds = [seed + i for i in range(n)]
    owner = np.arange(n) % n_keys
    t0 = time.time()
    log(f"generating {n} unmarked images")
    with weights(pipe, comp.edit, True):
        clean, gen_info = composed_generate(pipe, prompts, seeds, shield=comp.shield, guidance=guidance)
        clean_gen_s = (time.time() - t0) / n
        attacked_clean = {a: apply_attack(chains[a], clean, pipe=pipe, seed=seed) for a in attacks}
    lab_clean = _label_acc(evaluator, clean, labels)
    ref_clean = generate(pipe, prompts, seeds, guidance=guidance) if comp.active else None  # plain base pipeline
    inv_cache: dict[tuple, Any] = {}
    rows, per_method, forge_rows, reference = [], {}, [], {}
    for spec, mark in marks_.items():
        keys = [mark.keygen(pipe) for _ in range(n_keys)]
        log(f"{spec}: embedding {n} images with {n_keys} keys")
        t = time.time()
        marked = np.empty_like(clean)
        uses_pipe = {"pipe": pipe} if getattr(mark, "embed_uses_pipe", False) else {}  # e.g. peccavi's NMP search
        marked_gen = None  # refused / blocked / regenerated marked images (latent methods through a shield)
        for k in range(n_keys):
            idx = np.flatnonzero(owner == k)
            if mark.kind == "latent" and comp.shield is not None:
                with weights(pipe, comp.edit, True):
                    marked[idx], gi = composed_generate(pipe, [prompts[i] for i in idx], [seeds[i] for i in idx],
                                                        shield=comp.shield, guidance=guidance,
                                                        latents_fn=lambda sd, key=keys[k]: mark.initial_latents(key,
                                                                                                                sd))
                marked_gen = {c: (marked_gen or {}).get(c, 0) + v for c, v in gi.items()}
            elif mark.kind == "latent":
                with weights(pipe, comp.edit, True):
                    marked[idx] = mark.generate(pipe, keys[k], [prompts[i] for i in idx], [seeds[i] for i in idx],
                                                guidance=guidance)
            else:
                marked[idx] = mark.embed_images(keys[k], clean[idx], **uses_pipe)
        embed_s = (time.time() - t) / n + (clean_gen_s if mark.kind == "pixel" else 0.0)
        info = {"identity": mark.identity(), "key_fingerprints": [k.fingerprint() for k in keys],
                "drift": _clean(float(np.abs(marked.astype(np.float64) - clean).mean())),
                "label_acc_marked": _clean(_label_acc(evaluator, marked, labels)), "label_acc_clean": _clean(lab_clean),
                "embed_s": _clean(embed_s), "rule": None}
        if comp.shield is not None:
            info["generation_marked"] = marked_gen if mark.kind == "latent" else gen_info
        inv_key = (mark.kind,) + tuple(getattr(mark.config, f, None) for f in INVERSION_FIELDS)
        # inversion_prompt "given": the detector is told each image's generation prompt (an upper bound)
        given = prompts if getattr(mark.config, "inversion_prompt", "empty") == "given" else None

        def scores(images: np.ndarray, cache: tuple | None = None, dm: str | None = None) -> tuple[list[Any], Any]:
            """Detections per key (each image against its own key) and the latents (latent methods: inverted with
            the `dm` detector model, "edited" or "base")."""
            lat = None
            if mark.kind == "latent":
                if cache is not None and cache in inv_cache:
                    lat = inv_cache[cache]
                else:
                    with weights(pipe, comp.edit, dm == "edited"):
                        lat = mark.invert(pipe, images, keys[0], prompts=given)
                    if cache is not None:
                        inv_cache[cache] = lat
            dets = []
            for k in range(n_keys):
                idx = np.flatnonzero(owner == k)
                if mark.kind == "latent":
                    dets.append((idx, mark.detect(keys[k], images[idx], pipe=pipe, latents=lat[idx])))
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

        with weights(pipe, comp.edit, True):  # the attacker's regenerations use the deployed (edited) model
            m_atts = {a: apply_attack(chains[a], marked, pipe=pipe, seed=seed) for a in attacks}
        if grid_dir is not None:
            from ..report.mark_report import write_mark_grid

            write_mark_grid(Path(grid_dir) / grid_files[spec], clean[:grid_images], marked[:grid_images],
                            {a: m_atts[a][:grid_images] for a in attacks if a not in ("none", "identity", "")},
                            gain=GRID_RESIDUAL_GAIN, overwrite=overwrite)
        dms = comp.detectors if mark.kind == "latent" else (None,)
        for dm, a in [(d, a) for d in dms for a in attacks]:
            log(f"{spec}: attack {a}" + (f" (detector model: {dm})" if comp.active and dm else ""))
            t = time.time()
            m_att = m_atts[a]
            pos, lat_m = scores(m_att, dm=dm)
            detect_s = (time.time() - t) / n
            neg, _ = scores(attacked_clean[a], cache=(inv_key, a, dm), dm=dm)
            sp, sn = gather(pos, "score"), gather(neg, "score")
            dp, dn = gather(pos, "decision"), gather(neg, "decision")
            bits = gather(pos, "bit_acc")
            info["rule"] = pos[0][1].rule
            if mark.kind == "latent":
                ident, _ = mark.identify(keys, m_att, pipe=pipe, latents=lat_m)
            else:
                ident, _ = mark.identify(keys, m_att)
            row = {"method": spec, "attack": a, "detector_model": dm if comp.active else None, "n": n,
                   "n_keys": n_keys,
                   "tpr@1%fpr": _clean(tpr_at_fpr(sn, sp, FPR_POINTS[0])),
                   "tpr@0.1%fpr": _clean(tpr_at_fpr(sn, sp, FPR_POINTS[1])), "auc": _clean(auc(sn, sp)),
                   "tpr_rule": _clean(float(dp.mean())), "fpr_rule": _clean(float(dn.mean())),
                   "bit_acc": _clean(float(bits.mean())) if bits is not None else None,
                   "ident_acc": _clean(float((ident == owner).mean())), "forgery_success": None,
                   "detect_s": _clean(detect_s) if a in ("none", "identity", "") else None}
            if a in ("none", "identity", "") and dm == dms[0]:
                with weights(pipe, comp.edit, dm == "edited"):
                    row["forgery_success"] = _clean(_forgery(mark, keys[0], pipe, marked[owner == 0], clean, given))
            rows.append(row)
            log(f"  {row}")
        for f, chain in forge_chains.items():
            log(f"{spec}: forgery {f}")
            forge_rows.append(_proxy_forgery(mark, keys[0], pipe, chain[0], marked[owner == 0], clean, owner,
                                             prompts, given, seed, spec, f))
            log(f"  {forge_rows[-1]}")
        if comp.active:  # the same method on the plain base pipeline: what the composition must not lose
            log(f"{spec}: reference without edit / shield")
            ref_marked = np.empty_like(ref_clean)
            for k in range(n_keys):
                idx = np.flatnonzero(owner == k)
                if mark.kind == "latent":
                    ref_marked[idx] = mark.generate(pipe, keys[k], [prompts[i] for i in idx],
                                                    [seeds[i] for i in idx], guidance=guidance)
                else:
                    ref_marked[idx] = mark.embed_images(keys[k], ref_clean[idx], **uses_pipe)
            pos, _ = scores(ref_marked, dm="base")
            neg, _ = scores(ref_clean, cache=(inv_key, "reference"), dm="base")
            sp, sn, bits = gather(pos, "score"), gather(neg, "score"), gather(pos, "bit_acc")
            reference[spec] = {"tpr@1%fpr": _clean(tpr_at_fpr(sn, sp, FPR_POINTS[0])), "auc": _clean(auc(sn, sp)),
                               "tpr_rule": _clean(float(gather(pos, "decision").mean())),
                               "fpr_rule": _clean(float(gather(neg, "decision").mean())),
                               "bit_acc": _clean(float(bits.mean())) if bits is not None else None,
                               "drift": _clean(float(np.abs(ref_marked.astype(np.float64) - ref_clean).mean()))}
            log(f"  reference {reference[spec]}")
        per_method[spec] = info
    sd = sampling_defaults(pipe)
    compose = None
    if comp.active:
        what = describe(comp.info)
        warnings = strip_warnings([r for r in rows if r["method"] in reference], reference, what)
        for w in warnings:
            log(f"WARNING: {w}")
        compose = {**comp.info, "generation": gen_info, "reference": reference, "strip_tolerance": STRIP_TOLERANCE,
                   "warnings": warnings,
                   "protocol": "clean and marked images generated with the edit applied / through the shield; latent "
                               "methods detected by inverting with each detector model; reference = the same method, "
                               "prompts, seeds and keys on the plain base pipeline, attack none, base detector"}
    return {"format": FORMAT, "compose": compose, "grids": grid_files or None,
            "grid_residual_gain": GRID_RESIDUAL_GAIN if grid_files else None,
            "pipeline": {"steps": sd.steps, "guidance": sd.guidance if guidance is None else guidance, "size": sd.size},
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
    seed and prompt (other content) is optimised towards each marked image; prefforge: the mark estimated from each
    marked image alone (key-free preference model) is added to such a clean image; reprompt: each marked image is
    inverted and regenerated with the attack's prompt. success = share of the forged images detected as key 0 under the
    method's rule; cover_rate = the same share on unmarked images of the same content (imprint, prefforge: the covers
    before the attack; reprompt: the attack's prompt generated from fresh noise, seeds after the bench's)."""
    from ..generation import generate

    atk, cfg = attack
    t = time.time()
    n0 = len(marked0)
    if atk.name in ("imprint", "prefforge"):
        covers = clean[owner != 0][:n0]
        cover_texts = [p for p, o in zip(prompts, owner) if o != 0][:n0]
        if len(covers) < n0:
            raise InvalidValueError(f"need {n0} clean covers for the forgery, have {len(covers)}; raise n")
        if atk.name == "imprint":
            forged = imprint_forgery(pipe, marked0, covers, cfg)
        else:  # one-shot: the mark of marked image i alone, stamped on cover i
            from .regen_attacks import prefforge_forgery

            forged = prefforge_forgery(pipe, marked0, covers, cfg, seed=seed)
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
            if atk.name in ("imprint", "prefforge") else None, "seconds": _clean(time.time() - t)}


COLUMNS = ("method", "attack", "tpr@1%fpr", "tpr@0.1%fpr", "auc", "tpr_rule", "fpr_rule", "bit_acc", "ident_acc",
           "forgery_success", "detect_s")


def markdown(results: dict[str, Any]) -> str:
    """The methods x attacks table and the per-method quality lines, as markdown."""
    comp = results.get("compose")
    cols = COLUMNS[:2] + ("detector_model", "stripped") + COLUMNS[2:] if comp else COLUMNS
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results["rows"]:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r[c]) for c in cols) + " |")
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
    if comp:
        from .compose import describe

        rcols = ("tpr@1%fpr", "auc", "tpr_rule", "fpr_rule", "bit_acc", "drift")
        lines += ["", f"Reference without {describe(comp)} (plain base pipeline, attack none, same prompts, seeds and "
                      "keys):", "", "| method | " + " | ".join(rcols) + " |", "|---|" + "---|" * len(rcols)]
        for m, ref in comp["reference"].items():
            lines.append(f"| {m} | " + " | ".join("" if ref.get(c) is None else str(ref[c]) for c in rcols) + " |")
        if comp.get("edit"):
            e = comp["edit"]
            lines.append(f"\nEdit: {e['method']} (erase {e['erase']}), sha256 {e['sha256'][:16]}, file {e['file']}")
        if comp.get("shield"):
            lines.append(f"\nShield: {comp['shield'].get('spec') or comp['shield'].get('name')}; generation: "
                         f"{comp.get('generation')}")
        lines.append("")
        lines += [f"**WARNING**: {w}" for w in comp["warnings"]] or [
            f"No mark lost more than {comp['strip_tolerance']} TPR@1%FPR / AUC to the composition."]
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
