"""Benchmarks as data: a bench spec (YAML) names a suite, concepts and variants — erasers with options, shields,
attacks and their combinations — and `run_bench` measures them all through the one evaluation harness.

    erasekit bench --spec erasure-toy --out runs/bench/erasure       # a shipped spec (src/erasekit/benchmarks/)
    erasekit bench --spec my-bench.yaml --out runs/mine --markdown table.md

For every concept, each variant's eraser (if any) erases it from the base model — the request comes from the world
(`World.concept(c).request()`: erase prompts, guide, preserve set) unless the variant gives its own, fine-tuning
methods stop early when the suite's evaluator no longer sees the concept (`erasers._training.concept_hooks`) — and
the edit is saved under `<out>/edits/`; then `erasekit.evaluation.evaluate` runs base + every variant on that concept
(same seeds, same cache rules), and the per-concept results are merged into `<out>/results.json`. Every number of a
published table comes from that file through `erasekit.report.markdown.results_table`: nothing here computes a metric.

Spec keys (see the shipped specs):

    name, description
    suite: default            # shipped suite name or YAML path; the model, world, evaluator and seeds come from it
    limit: 8                  # cap every prompt set (None: the suite's counts)
    steps: 10                 # override the suite's sampling steps (None: the suite's)
    concepts: [Zorbo, ...]    # targets (default: the suite's)
    variants:                 # base is always measured
      - name: uce+tpl
        method: uce           # a registered eraser ("" / absent: no weight edit)
        options: {expand_prompts: true}
        templates: 8          # add 8 training-style templates from the world (methods with a `templates` option)
        shield: "sld:strong"  # optional shield spec (protects the concept)
        attack: "copycat:steps=4"   # optional attack spec (robustness metrics)
        early_stop: true      # fine-tuning: stop when the evaluator no longer sees the concept
        transport: false      # spm: measure the edit through facilitated transport (shield) instead of applied
    table: [detection, detection_generality, accuracy_neighbours, image_drift, edit_seconds]
    rows: target              # markdown rows: variant x target (default), variant x family, or variant
    base_only: false          # true: no variants, the base model alone (fidelity tables); variants must be absent
    grid:                     # protections x attacks (instead of, or besides, `variants`): every protection is
      protections:            # measured unattacked and under every attack; `erasekit bench` writes the matrix
        - {name: uce, method: uce}                 # (attack_success per cell, detection unattacked) and the
        - {name: sld, shield: "sld:strong"}        # report draws it as a heat map. "base" = no protection.
        - {name: uce+sld, method: uce, shield: "sld:strong"}
      attacks:
        - {name: copycat, attack: "copycat:steps=4"}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .errors import InvalidValueError, UnknownNameError, first_line
from .io import atomic_write_text, slug

VARIANT_KEYS = ("name", "method", "options", "templates", "shield", "attack", "early_stop", "request", "transport")
SPEC_KEYS = ("name", "description", "suite", "limit", "steps", "concepts", "variants", "table", "rows", "base_only",
             "grid")
GRID_KEYS = ("protections", "attacks")
ROWS = ("target", "family", "variant")


@dataclass(frozen=True)
class VariantSpec:
    """One row of a benchmark: an optional eraser (+ options), shield and attack."""

    name: str
    method: str = ""
    options: dict = field(default_factory=dict)
    templates: int = 0
    shield: str | None = None
    attack: str | None = None
    early_stop: bool = True
    transport: bool = False  # SPM: use the edit through facilitated transport (shield spm_transport), not applied
    request: dict = field(default_factory=dict)  # overrides of the world's erase request (erase / guide / preserve)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidValueError(f"a bench variant needs a non-empty name, got {self.name!r}")
        if self.name == "base":
            raise InvalidValueError("'base' is measured in every benchmark; name the variant something else")
        if not isinstance(self.templates, int) or isinstance(self.templates, bool) or self.templates < 0:
            raise InvalidValueError(f"variant {self.name!r}: templates must be an integer >= 0, got {self.templates!r}")
        for k in self.request:
            if k not in ("erase", "guide", "preserve"):
                raise UnknownNameError(f"request key of variant {self.name!r}", k, ("erase", "guide", "preserve"))
        if self.transport and self.method != "spm":
            raise InvalidValueError(f"variant {self.name!r}: transport: true needs method: spm (facilitated transport "
                                    f"scales SPM adapters), got method {self.method!r}")
        if not (self.method or self.shield or self.attack):
            raise InvalidValueError(f"variant {self.name!r} has no method, shield or attack: it would be the base")


@dataclass(frozen=True)
class BenchSpec:
    name: str
    variants: tuple[VariantSpec, ...]
    suite: str = "default"
    limit: int | None = None
    steps: int | None = None  # overrides the suite's sampling steps (CPU budgets)
    concepts: tuple[str, ...] = ()
    table: tuple[str, ...] = ()
    description: str = ""
    rows: str = "target"
    base_only: bool = False
    grid: dict = field(default_factory=dict)  # {"protections": [names], "attacks": [names]} of the expanded grid

    def __post_init__(self) -> None:
        if self.base_only and self.variants:
            raise InvalidValueError(f"bench spec {self.name!r} says base_only: true but lists variants; drop one")
        if not self.variants and not self.base_only:
            raise InvalidValueError(f"bench spec {self.name!r} has no variants (base_only: true measures the base "
                                    "model alone)")
        if self.rows not in ROWS:
            raise UnknownNameError(f"rows of bench spec {self.name!r}", self.rows, ROWS)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise InvalidValueError(f"bench spec {self.name!r} repeats a variant name: {names}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise InvalidValueError(f"bench spec {self.name!r}: limit must be an integer >= 1, got {self.limit!r}")

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()


def shipped_specs() -> list[str]:
    root = resources.files("erasekit").joinpath("benchmarks")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_bench_spec(name_or_path: str) -> BenchSpec:
    """A shipped spec by name (`erasekit ls benchmarks`) or a YAML file path; errors name the file and the key."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text, where = path.read_text(), str(path)
    else:
        if name_or_path not in shipped_specs():
            raise UnknownNameError("bench spec", name_or_path, shipped_specs())
        text = resources.files("erasekit").joinpath("benchmarks", f"{name_or_path}.yaml").read_text()
        where = f"benchmarks/{name_or_path}.yaml"
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidValueError(f"{where}: not valid YAML ({first_line(e)})") from e
    if not isinstance(raw, dict):
        raise InvalidValueError(f"{where}: a bench spec is a YAML mapping")
    for k in raw:
        if k not in SPEC_KEYS:
            raise UnknownNameError(f"key of {where}", k, SPEC_KEYS)
    variants = []
    for i, v in enumerate(raw.get("variants") or []):
        if not isinstance(v, dict):
            raise InvalidValueError(f"{where}: variants[{i}] must be a mapping with a name, got {v!r}")
        for k in v:
            if k not in VARIANT_KEYS:
                raise UnknownNameError(f"key of {where} variants[{i}]", k, VARIANT_KEYS)
        variants.append(VariantSpec(**{k: (dict(val) if k in ("options", "request") else val)
                                       for k, val in v.items() if val is not None}))
    grid: dict = {}
    if raw.get("grid") is not None:
        grid_variants, grid = expand_grid(raw["grid"], where)
        variants += grid_variants
    concepts = raw.get("concepts") or ()
    if isinstance(concepts, str) or not all(isinstance(c, str) and c.strip() for c in concepts):
        raise InvalidValueError(f"{where}: concepts must be a list of names, got {concepts!r}")
    return BenchSpec(name=str(raw.get("name") or path.stem), variants=tuple(variants),
                     suite=str(raw.get("suite") or "default"), limit=raw.get("limit"), steps=raw.get("steps"),
                     concepts=tuple(concepts),
                     table=tuple(raw.get("table") or ()), description=str(raw.get("description") or "").strip(),
                     rows=str(raw.get("rows") or "target"), base_only=bool(raw.get("base_only") or False),
                     grid=grid)


def expand_grid(raw: Any, where: str) -> tuple[list[VariantSpec], dict]:
    """Variants of a `grid:` block: each protection unattacked (named as the protection; "base" is the base model,
    measured anyway) and under each attack ("<protection>+<attack>"); returns them and the grid's axes."""
    if not isinstance(raw, dict):
        raise InvalidValueError(f"{where}: grid must be a mapping with protections and attacks, got {raw!r}")
    for k in raw:
        if k not in GRID_KEYS:
            raise UnknownNameError(f"key of {where} grid", k, GRID_KEYS)
    axes: dict[str, list[dict]] = {}
    for axis in GRID_KEYS:
        items = raw.get(axis)
        if not isinstance(items, list) or not items:
            raise InvalidValueError(f"{where}: grid.{axis} must be a non-empty list of mappings with a name")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
                raise InvalidValueError(f"{where}: grid.{axis}[{i}] must be a mapping with a name, got {item!r}")
            allowed = ("name", "attack") if axis == "attacks" else tuple(k for k in VARIANT_KEYS if k != "attack")
            for k in item:
                if k not in allowed:
                    raise UnknownNameError(f"key of {where} grid.{axis}[{i}]", k, allowed)
            if axis == "attacks" and not item.get("attack"):
                raise InvalidValueError(f"{where}: grid.attacks[{i}] ({item['name']!r}) needs an attack spec")
        names = [it["name"] for it in items]
        if len(set(names)) != len(names):
            raise InvalidValueError(f"{where}: grid.{axis} repeats a name: {names}")
        axes[axis] = items
    variants = []
    for prot in axes["protections"]:
        fields = {k: (dict(v) if k in ("options", "request") else v) for k, v in prot.items()
                  if k != "name" and v is not None}
        if prot["name"] != "base":
            if not (fields.get("method") or fields.get("shield")):
                raise InvalidValueError(f"{where}: grid protection {prot['name']!r} has no method or shield (only "
                                        "'base' may be unprotected)")
            variants.append(VariantSpec(name=prot["name"], **fields))
        elif fields.get("method") or fields.get("shield"):
            raise InvalidValueError(f"{where}: the grid protection named 'base' must have no method or shield")
        for att in axes["attacks"]:
            variants.append(VariantSpec(name=f"{prot['name']}+{att['name']}", attack=att["attack"], **fields))
    return variants, {axis: [it["name"] for it in items] for axis, items in axes.items()}


def method_source_sha256(method: str) -> str:
    """sha256 of the source file that defines a registered eraser (its config's module): part of an edit's reuse
    key, so an edit made by older code of the method is remade, not silently reused."""
    import sys

    from .erasers import get_eraser
    from .io import file_sha256

    module = sys.modules[get_eraser(method).config_cls.__module__]
    return file_sha256(module.__file__)


def edit_key(method: str, options: dict, request: dict, early_stop: bool, base_sha256: str) -> str:
    """The reuse key of a bench edit: method, options, request, early stop, base weights, the method's source file and
    the erasekit version (shared helpers such as the training loop change with the version)."""
    from . import __version__

    return hashlib.sha256(json.dumps({"method": method, "options": options, "request": request,
                                      "early_stop": early_stop, "base": base_sha256,
                                      "source": method_source_sha256(method), "erasekit": __version__},
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]


def _edit_for(pipe: Any, base_sha256: str, world: Any, evaluator: Any, concept: str, v: VariantSpec,
              out: Path, progress: Callable[..., None] | None) -> tuple[str, float]:
    """Erase `concept` with the variant's method (or reuse the edit saved by an identical earlier run on the same
    base weights, `base_sha256`)."""
    from .edits import Edit
    from .erasers import erase, get_eraser
    method = get_eraser(v.method)
    request = world.concept(concept).request() | dict(v.request)
    options = dict(v.options)
    if v.templates:
        if "templates" not in {f for f in method.config_cls.__dataclass_fields__}:
            raise InvalidValueError(f"variant {v.name!r}: method {v.method!r} takes no templates option")
        options["templates"] = tuple(world.templates(concept, v.templates))
    key = edit_key(v.method, options, request, v.early_stop, base_sha256)
    path = out / "edits" / f"{slug(v.name)}-{slug(concept)}-{key}.safetensors"
    # the same request under another variant name (e.g. applied and through transport) reuses one edit file
    same = sorted((out / "edits").glob(f"*-{slug(concept)}-{key}.safetensors")) if (out / "edits").is_dir() else []
    if path.exists() or same:
        path = path if path.exists() else same[0]
        return str(path), float(Edit.load(path).manifest.get("edit_seconds", 0.0))
    hooks = None
    if method.trains and v.early_stop:
        from .erasers._training import concept_hooks

        hooks = concept_hooks(world, evaluator, concept, progress=progress)
    t0 = time.perf_counter()
    edit = erase(pipe, v.method, request["erase"], preserve=request["preserve"], guide=request["guide"],
                 hooks=hooks, **options)
    seconds = time.perf_counter() - t0
    edit.save(path)
    return str(path), seconds


def run_bench(spec: BenchSpec, out: str | Path, pipe: Any = None, model: str | None = None,
              progress: Callable[..., None] | None = None, suite: Any = None, evaluator: Any = None,
              clip: str | None = None, jobs: int = 1) -> dict:
    """Run every variant of `spec` on every concept through `erasekit.evaluation.evaluate`; write and return the
    merged results ({"variants": {name: {"metrics": {concept: {...}}, "mean": {...}, "cost": {...}}}, ...}).

    suite: a `Suite` object replacing the spec's (its limit/steps still apply); evaluator / clip: as for
    `evaluate`; jobs: concepts evaluated at once, each in its own process that loads `model` itself with
    torch's threads divided among the jobs (CPU machines whose small models keep one core busy per process; the
    model must be given by name or folder, not as `pipe`, and the evaluator by name)."""
    from .evaluation import evaluator_for
    from .models import load_pipeline
    from .suite import load_suite

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if jobs > 1 and pipe is not None:
        raise InvalidValueError("jobs > 1 loads the model in each worker process, so it takes the model by name or "
                                "folder (model=...), not a loaded pipe (and on the CLI not with --device/--dtype)")
    if jobs > 1 and evaluator is not None and not isinstance(evaluator, str):
        raise InvalidValueError(f"jobs > 1 needs the evaluator by name, got a {type(evaluator).__name__} object")
    out = Path(out)
    suite = (suite if suite is not None else load_suite(spec.suite)).limited(spec.limit)
    if spec.steps is not None:
        suite = dataclasses.replace(suite, steps=spec.steps)
    model = model or suite.model
    if pipe is None and not model:
        raise InvalidValueError(f"suite {suite.name!r} names no model; pass --model PATH")
    evaluator = evaluator_for(suite, evaluator)
    world = suite.world_for(evaluator)
    concepts = list(spec.concepts or suite.targets)
    for c in concepts:
        world.concept(c)  # unknown concepts fail before any work
    from .erasers import get_eraser

    for v in spec.variants:
        if v.method:
            get_eraser(v.method).make_config(dict(v.options))  # unknown methods/options fail before any work
    pipe = pipe if pipe is not None else load_pipeline(model)
    from .fingerprint import pipeline_fingerprint

    # the base never changes here (edits are made as Edit objects and evaluate() reverts what it applies bit-exactly),
    # so its weights are hashed once for every edit's reuse key, not once per concept and variant
    base_sha256 = pipeline_fingerprint(pipe)["sha256"]
    parts: dict[str, dict] = {}
    if jobs == 1 or len(concepts) == 1:
        for concept in concepts:
            parts[concept] = _bench_concept(spec, out, pipe, base_sha256, world, evaluator, suite, model, concept,
                                            progress, clip)
    else:
        import concurrent.futures
        import multiprocessing

        import torch

        threads = max(1, torch.get_num_threads() // jobs)
        name = evaluator.name if hasattr(evaluator, "name") else evaluator
        ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-use
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(concepts)), mp_context=ctx) as ex:
            futures = {c: ex.submit(_bench_concept_worker, spec, str(out), model, base_sha256, suite, name, c, clip,
                                    threads) for c in concepts}
            parts = {c: futures[c].result() for c in concepts}
    merged = merge_results(parts)
    merged["bench"] = {"spec": asdict(spec), "spec_sha256": spec.sha256(), "concepts": concepts}
    atomic_write_text(out / "results.json", json.dumps(merged, indent=1, allow_nan=False))
    atomic_write_text(out / "samples.jsonl", "".join((out / slug(c) / "samples.jsonl").read_text() for c in concepts))
    return merged


def _bench_concept(spec: BenchSpec, out: Path, pipe: Any, base_sha256: str, world: Any, evaluator: Any, suite: Any,
                   model: str | None, concept: str, progress: Callable[..., None] | None, clip: str | None) -> dict:
    """Every variant of `spec` on one concept: make (or reuse) its edits, then one `evaluate` in out/<concept>/."""
    from .evaluation import Variant, evaluate

    variants = []
    for v in spec.variants:
        edits: tuple[str, ...] = ()
        cost: dict[str, float] = {}
        shield = v.shield
        if v.method:
            path, seconds = _edit_for(pipe, base_sha256, world, evaluator, concept, v, out, progress)
            edits, cost = (path,), {"edit_seconds": round(seconds, 4)}
            if v.transport:  # the same edit file, used per prompt by the transport shield instead of applied
                shield = f"spm_transport:edits={path}" + (f"+{v.shield}" if v.shield else "")
                edits = ()
        variants.append(Variant(v.name, edits=edits, shield=shield, attack=v.attack, cost=cost))
    return evaluate(suite, variants, out / slug(concept), model=model, targets=[concept], progress=progress,
                    pipe=pipe, evaluator=evaluator, clip=clip)


def _bench_concept_worker(spec: BenchSpec, out: str, model: str, base_sha256: str, suite: Any, evaluator: str | None,
                          concept: str, clip: str | None, threads: int) -> dict:
    """`_bench_concept` in a worker process of `run_bench(jobs=N)`: its own model, evaluator and torch threads."""
    import torch

    from .evaluation import evaluator_for
    from .models import load_pipeline

    torch.set_num_threads(threads)
    ev = evaluator_for(suite, evaluator)
    return _bench_concept(spec, Path(out), load_pipeline(model), base_sha256, suite.world_for(ev), ev, suite, model,
                          concept, None, clip)


def merge_results(parts: dict[str, dict]) -> dict:
    """One result whose variants hold every concept's metrics (per-concept result files stay in their folders);
    costs are medians over concepts (each concept's own under "cost_by_target"), means are over concepts."""
    from .evaluation.results import family_means, means

    merged: dict[str, Any] = {"variants": {}, "targets": list(parts), "families": {}}
    for concept, res in parts.items():
        merged["families"].update(res.get("families") or {})
        if "training_counts" in res:
            merged.setdefault("training_counts", {}).update(res["training_counts"])
        for name, v in res["variants"].items():
            slot = merged["variants"].setdefault(name, {"metrics": {}, "cost": {}, "edits": [],
                                                        "shield": v.get("shield"), "attack": v.get("attack")})
            slot["metrics"][concept] = v["metrics"][concept]
            for block in ("triggers", "unsafe"):  # per-target blocks beside the metrics (CopyCat, Unsafe Diffusion)
                if concept in (v.get(block) or {}):
                    slot.setdefault(block, {})[concept] = v[block][concept]
            slot["edits"] += list(v.get("edits") or [])
            for k, val in (v.get("cost") or {}).items():
                if isinstance(val, (int, float)) and not isinstance(val, bool):
                    slot["cost"].setdefault(k, []).append(val)
                    slot.setdefault("cost_by_target", {}).setdefault(concept, {})[k] = val
    for v in merged["variants"].values():
        v["cost"] = {k: float(np.median(vals)) for k, vals in v["cost"].items()}
        v["mean"] = means(v["metrics"].values())
        v["by_family"] = family_means(v["metrics"], merged["families"])
    first = next(iter(parts.values()))
    for k in first:
        if k not in ("variants", "targets", "families", "training_counts"):
            merged[k] = first[k]
    from .metrics import metrics_info

    # every name measured on any concept (the first concept may lack some, e.g. keyword prompts of a character)
    merged["metrics_info"] = metrics_info(sorted({k for v in merged["variants"].values()
                                                  for k in list(v["mean"]) + list(v["cost"])}))
    return merged


__all__ = ["BenchSpec", "VariantSpec", "expand_grid", "load_bench_spec", "merge_results", "run_bench",
           "shipped_specs"]
