"""Scalability table of a `erasekit sixway` run (bench/measure19), from its sixway.json and the harness's
eval/samples.jsonl only (formatting and one re-aggregation, no new measurement): per method and k, detection of the k
erased concepts, the harness's accuracy_unrelated, image_drift, and the accuracy on the unrelated images whose
prompt names none of the k erased concepts ("clean utility": the toy world's object prompts carry an artist's style,
so with many artists erased some 'unrelated' prompts ask for an erased artist), and the accuracy of the unrelated
images on every family but the erased concepts' family (object, colour, character...: does the model still draw
what the prompt asks besides the erased style?).

    .venv/bin/python bench/measure19/scal_table.py runs/m19/scal
"""
import json
import sys
from pathlib import Path

run = Path(sys.argv[1])
res = json.loads((run / "sixway.json").read_text())
samples = [json.loads(x) for x in (run / "eval" / "samples.jsonl").read_text().splitlines() if x.strip()]
names = res["concepts"]


def clean_accuracy(variant: str, erased: list[str]) -> tuple[float, int]:
    hits = []
    for s in samples:
        if s["variant"] != variant or s["set"] != "unrelated":
            continue
        exp = {f: v for f, v in s["expected"].items() if v != "none"}
        if set(exp.values()) & set(erased):
            continue
        hits.append(all(s["labels"].get(f) == v for f, v in exp.items()))
    return (sum(hits) / len(hits) if hits else float("nan")), len(hits)


def other_family_accuracy(variant: str, skip_family: str) -> tuple[float, int]:
    hits = []
    for s in samples:
        if s["variant"] != variant or s["set"] != "unrelated":
            continue
        exp = {f: v for f, v in s["expected"].items() if v != "none" and f != skip_family}
        if exp:
            hits.append(all(s["labels"].get(f) == v for f, v in exp.items()))
    return (sum(hits) / len(hits) if hits else float("nan")), len(hits)


family = next(s["family"] for s in samples if s["target"] == names[0])


print("| method | k | detection of the k (images; base model) ↓ | accuracy_unrelated ↑ | accuracy, prompts naming "
      "no erased concept (images) ↑ | accuracy on the other families' labels (images) ↑ | image_drift ↓ |")
print("|---|---|---|---|---|---|---|")
base = res["base"]["knowledge"]
acc, n = clean_accuracy("base", [])
other, n_other = other_family_accuracy("base", family)
print(f"| base | 0 | {base['detection']:.3f} (direct, all {len(names)}) | {base['accuracy_unrelated']:.3f} | "
      f"{acc:.3f} ({n}) | {other:.3f} ({n_other}) | 0.000 |")
for m, t in res["methods"].items():
    for r in t["scalability"]:
        k = r["concepts"]
        v = f"{m}:{k}"
        acc, n = clean_accuracy(v, names[:k])
        other, n_other = other_family_accuracy(v, family)
        n_det = sum(1 for s in samples if s["variant"] == v and s["set"] == "direct" and s["target"] in names[:k])
        print(f"| {m} | {k} | {r['detection']:.3f} ({n_det}; base {r['base']['detection']:.3f}) | "
              f"{r['accuracy_unrelated']:.3f} | {acc:.3f} ({n}) | {other:.3f} ({n_other}) | {r['image_drift']:.3f} |")
