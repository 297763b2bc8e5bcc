"""RESTOR for images: after erasing a concept that was injected by fine-tuning, is the model BACK to the model that
never saw the injection, or does it only forget?

Rezaei et al., "RESTOR: Knowledge Recovery in Machine Unlearning" (TMLR 2025, github k1rezaei/restor) corrupt a clean
model by continued training on documents stating wrong facts, unlearn the corruption, and score the RECOVERY of the
clean model's answers, not only the disappearance of the wrong ones (the text side: `erasekit.text.restor`). The
image analogue on one code path:

  1. corruption   prompts for concept A (`source`) are taught to show concept B (`donor`): the relearn attack's
                  fine-tune (`attacks.relearn.fine_tune`, the denoising loss on `n_images` images of B drawn by the
                  world, captioned with the world's training templates naming A) on the clean model; the learned
                  deltas become an `Edit` (the corruption edit), so the corrupted model is clean + that edit.
  2. erasure      each eraser gets the world's erase request for A (what the corrupted model now associates with A
                  is the wrong knowledge) on the corrupted model (`benchmark._edit_for`, no early stop: the concept
                  check would see A absent from the start); its edit is applied on top of the corruption.
  3. measurement  one harness run (`evaluation.evaluate`) of clean (= "base", the reference that never saw the
                  corruption), corrupted, and corrupted + each eraser on A and B, judged by the suite's evaluator:
      restoration     detection of A on A's direct (and held-out) prompts: A-prompts show A again      higher
      forgetting      share of A's direct images in which the evaluator sees B (the injected answer)   lower
      recovery        RESTOR's (restoration - corrupted) / (clean - corrupted)                        1 = clean
      ref_agree       share of A's direct images whose label in A's family equals the clean model's on
                      the same prompt and seed (RESTOR's agreement with the reference)                 higher
      image_drift     mean |pixel difference| to the clean model on the same seeds (A's sets; and on B's:
                      the donor's own prompts)                                                         lower
      donor           detection of B on B's direct prompts (the injection and the erasure must leave B) higher
      accuracy_unrelated   utility on other families' prompts (harness)                                higher
      weight_gap      ||W - W_clean|| / ||W_corrupted - W_clean|| over every tensor the edits touch
                      (0: the clean weights; 1: as far as the corrupted model)                         lower

    run_restor_images(["uce", "rece", "esd"], "runs/restor-images")   # -> restor.json, restor.md, eval/

Deviations from RESTOR: images instead of facts; the corruption relabels one concept (A shows B) instead of
inserting wrong facts into documents; the "unlearning" is an erasure method given the concept's erase request (the
text prompts naming A), not the corruption data itself; the clean reference is the model before the injection (as in
RESTOR), and the judge is the suite's evaluator (toy world: the oracle), not ChatGPT. The fine-tune has no replay of
clean data (RESTOR mixes the wrong facts into ordinary documents); the injection's collateral damage is measured on
the corrupted row instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InvalidValueError

CORRUPTED = "corrupted"  # harness variant name of the corrupted model (clean + corruption edit)
INJECTION_METHOD = "restor-injection"  # `method` of the corruption edit's manifest
MEASURES = ("restoration", "restoration_heldout", "forgetting", "recovery", "ref_agree", "image_drift",
            "donor_detection", "donor_image_drift", "accuracy_unrelated", "weight_gap")
HIGHER_IS_BETTER = {"restoration": True, "restoration_heldout": True, "forgetting": False, "recovery": True,
                    "ref_agree": True, "image_drift": False, "donor_detection": True, "donor_image_drift": False,
                    "accuracy_unrelated": True, "weight_gap": False}


@dataclass(frozen=True)
class RestorImagesConfig:
    """The corruption (A's prompts taught to show B) and how much is measured (defaults: the toy model, 2 CPUs)."""

    source: str = field(default="Zorbo", metadata={"help": "concept A whose prompts are corrupted, then erased"})
    donor: str = field(default="Mossy", metadata={"help": "concept B that A's prompts show after the corruption"})
    n_images: int = field(default=8, metadata={"help": "corruption: images of the donor (drawn by the world)"})
    inject_steps: int = field(default=60, metadata={"help": "corruption: fine-tuning steps"})
    inject_lr: float = field(default=3e-3, metadata={
        "help": "corruption: Adam learning rate (toy model, 60 xattn-kv steps: 3e-3 makes A's prompts show B in "
                "the requested style with B intact; 1e-2 collapses the model, see BENCHMARKS.md)"})
    params: str = field(default="xattn-kv", metadata={
        "help": "corruption: what is fine-tuned (attacks.relearn.PARAMS: lora-attn, lora-xattn, xattn-kv)"})
    rank: int = field(default=4, metadata={"help": "corruption: LoRA rank (lora-* params)"})
    batch_size: int = field(default=2, metadata={"help": "corruption: images per step"})
    limit: int = field(default=8, metadata={"help": "images per prompt set of the harness"})
    sets: tuple[str, ...] = field(default=("direct", "heldout", "unrelated"), metadata={
        "help": "prompt sets the harness generates (direct is required: restoration and forgetting are read there)"})
    steps: int | None = field(default=None, metadata={"help": "sampling steps (None: the suite's)"})
    seed: int = field(default=0, metadata={"help": "seed of the corruption (donor images, batches, captions)"})

    def __post_init__(self) -> None:
        for name in ("n_images", "inject_steps", "rank", "batch_size", "limit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InvalidValueError(f"restor_images {name} must be an integer >= 1, got {v!r}")
        if not (isinstance(self.inject_lr, (int, float)) and math.isfinite(self.inject_lr) and self.inject_lr > 0):
            raise InvalidValueError(f"restor_images inject_lr must be a positive finite number, got {self.inject_lr!r}")
        from .attacks.relearn import PARAMS

        if self.params not in PARAMS:
            raise InvalidValueError(f"restor_images params {self.params!r} is not one of {', '.join(PARAMS)}")
        if "direct" not in self.sets:
            raise InvalidValueError(f"restor_images sets {list(self.sets)} must include 'direct' (restoration and "
                                    "forgetting are measured on the direct prompts)")
        if not self.source.strip() or not self.donor.strip() or self.source.strip().lower() == \
                self.donor.strip().lower():
            raise InvalidValueError(f"restor_images needs two different concepts, got source={self.source!r} and "
                                    f"donor={self.donor!r}; e.g. source='Zorbo', donor='Mossy'")
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise InvalidValueError(f"restor_images steps must be an integer >= 1 or None, got {self.steps!r}")


# ------------------------------------------------------------------------------------------------ corruption
def inject(pipe: Any, world: Any, config: RestorImagesConfig) -> Any:
    """The corruption edit of `pipe` as it is now: the relearn fine-tune on `n_images` images of the donor captioned
    with the source's names; returns an `erasekit.edits.Edit` (dense tensors for xattn-kv, low-rank for lora-*),
    its manifest recording the corruption (source, donor, losses, seconds)."""
    from .attacks import AttackContext
    from .attacks._recovery import world_images
    from .attacks.relearn import RelearnConfig, fine_tune
    from .edits import Edit, LowRank, resolve_parameter
    from .sampling import resolve_sampling

    source, donor = world.concept(config.source).name, world.concept(config.donor).name
    images = world_images(world, donor, config.n_images, config.seed)
    if images is None:
        raise InvalidValueError(f"world {getattr(world, 'name', None)!r} cannot draw images of the donor {donor!r}")
    steps, guidance = resolve_sampling(pipe, None, None)
    ctx = AttackContext(target=pipe, base=None, concept=source, family=None, check=None, shield=None,
                        sample_steps=steps, guidance=guidance, world=world)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "donor.npy"
        np.save(path, np.ascontiguousarray(images), allow_pickle=False)
        rc = RelearnConfig(images=str(path), n_images=config.n_images, steps=config.inject_steps,
                           lr=config.inject_lr, batch_size=config.batch_size, params=config.params, rank=config.rank,
                           seed=config.seed)
        with torch.enable_grad():
            replay = fine_tune(ctx, [], rc)
    tensors: dict[str, Any] = {}
    for name in sorted({k.split("::")[0] for k in replay.tensors}):
        if f"{name}::delta" in replay.tensors:
            param = resolve_parameter(pipe, name).detach()
            tensors[name] = (param.float() + replay.tensors[f"{name}::delta"].to(param.device)).to(param.dtype)
        else:
            tensors[name] = LowRank(replay.tensors[f"{name}::up"], replay.tensors[f"{name}::down"], 1.0)
    # the fine-tune's images show the donor (its captions name the source); the temporary file's path is dropped
    info = {k: v for k, v in replay.info.items() if k != "images"} | {
        "images": {"count": replay.info["images"]["count"], "sha256": replay.info["images"]["sha256"],
                   "shows": donor, "captions_name": source}}
    return Edit.from_tensors(pipe, tensors, INJECTION_METHOD, config=dataclasses.asdict(config),
                             extra={"corruption": {"source": source, "donor": donor, **info}})


# ------------------------------------------------------------------------------------------------ measures
def weight_gap(pipe: Any, corruption: Any, chains: dict[str, Sequence[Any]]) -> dict[str, float]:
    """{variant: ||W - W_clean|| / ||W_corrupted - W_clean||} (Frobenius, over every tensor any edit touches), where
    W is `pipe`'s current (clean) weights with the variant's edits (`chains[variant]`, in order) written over them."""
    from .edits import resolve_parameter

    names = sorted({n for edits in chains.values() for e in edits for n in e.names} | set(corruption.names))
    clean = {n: resolve_parameter(pipe, n).detach().cpu().float() for n in names}

    def dist(edits: Sequence[Any]) -> float:
        w = dict(clean)
        for e in edits:
            for n in e.names:
                w[n] = e.edited_value(n, w[n]).float()
        return math.sqrt(sum(float((w[n] - clean[n]).pow(2).sum()) for n in names))

    ref = dist([corruption])
    if ref == 0:
        raise InvalidValueError("the corruption edit changes no weight (zero delta); raise inject_steps or inject_lr")
    return {v: dist(edits) / ref for v, edits in chains.items()}


def label_shares(samples: Sequence[dict], variant: str, target: str, family: str, label: str,
                 set_name: str = "direct") -> float:
    """Share of `variant`'s images of `target`'s `set_name` prompts whose evaluator label in `family` is `label`."""
    got = [s["labels"].get(family) == label for s in samples
           if s["variant"] == variant and s["target"] == target and s["set"] == set_name]
    if not got:
        raise InvalidValueError(f"no {set_name} images of {target!r} for variant {variant!r} in the harness samples")
    return float(np.mean(got))


def reference_agreement(samples: Sequence[dict], variant: str, target: str, family: str,
                        reference: str = "base", set_name: str = "direct") -> float:
    """Share of `variant`'s images of `target`'s `set_name` prompts whose label in `family` equals the reference
    variant's on the same prompt and seed (index)."""
    ref = {s["index"]: s["labels"].get(family) for s in samples
           if s["variant"] == reference and s["target"] == target and s["set"] == set_name}
    got = [s["labels"].get(family) == ref[s["index"]] for s in samples
           if s["variant"] == variant and s["target"] == target and s["set"] == set_name and s["index"] in ref]
    if not got:
        raise InvalidValueError(f"no {set_name} images of {target!r} shared by {variant!r} and {reference!r}")
    return float(np.mean(got))


def recovery(clean: float, corrupted: float, after: float) -> float | None:
    """RESTOR's recovery, (after - corrupted) / (clean - corrupted); None when the corruption changed nothing."""
    return None if math.isclose(clean, corrupted) else (after - corrupted) / (clean - corrupted)


# ------------------------------------------------------------------------------------------------ the run
def run_restor_images(methods: Sequence[str], out: str | Path, config: RestorImagesConfig | None = None,
                      suite: Any = "default", pipe: Any = None, model: str | None = None,
                      options: dict[str, dict] | None = None,
                      progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Corrupt the model (A's prompts show B), erase A with each of `methods` on the corrupted model, measure
    clean / corrupted / each eraser in one harness run; write `<out>/restor.json`, `<out>/restor.md` and the harness
    run `<out>/eval/` (`erasekit report <out>/eval` works); return what restor.json holds.

    suite: a suite name/YAML or `Suite` (world, evaluator, sampling; its samples are replaced by `config.sets`
    capped at `config.limit`); options: {method: eraser options}. `pipe` is left as it was (every edit reverted)."""
    from .benchmark import VariantSpec, _edit_for
    from .edits import Edit
    from .erasers import get_eraser
    from .evaluation import Variant, evaluate, evaluator_for
    from .fingerprint import pipeline_fingerprint
    from .models import load_pipeline
    from .suite import load_suite

    config = config or RestorImagesConfig()
    t0 = time.time()
    out = Path(out)
    methods = list(dict.fromkeys(m for m in methods if m))
    if not methods:
        raise InvalidValueError("no eraser given; e.g. methods=['uce', 'esd']")
    options = {m: dict((options or {}).get(m, {})) for m in methods}
    for m in methods:
        get_eraser(m).make_config(options[m])  # unknown methods / options fail before any work
    suite = load_suite(suite) if isinstance(suite, str) else suite
    suite = dataclasses.replace(suite, samples={s: config.limit for s in config.sets})
    if config.steps is not None:
        suite = dataclasses.replace(suite, steps=config.steps)
    evaluator = evaluator_for(suite)
    world = suite.world_for(evaluator)
    source, donor = world.concept(config.source).name, world.concept(config.donor).name
    (fam_a, lab_a), (fam_b, lab_b) = evaluator.target(source), evaluator.target(donor)
    model = model or suite.model
    pipe = pipe if pipe is not None else load_pipeline(model)

    # 1. the corruption, saved as an edit (reused when the same corruption of the same weights exists)
    clean_sha = pipeline_fingerprint(pipe)["sha256"]
    key = json.dumps({k: v for k, v in dataclasses.asdict(config).items()
                      if k in ("source", "donor", "n_images", "inject_steps", "inject_lr", "params", "rank",
                               "batch_size", "seed")} | {"base": clean_sha}, sort_keys=True)
    import hashlib

    corr_path = out / "edits" / f"corruption-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if corr_path.exists():
        corruption = Edit.load(corr_path)
    else:
        t1 = time.perf_counter()
        corruption = inject(pipe, world, config)
        corruption.manifest["edit_seconds"] = round(time.perf_counter() - t1, 3)
        corruption.save(corr_path)

    # 2. each eraser erases A on the corrupted model
    edits: dict[str, str] = {}
    with corruption.applied(pipe):
        corrupted_sha = pipeline_fingerprint(pipe)["sha256"]
        for m in methods:
            spec = VariantSpec(m, method=m, options=options[m], early_stop=False)
            edits[m], _ = _edit_for(pipe, corrupted_sha, world, evaluator, source, spec, out, progress)

    # 3. one harness run: base (= the clean reference), corrupted, corrupted + each eraser
    variants = [Variant(CORRUPTED, edits=(str(corr_path),))]
    variants += [Variant(m, edits=(str(corr_path), edits[m])) for m in methods]
    res = evaluate(suite, variants, out / "eval", model=model if isinstance(model, str) else None,
                   targets=[source, donor], progress=progress, pipe=pipe, evaluator=evaluator)
    samples = [json.loads(line) for line in (out / "eval" / "samples.jsonl").read_text().splitlines() if line]
    gaps = weight_gap(pipe, corruption, {"base": [], CORRUPTED: [corruption],
                                         **{m: [corruption, Edit.load(edits[m])] for m in methods}})

    rows: dict[str, dict[str, Any]] = {}
    for v in ["base", CORRUPTED, *methods]:
        ma, mb = res["variants"][v]["metrics"][source], res["variants"][v]["metrics"][donor]
        rows[v] = {"restoration": ma.get("detection"), "restoration_heldout": ma.get("detection_generality"),
                   "forgetting": label_shares(samples, v, source, fam_b, lab_b),
                   "ref_agree": reference_agreement(samples, v, source, fam_a),
                   "image_drift": ma.get("image_drift"), "donor_detection": mb.get("detection"),
                   "donor_image_drift": mb.get("image_drift"),
                   "accuracy_unrelated": res["variants"][v]["mean"].get("accuracy_unrelated"),
                   "weight_gap": gaps[v]}
    for v in rows:
        rows[v]["recovery"] = recovery(rows["base"]["restoration"], rows[CORRUPTED]["restoration"],
                                       rows[v]["restoration"])
    result = {"source": source, "donor": donor, "methods": methods, "rows": rows,
              "corruption": {"edit": str(corr_path), **corruption.manifest.get("corruption", {}),
                             "edit_seconds": corruption.manifest.get("edit_seconds")},
              "erasure_edits": edits, "config": dataclasses.asdict(config), "suite": suite.name,
              "suite_sha256": suite.sha256(), "evaluation": str(out / "eval" / "results.json"),
              "higher_is_better": HIGHER_IS_BETTER, "seconds": round(time.time() - t0, 1)}
    from .io import atomic_write_text

    text = json.dumps(result, indent=1, allow_nan=False)
    atomic_write_text(out / "restor.json", text)
    atomic_write_text(out / "restor.md", markdown(result) + "\n")
    return json.loads(text)


def markdown(result: dict[str, Any]) -> str:
    """One table: a row per model (clean reference, corrupted, corrupted + each eraser), a column per measure."""
    hib = result["higher_is_better"]
    head = "| model | " + " | ".join(f"{m} {'↑' if hib[m] else '↓'}" for m in MEASURES) + " |"
    lines = [f"RESTOR for images: {result['source']!r} prompts corrupted to show {result['donor']!r}, then "
             f"{result['source']!r} erased (clean = the model before the corruption)", "", head,
             "|---" * (len(MEASURES) + 1) + "|"]
    names = {"base": "clean (reference)", CORRUPTED: "corrupted"}
    for v, r in result["rows"].items():
        cells = ["n/a" if r.get(m) is None else f"{r[m]:.3f}" for m in MEASURES]
        lines.append(f"| {names.get(v, f'corrupted + {v}')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["CORRUPTED", "HIGHER_IS_BETTER", "INJECTION_METHOD", "MEASURES", "RestorImagesConfig", "inject",
           "label_shares", "markdown", "recovery", "reference_agreement", "run_restor_images", "weight_gap"]
