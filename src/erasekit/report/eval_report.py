"""The evaluation report: leaderboard (variants x metrics, best highlighted), per-concept tables, image grids of the
same seeds across variants, plots (efficacy vs specificity; per-concept efficacy bars) and the provenance block."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .html import HtmlReport
from .images import png_data_uri

LEADERBOARD = ("efficacy", "generality", "specificity_neighbours", "specificity_unrelated", "image_drift", "asr_pre",
               "asr", "clip_score_unrelated")


def _best_classes(rows: list[list[object]], columns: list[str], higher: dict[str, bool]) -> list[list[str]]:
    classes = [["" for _ in r] for r in rows]
    for j, col in enumerate(columns):
        if col not in higher:
            continue
        vals = [(i, r[j]) for i, r in enumerate(rows) if isinstance(r[j], float)]
        if len(vals) < 2:
            continue
        best = (max if higher[col] else min)(v for _, v in vals)
        for i, v in vals:
            if np.isclose(v, best):
                classes[i][j] = "best"
    return classes


def _plot_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    from PIL import Image

    return png_data_uri(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))


def plots(results: dict) -> list[tuple[str, str]]:
    """(title, PNG data URI) of the scatter and per-concept bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    names = list(results["variants"])
    fig, ax = plt.subplots(figsize=(5, 4))
    for n in names:
        m = results["variants"][n]["mean"]
        if "efficacy" in m and "specificity_unrelated" in m:
            ax.scatter(m["specificity_unrelated"], m["efficacy"], s=60)
            ax.annotate(n, (m["specificity_unrelated"], m["efficacy"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("specificity (unrelated prompts, higher is better)")
    ax.set_ylabel("erased-concept detection (lower is better)")
    ax.set_xlim(-0.05, 1.05), ax.set_ylim(-0.05, 1.05), ax.grid(alpha=0.3)
    out.append(("Efficacy vs specificity (mean over concepts)", _plot_png(fig)))

    targets = results["targets"]
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(targets)), 3.5))
    width = 0.8 / max(1, len(names))
    for k, n in enumerate(names):
        vals = [results["variants"][n]["metrics"][t].get("efficacy", np.nan) for t in targets]
        ax.bar(np.arange(len(targets)) + k * width, vals, width, label=n)
    ax.set_xticks(np.arange(len(targets)) + width * (len(names) - 1) / 2, targets)
    ax.set_ylabel("detection on direct prompts"), ax.set_ylim(0, 1.05), ax.legend(fontsize=8)
    out.append(("Erased-concept detection per concept", _plot_png(fig)))
    return out


def write_eval_report(results: dict, path: str | Path, oracle=None, grid_images: int = 6) -> Path:
    """Write the self-contained HTML report of an `evaluate()` / `bench_methods()` result."""
    rep = HtmlReport("erasekit evaluation")
    add_eval_sections(rep, results, oracle, grid_images)
    return rep.write(path)


def add_eval_sections(rep: HtmlReport, results: dict, oracle=None, grid_images: int = 6) -> HtmlReport:
    """Append leaderboard, plots, per-concept tables, same-seed grids and provenance of a result to `rep`."""
    prov = results["provenance"]
    rep.paragraph(f"suite {prov['suite']} (sha256 {prov['suite_sha256'][:16]}…), model {prov['model']!r}, evaluator "
                  f"{prov['evaluator']['name']} {prov['evaluator'].get('weights_sha256', '')[:12]}…, "
                  f"{prov['suite_settings']['steps']} steps, guidance {prov['guidance']}.", cls="caption")
    higher = results["higher_is_better"]
    names = list(results["variants"])
    cols = [c for c in LEADERBOARD if any(c in results["variants"][n]["mean"] for n in names)]
    rows = [[n] + [results["variants"][n]["mean"].get(c, "") for c in cols]
            + [results["variants"][n]["cost"].get("edit_seconds", ""), results["variants"][n]["cost"].get("parameters_changed", 0)]
            for n in names]
    header = ["variant"] + [f"{c} {'↑' if higher.get(c) else '↓'}" for c in cols] + ["edit s", "params changed"]
    rep.heading("Leaderboard (mean over target concepts)", id="leaderboard")
    rep.table(header, rows, id="leaderboard-table", classes=_best_classes(rows, ["variant"] + cols, higher))
    rep.paragraph("efficacy and generality: fraction of images in which the oracle still sees the erased concept "
                  "(the base row shows how often the model produced it before erasure). specificity: oracle "
                  "accuracy on neighbouring and unrelated concepts. image_drift: mean |pixel difference| to the base "
                  "model on the same seeds. Best value per column highlighted.",
                  cls="caption")
    for title, uri in plots(results):
        rep.heading(title, level=3)
        rep.image(uri, title)
    rep.heading("Per concept", id="per-concept")
    for t in results["targets"]:
        cols_t = sorted({k for n in names for k in results["variants"][n]["metrics"][t]})
        rows_t = [[n] + [results["variants"][n]["metrics"][t].get(c, "") for c in cols_t] for n in names]
        rep.heading(t, level=3)
        rep.table(["variant"] + cols_t, rows_t, classes=_best_classes(rows_t, ["variant"] + cols_t, higher))
    images = results.get("_images")
    if images:
        rep.heading("Same seeds across variants (direct prompts of each target; attacked prompts after each attacked variant)", id="grids")
        for t in results["targets"]:
            prompts = results["_sets"][t].get("direct", [])[:grid_images]
            if not prompts:
                continue
            imgs, caps, notes, cls = [], [], [], []
            for n in names:
                batch = images[(n, t, "direct")][:grid_images]
                labels = oracle.predict(batch) if oracle is not None else [{}] * len(batch)
                for p, im, lab in zip(prompts, batch, labels):
                    imgs.append(im)
                    caps.append(f"{n}: {p.text}")
                    fam = p.family
                    seen = lab.get(fam) == p.labels[fam]
                    notes.append(f"oracle: {lab.get(fam, '?')}")
                    cls.append("miss" if seen and n != "base" else "ok")
                att = results["variants"][n].get("attacks", {}).get(t)
                if att is not None and (n, t, "attacked") in images:
                    batch = images[(n, t, "attacked")][:grid_images]
                    labels = oracle.predict(batch) if oracle is not None else [{}] * len(batch)
                    for adv, im, lab in zip(att["adv_prompts"], batch, labels):
                        imgs.append(im)
                        caps.append(f"{n} + {att['attack']}: {adv}")
                        seen = lab.get(prompts[0].family) == prompts[0].labels[prompts[0].family]
                        notes.append(f"oracle: {lab.get(prompts[0].family, '?')}")
                        cls.append("miss" if seen else "ok")
            rep.heading(t, level=3)
            rep.image_grid(np.stack(imgs), caps, notes=notes, caption_classes=cls)
    rep.heading("Evaluation provenance", id="provenance")
    rep.pre(prov)
    return rep
