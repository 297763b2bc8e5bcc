"""Markdown helpers for benchmark write-ups: tables, and replacing one `## Section` of a file atomically."""

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


def results_table(results: dict, metrics: Sequence[str] = (), per_target: bool = False, digits: int = 3) -> str:
    """A markdown table of a results.json (an `evaluate` run or a benchmark): one row per variant (per variant and
    target with `per_target`), the given metric/cost names as columns (default: every measured metric), headers with
    ↑/↓ from the results' `metrics_info`. Numbers are printed as stored, nothing is recomputed."""
    info = results.get("metrics_info") or {}
    names = list(results["variants"])
    if not metrics:
        metrics = sorted({k for n in names for k in results["variants"][n]["mean"]})

    def head(m: str) -> str:
        h = info.get(m, {}).get("higher_is_better")
        return m + ("" if h is None else " ↑" if h else " ↓")

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return "" if v is None else str(v)

    def value(entry: dict, m: str, target: str | None) -> object:
        src = entry["metrics"][target] if target is not None else entry["mean"]
        return src.get(m, entry["cost"].get(m))

    if per_target:
        header = ["variant", "target"] + [head(m) for m in metrics]
        rows = [[n, t] + [cell(value(results["variants"][n], m, t)) for m in metrics]
                for t in results["targets"] for n in names]
    else:
        header = ["variant"] + [head(m) for m in metrics]
        rows = [[n] + [cell(value(results["variants"][n], m, None)) for m in metrics] for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
