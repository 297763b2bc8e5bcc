"""Markdown for benchmark write-ups: `results_table` renders results.json files (the one metric vocabulary, ↓/↑ in the
header), `md_table` any table, `replace_section` swaps one `## Section` of a file atomically."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ErasekitError
from ..io import atomic_write_text


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(path: str | Path, heading: str, body: str) -> None:
    """Replace the text under `## heading` (up to the next `## `) with `body`; other sections stay byte-identical."""
    path = Path(path)
    text = path.read_text()
    pat = re.compile(rf"(^## {re.escape(heading)}[ \t]*\n)(.*?)(?=^## |\Z)", re.S | re.M)
    if not pat.search(text):
        raise ErasekitError(f"no section '## {heading}' in {path}")
    new = pat.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n\n", text, count=1)
    atomic_write_text(path, new)


def measured_metrics(results: dict | Sequence[dict]) -> list[str]:
    """The metric names present in the results' means, in the vocabulary's order (`erasekit.metrics.RESULT_METRICS`;
    names outside it last, sorted)."""
    from ..metrics import RESULT_METRICS

    runs = [results] if isinstance(results, dict) else list(results)
    present = {k for r in runs for v in r["variants"].values() for k in v["mean"]}
    return [m for m in RESULT_METRICS if m in present] + sorted(present - set(RESULT_METRICS))


def results_table(results: dict | Sequence[dict], metrics: Sequence[str] = (), per_target: bool = False,
                  digits: int = 3, runs: Sequence[str] | None = None, per_family: bool = False) -> str:
    """A markdown table of one results.json (an `evaluate` run or a benchmark) or several: one row per variant (per
    variant and target with `per_target`), the given metric/cost names as columns (default: every measured metric,
    in the vocabulary's order), headers with ↓/↑ from the results' own `metrics_info`. Several results get a first
    "run" column labelled by `runs` (default: each result's suite name). Numbers are printed as stored, nothing is
    recomputed; a metric a row lacks is left empty; the column "training_count" shows the run's recorded training
    counts (per target); a per-target row shows that target's own costs where the run recorded them (benchmarks:
    "cost_by_target"), else the variant's median. `per_family`: one row per variant and family (the results'
    `by_family` means over each family's targets)."""
    if per_target and per_family:
        raise ErasekitError("results_table: choose per_target or per_family, not both")
    many = not isinstance(results, dict)
    all_runs = list(results) if many else [results]
    if not all_runs:
        raise ErasekitError("results_table needs at least one result")
    if any("variants" not in r for r in all_runs):
        raise ErasekitError("a result has no variants table (a text-world attack or curve run?); open its report.html")
    labels = list(runs) if runs is not None else [r.get("provenance", {}).get("suite", f"run {i}")
                                                   for i, r in enumerate(all_runs)]
    if len(labels) != len(all_runs):
        raise ErasekitError(f"results_table got {len(labels)} run labels for {len(all_runs)} results")
    metrics = list(metrics) or measured_metrics(all_runs)
    info: dict[str, dict] = {}
    for r in all_runs:
        info.update(r.get("metrics_info") or {})

    def head(m: str) -> str:
        if m == "training_count":
            return m
        h = info.get(m, {}).get("higher_is_better")
        return m + ("" if h is None else " ↑" if h else " ↓")

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return "" if v is None else str(v)

    def value(entry: dict, m: str, target: str | None, r: dict) -> object:
        if m == "training_count":  # a fact of the world, recorded by the run (the imitation threshold's x axis)
            return (r.get("training_counts") or {}).get(target) if per_target else None
        if per_family:
            src = entry.get("by_family", {}).get(target, {})
        else:
            src = entry["metrics"].get(target, {}) if target is not None else entry["mean"]
        cost = (entry.get("cost_by_target") or {}).get(target, entry["cost"]) if per_target else entry["cost"]
        return src.get(m, cost.get(m))

    split = per_target or per_family
    header = (["run"] if many else []) + ["variant"] + (["family" if per_family else "target"] if split else []) + \
        [head(m) for m in metrics]
    rows = []
    for label, r in zip(labels, all_runs):
        if per_family:
            groups = list(dict.fromkeys((r.get("families") or {}).get(t, "") for t in r["targets"]))
        else:
            groups = r["targets"] if per_target else [None]
        for t in groups:
            for n, entry in r["variants"].items():
                rows.append(([label] if many else []) + [n] + ([t] if split else [])
                            + [cell(value(entry, m, t, r)) for m in metrics])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def grid_matrix(results: dict, metric: str = "attack_success",
                concept: str | None = None) -> tuple[list[str], list[str], list[list[float | None]]]:
    """(header, protection labels, values) of a benchmark with a protections x attacks grid (results.json's
    bench.spec.grid): column "detection" = the protection unattacked, then `metric` under each attack (means over
    concepts as stored, or one `concept`'s values)."""
    grid = (results.get("bench") or {}).get("spec", {}).get("grid") or {}
    if not grid:
        raise ErasekitError("these results have no protections x attacks grid (bench spec key `grid`)")
    variants = results["variants"]

    if concept is not None and concept not in results.get("targets", []):
        raise ErasekitError(f"concept {concept!r} is not in these results (targets: {results.get('targets')})")

    def mean(name: str, m: str) -> float | None:
        v = variants.get(name)
        if v is None:
            return None
        return (v["metrics"].get(concept) or {}).get(m) if concept is not None else v["mean"].get(m)

    header = ["protection", "detection (no attack)"] + [f"{a}: {metric}" for a in grid["attacks"]]
    values = [[mean(p, "detection")] + [mean(f"{p}+{a}", metric) for a in grid["attacks"]] for p in grid["protections"]]
    return header, list(grid["protections"]), values


def grid_table(results: dict, metric: str = "attack_success", digits: int = 2, concept: str | None = None) -> str:
    """The protections x attacks matrix of a grid benchmark as markdown (↓: lower is better for a protection);
    `concept`: that concept's matrix instead of the mean over concepts."""
    header, labels, values = grid_matrix(results, metric, concept)
    rows = [[label] + ["" if v is None else f"{v:.{digits}f}" for v in row] for label, row in zip(labels, values)]
    return md_table([h + (" ↓" if i else "") for i, h in enumerate(header)], rows)


EFFICACY = ("detection", "detection_generality")
SPECIFICITY = ("accuracy_neighbours", "accuracy_unrelated")
ROBUSTNESS = "attack_success"


def family_scores(results: Sequence[dict], efficacy: Sequence[str] = EFFICACY,
                  specificity: Sequence[str] = SPECIFICITY, robustness: str = ROBUSTNESS,
                  concepts: Sequence[str] | None = None) -> dict[str, dict]:
    """{family: {protection: {"efficacy", "specificity", "robustness", "together", "targets"}}} from one or more
    benchmark results (e.g. an erasure leaderboard and a protections x attacks grid of the same protections and
    concepts). A (variant, target) metric is read from the first result holding it, so put the run with more images
    per prompt set first. Every score is in [0, 1], higher is better, directions from the results' `metrics_info`:

        efficacy    = mean over `efficacy` metrics of (1 - v) for lower-is-better metrics (v otherwise)
        specificity = mean over `specificity` metrics of min(1, v / base v) (the base model's own accuracy is 1)
        robustness  = 1 - mean over the grid's attacks of `robustness` (attack_success of "<protection>+<attack>")
        together    = harmonic mean of the three (a protection must do all three well to rank high)

    each averaged over the family's targets (`concepts`: only these; default every target of every result). A
    score with no measured metric is None, and so is `together` then: a protection is ranked only on all three."""
    if not results:
        raise ErasekitError("family_scores needs at least one result")
    info: dict[str, dict] = {}
    families: dict[str, str] = {}
    attacks: list[str] = []
    protections: list[str] = []
    for r in results:
        if "variants" not in r:
            raise ErasekitError("a result has no variants table; give benchmark results.json files")
        info.update(r.get("metrics_info") or {})
        families.update(r.get("families") or {})
        grid = (r.get("bench") or {}).get("spec", {}).get("grid") or {}
        attacks += [a for a in grid.get("attacks", []) if a not in attacks]
        names = grid.get("protections") or ["base"] + [n for n in r["variants"] if n != "base"]
        protections += [p for p in names if p not in protections]
    protections = [p for p in protections if not any(p.endswith(f"+{a}") for a in attacks)]
    if not families:
        raise ErasekitError("the results record no concept families (benchmark results of an older erasekit?); "
                            "rerun them with `erasekit bench`")
    if concepts is not None:
        unknown = [c for c in concepts if c not in families]
        if unknown or not concepts:
            raise ErasekitError(f"concept {unknown[0] if unknown else concepts!r} is in none of the results (their "
                                f"concepts: {', '.join(families)})")
        families = {c: families[c] for c in concepts}

    def metric(variant: str, target: str, m: str) -> float | None:
        for r in results:
            if target in r.get("targets", []):
                v = r["variants"].get(variant, {}).get("metrics", {}).get(target, {}).get(m)
                if isinstance(v, (int, float)):
                    return float(v)
        return None

    def mean(xs: list[float | None]) -> float | None:
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    def good(m: str, v: float | None) -> float | None:
        if v is None:
            return None
        hib = info.get(m, {}).get("higher_is_better")
        return v if hib or hib is None else 1.0 - v

    out: dict[str, dict] = {}
    for fam in dict.fromkeys(families.values()):
        targets = [t for t, f in families.items() if f == fam]
        rows: dict[str, dict] = {}
        for p in protections:
            eff = mean([mean([good(m, metric(p, t, m)) for m in efficacy]) for t in targets])
            spec = []
            for t in targets:
                for m in specificity:
                    v, b = metric(p, t, m), metric("base", t, m)
                    if v is not None and b:
                        spec.append(min(1.0, v / b))
            sp = mean(spec)
            rob = mean([good(robustness, metric(f"{p}+{a}", t, robustness)) for a in attacks for t in targets]) \
                if attacks else None
            parts = (eff, sp, rob)
            together = None
            if all(x is not None for x in parts):
                together = 0.0 if min(parts) == 0.0 else 3.0 / sum(1.0 / x for x in parts)  # type: ignore[operator]
            rows[p] = {"efficacy": eff, "specificity": sp, "robustness": rob, "together": together,
                       "targets": targets}
        out[fam] = rows
    return out


def family_leaderboard(results: Sequence[dict], digits: int = 2, **kw: Any) -> str:
    """Markdown: per concept family, every protection's efficacy, specificity, robustness and their harmonic mean
    (`family_scores`), best first (protections missing a score last, unranked); the best per family in bold."""
    scores = family_scores(results, **kw)

    def cell(v: float | None) -> str:
        return "" if v is None else f"{v:.{digits}f}"

    header = ["family", "protection", "efficacy ↑", "specificity ↑", "robustness ↑", "together ↑", "targets"]
    rows = []
    for fam, by in scores.items():
        ranked = sorted(by.items(), key=lambda kv: (kv[1]["together"] is None, -(kv[1]["together"] or 0.0)))
        for i, (p, s) in enumerate(ranked):
            name = f"**{p}**" if i == 0 and s["together"] is not None else p
            rows.append([fam, name, cell(s["efficacy"]), cell(s["specificity"]), cell(s["robustness"]),
                         cell(s["together"]), ", ".join(s["targets"])])
    return md_table(header, rows)
