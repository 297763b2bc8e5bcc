"""The report of an `erasekit mark bench` folder, rebuilt from its files alone (results.json and the grid PNGs the
bench wrote): the methods x attacks table, the composition's reference and warnings (an edit or a shield that strips
a mark), the robustness-vs-quality plot and the same-seed grids (clean, marked, attacked, residual).

    erasekit report runs/marks           # -> runs/marks/report.html (dispatched on results.json's "format")

Robustness-vs-quality: one point per method (per detector model when the bench measured several; labelled by the
method's name, by its full spec when two specs share a name): x = the quality cost (`drift`: mean |marked - unmarked
same-seed| in pixel levels, or `label_drop`: oracle label accuracy of unmarked minus marked images), y = mean
TPR@1%FPR over the bench's attacks ("none" included, as in the table).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ErasekitError, InvalidValueError
from ..io import atomic_write_bytes, check_writable
from .html import HtmlReport
from .images import grid, png_bytes

MARK_FORMAT_PREFIX = "erasekit.mark_bench/"  # of erasekit.marks.bench.FORMAT (not imported here: it loads torch)
COSTS = {"drift": "image drift vs unmarked same-seed images (0-255, lower is better)",
         "label_drop": "oracle label accuracy lost to the mark (unmarked - marked, lower is better)"}
GRID_SCALE = 4  # grids are upscaled so 32 px images are visible


# ------------------------------------------------------------------------------------------------ recognising
def is_mark_results(results: Any) -> bool:
    """Whether a results dict is a mark bench's (its "format", or the shape of older runs without one)."""
    if not isinstance(results, dict):
        return False
    if str(results.get("format", "")).startswith(MARK_FORMAT_PREFIX):
        return True
    rows = results.get("rows")
    return (isinstance(results.get("methods"), dict) and isinstance(rows, list) and "format" not in results
            and "variants" not in results and all(isinstance(r, dict) and "attack" in r for r in rows))


def is_mark_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a mark bench's results.json."""
    p = Path(run_dir) / "results.json"
    try:
        return p.is_file() and is_mark_results(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False


# ------------------------------------------------------------------------------------------------ the plot
def robustness_quality_points(results: dict[str, Any], cost: str = "drift") -> list[dict[str, Any]]:
    """One point per method (and detector model): {"label", "method", "detector_model", "x" (the cost), "y" (mean
    TPR@1%FPR over attacks), "attacks" (how many)}; methods without the cost or without TPRs are left out."""
    if cost not in COSTS:
        raise InvalidValueError(f"cost must be one of {sorted(COSTS)}, got {cost!r}")
    methods = results.get("methods") or {}
    groups: dict[tuple[str, Any], list[float]] = {}
    for r in results.get("rows") or []:
        if r.get("tpr@1%fpr") is not None:
            groups.setdefault((r["method"], r.get("detector_model")), []).append(float(r["tpr@1%fpr"]))
    several = len({dm for _, dm in groups}) > 1
    short = {m: m.split(":")[0] for m, _ in groups}  # method names without options, unless two would collide
    if len(set(short.values())) < len(short):
        short = {m: m for m in short}
    out = []
    for (m, dm), ys in groups.items():
        info = methods.get(m) or {}
        if cost == "drift":
            x = info.get("drift")
        else:
            a, b = info.get("label_acc_clean"), info.get("label_acc_marked")
            x = None if a is None or b is None else round(float(a) - float(b), 4)
        if x is None:
            continue
        out.append({"label": short[m] + (f" [{dm}]" if several and dm else ""), "method": m, "detector_model": dm,
                    "x": float(x), "y": float(np.mean(ys)), "attacks": len(ys)})
    return out


def robustness_quality_png(results: dict[str, Any], cost: str = "drift") -> bytes:
    """PNG bytes of the robustness-vs-quality scatter (raises if no method has both numbers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = robustness_quality_points(results, cost)
    if not pts:
        raise InvalidValueError(f"no method in these results has both a {cost} and TPR@1%FPR values; nothing to plot")
    fig, ax = plt.subplots(figsize=(5, 4))
    at: dict[tuple[float, float], list[str]] = {}  # points that coincide share one label
    for p in pts:
        at.setdefault((p["x"], p["y"]), []).append(p["label"])
    for (x, y), labels in at.items():
        ax.scatter(x, y, s=60)
        ax.annotate(", ".join(labels), (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    attacks = sorted({r["attack"] for r in results.get("rows") or []})
    ax.set_xlabel(COSTS[cost])
    ax.set_ylabel("mean TPR@1%FPR over attacks (higher is better)")
    ax.set_title(f"robustness vs quality ({len(attacks)} attacks)", fontsize=9)
    ax.set_ylim(-0.05, 1.05), ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_robustness_quality(results: dict[str, Any], path: str | Path, cost: str = "drift",
                             overwrite: bool = False) -> Path:
    """Write the robustness-vs-quality plot as a PNG file (atomic; an existing file only with `overwrite`)."""
    check_writable(path, overwrite, what="plot")
    return atomic_write_bytes(path, robustness_quality_png(results, cost))


# ------------------------------------------------------------------------------------------------ the grids
def mark_grid(clean: np.ndarray, marked: np.ndarray, attacked: dict[str, np.ndarray],
              gain: float = 10.0) -> tuple[np.ndarray, list[str]]:
    """One (rows*(H+2)-2, N*(W+2)-2, 3) uint8 image of N same-seed columns and its row labels: clean, marked, marked
    after each attack, residual |marked - clean| x `gain` (clipped)."""
    clean, marked = np.asarray(clean), np.asarray(marked)
    if clean.shape != marked.shape or clean.ndim != 4 or clean.shape[-1] != 3 or len(clean) == 0:
        raise InvalidValueError(f"clean and marked must be the same (N, H, W, 3) images, got {clean.shape} and "
                                f"{marked.shape}")
    if not gain > 0:
        raise InvalidValueError(f"gain must be > 0, got {gain}")
    residual = np.clip(np.abs(marked.astype(np.float64) - clean) * gain, 0, 255).astype(np.uint8)
    rows, labels = [clean, marked], ["clean", "marked"]
    for a, imgs in attacked.items():
        if np.asarray(imgs).shape != clean.shape:
            raise InvalidValueError(f"attacked images ({a}) have shape {np.asarray(imgs).shape}, expected "
                                    f"{clean.shape}")
        rows.append(np.asarray(imgs, dtype=np.uint8))
        labels.append(f"attacked: {a}")
    rows.append(residual)
    labels.append(f"residual x{gain:g}")
    return grid(np.concatenate(rows), len(clean)), labels


def write_mark_grid(path: str | Path, clean: np.ndarray, marked: np.ndarray, attacked: dict[str, np.ndarray],
                    gain: float = 10.0, overwrite: bool = False) -> Path:
    """Write `mark_grid` as a PNG (upscaled GRID_SCALE x), atomically; an existing file only with `overwrite`."""
    check_writable(path, overwrite, what="image grid")
    img, _ = mark_grid(clean, marked, attacked, gain)
    return atomic_write_bytes(path, png_bytes(img, GRID_SCALE))


# ------------------------------------------------------------------------------------------------ the report
def read_mark_run(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "results.json"
    try:
        results = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ErasekitError(f"cannot read {p} ({e}); rerun `erasekit mark bench`") from None
    if not is_mark_results(results):
        raise ErasekitError(f"{p} is not a mark bench result (`erasekit mark bench --out {run_dir}`)")
    return results


def write_mark_report(run_dir: str | Path, out: str | Path | None = None,
                      title: str = "erasekit mark bench") -> Path:
    """Rebuild the self-contained HTML report of a mark bench folder (default: <run_dir>/report.html)."""
    from ..marks.bench import COLUMNS

    run_dir = Path(run_dir)
    res = read_mark_run(run_dir)
    rep = HtmlReport(title)
    comp = res.get("compose")
    p = res.get("pipeline") or {}
    rep.paragraph(f"n={res.get('n')} images per method, {res.get('n_keys')} keys, seed {res.get('seed')}, "
                  f"{p.get('steps')} steps, guidance {p.get('guidance')}, {p.get('size')} px. "
                  f"{res.get('protocol', '')}")
    if comp:
        from ..marks.compose import describe

        rep.heading(f"Composition: {describe(comp)}", id="compose")
        for w in comp.get("warnings") or []:
            rep.paragraph(f"WARNING: {w}", cls="bad")
        if not comp.get("warnings"):
            rep.paragraph(f"No mark lost more than {comp.get('strip_tolerance')} TPR@1%FPR / AUC to the composition "
                          "(vs the reference below).")
        rcols = ["tpr@1%fpr", "auc", "tpr_rule", "fpr_rule", "bit_acc", "drift"]
        rep.table(["method (reference: base pipeline, no attack)"] + rcols,
                  [[m] + [ref.get(c) for c in rcols] for m, ref in (comp.get("reference") or {}).items()],
                  id="reference")
        rep.pre({k: comp.get(k) for k in ("edit", "shield", "detectors", "focus", "generation")})
    cols = list(COLUMNS[:2]) + (["detector_model", "stripped"] if comp else []) + list(COLUMNS[2:])
    rep.heading("Methods x attacks", id="table")
    rows = res.get("rows") or []
    rep.table(cols, [["" if r.get(c) is None else r.get(c) for c in cols] for r in rows],
              classes=[["bad" if r.get("stripped") else "" for _ in cols] for r in rows], id="marks-table")
    qcols = ["drift", "label_acc_marked", "label_acc_clean", "embed_s"]
    methods = res.get("methods") or {}
    rep.table(["method"] + qcols, [[m] + [info.get(c) for c in qcols] for m, info in methods.items()], id="quality")
    for cost in COSTS:
        if robustness_quality_points(res, cost):
            rep.heading(f"Robustness vs quality ({cost})", level=3, id=f"rq-{cost}")
            rep.image("data:image/png;base64," + _b64(robustness_quality_png(res, cost)), alt=f"robustness vs {cost}")
    grids = res.get("grids") or {}
    if grids:
        rep.heading("Same-seed grids", id="grids")
        rep.paragraph(f"Columns: the first images of the bench (same prompt and seed down a column). Rows: clean, "
                      f"marked, marked after each attack, residual |marked - clean| x {res.get('grid_residual_gain')}.")
        for m, f in grids.items():
            path = run_dir / f
            rep.heading(m, level=3)
            if path.is_file():
                rep.image("data:image/png;base64," + _b64(path.read_bytes()), alt=f"grid {m}")
            else:
                rep.paragraph(f"(grid file {f} is missing)", cls="bad")
    return rep.write(Path(out) if out is not None else run_dir / "report.html")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


__all__ = ["COSTS", "is_mark_results", "is_mark_run", "mark_grid", "read_mark_run", "robustness_quality_png",
           "robustness_quality_points", "write_mark_grid", "write_mark_report", "write_robustness_quality"]
