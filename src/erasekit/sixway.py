"""MUSE's six ways, adapted to images: one table per erasure method.

Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for Language Models" (2024) judge unlearning by six
properties; here each is measured for a set of erased concepts C_1..C_N with erasekit's existing measurements (nothing
is computed twice: the harness, `membership` and `memorization` do the measuring):

    verbatim        memorized training pairs (`World.memorized_pairs`) that show an erased concept: share of
                    generations from their captions that are verbatim copies of their images
                    (`memorization.verbatim_copies`) and the memorization detector's magnitude
                    (`memorization.prompt_magnitudes`, Wen et al. 2024)                                  lower
    knowledge       `detection` and `detection_generality` of the erased concepts (the evaluation harness)       lower
    privacy         MUSE's PrivLeak, (AUC - AUC_ref) / AUC_ref * 100 (`text.muse.privleak`), of the loss-based
                    membership AUC (`membership.membership_inference`, no calibration) separating the concepts'
                    training images from the same content drawn anew (`World.membership_pairs`, training captions
                    for both; else `World.training_images` vs `World.images` captioned with the concept's name);
                    AUC_ref: a never-trained reference model's, if given, else 0.5 (the AUC of any model that never
                    saw the members, when members and non-members are drawn alike)                    near 0
    utility         `accuracy_unrelated` and `image_drift` on other families' prompts (harness)        higher / lower
    scalability     one request erasing the first k concepts, for each k of `sizes` (default 1 and N):
                    detection of the k erased and utility                                              lower / higher
    sustainability  N requests, one concept each, each made on the model with the previous edits applied:
                    after request i, detection of C_1..C_i and utility                                 lower / higher

The verbatim, knowledge, privacy and utility rows measure the one request erasing all N concepts. `SixWayConfig.skip`
leaves out the ways measured outside the harness run (verbatim, privacy, sustainability), e.g. for a scalability
sweep over many concepts. Every image the
harness scores lives in `<out>/eval/` (results.json, samples.jsonl: `erasekit report <out>/eval`), one variant per
(method, request); edits are saved under `<out>/edits/`.

    erasekit sixway --method uce --method rece --concepts "Zorbo,Mossy,Kiko" --out runs/sixway

Deviations from MUSE: images instead of text (detection by the suite's evaluator instead of QA/ROUGE; the LOSS
membership attack instead of Min-K% token probabilities); no retrained model unless the user gives one (MUSE always
retrains); scalability and sustainability are measured on knowledge and utility only, as MUSE's plots do.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ErasekitError, InvalidValueError
from .io import atomic_write_text, slug
from .membership import DEFAULT_TIMESTEPS

IDEAL_REFERENCE_AUC = 0.5  # the membership AUC of a model that never saw the members (members ~ non-members)
KNOWLEDGE = ("detection", "detection_generality")
UTILITY = ("accuracy_unrelated", "image_drift")
SKIPPABLE = ("verbatim", "privacy", "sustainability")  # the ways measured outside the one harness run


@dataclass(frozen=True)
class SixWayConfig:
    """How much of each measurement (defaults sized for the toy model on 2 CPU cores)."""

    sizes: tuple[int, ...] = field(default=(), metadata={
        "help": "scalability: numbers of concepts erased in one request (default: 1 and all)"})
    limit: int | None = field(default=4, metadata={"help": "images per prompt set of the harness (None: the suite's)"})
    steps: int | None = field(default=None, metadata={"help": "sampling steps (None: the suite's, else the model's)"})
    members: int = field(default=16, metadata={
        "help": "privacy: training images per concept (and as many fresh images as non-members)"})
    seeds: int = field(default=4, metadata={"help": "verbatim: generations per memorized caption"})
    references: int = field(default=16, metadata={
        "help": "verbatim: other renderings of each memorized pair's content (the copy threshold)"})
    timesteps: tuple[int, ...] = field(default=DEFAULT_TIMESTEPS, metadata={
        "help": "privacy: timesteps of the denoising loss"})
    seed: int = field(default=0, metadata={"help": "seed of the sampled images (members, fresh images, generations)"})
    skip: tuple[str, ...] = field(default=(), metadata={
        "help": f"ways not measured (their rows read n/a or are left out): any of {', '.join(SKIPPABLE)}; e.g. a "
                "scalability sweep over many concepts skips the N sequential requests and the privacy images"})

    def __post_init__(self) -> None:
        bad = [w for w in self.skip if w not in SKIPPABLE]
        if bad:
            raise InvalidValueError(f"sixway skip {bad[0]!r} is not a way that can be skipped; use any of "
                                    f"{', '.join(SKIPPABLE)}")
        for name in ("members", "seeds", "references"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidValueError(f"sixway {name} must be an integer >= 1, got {v!r}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.sizes):
            raise InvalidValueError(f"sixway sizes must be integers >= 1, got {list(self.sizes)}")
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise InvalidValueError(f"sixway limit must be an integer >= 1 or None, got {self.limit!r}")
        if not self.timesteps:
            raise InvalidValueError("sixway timesteps must name at least one timestep, e.g. (100, 200, 300)")


# ------------------------------------------------------------------------------------------------ requests
def merged_request(world: Any, concepts: Sequence[str]) -> dict[str, Any]:
    """One erase request for several concepts: every concept's erase prompts with its guide (one guide per erase
    prompt), the union of their preserve prompts without anything erased."""
    pairs: dict[str, str] = {}
    preserve: list[str] = []
    for c in concepts:
        r = world.concept(c).request()
        for e in r["erase"]:
            pairs.setdefault(e, r["guide"])
        preserve += r["preserve"]
    erased = {e.lower() for e in pairs} | {world.concept(c).name.lower() for c in concepts}
    guides = list(pairs.values())
    return {"erase": list(pairs), "guide": guides[0] if len(set(guides)) == 1 else guides,
            "preserve": [p for p in dict.fromkeys(preserve) if p.lower() not in erased]}


def _make_edit(pipe: Any, world: Any, evaluator: Any, method: str, options: dict, concepts: Sequence[str],
               name: str, out: Path, progress: Callable[..., None] | None) -> tuple[str, float]:
    """Erase `concepts` (one request) from `pipe` as it is now; the edit file is reused when an identical request
    was made on the same weights before (the benchmark's reuse rule)."""
    from .benchmark import VariantSpec, _edit_for
    from .fingerprint import pipeline_fingerprint

    spec = VariantSpec(name, method=method, options=dict(options), request=merged_request(world, concepts))
    return _edit_for(pipe, pipeline_fingerprint(pipe)["sha256"], world, evaluator, concepts[0], spec, out, progress)


# ------------------------------------------------------------------------------------------------ verbatim, privacy
def relevant_pairs(world: Any, pairs: Sequence[Any], concepts: Sequence[str]) -> list[Any]:
    """The memorized pairs that show any of `concepts` (their labels name it)."""
    names = {world.concept(c).name for c in concepts}
    return [p for p in pairs if names & set(p.labels.values())]


def verbatim(pipe: Any, pairs: Sequence[Any], config: SixWayConfig, steps: int | None = None,
             guidance: float | None = None) -> dict[str, Any]:
    """Verbatim memorization of `pairs` on `pipe` as it is now: {"verbatim_rate" (mean over pairs of the share of
    `config.seeds` generations that copy the pair's image), "memorization_magnitude" (mean detector magnitude of the
    captions), "pairs": [...]}; {} when there are no pairs."""
    from .attacks._recovery import resize
    from .generation import generate
    from .memorization import prompt_magnitudes, verbatim_copies

    if not pairs:
        return {}
    seeds = [config.seed + j for j in range(config.seeds)]
    mags = prompt_magnitudes(pipe, [p.caption for p in pairs], config.seeds, config.seed, steps=steps,
                             guidance=guidance)
    rows = []
    for p, d in zip(pairs, mags):
        images = generate(pipe, [p.caption] * config.seeds, seeds, steps=steps, guidance=guidance)
        if images.shape[1:] != p.image.shape:
            images = resize(images, p.image.shape[0])
        is_copy, dist, thr = verbatim_copies(images, p.image, p.references)
        rows.append({"caption": p.caption, "count": p.count, "verbatim_rate": float(is_copy.mean()),
                     "magnitude": float(d), "median_rmse": float(np.median(dist)), "threshold": thr})
    return {"verbatim_rate": float(np.mean([r["verbatim_rate"] for r in rows])),
            "memorization_magnitude": float(np.mean(mags)), "pairs": rows}


def privacy_images(world: Any, concepts: Sequence[str], n: int, seed: int,
                   model: Any = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(members, non-members, captions) of `concepts`, up to `n` of each: `World.membership_pairs` (training images
    and the same content drawn anew, with the training captions), else a seeded sample of `World.training_images`
    against fresh `World.images` of the concept, both captioned with the concept's name (weaker: the fresh images
    may be drawn unlike the training ones), of `model`'s training set (None: the world's own model). Raises when the
    world does not know that model's training images."""
    members, fresh, captions = [], [], []
    rng = np.random.default_rng(seed)
    for c in concepts:
        name = world.concept(c).name
        got = world.membership_pairs(name, n, seed, model)
        if got is not None:
            if len(got[0]) == 0:
                raise ErasekitError(f"world {world.name!r} has no training image of {name!r} for the privacy row")
            members.append(got[0])
            fresh.append(got[1])
            captions += list(got[2])
            continue
        train = world.training_images(name, model)
        if train is None or len(train) == 0:
            raise ErasekitError(f"world {world.name!r} does not know its model's training images of {name!r}: the "
                                "privacy row needs them (World.training_images)")
        pick = np.sort(rng.choice(len(train), size=min(n, len(train)), replace=False))
        members.append(np.asarray(train)[pick])
        fresh.append(world.images(name, len(pick), seed + 7919))
        captions += [name] * len(pick)
    return np.concatenate(members), np.concatenate(fresh), captions


def membership_auc(pipe: Any, images: tuple[np.ndarray, np.ndarray, list[str]], config: SixWayConfig) -> float:
    """The uncalibrated (LOSS) membership AUC of `pipe` as it is now on (members, non-members, captions)."""
    from .membership import membership_inference

    members, fresh, captions = images
    return membership_inference(pipe, members, fresh, member_captions=captions, nonmember_captions=captions,
                                timesteps=config.timesteps, seed=config.seed).auc


# ------------------------------------------------------------------------------------------------ the run
def run_sixway(methods: Sequence[str], concepts: Sequence[str], out: str | Path, config: SixWayConfig | None = None,
               suite: Any = "default", pipe: Any = None, model: str | None = None, reference: Any = None,
               memorized_model: Any = None, options: dict[str, dict] | None = None,
               progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Measure the six ways for each eraser of `methods` erasing `concepts`; write `<out>/sixway.json`,
    `<out>/sixway.md` (one table per method) and the harness run `<out>/eval/`; return what sixway.json holds.

    suite: a suite name/YAML or `Suite` (world, evaluator, prompt sets; capped at `config.limit`); reference: a
    never-trained model (folder, name or pipeline) for PrivLeak's AUC_ref; memorized_model: where the world finds
    the memorized pairs (default: `model`); options: {method: eraser options}."""
    from .edits import Edit
    from .erasers import get_eraser
    from .evaluation import Variant, evaluate, evaluator_for
    from .models import load_pipeline
    from .suite import load_suite
    from .text.muse import privleak

    config = config or SixWayConfig()
    t0 = time.time()
    out = Path(out)
    suite = load_suite(suite) if isinstance(suite, str) else suite
    suite = suite.limited(config.limit)
    if config.steps is not None:
        suite = dataclasses.replace(suite, steps=config.steps)
    evaluator = evaluator_for(suite)
    world = suite.world_for(evaluator)
    methods = list(dict.fromkeys(m for m in methods if m))
    if not methods:
        raise InvalidValueError("no eraser given; e.g. --method uce")
    names = list(dict.fromkeys(world.concept(c).name for c in concepts))  # unknown concepts fail here
    if not names:
        raise InvalidValueError("no concept to erase; e.g. --concepts Zorbo,Mossy")
    sizes = sorted(set(config.sizes or (1,)) | {len(names)})  # the request erasing all N is always measured
    if sizes[-1] > len(names):
        raise InvalidValueError(f"sizes {sizes} ask for more concepts than the {len(names)} given; use sizes up to "
                                f"{len(names)}")
    options = {m: dict((options or {}).get(m, {})) for m in methods}
    for m in methods:
        get_eraser(m).make_config(options[m])  # unknown methods / options fail before any work
    model = model or suite.model
    pipe = pipe if pipe is not None else load_pipeline(model)
    ref_pipe = load_pipeline(reference) if isinstance(reference, (str, Path)) else reference
    steps, guidance = suite.steps, suite.guidance

    # shared by every method: the memorized pairs of the erased concepts and the privacy images, measured on base
    where = memorized_model if memorized_model is not None else (model or pipe)
    pairs = [] if "verbatim" in config.skip else \
        relevant_pairs(world, world.memorized_pairs(where, config.references), names)
    if "privacy" in config.skip:
        priv, privacy_note = None, "skipped (SixWayConfig.skip)"
    else:
        try:
            priv = privacy_images(world, names, config.members, config.seed, where)
            privacy_note = ""
        except ErasekitError as e:  # e.g. a prompt-list world: no training images; the row says why it is empty
            priv, privacy_note = None, str(e)

    def privacy(p: Any) -> dict[str, Any]:
        if priv is None:
            return {"auc": None, "privleak": None, "note": privacy_note}
        a = membership_auc(p, priv, config)
        return {"auc": a, "privleak": privleak(a, auc_ref)}

    auc_ref = None if priv is None else membership_auc(ref_pipe, priv, config) if ref_pipe is not None \
        else IDEAL_REFERENCE_AUC
    base = {"verbatim": verbatim(pipe, pairs, config, steps, guidance), "privacy": privacy(pipe)}

    # every request of every method, as edits; then one harness run measures them all on the same seeds
    variants: list[Variant] = []
    plan: dict[str, dict[str, Any]] = {}
    for m in methods:
        scale = {}
        for k in sizes:
            path, secs = _make_edit(pipe, world, evaluator, m, options[m], names[:k], f"{m}-{k}", out, progress)
            scale[k] = path
            variants.append(Variant(f"{m}:{k}", edits=(path,), cost={"edit_seconds": round(secs, 4)}))
        seq: list[str] = []  # request i erases concept i on the model with requests 1..i-1 applied
        applied: list[Edit] = []
        try:
            for i, c in enumerate([] if "sustainability" in config.skip else names):
                if i == 0 and 1 in scale:
                    seq.append(scale[1])  # the first request alone is the 1-concept request
                    continue
                for path in seq[len(applied):]:
                    edit = Edit.load(path)
                    edit.apply(pipe)
                    applied.append(edit)
                path, _ = _make_edit(pipe, world, evaluator, m, options[m], [c], f"{m}-seq{i + 1}", out, progress)
                seq.append(path)
        finally:
            for e in reversed(applied):
                e.revert(pipe)
        names_seq = []
        for i in range(1, len(seq) + 1):
            name = f"{m}:1" if i == 1 and 1 in scale else f"{m}:seq{i}"
            if name != f"{m}:1":
                variants.append(Variant(name, edits=tuple(seq[:i])))
            names_seq.append(name)
        plan[m] = {"scale": scale, "sequential": seq, "sequential_variants": names_seq}
    res = evaluate(suite, variants, out / "eval", model=model if isinstance(model, str) else None, targets=names,
                   progress=progress, pipe=pipe, evaluator=evaluator)

    def measured(variant: str, targets: Sequence[str]) -> dict[str, float]:
        per = res["variants"][variant]["metrics"]
        out_m = {k: float(np.mean([per[t][k] for t in targets if k in per[t]])) for k in KNOWLEDGE
                 if any(k in per[t] for t in targets)}
        out_m |= {k: float(np.mean([per[t][k] for t in names if k in per[t]])) for k in UTILITY
                  if any(k in per[t] for t in names)}
        return out_m

    tables: dict[str, Any] = {}
    for m in methods:
        with Edit.load(plan[m]["scale"][len(names)]).applied(pipe):
            verb, priv_m = verbatim(pipe, pairs, config, steps, guidance), privacy(pipe)
        tables[m] = {
            "verbatim": verb, "knowledge": measured(f"{m}:{len(names)}", names), "privacy": priv_m,
            "scalability": [{"concepts": k, **measured(f"{m}:{k}", names[:k]), "base": measured("base", names[:k])}
                            for k in sizes],
            "sustainability": [{"requests": i + 1, **measured(v, names[:i + 1]),
                                "base": measured("base", names[:i + 1])}
                               for i, v in enumerate(plan[m]["sequential_variants"])],
            "edits": {"scale": {str(k): v for k, v in plan[m]["scale"].items()}, "sequential": plan[m]["sequential"]},
        }
    result = {"methods": tables, "concepts": names, "sizes": sizes,
              "base": {"verbatim": base["verbatim"], "knowledge": measured("base", names),
                       "privacy": base["privacy"]},
              "reference": {"auc": auc_ref, "kind": "model" if ref_pipe is not None else
                            f"ideal (AUC {IDEAL_REFERENCE_AUC}: not measured)",
                            **({"model": str(reference)} if isinstance(reference, (str, Path)) else {})},
              "memorized_pairs": len(pairs),
              "privacy_images": {"members": int(len(priv[0])), "nonmembers": int(len(priv[1]))} if priv else {},
              "config": dataclasses.asdict(config), "suite": suite.name, "suite_sha256": suite.sha256(),
              "evaluation": str(out / "eval" / "results.json"), "seconds": round(time.time() - t0, 1)}
    text = json.dumps(result, indent=1, allow_nan=False)
    atomic_write_text(out / "sixway.json", text)
    atomic_write_text(out / "sixway.md", markdown(result) + "\n")
    return json.loads(text)


# ------------------------------------------------------------------------------------------------ tables
def _f(x: Any, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def markdown(result: dict[str, Any]) -> str:
    """One markdown table per method: the six ways, base model vs the method (direction of each row in brackets)."""
    b = result["base"]
    parts = []
    for m, t in result["methods"].items():
        rows = [("verbatim", "verbatim copies of memorized pairs (lower)",
                 b["verbatim"].get("verbatim_rate"), t["verbatim"].get("verbatim_rate")),
                ("verbatim", "memorization magnitude (lower)",
                 b["verbatim"].get("memorization_magnitude"), t["verbatim"].get("memorization_magnitude")),
                ("knowledge", "detection (lower)", b["knowledge"].get("detection"), t["knowledge"].get("detection")),
                ("knowledge", "detection_generality (lower)", b["knowledge"].get("detection_generality"),
                 t["knowledge"].get("detection_generality")),
                ("privacy", "membership AUC", b["privacy"]["auc"], t["privacy"]["auc"]),
                ("privacy", f"PrivLeak % vs {result['reference']['kind'].split(' (')[0]} reference (near 0)",
                 b["privacy"]["privleak"], t["privacy"]["privleak"]),
                ("utility", "accuracy_unrelated (higher)", b["knowledge"].get("accuracy_unrelated"),
                 t["knowledge"].get("accuracy_unrelated")),
                ("utility", "image_drift (lower)", b["knowledge"].get("image_drift"), t["knowledge"].get("image_drift"))]
        pair = lambda r: f"{_f(r.get('detection'))} / {_f(r.get('accuracy_unrelated'))}"
        for r in t["scalability"]:
            rows.append(("scalability", f"{r['concepts']} concept(s) in one request: detection of those / "
                         "accuracy_unrelated", pair(r["base"]), pair(r)))
        for r in t["sustainability"]:
            rows.append(("sustainability", f"after request {r['requests']}: detection of C1..C{r['requests']} / "
                         "accuracy_unrelated", pair(r["base"]), pair(r)))
        lines = [f"**{m}** erasing {', '.join(result['concepts'])}", "", f"| way | measure | base | {m} |",
                 "|---|---|---|---|"]
        for way, what, bv, mv in rows:
            fmt = "+.1f" if what.startswith("PrivLeak") else ".2f"
            cell = lambda v: v if isinstance(v, str) else _f(v, fmt)
            lines.append(f"| {way} | {what} | {cell(bv)} | {cell(mv)} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


__all__ = ["IDEAL_REFERENCE_AUC", "SixWayConfig", "markdown", "membership_auc", "merged_request", "privacy_images",
           "relevant_pairs", "run_sixway", "verbatim"]
