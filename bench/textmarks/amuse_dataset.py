"""AMUSE dataset watermark (erasekit.text.provenance.amuse) measured by training text-world models with and without
the marked documents (issue 21): bit accuracy and exact decoding of the owner's message read from each model.

    .venv/bin/python bench/textmarks/amuse_dataset.py --out runs/bench/amuse.json --work runs/bench/amuse

Owners: `--owners` independent data owners, each with its own key, a 16-bit message and `--docs` book paragraphs
(8 grammar sentences each) of a second text world (seed 101) that the base corpus does not contain; the decoding rate
is the share of owners whose message comes back exactly. Models (same TrainConfig and seed, from scratch, 1 thread,
resumable):
  with       base text-world corpus + the marked owner documents (x book_repeats, like the corpus' books)
  originals  base corpus + the unmarked owner documents (same content, no mark: the strongest control)
  without    base corpus only
Each model is read with the owner's key (teacher-forced synonym likelihoods on the marked documents), and the "with"
model also with `--wrong-keys` other keys carrying the same message (their sub-messages sit in other words).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from erasekit.text.marks import random_secret
from erasekit.text.provenance import amuse
from erasekit.text.train import TrainConfig, load_lm, train_lm
from erasekit.text.world import TextWorldConfig, build_world


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--owners", type=int, default=3, help="independent owners (key + message + documents each)")
    ap.add_argument("--docs", type=int, default=12, help="documents marked per owner")
    ap.add_argument("--steps", type=int, default=600, help="training steps per model (the shipped recipe: 600)")
    ap.add_argument("--models", default="with,originals,without")
    ap.add_argument("--wrong-keys", type=int, default=1, help="other keys (same message) read per owner, 'with' model")
    ap.add_argument("--work", default="runs/bench/amuse", help="folder for the trained models")
    ap.add_argument("--out", default="runs/bench/amuse.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    base = build_world(TextWorldConfig())
    owner_world = build_world(TextWorldConfig(seed=101, sentences_per_paragraph=8))
    pool = [d.text for d in owner_world.documents if d.kind == "book"]
    if args.owners * args.docs > len(pool):
        raise SystemExit(f"only {len(pool)} owner documents; lower --owners x --docs")
    code = amuse.AmuseCode(16, amuse.AmuseConfig().guarantee)
    owners = []
    for o in range(args.owners):
        docs = pool[o * args.docs:(o + 1) * args.docs]
        msg = int.from_bytes(random_secret(b"bench-amuse-msg%d" % o, 2), "big")
        key = amuse.keygen(msg, entropy=b"bench-amuse-%d" % o)
        marked = amuse.embed_dataset(key, docs)
        text_dec, _ = code.decode([amuse.read_text(key, d) for d in marked])
        owners.append({"message": msg, "key": key, "docs": docs, "marked": marked,
                       "text_level_exact": bool((text_dec == key.message).all())})
    all_docs = [d for o in owners for d in o["docs"]]
    all_marked = [d for o in owners for d in o["marked"]]
    changed = float(np.mean([sum(a != b for a, b in zip(x.split(), y.split())) for x, y in zip(all_docs, all_marked)]))
    words = float(np.mean([len(x.split()) for x in all_docs]))
    res: dict = {"owners": args.owners, "docs_per_owner": args.docs, "code": code.describe(), "words_per_doc": words,
                 "words_changed_per_doc": changed, "messages": [o["message"] for o in owners],
                 "text_level_exact": [o["text_level_exact"] for o in owners], "steps": args.steps, "models": {}}
    print(f"owner datasets: {args.owners} x {args.docs} docs, {words:.0f} words, {changed:.1f} changed per doc; code "
          f"{code.describe()}; read back from the marked text: exact={res['text_level_exact']}", flush=True)
    reps = base.config.book_repeats
    corpora = {"with": base.training_texts() + all_marked * reps, "originals": base.training_texts() + all_docs * reps,
               "without": base.training_texts()}
    cfg = TrainConfig(steps=args.steps, threads=1, save_every=50)
    for name in args.models.split(","):
        out = Path(args.work) / name
        t0 = time.perf_counter()
        if not (out / "config.json").is_file():
            info = train_lm(corpora[name], out, cfg, extra={"amuse_bench": name})
        else:
            info = json.loads((out / "erasekit_text.json").read_text())
        model, tok = load_lm(out)
        t1 = time.perf_counter()
        rows = []
        for o in owners:
            r = amuse.detect_dataset(o["key"], model, tok, o["marked"])
            row = r.to_dict()
            if name == "with":
                row["wrong_keys"] = []
                for j in range(args.wrong_keys):
                    other = amuse.keygen(o["message"], entropy=b"bench-amuse-wrong%d-%d" % (j, len(rows)))
                    w = amuse.detect_dataset(other, model, tok, o["marked"])
                    row["wrong_keys"].append({"bit_acc": w.bit_acc, "exact": w.exact, "p_value": w.p_value,
                                              "slot_agreement": w.extra["slot_agreement"]})
            rows.append(row)
            print(f"[{name}] owner {len(rows) - 1}: bit_acc={r.bit_acc:.3f} exact={r.exact} p={r.p_value:.3g} "
                  f"z={r.z:.2f} slot_agreement={r.extra['slot_agreement']:.3f} pairs={r.extra['distinct_pairs']} "
                  f"subs_used={r.extra['submessages_used']}" +
                  (f" wrong keys {row['wrong_keys']}" if name == "with" else ""), flush=True)
        summary = {"train_cpu_s": info.get("train_cpu_seconds"), "final_loss": info.get("final_loss"),
                   "read_s": round(time.perf_counter() - t1, 1),
                   "bit_acc_mean": float(np.mean([r["bit_acc"] for r in rows])),
                   "decoding_rate": float(np.mean([r["exact"] for r in rows])),
                   "detected_rate": float(np.mean([r["decision"] for r in rows])),
                   "median_p": float(np.median([r["p_value"] for r in rows])), "owners": rows}
        res["models"][name] = summary
        print(f"[{name}] loss={info.get('final_loss'):.3f} train_cpu={info.get('train_cpu_seconds')} s: bit_acc "
              f"{summary['bit_acc_mean']:.3f}, decoding rate {summary['decoding_rate']:.2f}, detected "
              f"{summary['detected_rate']:.2f}, median p {summary['median_p']:.3g} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {args.out} ({res['seconds']} s)")


if __name__ == "__main__":
    main()
