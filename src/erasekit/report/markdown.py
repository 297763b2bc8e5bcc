"""Markdown for benchmark write-ups: `results_table` renders results.json files (the one metric vocabulary, ↓/↑ in the
header), `md_table` any table, `replace_section` swaps one `## Section` of a file atomically."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

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
    counts (per target). `per_family`: one row per variant and family (the results'
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
        return src.get(m, entry["cost"].get(m))

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


def grid_matrix(results: dict, metric: str = "attack_success") -> tuple[list[str], list[str], list[list[float | None]]]:
    """(header, protection labels, values) of a benchmark with a protections x attacks grid (results.json's
    bench.spec.grid): column "detection" = the protection unattacked, then `metric` under each attack (means over
    concepts, as stored)."""
    grid = (results.get("bench") or {}).get("spec", {}).get("grid") or {}
    if not grid:
        raise ErasekitError("these results have no protections x attacks grid (bench spec key `grid`)")
    variants = results["variants"]

    def mean(name: str, m: str) -> float | None:
        v = variants.get(name)
        return None if v is None else v["mean"].get(m)

    header = ["protection", "detection (no attack)"] + [f"{a}: {metric}" for a in grid["attacks"]]
    values = [[mean(p, "detection")] + [mean(f"{p}+{a}", metric) for a in grid["attacks"]] for p in grid["protections"]]
    return header, list(grid["protections"]), values


def grid_table(results: dict, metric: str = "attack_success", digits: int = 2) -> str:
    """The protections x attacks matrix of a grid benchmark as markdown (↓: lower is better for a protection)."""
    header, labels, values = grid_matrix(results, metric)
    rows = [[label] + ["" if v is None else f"{v:.{digits}f}" for v in row] for label, row in zip(labels, values)]
    return md_table([h + (" ↓" if i else "") for i, h in enumerate(header)], rows)
