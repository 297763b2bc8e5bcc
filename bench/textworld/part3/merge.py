"""Merge several `erasekit text bench` run folders (each <= 10 min on the shared CPU) into one results.json +
report.html, and print the markdown tables of /work/notes/bench_text3.md. Variants present in several runs (base,
retrained: deterministic) must agree to 1e-9, which checks that reruns give identical numbers.
usage: merge.py OUT_DIR RUN_DIR [RUN_DIR ...]"""
import json
import sys
from pathlib import Path

from erasekit.report.eval_report import write_report
from erasekit.text import muse

out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
variants, samples, prov, seen = {}, [], [], set()
for run in runs:
    res = json.loads((run / "results.json").read_text())
    prov.append({"run": str(run), **res["provenance"]})
    for name, v in res["variants"].items():
        if name in variants:
            a, b = variants[name]["seeds"], v["seeds"]
            assert a.keys() == b.keys(), (name, a.keys(), b.keys())
            for s in a:
                for k in a[s]:
                    if not k.endswith("_seconds"):
                        assert abs(a[s][k] - b[s][k]) < 1e-9, (name, s, k, a[s][k], b[s][k])
            for kind, per_seed in v.get("attacks", {}).items():  # e.g. the retrained relearn curve of run C
                variants[name].setdefault("attacks", {}).setdefault(kind, per_seed)
            continue
        variants[name] = {k: v[k] for k in ("seeds", "spec", "attacks", "sixway") if k in v}
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]
    samples += [r for r in rows if r["variant"] not in seen]  # base / retrained rows once
    seen |= {r["variant"] for r in rows}
res = muse.text_results(variants, model=prov[0]["model"], world_sha256=prov[0]["world_sha256"],
                        extra={"merged_runs": prov})
muse.write_results(out, res, samples)
print("report:", write_report(out))

f = lambda v, p=3: f"{v:.{p}f}"
cols = ["verbmem_f", "knowmem_f", "knowmem_r", "qa_acc_forget", "qa_acc_retain", "privleak", "ref_agree_f",
        "ref_absgap_f"]
print("| variant | " + " | ".join(cols) + " | edit s (max) | seeds |")
print("|---" * (len(cols) + 3) + "|")
for name, v in res["variants"].items():
    cells = []
    for c in cols:
        m, sp = v["mean"].get(c), v["spread"].get(c)
        p = 1 if c == "privleak" else 3
        cells.append("" if m is None else f(m, p) + (f" [{f(sp[0], p)}, {f(sp[1], p)}]" if sp and sp[0] != sp[1]
                                                        else ""))
    secs = [r["edit_seconds"] for r in v["seeds"].values() if "edit_seconds" in r]
    print(f"| {name} | " + " | ".join(cells) + f" | {f(max(secs), 1) if secs else ''} | {len(v['seeds'])} |")
for name, v in res["variants"].items():
    rl = v.get("attacks", {}).get("relearn")
    if rl:
        print(f"\nrelearn {name}: shown/unseen per seed", {s: (r["shown"], r["unseen"]) for s, r in rl.items()})
        print("| steps | QA shown | QA unseen | verbmem_f |\n|---|---|---|---|")
        for r in muse.median_curve([x["curve"] for x in rl.values()]):
            print(f"| {r['steps']} | " + " | ".join(f(r[k]) + (f" [{f(r[k + '_range'][0])}, {f(r[k + '_range'][1])}]"
                                                             if r['n'] > 1 else "")
                                                   for k in ("qa_acc_shown", "qa_acc_unseen", "verbmem_f")) + " |")
    for kind in ("in-context", "step-by-step"):
        a = v.get("attacks", {}).get(kind)
        if a:
            print(f"\n{kind} {name}:", json.dumps(a))
print("\n| method | scalability: QA forgotten / retain at k = 1, 2, 4 entities | sustainability: QA forgotten / retain "
      "after 1, 2, 3, 4 requests | max unlearn s |")
print("|---|---|---|---|")
for name, v in res["variants"].items():
    six = v.get("sixway")
    if six:
        sc = "; ".join(f"{r['qa_acc_forget']:.2f} / {r['qa_acc_retain']:.3f}" for r in six.get("scalability", []))
        su = "; ".join(f"{r['qa_acc_forgotten']:.2f} / {r['qa_acc_retain']:.3f}" for r in six.get("sustainability", []))
        secs = [r["seconds"] for r in six.get("scalability", []) + six.get("sustainability", [])]
        print(f"| {name} | {sc} | {su} | {max(secs):.1f} |")
