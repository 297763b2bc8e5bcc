"""The evaluation report, rebuilt from a run folder's files alone (results.json, samples.jsonl, the cache): leaderboard
(variants x metrics, best highlighted, direction from each metric's `higher_is_better`), plots (detection vs accuracy
on unrelated prompts; per-concept detection bars), per-concept tables, same-seed image grids across variants (with
the evaluator's labels as recorded in samples.jsonl; attacked images after each attacked variant) and provenance.

    erasekit report runs/eval            # -> runs/eval/report.html
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from ..errors import ErasekitError
from ..io import slug
from .html import HtmlReport
from .images import png_data_uri

LEADERBOARD = ("detection", "detection_generality", "accuracy_neighbours", "accuracy_unrelated", "image_drift",
               "image_drift_neighbours", "attack_detection_pre", "attack_detection_post", "attack_success",
               "clip_score_unrelated")  # the leaderboard's and the CLI summary's columns, when measured
COSTS = ("edit_seconds", "parameters_changed")


def _direction(results: dict, name: str) -> bool | None:
    return (results.get("metrics_info") or {}).get(name, {}).get("higher_is_better")


def _best_classes(results: dict, rows: list[list[object]], columns: list[str]) -> list[list[str]]:
    classes = [["" for _ in r] for r in rows]
    for j, col in enumerate(columns):
        higher = _direction(results, col)
        if higher is None:
            continue
        vals = [(i, r[j]) for i, r in enumerate(rows) if isinstance(r[j], (int, float)) and not isinstance(r[j], bool)]
        if len(vals) < 2:
            continue
        best = (max if higher else min)(v for _, v in vals)
        for i, v in vals:
            if np.isclose(v, best):
                classes[i][j] = "best"
    return classes


def _header(results: dict, name: str) -> str:
    h = _direction(results, name)
    return name + ("" if h is None else " ↑" if h else " ↓")


def _plot_png(fig) -> str:
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return png_data_uri(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))


def plots(results: dict) -> list[tuple[str, str]]:
    """(title, PNG data URI) of the scatter and the per-concept bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    names = list(results["variants"])
    fig, ax = plt.subplots(figsize=(5, 4))
    for n in names:
        m = results["variants"][n]["mean"]
        if "detection" in m and "accuracy_unrelated" in m:
            ax.scatter(m["accuracy_unrelated"], m["detection"], s=60)
            ax.annotate(n, (m["accuracy_unrelated"], m["detection"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("accuracy_unrelated (higher is better)")
    ax.set_ylabel("detection of the target (lower is better)")
    ax.set_xlim(-0.05, 1.05), ax.set_ylim(-0.05, 1.05), ax.grid(alpha=0.3)
    out.append(("Detection vs accuracy on unrelated prompts (mean over concepts)", _plot_png(fig)))

    targets = results["targets"]
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(targets)), 3.5))
    width = 0.8 / max(1, len(names))
    for k, n in enumerate(names):
        vals = [results["variants"][n]["metrics"][t].get("detection", np.nan) for t in targets]
        ax.bar(np.arange(len(targets)) + k * width, vals, width, label=n)
    ax.set_xticks(np.arange(len(targets)) + width * (len(names) - 1) / 2, targets)
    ax.set_ylabel("detection on direct prompts"), ax.set_ylim(0, 1.05), ax.legend(fontsize=8)
    out.append(("Detection per concept", _plot_png(fig)))
    curves = scaling_curves(results)
    if curves:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
        for ax, metric in zip(axes, ("detection", "accuracy_neighbours", "accuracy_unrelated")):
            for method, points in curves.items():
                xs = [n for n, m in points if metric in m]
                ax.plot(xs, [m[metric] for n, m in points if metric in m], marker="o", label=method)
            ax.set_xscale("log"), ax.set_xlabel("concepts erased at once"), ax.set_ylim(-0.05, 1.05)
            ax.set_title(metric + (" (lower is better)" if metric == "detection" else " (higher is better)"))
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        out.append(("Efficacy and specificity vs number of concepts erased (mean over probes)", _plot_png(fig)))
    return out


def scaling_curves(results: dict) -> dict[str, list[tuple[int, dict]]]:
    """{method: [(N, mean metrics), ...]} for variants named "<method>-<N>" (N concepts erased in one request, as
    the multi-concept spec names them), methods with at least two counts only; sorted by N."""
    import re

    curves: dict[str, list[tuple[int, dict]]] = {}
    for name, v in results["variants"].items():
        m = re.fullmatch(r"(.+)-(\d+)", name)
        if m:
            curves.setdefault(m.group(1), []).append((int(m.group(2)), v["mean"]))
    return {k: sorted(pts, key=lambda p: p[0]) for k, pts in curves.items() if len({n for n, _ in pts}) >= 2}


def read_run(run_dir: str | Path) -> tuple[dict, list[dict]]:
    """(results, samples) of a run folder; a missing or unreadable file raises naming it."""
    run_dir = Path(run_dir)
    files = {"results.json": run_dir / "results.json", "samples.jsonl": run_dir / "samples.jsonl"}
    if not files["samples.jsonl"].is_file() and files["results.json"].is_file() and _text_run(files["results.json"]):
        del files["samples.jsonl"]  # text attack / curve runs write results.json only
    for name, p in files.items():
        if not p.is_file():
            raise ErasekitError(f"{run_dir} holds no {name}: not an evaluation run folder (run `erasekit eval --out "
                                f"{run_dir}` first)")
    try:
        results = json.loads(files["results.json"].read_text())
        samples = [json.loads(line) for line in files["samples.jsonl"].read_text().splitlines() if line.strip()] \
            if "samples.jsonl" in files else []
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ErasekitError(f"{run_dir}: results.json or samples.jsonl is not valid JSON ({e}); rerun the evaluation")
    return results, samples


def _text_run(results_file: Path) -> bool:
    """Whether results.json is a text-world result (`erasekit text ...`), rendered by `text_report`."""
    from .text_report import is_text_results

    try:
        return is_text_results(json.loads(results_file.read_text()))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def _cached_images(run_dir: Path, part: Path | str, cache: dict[str, np.ndarray]) -> np.ndarray | None:
    """Images of a cache file of the run (None if it is gone)."""
    key = str(part)
    if key not in cache:
        path = run_dir / part
        if not path.exists():
            return None
        with np.load(path) as z:
            cache[key] = z["images"]
    return cache[key]


def add_eval_sections(rep: HtmlReport, results: dict, samples: list[dict], run_dirs: dict[str, Path],
                      grid_images: int = 6) -> HtmlReport:
    """Append leaderboard, plots, per-concept tables, same-seed grids and provenance of a result to `rep`.
    run_dirs: target -> the folder whose cache/ holds that target's images (one folder for `evaluate`, one per
    concept for a benchmark)."""
    prov = results["provenance"]
    ev = prov.get("evaluator", {})
    rep.paragraph(f"suite {prov['suite']} (sha256 {prov['suite_sha256'][:16]}…), model {prov['model']!r} (weights "
                  f"sha256 {str(prov.get('weights_sha256', ''))[:16]}…, {prov.get('dtype')}, {prov.get('device')}), "
                  f"evaluator {ev.get('name')} {str(ev.get('weights_sha256', ''))[:12]}, {prov['steps']} steps, "
                  f"guidance {prov['guidance']}, scheduler {prov.get('scheduler', {}).get('class')}.", cls="caption")
    names = list(results["variants"])
    cols = [c for c in LEADERBOARD if any(c in results["variants"][n]["mean"] for n in names)]
    costs = [c for c in COSTS if any(c in results["variants"][n]["cost"] for n in names)]
    rows = [[n] + [results["variants"][n]["mean"].get(c, "") for c in cols]
            + [results["variants"][n]["cost"].get(c, "") for c in costs] for n in names]
    rep.heading("Leaderboard (mean over target concepts)", id="leaderboard")
    rep.table(["variant"] + [_header(results, c) for c in cols + costs], rows, id="leaderboard-table",
              classes=_best_classes(results, rows, ["variant"] + cols + costs))
    rep.paragraph("detection: fraction of images in which the evaluator sees the target concept (the base row: how "
                  "often the model produces it; lower is better for a protection). accuracy: the evaluator's labels "
                  "equal the prompt's on other concepts. image_drift: mean |pixel difference| to the base model on "
                  "the same seeds. attack_success: prompts broken before or after the attack. Best value per column "
                  "highlighted; arrows give the direction.", cls="caption")
    for title, uri in plots(results):
        rep.heading(title, level=3)
        rep.image(uri, title)
    rep.heading("Per concept", id="per-concept")
    for t in results["targets"]:
        cols_t = sorted({k for n in names for k in results["variants"][n]["metrics"][t]})
        rows_t = [[n] + [results["variants"][n]["metrics"][t].get(c, "") for c in cols_t] for n in names]
        rep.heading(t, level=3)
        rep.table(["variant"] + [_header(results, c) for c in cols_t], rows_t,
                  classes=_best_classes(results, rows_t, ["variant"] + cols_t))
    _triggers(rep, results, names)
    _unsafe(rep, results, names)
    _grids(rep, results, samples, run_dirs, names, grid_images)
    rep.heading("Evaluation provenance", id="provenance")
    rep.pre(prov)
    return rep


def _triggers(rep: HtmlReport, results: dict, names: list[str]) -> None:
    """CopyCat's keyword-trigger ranking (`variants.<v>.triggers`, suites with `copycat: {triggers: N}`): per target
    a table of trigger phrases x variants (detection over each phrase's images), the phrases most triggering on the
    protected variants (mean over the non-base variants; base alone when there is none) first."""
    per = {n: results["variants"][n].get("triggers") or {} for n in names}
    targets = [t for t in results["targets"] if any(t in per[n] for n in names)]
    if not targets:
        return
    rep.heading("Keyword triggers (CopyCat)", id="triggers")
    rep.paragraph("Detection of the protected concept when the prompt is only a keyword phrase (never its name), per "
                  "phrase and variant; the phrases that still trigger it on the protections first. Lower is better.",
                  cls="caption")
    for t in targets:
        cols = [n for n in names if t in per[n]]
        det = {n: {r["keyword"]: r["detection"] for r in per[n][t]} for n in cols}
        images = {r["keyword"]: r["images"] for n in cols for r in per[n][t]}
        keywords = list(dict.fromkeys(k for n in cols for k in det[n]))  # the recorded (keyword) order
        order = [n for n in cols if n != "base"] or cols
        keywords.sort(key=lambda k: -float(np.mean([det[n].get(k, 0.0) for n in order])))  # stable on ties
        rows = [[k, images[k]] + [det[n].get(k, "") for n in cols] for k in keywords]
        rep.heading(t, level=3)
        rep.table(["keyword phrase", "images"] + [f"{n} ↓" for n in cols], rows, id=f"triggers-{slug(t)}",
                  classes=[["", ""] + ["bad" if isinstance(v, float) and v > 0 and n != "base" else ""
                                       for n, v in zip(cols, r[2:])] for r in rows])


def _unsafe(rep: HtmlReport, results: dict, names: list[str]) -> None:
    """Unsafe Diffusion's per-category rates (`variants.<v>.unsafe`, suites with `unsafe: {categories: [...]}`): one
    row per variant, target and prompt set; columns: any category, then each category (`unsafe_categories`)."""
    per = {n: results["variants"][n].get("unsafe") or {} for n in names}
    if not any(per.values()):
        return
    cats = list(results.get("unsafe_categories") or {})
    if not cats:  # older results: the categories are the keys of the rates
        cats = list(dict.fromkeys(c for n in names for sets in per[n].values() for r in sets.values()
                                  for c in r if c != "any"))
    labels = {c: (results.get("unsafe_categories") or {}).get(c, [None, c])[1] for c in cats}
    rep.heading("Unsafe categories (Unsafe Diffusion)", id="unsafe")
    rep.paragraph("Share of images the evaluator flags as unsafe, in any category and per category ("
                  + ", ".join(f"{c}: evaluator label {labels[c]!r}" for c in cats)
                  + "), per variant, target and prompt set. Lower is better.", cls="caption")
    rows = []
    for n in names:
        for t, sets in per[n].items():
            for s, rates in sets.items():
                rows.append([n, t, s, rates.get("any", "")] + [rates.get(labels[c], rates.get(c, "")) for c in cats])
    rep.table(["variant", "target", "prompt set", "any ↓"] + [f"{c} ↓" for c in cats], rows, id="unsafe-table")


def _grids(rep: HtmlReport, results: dict, samples: list[dict], run_dirs: dict[str, Path], names: list[str],
           grid_images: int) -> None:
    by_key: dict[tuple[str, str], list[dict]] = {}
    for s in samples:
        if s["set"] == "direct" and s["index"] < grid_images:
            by_key.setdefault((s["variant"], s["target"]), []).append(s)
    if not by_key:
        return
    rep.heading("Same seeds across variants (direct prompts of each target; attacked prompts after each attacked "
                "variant)", id="grids")
    cache: dict[str, np.ndarray] = {}
    for t in results["targets"]:
        run_dir = run_dirs.get(t)
        imgs, caps, notes, cls = [], [], [], []
        for n in names:
            for s in sorted(by_key.get((n, t), []), key=lambda s: s["index"]):
                batch = _cached_images(run_dir, Path("cache") / s["cache"], cache) if run_dir else None
                if batch is None:
                    continue
                fam = s.get("family") or next(iter(s["expected"]), "")
                seen = s["labels"].get(fam) == s["expected"].get(fam)
                imgs.append(batch[s["index"]])
                caps.append(f"{n}: {s['prompt']}")
                notes.append(f"{fam}: {s['labels'].get(fam, '?')}")
                cls.append("miss" if seen and n != "base" else "ok")
            att = results["variants"][n].get("attacks", {}).get(t)
            if att is not None and run_dir is not None:
                batch = _cached_images(run_dir, att["images"], cache)
                if batch is not None:
                    for adv, im, post in list(zip(att["adv_prompts"], batch, att["post"]))[:grid_images]:
                        imgs.append(im)
                        caps.append(f"{n} + {att['attack']}: {adv}")
                        notes.append("broken" if post else "held")
                        cls.append("miss" if post else "ok")
        if imgs:
            rep.heading(t, level=3)
            rep.image_grid(np.stack(imgs), caps, notes=notes, caption_classes=cls)


def write_report(run_dir: str | Path, out: str | Path | None = None, title: str = "erasekit evaluation",
                 grid_images: int = 6) -> Path:
    """Rebuild the self-contained HTML report of a run folder from its files (an `evaluate` run, or a benchmark
    whose concepts each have their own sub-folder); written to `out` (default: <run_dir>/report.html)."""
    run_dir = Path(run_dir)
    from .mark_report import is_mark_run, write_mark_report

    if is_mark_run(run_dir):  # an `erasekit mark bench` folder
        return write_mark_report(run_dir, out)
    results, samples = read_run(run_dir)
    from .text_report import add_text_sections, is_text_results

    if is_text_results(results):  # the text world (erasekit text ...)
        rep = HtmlReport(title if title != "erasekit evaluation" else "erasekit text-world evaluation")
        add_text_sections(rep, results)
        return rep.write(Path(out) if out is not None else run_dir / "report.html")
    run_dirs = {}
    for t in results["targets"]:
        sub = run_dir / slug(t)
        run_dirs[t] = sub if (sub / "cache").is_dir() and not (run_dir / "cache").is_dir() else run_dir
    rep = HtmlReport(title)
    if (results.get("bench") or {}).get("spec", {}).get("grid"):
        from .markdown import grid_matrix

        header, labels, values = grid_matrix(results)
        rep.heading("Protections x attacks", id="grid")
        rep.paragraph("Detection of the concept without attack, then the attack success rate (a prompt broken before "
                      "or after the attack) under each attack; means over the concepts. Lower is better; redder is "
                      "worse.")
        rep.heatmap(header, labels, values, id="grid-table")
    add_eval_sections(rep, results, samples, run_dirs, grid_images)
    return rep.write(Path(out) if out is not None else run_dir / "report.html")


__all__ = ["add_eval_sections", "plots", "read_run", "write_report"]
