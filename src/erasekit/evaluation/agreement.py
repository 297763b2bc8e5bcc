"""Agreement of two judges on the same generated images: two evaluation runs of one suite that differ only in the
evaluator (the second made with `erasekit eval --evaluator OTHER --images-from FIRST_RUN`, so the images are the
first run's, byte for byte), compared sample by sample from their samples.jsonl.

Per (set, family) of the target concept: images, each judge's detection (shows the target), agreement on the
family's label, agreement on "shows the target", and, where the second judge may abstain ("unsure"), its unsure rate
and the agreement among its sure answers. `erasekit agree RUN_A RUN_B` prints the table.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..errors import InvalidValueError

UNSURE = "unsure"


def read_samples(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise InvalidValueError(f"{str(run_dir)!r} holds no samples.jsonl; give the folder of a finished evaluation")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(s: dict) -> tuple:
    return s["variant"], s["target"], s["set"], s["index"], s["cache"]


def agreement(run_a: str | Path, run_b: str | Path) -> dict[str, dict[str, float]]:
    """{"set/family": {n, detection_a, detection_b, agree_label, agree_shows, unsure_b, agree_label_sure}} over the
    samples both runs hold (same variant, target, set, index and image cache key -- the same image). Runs on
    different images (no common sample) are refused."""
    a = {_key(s): s for s in read_samples(run_a)}
    b = {_key(s): s for s in read_samples(run_b)}
    common = sorted(set(a) & set(b), key=str)
    if not common:
        raise InvalidValueError(f"{str(run_a)!r} and {str(run_b)!r} share no image (different suites, models or "
                                "seeds?); make the second with `erasekit eval ... --images-from FIRST_RUN`")
    acc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for k in common:
        sa, sb = a[k], b[k]
        fam = sa["family"]
        target = sa["expected"].get(fam, sa["target"])
        la, lb = sa["labels"].get(fam), sb["labels"].get(fam)
        row = acc[f"{sa['set']}/{fam}"]
        row["n"] += 1
        row["detection_a"] += la == target
        row["detection_b"] += lb == target
        row["agree_label"] += la == lb
        row["agree_shows"] += (la == target) == (lb == target)
        if lb == UNSURE:
            row["unsure_b"] += 1
        else:
            row["n_sure"] += 1
            row["agree_label_sure"] += la == lb
    out = {}
    for key, r in sorted(acc.items()):
        n = r["n"]
        out[key] = {"n": int(n), "detection_a": r["detection_a"] / n, "detection_b": r["detection_b"] / n,
                    "agree_label": r["agree_label"] / n, "agree_shows": r["agree_shows"] / n,
                    "unsure_b": r["unsure_b"] / n,
                    "agree_label_sure": r["agree_label_sure"] / r["n_sure"] if r["n_sure"] else float("nan")}
    return out


def agreement_table(table: dict[str, dict[str, float]], name_a: str = "A", name_b: str = "B") -> str:
    """The agreement as a markdown table."""
    lines = [f"| set/family | images | {name_a} det. | {name_b} det. | agree (label) | agree (shows) | "
             f"{name_b} unsure | agree ({name_b} sure) |", "|---|---|---|---|---|---|---|---|"]
    for key, r in table.items():
        lines.append(f"| {key} | {r['n']} | {r['detection_a']:.3f} | {r['detection_b']:.3f} | {r['agree_label']:.3f} | "
                     f"{r['agree_shows']:.3f} | {r['unsure_b']:.3f} | {r['agree_label_sure']:.3f} |")
    return "\n".join(lines)


__all__ = ["agreement", "agreement_table", "read_samples"]
