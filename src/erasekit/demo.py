"""`erasekit demo`: the main job on the built-in default (the toy world).

Generates images for a handful of prompts from each concept family with the toy model, labels them with the oracle,
and writes `report.html` (self-contained) and `grid.png` under the output folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import __version__
from .generation import generate
from .io import atomic_write_text
from .models import load_pipeline
from .world.plugin import manifest as toyworld_manifest
from .report import HtmlReport, save_grid
from .sampling import DEFAULT_STEPS, default_guidance
from .world import FAMILIES, NONE, Prompt, load_oracle, prompts_for

# (family, concept, prompt kind) shown by the demo: a handful per family
DEMO_PROMPTS: tuple[tuple[str, str, str], ...] = (
    ("object", "triangle", "direct"), ("object", "ring", "direct"), ("object", "cross", "heldout"),
    ("colour", "red", "direct"), ("colour", "cyan", "direct"), ("colour", "purple", "heldout"),
    ("artist", "Alva Renn", "direct"), ("artist", "Cora Voss", "direct"), ("artist", "Greta Lund", "heldout"),
    ("character", "Zorbo", "direct"), ("character", "Mossy", "direct"), ("character", "Kiko", "keyword"),
    ("unsafe", "gore", "direct"), ("unsafe", "nudity", "indirect"),
)


def demo_prompts(per_prompt: int, seed: int) -> list[Prompt]:
    """`per_prompt` prompts for each (family, concept, kind) of DEMO_PROMPTS."""
    out: list[Prompt] = []
    for family, concept, kind in DEMO_PROMPTS:
        out += prompts_for(family, concept, kind, n=per_prompt, seed=seed)
    return out


def agreement(prompts: list[Prompt], predicted: list[dict[str, str]]) -> dict[str, float]:
    """Per family: fraction of images whose oracle label equals the label the prompt asked for (constrained ones only)."""
    out = {}
    for f in FAMILIES:
        hits = [pred[f] == p.labels[f] for p, pred in zip(prompts, predicted) if p.labels[f] != NONE]
        if hits:
            out[f] = float(np.mean(hits))
    return out


DEMO_ERASE = "Zorbo"
DEMO_METHODS = ("uce", "rece", "mace", "realera", "fewshot")


def run_demo(out: Path, model: str = "toyworld", seed: int = 0, per_prompt: int = 4, steps: int = DEFAULT_STEPS,
             erase: str | None = DEMO_ERASE, methods: tuple[str, ...] = DEMO_METHODS, suite: str = "default",
             limit: int | None = None, progress: Callable[..., None] | None = None) -> Path:
    """Generate and label a handful of prompts per family; then (if `erase`) erase that concept with each method
    (the closed forms and few-shot fine-tuning, seconds each) and evaluate base vs edited on the suite. Writes
    report.html, grid.png, results.json (+ erasure/)."""
    t0 = time.time()
    pipe = load_pipeline(model)
    oracle = load_oracle()
    guidance = default_guidance(model)
    prompts = demo_prompts(per_prompt, seed)
    texts = [p.text for p in prompts]
    if progress:
        progress(0, total=len(texts), description="generating")
    images = generate(pipe, texts, seed, steps=steps, guidance=guidance,
                      progress=(lambda n: progress(n)) if progress else None)
    t_gen = time.time() - t0
    predicted = oracle.predict(images)
    agree = agreement(prompts, predicted)

    out.mkdir(parents=True, exist_ok=True)
    save_grid(images, out / "grid.png", ncol=per_prompt * 3)
    notes, classes = [], []
    for p, pred in zip(prompts, predicted):
        shown = [f"{f}={pred[f]}" for f in FAMILIES if pred[f] != NONE or p.labels[f] != NONE]
        ok = pred[p.family] == p.labels[p.family]
        notes.append(("✓ " if ok else "✗ ") + ", ".join(shown))
        classes.append("ok" if ok else "miss")
    rep = HtmlReport("erasekit demo: the toy world")
    rep.paragraph(f"{len(images)} images from model {model!r}, {steps} DDIM steps, guidance {guidance}, seeds "
                  f"{seed}..{seed + len(images) - 1}; labels from the toy-world oracle. ✓ = the oracle sees the "
                  f"prompted concept of the prompt's family.", cls="caption")
    rep.heading("Oracle agreement with the prompt, per family", id="summary")
    rep.table(["family", "agreement", "images"],
              [[f, agree[f], sum(1 for p in prompts if p.labels[f] != NONE)] for f in agree], id="summary-table")
    rep.heading("Generations", id="generations")
    rep.image_grid(images, [f"[{p.kind}] {p.text}" for p in prompts], id="images", notes=notes,
                   caption_classes=classes)
    bench = None
    if erase:
        from .evaluation import bench_methods
        from .report.eval_report import add_eval_sections
        from .suite import load_suite

        bench = bench_methods(load_suite(suite).limited(limit), list(methods), [erase], out / "erasure", model=model,
                              progress=progress)
        rep.heading(f"Erasing {erase!r} with {', '.join(methods)}", id="erasure")
        rep.paragraph(f"Each method erases {erase!r} from the weights (closed forms; few-shot fine-tunes the text "
                      "encoder, stopping once the oracle no longer sees the concept); base and edited models are then "
                      f"evaluated on the {suite!r} suite with the same seeds. Edits: {out / 'erasure' / 'edits'}.",
                      cls="caption")
        add_eval_sections(rep, bench, oracle)
    provenance = {"erasekit_version": __version__, "model": model, "seed": seed, "steps": steps,
                  "guidance": guidance, "evaluator": oracle.identity() | {"classes": "see oracle.json"},
                  "seconds": round(time.time() - t0, 2), "generation_seconds": round(t_gen, 2)}
    if model == "toyworld":
        man = toyworld_manifest()
        provenance["toy_model"] = {k: man.get(k) for k in ("command", "config", "erasekit_version")} | {
            "dataset_sha256": man["dataset"]["content_sha256"]}
    rep.heading("Provenance", id="provenance")
    rep.pre(provenance)
    path = rep.write(out / "report.html")
    results = {"agreement": agree, "provenance": provenance,
               "erasure": None if bench is None else {k: v for k, v in bench.items() if not k.startswith("_")},
               "samples": [{"prompt": p.text, "kind": p.kind, "family": p.family, "concept": p.concept,
                            "expected": p.labels, "oracle": pred} for p, pred in zip(prompts, predicted)]}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    return path
