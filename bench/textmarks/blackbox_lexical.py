"""Black-box lexical watermark (Yang et al. 2023; erasekit.text.marks.blackbox_lexical) on the shipped text-world
model (issue 21): TPR at 1% / 0.1% FPR with and without each attack, p-value rule rates, perplexity cost, words that
carry the mark, TPR by length.

    .venv/bin/python bench/textmarks/blackbox_lexical.py --n 64 --tokens 200 --out runs/bench/blackbox_lexical.json

Texts are plain samples of the shipped model (ancestral sampling, seed 7) marked post hoc (synonyms ranked by the same
model given the left context); negatives are unmarked samples of the same prompts (seed 1000), scored with the same
key and attacked with the same attack and seed. Two prompt sets: "book" (a book heading "<title>, chapter k." of the
text world: grammar prose, many lexicon words) and "bos" (the empty prompt: mostly facts / QA lines, few lexicon
words). Token attacks (erasekit.text.marks.attacks) act on the token ids of the marked text; "lexsyn" is the paper's
word-level synonym attack (blackbox_lexical.synonym_attack: a share of the eligible words redrawn in their class).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from erasekit.marks import auc, tpr_at_fpr
from erasekit.text.marks import decode, get_text_mark, sample
from erasekit.text.marks.attacks import apply_text_attack
from erasekit.text.marks.blackbox_lexical import synonym_attack
from erasekit.text.models import load_text_model, resolve_world

ATTACKS = ("none", "substitute:rate=0.1", "substitute:rate=0.3", "insert:rate=0.1", "delete:rate=0.1",
           "synonym:rate=0.2", "mix:keep=0.5", "paraphrase:keep=0.5", "lexsyn:0.2", "lexsyn:0.5")
LENGTHS = (25, 50, 100, 150, 200)


def nll(model, tok, texts: list[str]) -> float:
    """Mean token negative log-likelihood (nats) of the texts under the unwatermarked model."""
    tot, n = 0.0, 0
    bos = tok.bos_token_id
    with torch.no_grad():
        for t in texts:
            x = tok(t, add_special_tokens=False)["input_ids"][:255]
            ids = torch.tensor([[bos] + x])
            logp = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
            tot += float(-logp[torch.arange(len(x)), torch.tensor(x)].sum())
            n += len(x)
    return tot / n


def attack(spec: str, texts: list[str], model, tok, human, V: int) -> list[str]:
    if spec.startswith("lexsyn:"):
        return synonym_attack(texts, float(spec.split(":")[1]), seed=5)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    return decode(tok, apply_text_attack(spec, ids, V, seed=5, model=model, human=human, bos=tok.bos_token_id))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="marked and unmarked texts per prompt set")
    ap.add_argument("--tokens", type=int, default=200, help="new tokens per sample")
    ap.add_argument("--sets", default="book,bos")
    ap.add_argument("--attack", action="append", default=None)
    ap.add_argument("--out", default="runs/bench/blackbox_lexical.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    model, tok, folder = load_text_model("textworld")
    V = model.get_output_embeddings().weight.shape[0]
    world = resolve_world(None, folder)
    human = tok(" ".join(d.text for d in world.docs("holdout")), add_special_tokens=False)["input_ids"]
    wm = get_text_mark("blackbox_lexical")
    key = wm.keygen(tok, entropy=b"bench-blackbox_lexical")
    titles = list(world.books)
    res: dict = {"n": args.n, "tokens": args.tokens, "model": str(folder), "config": wm.identity()["config"],
                 "sets": {}}
    for name in args.sets.split(","):
        t0 = time.perf_counter()
        if name == "book":
            prompts = [f"{titles[i % len(titles)]}, chapter {2 + (i // len(titles)) % 3}.\n" for i in range(args.n)]
        else:
            prompts = [""] * args.n
        plain = decode(tok, sample(model, tok, prompts, args.tokens, seed=7))
        clean = decode(tok, sample(model, tok, prompts, args.tokens, seed=1000))
        marked = wm.embed_texts(key, plain, model=model, tokenizer=tok)
        embed_s = time.perf_counter() - t0
        words = wm.detect(key, plain).extra["words"]
        changed = float(np.mean([sum(a != b for a, b in zip(p.split(), m.split())) for p, m in zip(plain, marked)]))
        row = {"prompts": name, "embed_s": round(embed_s, 1), "eligible_pairs_per_text": float(np.mean(words)),
               "words_changed_per_text": changed,
               "nll_plain": nll(model, tok, plain), "nll_marked": nll(model, tok, marked)}
        row["ppl_plain"], row["ppl_marked"] = math.exp(row["nll_plain"]), math.exp(row["nll_marked"])
        row["ppl_ratio"] = row["ppl_marked"] / row["ppl_plain"]
        print(f"[{name}] {args.n} texts x {args.tokens} tokens: {row['eligible_pairs_per_text']:.1f} eligible pairs, "
              f"{changed:.1f} words changed per text; ppl {row['ppl_plain']:.3f} -> {row['ppl_marked']:.3f} "
              f"(x{row['ppl_ratio']:.3f}); embed {embed_s:.0f} s", flush=True)
        row["attacks"] = {}
        for att in args.attack or ATTACKS:
            a_m, a_c = attack(att, marked, model, tok, human, V), attack(att, clean, model, tok, human, V)
            dm, dc = wm.detect(key, [t if t.strip() else "." for t in a_m]), \
                wm.detect(key, [t if t.strip() else "." for t in a_c])
            r = {"tpr@1%": tpr_at_fpr(dc.score, dm.score, 0.01), "tpr@0.1%": tpr_at_fpr(dc.score, dm.score, 0.001),
                 "auc": auc(dc.score, dm.score), "tpr@p<=0.01": float((dm.p_value <= 0.01).mean()),
                 "tpr@p<=0.001": float((dm.p_value <= 0.001).mean()),
                 "fpr@p<=0.01": float((dc.p_value <= 0.01).mean()), "median_p": float(np.median(dm.p_value))}
            row["attacks"][att] = r
            print(f"[{name}] {att:22s} " + " ".join(f"{k}={v:.3g}" for k, v in r.items()), flush=True)
        by_len = {}
        for L in LENGTHS:
            if L > args.tokens:
                break
            cut = lambda ts: [tok.decode(tok(t, add_special_tokens=False)["input_ids"][:L]) or "." for t in ts]
            dm, dc = wm.detect(key, cut(marked)), wm.detect(key, cut(clean))
            by_len[L] = {"tpr@1%": tpr_at_fpr(dc.score, dm.score, 0.01),
                         "tpr@p<=0.01": float((dm.p_value <= 0.01).mean()),
                         "tpr@p<=0.001": float((dm.p_value <= 0.001).mean())}
        row["by_length"] = by_len
        ok = [L for L, v in by_len.items() if v["tpr@p<=0.01"] >= 0.95]
        row["tokens_needed_tpr95@p<=0.01"] = min(ok) if ok else None
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] by length {by_len}; {row['seconds']} s", flush=True)
        res["sets"][name] = row
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out} ({res['seconds']} s)")


if __name__ == "__main__":
    main()
