"""MUSE six-way evaluation on the text world (Shi et al., "MUSE: Machine Unlearning Six-Way Evaluation for Language
Models", arXiv:2407.06460).

    verbmem_f   verbatim memorisation: ROUGE-L F1 of greedy continuations of forget-book prefixes (lower = forgot)
    knowmem_f   knowledge memorisation on forget facts: ROUGE-L F1 of greedy answers to their questions (lower)
    knowmem_r   knowledge on retain facts = utility preservation (higher)
    privleak    (AUC - AUC_retrained) / AUC_retrained * 100 with MUSE's AUC `forget_holdout_Min-40%`: Min-40% prob
                with the holdout texts as the positive class (near 0 = behaves like the retrained model; about
                -100 = still separates forget texts from holdout texts like the trained model: under-unlearning;
                large positive = forget texts now look less likely than never-seen ones: over-unlearning)
    scalability / sustainability: the same metrics across forget-set sizes / after sequential requests (see
                `scalability_runs` / `sustainability_runs`)

Also reported: exact-match QA accuracy (`qa_acc_forget`, `qa_acc_retain`), usable with the ground truth of the text
world. Implementation notes vs the official code (swj0419/muse_bench, metrics/): ROUGE-L via `rouge-score` without
stemming, as there; greedy decoding; the Min-K% score is the mean of the lowest k% token log-probs (members score
higher) and the AUC is computed by ranks (Mann-Whitney), equal to sklearn's roc_auc. PrivLeak's AUC has the official
orientation (metrics/privleak.py labels the first split of "forget_holdout" 0 and the holdout split 1 and ranks by
-ppl = mean low log-prob; its README: in `forget_holdout_Min-40%` forget is the non-member side, holdout the member
side), so a model that memorised the forget texts has AUC ~ 0 and PrivLeak ~ -100. Until 2026-11-29 erasekit
ranked the forget texts as the positive class, which flips the sign and rescales PrivLeak (+63.6 instead of -100
for the text-world base model; BENCHMARKS.md, text world).
The first token of a text is not scored (no BOS is prepended); the official code scores it after Llama's BOS.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError
from ..io import atomic_write_text

PREFIX_TOKENS = 16  # verbatim prompt length (tokens of a book paragraph)
VERBATIM_NEW_TOKENS = 48  # continuation length compared with the book
ANSWER_NEW_TOKENS = 12  # answer length (MUSE: 32 for real QA; text-world answers are <= 4 words)
MIN_K = 0.4  # MUSE's PrivLeak key "Min-40%"
STOP = ("\n", "Question")


def _scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        from ..errors import ErasekitError

        raise ErasekitError("ROUGE-L needs the rouge-score package: pip install rouge-score") from e
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F1 of each prediction against its reference (rouge-score, no stemming)."""
    if len(predictions) != len(references):
        raise InvalidValueError(f"{len(predictions)} predictions but {len(references)} references")
    sc = _scorer()
    return [float(sc.score(r, p)["rougeL"].fmeasure) for p, r in zip(predictions, references)]


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """Area under the ROC curve of `score > t` => member (ties count one half)."""
    a, b = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if a.size == 0 or b.size == 0:
        raise InvalidValueError("AUC needs at least one member and one non-member score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise InvalidValueError("AUC scores hold NaN/inf")
    greater = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    return float(greater / (a.size * b.size))


def privleak(auc_model: float, auc_retrained: float) -> float:
    """MUSE's PrivLeak in percent: (AUC - AUC_retrained) / AUC_retrained * 100, both AUCs from `mink_auc`
    (holdout = positive class): negative = under-unlearning (-100 at AUC 0), positive = over-unlearning."""
    if not auc_retrained > 0:
        raise InvalidValueError(f"the retrained model's AUC must be > 0, got {auc_retrained!r}")
    return (auc_model - auc_retrained) / auc_retrained * 100.0


def min_k_scores(logprobs: Sequence[np.ndarray], k: float = MIN_K) -> list[float]:
    """Min-K% prob (Shi et al., ICLR 2024): mean of the lowest ceil... int(k * n) token log-probs (at least one)."""
    if not 0 < k <= 1:
        raise InvalidValueError(f"k must be in (0, 1], got {k!r}")
    out = []
    for lp in logprobs:
        lp = np.sort(np.asarray(lp, float))
        n = max(1, int(len(lp) * k))
        out.append(float(lp[:n].mean()))
    return out


@torch.no_grad()
def token_logprobs(model: Any, tokenizer: Any, texts: Sequence[str], max_len: int = 256) -> list[np.ndarray]:
    """Per text, the log-probs of tokens 2..n given their prefix."""
    out = []
    for t in texts:
        ids = torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"][:max_len]])
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        out.append(lp.gather(-1, ids[0, 1:, None])[:, 0].numpy())
    return out


@torch.no_grad()
def greedy(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations (decoded, without the prompt). Prompts of equal token length are batched together, so
    no padding is involved."""
    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out: list[str] = [""] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(enc):
        groups.setdefault(len(e), []).append(i)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 10**9)
    for n, idx in groups.items():
        ids = torch.tensor([enc[i] for i in idx])
        new = max(1, min(max_new_tokens, int(limit) - n))
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        for j, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[j, n:], skip_special_tokens=True)
    return out


def _answer(text: str) -> str:
    for s in STOP:
        text = text.split(s)[0]
    return text.strip().rstrip(".").strip()


def verbatim_items(world: Any, split: str = "forget", prefix_tokens: int = PREFIX_TOKENS,
                   tokenizer: Any = None) -> list[tuple[str, str]]:
    """(prompt, reference continuation) per book paragraph of `split`: the first `prefix_tokens` tokens and the
    next VERBATIM_NEW_TOKENS tokens, decoded."""
    items = []
    for d in world.docs(split, "book"):
        ids = tokenizer(d.text, add_special_tokens=False)["input_ids"]
        items.append((tokenizer.decode(ids[:prefix_tokens]),
                      tokenizer.decode(ids[prefix_tokens:prefix_tokens + VERBATIM_NEW_TOKENS])))
    return items


def verbmem(model: Any, tokenizer: Any, items: Sequence[tuple[str, str]]) -> tuple[float, list[dict]]:
    """Mean ROUGE-L F1 of greedy continuations against the references, and per-item rows."""
    if not items:
        raise InvalidValueError("no verbatim items (the split has no books)")
    preds = greedy(model, tokenizer, [p for p, _ in items], VERBATIM_NEW_TOKENS)
    preds = [tokenizer.decode(tokenizer(p, add_special_tokens=False)["input_ids"][:VERBATIM_NEW_TOKENS])
             for p in preds]
    scores = rouge_l(preds, [r for _, r in items])
    rows = [{"prompt": p, "reference": r, "output": o, "rougeL": s} for (p, r), o, s in zip(items, preds, scores)]
    return float(np.mean(scores)), rows


def knowmem(model: Any, tokenizer: Any, facts: Sequence[Any], context: str | Callable[[Any], str] = "",
            ) -> tuple[float, float, list[dict]]:
    """(mean ROUGE-L F1 of answers, exact-match accuracy, rows) for text-world facts; `context` (a string, or a
    function of the fact) is prepended to every prompt (in-context attacks)."""
    if not facts:
        raise InvalidValueError("no QA facts to evaluate")
    ctx = context if callable(context) else (lambda f: context)
    raw = greedy(model, tokenizer, [ctx(f) + f.prompt for f in facts], ANSWER_NEW_TOKENS)
    answers = [_answer(r) for r in raw]
    scores = rouge_l(answers, [f.answer for f in facts])
    exact = [a.lower() == f.answer.lower() for a, f in zip(answers, facts)]
    rows = [{"entity": f.entity, "relation": f.relation, "frequency": f.frequency, "answer": f.answer, "output": a,
             "rougeL": s, "correct": bool(c)} for f, a, s, c in zip(facts, answers, scores, exact)]
    return float(np.mean(scores)), float(np.mean(exact)), rows


def forget_holdout_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """MUSE's `forget_holdout_*` AUC from membership scores (higher = looks more like training data, e.g. Min-K%
    prob): the probability that a holdout text scores above a forget text, i.e. the holdout texts are the positive
    class, as in the official metrics/privleak.py (sweep(ppl, y) with y = 1 for holdout, ranking by -ppl). A model
    that memorised the forget texts gets ~0, one that never saw either set ~0.5."""
    return auc(holdout_scores, forget_scores)


def mink_auc(model: Any, tokenizer: Any, members: Sequence[str], nonmembers: Sequence[str]) -> float:
    """MUSE's PrivLeak AUC (`forget_holdout_Min-40%`, see `forget_holdout_auc`) of `members` (the forget texts)
    against `nonmembers` (the holdout texts)."""
    return forget_holdout_auc(min_k_scores(token_logprobs(model, tokenizer, members)),
                              min_k_scores(token_logprobs(model, tokenizer, nonmembers)))


def privleak_texts(world: Any) -> tuple[list[str], list[str]]:
    """(forget members, holdout non-members) for PrivLeak: book paragraphs (MUSE uses its forget/holdout corpora)."""
    return [d.text for d in world.docs("forget", "book")], [d.text for d in world.docs("holdout", "book")]


def evaluate_lm(model: Any, tokenizer: Any, world: Any, auc_retrained: float | None = None,
                min_frequency: int = 0) -> tuple[dict[str, float], dict[str, list[dict]]]:
    """The MUSE metrics of one model on `world`: (metrics, per-sample rows). `auc_retrained` (the retrained model's
    Min-K AUC on the same texts) turns the AUC into PrivLeak."""
    vm, vrows = verbmem(model, tokenizer, verbatim_items(world, "forget", tokenizer=tokenizer))
    kf, af, frows = knowmem(model, tokenizer, world.qa("forget", min_frequency))
    kr, ar, rrows = knowmem(model, tokenizer, world.qa("retain", min_frequency))
    members, non = privleak_texts(world)
    a = mink_auc(model, tokenizer, members, non)
    metrics = {"verbmem_f": vm, "knowmem_f": kf, "knowmem_r": kr, "qa_acc_forget": af, "qa_acc_retain": ar,
               "mink_auc": a}
    if auc_retrained is not None:
        metrics["privleak"] = privleak(a, auc_retrained)
    return metrics, {"verbmem_f": vrows, "knowmem_f": frows, "knowmem_r": rrows}


def frequency_curve(model: Any, tokenizer: Any, world: Any) -> dict[str, Any]:
    """QA accuracy of every trained entity's facts vs its training frequency, and the change point of that curve
    (erasekit.imitation's PELT threshold code, the text counterpart of the imitation threshold)."""
    from ..imitation.threshold import find_threshold

    facts = [f for f in world.facts if world.entity_split[f.entity] != "holdout"]
    _, _, rows = knowmem(model, tokenizer, facts)
    by_entity: dict[str, list[dict]] = {}
    for r in rows:
        by_entity.setdefault(r["entity"], []).append(r)
    table = {e: (float(rs[0]["frequency"]), float(np.mean([r["correct"] for r in rs]))) for e, rs in by_entity.items()}
    by_freq: dict[int, list[float]] = {}
    for f, acc in table.values():
        by_freq.setdefault(int(f), []).append(acc)
    result = find_threshold(table)
    return {"accuracy_by_frequency": {str(k): float(np.mean(v)) for k, v in sorted(by_freq.items())},
            "threshold": result.to_dict()}


def _strict(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise InvalidValueError(f"refusing to write a non-finite number ({obj}) to results.json")
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_results(folder: str | Path, results: dict[str, Any], samples: list[dict] | None = None) -> Path:
    """results.json (strict JSON) and samples.jsonl, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "results.json", json.dumps(_strict(results), indent=1, allow_nan=False))
    if samples is not None:
        atomic_write_text(folder / "samples.jsonl", "".join(json.dumps(s, allow_nan=False) + "\n" for s in samples))
    return folder / "results.json"


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """A MUSE table: one row per variant (base, retrained, each method)."""
    cols = ["verbmem_f", "knowmem_f", "knowmem_r", "qa_acc_forget", "qa_acc_retain", "privleak", "seconds"]
    lines = ["| variant | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows.items():
        cells = [("" if m.get(c) is None else f"{m[c]:.3f}" if c != "privleak" else f"{m[c]:+.1f}") for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scalability_runs(model: Any, tokenizer: Any, world: Any, method: str, sizes: Sequence[int],
                     **options: Any) -> list[dict[str, Any]]:
    """MUSE's scalability: unlearn the news of the first `k` forget entities for each k in `sizes`; per k, QA
    accuracy on the forgotten entities' facts and on retain facts (utility), and the method's seconds."""
    import time

    from .unlearn import unlearn

    ents = sorted(e for e, s in world.entity_split.items() if s == "forget")
    if not sizes or any(not 1 <= int(k) <= len(ents) for k in sizes):
        raise InvalidValueError(f"sizes must be between 1 and the {len(ents)} forget entities, got {list(sizes)}")
    out = []
    for k in sizes:
        chosen = ents[:int(k)]
        forget, retain = world.forget_request(entities=chosen)
        t = time.perf_counter()
        edit = unlearn(model, tokenizer, method, forget, retain, forget_names=chosen, **options)
        secs = time.perf_counter() - t
        with edit.applied(model):
            _, acc_f, _ = knowmem(model, tokenizer, [f for f in world.facts if f.entity in chosen])
            _, acc_r, _ = knowmem(model, tokenizer, world.qa("retain"))
        out.append({"forget_entities": int(k), "forget_texts": len(forget), "qa_acc_forget": acc_f,
                    "qa_acc_retain": acc_r, "seconds": round(secs, 2)})
    return out


def sustainability_runs(model: Any, tokenizer: Any, world: Any, method: str, **options: Any) -> list[dict[str, Any]]:
    """MUSE's sustainability: one unlearning request per forget entity, each made on top of the previous edits
    (applied); after each, QA accuracy on everything forgotten so far and on retain facts. The model is restored at
    the end (the edits are reverted in reverse order)."""
    from .unlearn import unlearn

    ents = sorted(e for e, s in world.entity_split.items() if s == "forget")
    applied, out = [], []
    try:
        for i, e in enumerate(ents):
            forget, retain = world.forget_request(entities=[e])
            edit = unlearn(model, tokenizer, method, forget, retain, forget_names=[e], **options)
            edit.apply(model)
            applied.append(edit)
            done = ents[:i + 1]
            _, acc_f, _ = knowmem(model, tokenizer, [f for f in world.facts if f.entity in done])
            _, acc_r, _ = knowmem(model, tokenizer, world.qa("retain"))
            out.append({"requests": i + 1, "qa_acc_forgotten": acc_f, "qa_acc_retain": acc_r})
    finally:
        for edit in reversed(applied):
            edit.revert(model)
    return out
