"""The text world's results in the evaluation report: `erasekit report RUN_DIR` on a folder written by
`erasekit text bench`, `text eval`, `text attack` or `text curve` (results.json with format "erasekit.text.*").

Same page builder, leaderboard style (best value per column highlighted, arrows from `metrics_info`) and provenance
block as the image side (`eval_report.add_eval_sections`); instead of image grids it shows the spread over seeds,
the per-seed runs and the budget curves of the attacks (relearning, RESTOR) as tables and line plots.
"""

from __future__ import annotations

from .eval_report import _best_classes, _header, _plot_png
from .html import HtmlReport

TEXT_FORMAT_PREFIX = "erasekit.text."
LEADERBOARD = ("verbmem_f", "knowmem_f", "knowmem_r", "qa_acc_forget", "qa_acc_retain", "privleak", "mink_auc",
               "ref_agree_f", "ref_gap_f", "ref_absgap_f", "ref_gap_r")  # MUSE's order first


def is_text_results(results: dict) -> bool:
    return str(results.get("format", "")).startswith(TEXT_FORMAT_PREFIX)


def _fmt_range(r: list[float] | None) -> str:
    return "" if not r else f"{r[0]:.3f} – {r[1]:.3f}"


def _curve_plot(title: str, series: dict[str, list[dict]], x: str, y: str, ylabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, rows in series.items():
        xs = [r[x] for r in rows]
        ys = [r.get(y) for r in rows]
        if any(v is None for v in ys):
            continue
        ax.plot(xs, ys, marker="o", label=name)
        lo_hi = [r.get(f"{y}_range") for r in rows]
        if all(lo_hi):
            ax.fill_between(xs, [v[0] for v in lo_hi], [v[1] for v in lo_hi], alpha=0.15)
    ax.set_xlabel(x), ax.set_ylabel(ylabel), ax.set_title(title, fontsize=9), ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _plot_png(fig)


def _variants_sections(rep: HtmlReport, results: dict) -> None:
    from ..text.muse import median_curve

    variants = results["variants"]
    names = list(variants)
    cols = [c for c in LEADERBOARD if any(c in variants[n]["mean"] for n in names)]
    cols += sorted({k for n in names for k in variants[n]["mean"]} - set(cols))
    costs = sorted({k for n in names for k in variants[n]["cost"]})
    rows = [[n] + [variants[n]["mean"].get(c, "") for c in cols] + [variants[n]["cost"].get(c, "") for c in costs]
            + [len(variants[n].get("seeds", {}))] for n in names]
    rep.heading("MUSE table (median over seeds)", id="leaderboard")
    rep.table(["variant"] + [_header(results, c) for c in cols + costs] + ["runs"], rows, id="leaderboard-table",
              classes=_best_classes(results, rows, ["variant"] + cols + costs + ["runs"]))
    rep.paragraph("verbmem_f: verbatim memorisation of the forget books; knowmem_f / knowmem_r: knowledge of forget / "
                  "retain facts (ROUGE-L); qa_acc_*: exact match; privleak: MUSE's PrivLeak (0 = like the retrained "
                  "model, -100 = under-unlearning, > 0 = over-unlearning); ref_*: distance to the retrained model "
                  "(RESTOR). Best value per column highlighted where a direction exists; 'runs' = seeds.",
                  cls="caption")
    spread = [n for n in names if variants[n].get("spread")]
    if spread:
        rep.heading("Spread over seeds (min – max)", id="spread")
        rep.table(["variant"] + cols + costs, [[n] + [_fmt_range(variants[n]["spread"].get(c)) for c in cols + costs]
                                               for n in spread], id="spread-table")
    rep.heading("Every run", id="runs")
    run_rows = [[n, s] + [m.get(c, "") for c in cols + costs] for n in names
                for s, m in variants[n].get("seeds", {}).items()]
    rep.table(["variant", "seed"] + cols + costs, run_rows, id="runs-table")
    relearn = {n: [a["curve"] for a in variants[n].get("attacks", {}).get("relearn", {}).values()] for n in names}
    relearn = {n: median_curve(c) for n, c in relearn.items() if c}
    if relearn:
        _relearn_section(rep, relearn)
    _fixed_attack_sections(rep, variants)
    six = {n: v["sixway"] for n, v in variants.items() if v.get("sixway")}
    if six:
        rep.heading("Scalability and sustainability (first seed)", id="sixway")
        rows = [[n, "scalability", r["forget_entities"], r["qa_acc_forget"], r["qa_acc_retain"], r["seconds"]]
                for n, v in six.items() for r in v.get("scalability", [])]
        rows += [[n, "sustainability", r["requests"], r["qa_acc_forgotten"], r["qa_acc_retain"], r.get("seconds", "")]
                 for n, v in six.items() for r in v.get("sustainability", [])]
        rep.table(["variant", "way", "entities forgotten (size / requests)", "QA forgotten", "QA retain",
                   "unlearn s"], rows, id="sixway-table")
        rep.paragraph("scalability: one request forgetting the first k forget entities' news; sustainability: one "
                      "request per entity, each on top of the previous edits. QA forgotten: exact match on the "
                      "facts of every entity forgotten so far (lower = forgot); QA retain: utility.", cls="caption")


def _cell(values: list[float]) -> str:
    """median [min – max] of per-seed values (one value: itself)."""
    from ..text.muse import median_spread

    med, spread = median_spread([{"v": v} for v in values])
    return f"{med['v']:.3f}" + (f" [{_fmt_range(spread['v'])}]" if len(values) > 1 else "")


def _fixed_attack_sections(rep: HtmlReport, variants: dict) -> None:
    ic = {n: list(v["attacks"]["in-context"].values()) for n, v in variants.items()
          if "in-context" in v.get("attacks", {})}
    if ic:
        rep.heading("In-context re-introduction (QA on forget facts; median [min – max] over seeds)",
                    id="in-context")
        rep.table(["variant", "without the fact", "fact in the prompt"],
                  [[n, _cell([r["qa_acc"] for r in rs]), _cell([r["qa_acc_in_context"] for r in rs])]
                   for n, rs in ic.items()], id="in-context-table")
    sbs = {n: list(v["attacks"]["step-by-step"].values()) for n, v in variants.items()
           if "step-by-step" in v.get("attacks", {})}
    if sbs:
        strategies = list(next(iter(sbs.values()))[0]["forget"])
        rep.heading("Step-by-step reasoning attack (accuracy; median [min – max] over seeds)", id="step-by-step")
        rows = []
        for n, rs in sbs.items():
            for split in ("forget", "retain"):
                if all(split in r for r in rs):
                    rows.append([n, split] + [_cell([r[split][k]["accuracy"] for r in rs]) if k in rs[0][split]
                                              else "" for k in strategies])
        rep.table(["variant", "facts", *strategies], rows, id="step-by-step-table")


def _relearn_section(rep: HtmlReport, series: dict[str, list[dict]]) -> None:
    rep.heading("Relearning attack (budget curve, median over seeds)", id="relearn")
    keys = ("qa_acc_shown", "qa_acc_unseen", "verbmem_f")
    rows = [[n, r["steps"]] + [f"{r[k]:.3f} [{_fmt_range(r.get(k + '_range'))}]" if r.get("n", 1) > 1
                               else r[k] for k in keys] for n, rs in series.items() for r in rs]
    rep.table(["variant", "fine-tuning steps", *keys], rows, id="relearn-table")
    rep.image(_curve_plot("QA on forget entities never shown to the attacker", series, "steps", "qa_acc_unseen",
                          "qa_acc_unseen"), "relearning curve")


def _attack_sections(rep: HtmlReport, results: dict) -> None:
    res = results["result"]
    kind = results.get("kind", "")
    rep.heading(f"Attack: {kind}", id="attack")
    if "curve" in res:  # relearn
        _relearn_section(rep, {"attacked model": res["curve"]})
    if "states" in res:  # restor
        keys = ("acc_clean", "acc_corrupt", "other", "recovery", "qa_acc_retain", "seconds")
        rep.table(["state", *keys], [[n] + [s.get(k, "") if s.get(k) is not None else "" for k in keys]
                                     for n, s in res["states"].items()], id="restor-table")
        if res.get("curves"):
            rep.heading("RESTOR budget curves (recovery vs unlearning steps)", level=3, id="restor-curves")
            rep.table(["method", "steps", *keys],
                      [[m, p["steps"]] + ["" if p.get(k) is None else p[k] for k in keys]
                       for m, c in res["curves"].items() for p in c], id="restor-curve-table")
            rep.image(_curve_plot("recovery of the true answers", res["curves"], "steps", "recovery", "recovery"),
                      "RESTOR budget curve")
    if "forget" in res and isinstance(res["forget"], dict):  # step-by-step
        for split in ("forget", "retain"):
            if split in res:
                strat = res[split]
                rep.table(["strategy (" + split + ")", "accuracy", "recovered"],
                          [[k, v.get("accuracy", ""), v.get("recovered", "")] for k, v in strat.items()])
    if "qa_acc_in_context" in res:  # in-context
        rep.table(["qa_acc", "qa_acc_in_context"], [[res["qa_acc"], res["qa_acc_in_context"]]])


def add_text_sections(rep: HtmlReport, results: dict) -> HtmlReport:
    """Append the text world's sections of `results` (any "erasekit.text.*" results.json) to `rep`."""
    prov = results.get("provenance") or {k: results.get(k) for k in ("model", "world_sha256", "edits")}
    rep.paragraph(f"text world {str(prov.get('world_sha256', ''))[:16]}…, model {prov.get('model')!r}, format "
                  f"{results.get('format')}.", cls="caption")
    if "variants" in results:
        _variants_sections(rep, results)
    elif "metrics" in results:  # a single model (old `text eval` files)
        m = results["metrics"]
        rep.heading("MUSE metrics", id="leaderboard")
        rep.table(["metric", "value"], [[k, v] for k, v in m.items()], id="leaderboard-table")
    if "result" in results:
        _attack_sections(rep, results)
    if "accuracy_by_frequency" in results:
        rep.heading("QA accuracy by training frequency", id="frequency")
        acc = results["accuracy_by_frequency"]
        rep.table(["mentions", *acc], [["QA accuracy", *acc.values()]], id="frequency-table")
        rep.paragraph(f"change point: {results.get('threshold', {}).get('threshold')}", cls="caption")
    rep.heading("Provenance", id="provenance")
    rep.pre({k: v for k, v in results.items() if k not in ("variants", "result")} | {"provenance": prov})
    return rep


__all__ = ["add_text_sections", "is_text_results"]
