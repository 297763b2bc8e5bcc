"""Dataset-provenance benchmark on the text world (issue 21): copyright traps and LexiMark, on two trained models.

    A = text world + injected traps + the owner's LexiMark-marked member documents
    B = text world + injected traps + the same member documents unmarked
    reference / never-trained model = the shipped `textworld` base (same recipe, seed 0, the world only)

Stages (each a separate command, each well under 10 minutes; outputs cached in --out and reused):

    python bench/provenance/run.py make       # traps + controls sampled from the base; corpora of A and B
    python bench/provenance/run.py train-a    # the text world's recipe (600 steps, seed 0, base tokenizer)
    python bench/provenance/run.py train-b
    python bench/provenance/run.py detect     # trap AUC per (length, repetitions) + change points on A and B;
                                              # LexiMark AUROC / Welch p / key-permutation p on A, B and the base
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from erasekit.text.models import load_text_model, model_folder, resolve_world
from erasekit.text.provenance import leximark as lx
from erasekit.text.provenance import traps as tp
from erasekit.text.train import INFO_FILE, TrainConfig, load_lm
from erasekit.text.world import _book_sentence

OWNER_DOCS, OWNER_MEMBERS, OWNER_SEED, OWNER_SENTENCES = 40, 20, 2026, 4
KEY_ENTROPY = b"bench-provenance"  # reproducible key (a real owner uses os.urandom via keygen(texts))


def owner_documents(world) -> list[str]:
    """The data owner's documents: book-grammar paragraphs with a private seed (not in the text world)."""
    rng = random.Random(OWNER_SEED)
    names = [e for e, s in world.entity_split.items() if s != "holdout"]
    docs = []
    for i in range(OWNER_DOCS):
        cast = rng.sample(names, 3)
        docs.append(f"Owner journal, entry {i + 1}.\n" + " ".join(_book_sentence(rng, cast)
                                                               for _ in range(OWNER_SENTENCES)))
    return docs


def train(texts, out: Path, steps: int, extra: dict) -> dict:
    if (out / INFO_FILE).exists():
        print(f"{out}: already trained, reused")
        return json.loads((out / INFO_FILE).read_text())
    cfg = TrainConfig(steps=steps, threads=1)
    t0 = time.perf_counter()
    info = tp.train_target(texts, out, model_folder("textworld"), cfg, extra=extra)
    print(f"{out}: {info['steps_done']} steps, loss {info['final_loss']:.3f}, {time.perf_counter() - t0:.0f} s wall, "
          f"{info['train_cpu_seconds']} s CPU")
    return info


def trap_table(traps, target, ttok, ref, tok, info) -> dict:
    epochs = info["steps_done"] * info["config"]["batch_size"] / info["n_texts"]
    ratio = tp.detect_traps(target, ttok, traps, ref, tok)
    loss = tp.detect_traps(target, ttok, traps, None, change_point=False)
    print(f"epochs over the corpus: {epochs:.1f}")
    print("| length | repetitions | exposures (~) | AUC ratio test | p | AUC loss-only |")
    print("|---|---|---|---|---|---|")
    for c, c2 in zip(ratio.cells, loss.cells):
        print(f"| {c['length']} | {c['repetitions']} | {c['repetitions'] * epochs:.0f} | {c['auc']:.3f} | "
              f"{c['p_value']:.2g} | {c2['auc']:.3f} |")
    print("change points:", json.dumps(ratio.curve))
    return {"epochs": epochs, "ratio": ratio.to_dict(), "loss_test": loss.cells}


def lexi_rows(models, key, members, non, cfg) -> dict:
    from scipy.stats import ttest_ind

    from erasekit.membership import auc

    rows = {}
    for name, (model, mtok) in models.items():
        t0 = time.perf_counter()
        r = lx.detect(model, mtok, key, members, non, cfg)
        # the paper's no-watermark baseline: Min-K%++ of the unmarked documents
        sm = lx.min_k_plus_plus(lx.token_stats(model, mtok, members), cfg.min_k)
        sn = lx.min_k_plus_plus(lx.token_stats(model, mtok, non), cfg.min_k)
        plain_auc = auc(np.r_[sm, sn], np.r_[np.ones(len(sm), bool), np.zeros(len(sn), bool)])
        plain_p = float(ttest_ind(sm, sn, equal_var=False, alternative="greater").pvalue)
        rows[name] = {"auc_marked_docs": r.auc, "welch_p_marked_docs": r.p_value, "permutation_p": r.permutation_p,
                      "permutation_z": r.permutation_z, "key_z_auc": r.key_auc, "auc_unmarked_docs": plain_auc,
                      "welch_p_unmarked_docs": plain_p, "seconds": time.perf_counter() - t0}
    print("| model | Min-K%++ AUROC marked docs | Welch p | key-permutation p (z) | key-z AUROC | "
          "Min-K%++ AUROC unmarked docs | Welch p |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['auc_marked_docs']:.3f} | {r['welch_p_marked_docs']:.2g} | "
              f"{r['permutation_p']:.3g} ({r['permutation_z']:+.1f}) | {r['key_z_auc']:.3f} | "
              f"{r['auc_unmarked_docs']:.3f} | {r['welch_p_unmarked_docs']:.2g} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["make", "train-a", "train-b", "detect"])
    ap.add_argument("--out", default="runs/provenance")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lengths", default="25,50,100")
    ap.add_argument("--repetitions", default="1,2,4,8,16")
    ap.add_argument("--per-cell", type=int, default=6)
    ap.add_argument("--null-keys", type=int, default=49)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ref, tok, ref_folder = load_text_model("textworld")
    world = resolve_world(None, "textworld")
    base_texts = world.training_texts()
    docs = owner_documents(world)
    key = lx.keygen(docs, entropy=KEY_ENTROPY)
    members, non = docs[:OWNER_MEMBERS], docs[OWNER_MEMBERS:]
    t0 = time.perf_counter()
    if args.stage == "make":
        cfg = tp.TrapConfig(lengths=tuple(int(x) for x in args.lengths.split(",")),
                            repetitions=tuple(int(x) for x in args.repetitions.split(",")),
                            traps_per_cell=args.per_cell, seed=0)
        traps = tp.make_traps(ref, tok, cfg, base_texts + docs)
        tp.save_traps(out / "traps_file.json", traps, cfg, meta={"reference": "textworld"}, overwrite=True)
        texts, placements = tp.inject_traps(base_texts, traps, tok, seed=0)
        corpus = {"a": texts + lx.mark(members, key), "b": texts + members, "placements": placements}
        (out / "corpora.json").write_text(json.dumps(corpus))
        added = sum(t.length * t.repetitions for t in traps)
        print(f"{len(traps)} sequences, {len(placements)} copies, +{added} tokens in {len(texts)} documents; "
              f"{time.perf_counter() - t0:.0f} s")
    elif args.stage in ("train-a", "train-b"):
        corpus = json.loads((out / "corpora.json").read_text())
        which = args.stage[-1]
        train(corpus[which], out / f"lm_{which}", args.steps, {"corpus": which})
    elif args.stage == "detect":
        traps, _ = tp.load_traps(out / "traps_file.json")
        done = [w for w in "ab" if (out / f"lm_{w}" / INFO_FILE).exists()]  # B may not be trained yet
        lms = {w: load_lm(out / f"lm_{w}") for w in done}
        info = {w: json.loads((out / f"lm_{w}" / INFO_FILE).read_text()) for w in done}
        res = {"train": {w: {k: info[w][k] for k in ("steps_done", "train_cpu_seconds", "final_loss", "n_texts")}
                         for w in done}}
        for w in done:
            print(f"## traps on model {w.upper()}")
            res[f"traps_{w}"] = trap_table(traps, *lms[w], ref, tok, info[w])
        null = tp.detect_traps(ref, tok, traps, None, change_point=False)
        res["traps_null_base_loss_test"] = null.cells
        print("never-trained base, loss-only AUC per cell:", [round(c["auc"], 3) for c in null.cells])
        cfg = lx.LexiMarkConfig(null_keys=args.null_keys)
        subs = [len(lx.mark_text(d, key)[1]) for d in docs]
        mk = lx.mark(docs, key)
        ntok = sum(len(tok(t, add_special_tokens=False)["input_ids"]) - 1 for t in mk)
        ntok0 = sum(len(tok(t, add_special_tokens=False)["input_ids"]) - 1 for t in docs)
        res["leximark_cost"] = {"substitutions_per_doc": float(np.mean(subs)),
                                "words_per_doc": float(np.mean([len(d.split()) for d in docs])),
                                "base_ppl_marked": float(np.exp(-lx.log_likelihoods(ref, tok, mk).sum() / ntok)),
                                "base_ppl_plain": float(np.exp(-lx.log_likelihoods(ref, tok, docs).sum() / ntok0))}
        print(json.dumps(res["leximark_cost"]))
        names = {"a": "A (marked members)", "b": "B (unmarked members)"}
        models = {names[w]: lms[w] for w in done} | {"base (never trained)": (ref, tok)}
        res["leximark"] = lexi_rows(models, key, members, non, cfg)
        res.update(members=len(members), nonmembers=len(non), null_keys=cfg.null_keys, k=key.k,
                   seconds=time.perf_counter() - t0)
        (out / "results.json").write_text(json.dumps(res, indent=1))
        print(f"{time.perf_counter() - t0:.0f} s")
    print("settings:", json.dumps(vars(args)), file=sys.stderr)


if __name__ == "__main__":
    main()
