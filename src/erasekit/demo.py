"""`erasekit demo`: the main job on the built-in default (the toy world), through the library's own harness.

1. Fidelity: a handful of concepts per family, generated on fixed seeds and judged by the world's evaluator — an
   evaluation of the base model on the `demo-fidelity` suite (`erasekit.evaluation.evaluate`).
2. Erasure: one concept erased by every closed form and by few-shot fine-tuning, base and edited models evaluated on
   the default suite with the same seeds — the `erasure-quick` benchmark spec (`erasekit.benchmark.run_bench`).

Both write their own results.json / samples.jsonl / cache; `report.html` (self-contained) puts them together and
`grid.png` shows the fidelity images. Nothing here computes a metric.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .io import atomic_write_text

DEMO_FIDELITY_SUITE = "demo-fidelity"
DEMO_BENCH = "erasure-quick"


def run_demo(out: Path, model: str | None = None, erase: str | None = None, methods: tuple[str, ...] = (),
             suite: str | None = None, limit: int | None = None, progress: Callable[..., None] | None = None
             ) -> tuple[Path, dict | None]:
    """Run the demo into `out`; returns (report path, the erasure benchmark's results or None).

    model: default the suites'; erase / methods: override the erasure spec's concept / erasers (`erase=""` skips
    the erasure part); suite: the suite the erasure is evaluated on (default: the spec's); limit: cap every prompt
    set (quick runs)."""
    from .benchmark import VariantSpec, load_bench_spec, run_bench
    from .evaluation import evaluate
    from .models import load_pipeline
    from .report.eval_report import add_eval_sections, read_run
    from .report.html import HtmlReport
    from .report.images import save_grid
    from .suite import load_suite

    t0 = time.time()
    out = Path(out)
    fid_suite = load_suite(DEMO_FIDELITY_SUITE).limited(limit)
    pipe = load_pipeline(model or fid_suite.model)
    fid = evaluate(fid_suite, [], out / "fidelity", model=model or fid_suite.model, progress=progress, pipe=pipe)
    fid_results, fid_samples = read_run(out / "fidelity")
    _fidelity_grid(out, fid_results, save_grid)

    bench = None
    if erase != "":
        spec = load_bench_spec(DEMO_BENCH)
        if erase:
            spec = dataclasses.replace(spec, concepts=(erase,))
        if methods:
            spec = dataclasses.replace(spec, variants=tuple(VariantSpec(m, method=m) for m in methods))
        if limit is not None:
            spec = dataclasses.replace(spec, limit=limit)
        bench_suite = load_suite(suite) if suite else None
        bench = run_bench(spec, out / "erasure", pipe=pipe, model=model, progress=progress, suite=bench_suite)

    rep = HtmlReport("erasekit demo")
    rep.heading("Fidelity: does the model show what the prompt asks?", id="fidelity")
    rep.paragraph("Detection of each concept on its direct, held-out, keyword-only and indirect prompts by the "
                  "world's evaluator (base model; fixed seeds). Grid: grid.png.", cls="caption")
    add_eval_sections(rep, fid_results, fid_samples, {t: out / "fidelity" for t in fid_results["targets"]},
                      grid_images=4)
    if bench is not None:
        concept = ", ".join(bench["targets"])
        rep.heading(f"Erasing {concept} with {', '.join(v for v in bench['variants'] if v != 'base')}", id="erasure")
        rep.paragraph("Each method erases the concept from the weights (closed forms; few-shot fine-tunes the text "
                      "encoder and stops once the evaluator no longer sees the concept); base and edited models are "
                      f"evaluated with the same seeds. Edits: {out / 'erasure' / 'edits'}. Rerun alone: erasekit "
                      f"bench --spec {DEMO_BENCH}.", cls="caption")
        b_results, b_samples = read_run(out / "erasure")
        from .io import slug

        add_eval_sections(rep, b_results, b_samples, {t: out / "erasure" / slug(t) for t in b_results["targets"]})
    provenance = {"erasekit_version": __version__, "seconds": round(time.time() - t0, 2),
                  "fidelity": fid["provenance"], "erasure": None if bench is None else bench.get("bench")}
    rep.heading("Provenance", id="provenance")
    rep.pre(provenance)
    path = rep.write(out / "report.html")
    atomic_write_text(out / "results.json", json.dumps({"fidelity": fid, "erasure": bench, "provenance": provenance},
                                                       indent=1, allow_nan=False))
    return path, bench


def _fidelity_grid(out: Path, results: dict, save_grid: Callable) -> None:
    """grid.png: the fidelity run's first 4 images of every (target, prompt set), one row each, read back from the
    run's files (`erasekit.evaluation.run_images`)."""
    import numpy as np

    from .evaluation import run_images

    images = []
    for target, sets in results["sets"].items():
        for name in sets:
            row = list(run_images(out / "fidelity", "base", target, name)[:4])
            images += row + [row[-1]] * (4 - len(row))
    save_grid(np.stack(images), out / "grid.png", ncol=4)


__all__ = ["DEMO_BENCH", "DEMO_FIDELITY_SUITE", "run_demo"]
