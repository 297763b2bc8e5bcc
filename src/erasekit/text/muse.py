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
    """Per text, the log-probs of tokens 2..n given their prefix (n <= max_len and <= the model's context)."""
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    max_len = min(max_len, int(limit)) if limit else max_len
    out = []
    for t in texts:
        ids = torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"][:max_len]])
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        out.append(lp.gather(-1, ids[0, 1:, None])[:, 0].numpy())
    return out


@torch.no_grad()
def greedy(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations (decoded, without the prompt). Prompts of equal token length are batched together, so
    no padding is involved. A prompt that fills the model's whole context keeps only its last tokens (the context
    minus the continuation, at most half of it); a shorter one gets fewer new tokens if the context ends first."""
    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out: list[str] = [""] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(enc):
        groups.setdefault(len(e), []).append(i)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 10**9)
    for n, idx in groups.items():
        keep = int(limit) - min(max_new_tokens, int(limit) // 2)
        ids = torch.tensor([enc[i][-keep:] if n >= int(limit) else enc[i] for i in idx])
        n = ids.shape[1]
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
    import time

    from .unlearn import unlearn

    ents = sorted(e for e, s in world.entity_split.items() if s == "forget")
    applied, out = [], []
    try:
        for i, e in enumerate(ents):
            forget, retain = world.forget_request(entities=[e])
            t = time.perf_counter()
            edit = unlearn(model, tokenizer, method, forget, retain, forget_names=[e], **options)
            secs = time.perf_counter() - t
            edit.apply(model)
            applied.append(edit)
            done = ents[:i + 1]
            _, acc_f, _ = knowmem(model, tokenizer, [f for f in world.facts if f.entity in done])
            _, acc_r, _ = knowmem(model, tokenizer, world.qa("retain"))
            out.append({"requests": i + 1, "qa_acc_forgotten": acc_f, "qa_acc_retain": acc_r,
                        "seconds": round(secs, 2)})
    finally:
        for edit in reversed(applied):
            edit.revert(model)
    return out


# ------------------------------------------------------------------------------------------------ results format
# The text world's result names with their direction (None: no better side, e.g. PrivLeak is best near 0), written
# into results.json as `metrics_info` in the image side's shape, so `erasekit report` highlights and arrows them.
TEXT_METRICS: dict[str, tuple[bool | None, str]] = {
    "verbmem_f": (False, "ROUGE-L F1 of continuations of forget-book prefixes (verbatim memorisation)"),
    "knowmem_f": (False, "ROUGE-L F1 of answers to forget-fact questions (knowledge memorisation)"),
    "knowmem_r": (True, "ROUGE-L F1 of answers to retain-fact questions (utility preservation)"),
    "qa_acc_forget": (False, "exact-match QA accuracy on forget facts"),
    "qa_acc_retain": (True, "exact-match QA accuracy on retain facts"),
    "privleak": (None, "MUSE PrivLeak, percent: 0 = like the retrained model, -100 = under-, > 0 = over-unlearning"),
    "mink_auc": (None, "MUSE forget_holdout_Min-40% AUC (holdout = positive class)"),
    "ref_agree_f": (True, "forget questions answered as the retrained model answers them"),
    "ref_gap_f": (None, "NLL/char(model) - NLL/char(retrained) on forget texts, nats (0 = like the retrained)"),
    "ref_absgap_f": (False, "mean |per-text gap| to the retrained model on forget texts, nats"),
    "ref_gap_r": (None, "the signed gap to the retrained model on retain texts, nats"),
    "edit_seconds": (False, "wall time of the unlearning run, seconds"),
}
TEXT_TARGET = "forget-split"  # the results' single "target": the forget request


def text_metrics_info(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{name: {"higher_is_better", "help", "metric"}} as the image side's `erasekit.metrics.metrics_info`."""
    out = {}
    for n in names:
        h, text = TEXT_METRICS.get(n, (None, "text-world measurement"))
        out[n] = {"higher_is_better": h, "help": text, "metric": "cost" if n.endswith("_seconds") else "text"}
    return out


def median_spread(values: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Per key present in every dict: (median, [min, max]) over the dicts (one per seed); non-numbers are skipped."""
    if not values:
        raise InvalidValueError("no runs to aggregate")
    keys = [k for k in values[0] if all(isinstance(v.get(k), (int, float)) and not isinstance(v.get(k), bool)
                                        for v in values)]
    med = {k: float(np.median([v[k] for v in values])) for k in keys}
    spread = {k: [float(min(v[k] for v in values)), float(max(v[k] for v in values))] for k in keys}
    return med, spread


def text_results(variants: dict[str, dict[str, Any]], *, model: str, world_sha256: str,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json in the image side's shape (`variants` -> {"mean", "metrics": {target: ...}, "cost"}, `targets`,
    `metrics_info`, `provenance`), rendered by `erasekit report` and `report.markdown.results_table`.
    `variants[name]` holds "seeds" ({seed: metrics}, one or more runs) and optionally "attacks"; "mean" is the MEDIAN
    over the seeds (the report's aggregate column; `provenance.aggregate` says so), "spread" its [min, max]."""
    import platform

    from .. import __version__

    out_variants = {}
    for name, v in variants.items():
        runs = list(v["seeds"].values())
        med, spread = median_spread(runs)
        cost = {k: med.pop(k) for k in list(med) if k.endswith("_seconds")}
        spread = {k: s for k, s in spread.items() if k in med}
        entry = {"mean": med, "metrics": {TEXT_TARGET: med}, "cost": cost, "seeds": v["seeds"],
                 "spread": spread if len(runs) > 1 else {}}
        for k in ("spec", "attacks", "sixway"):
            if k in v:
                entry[k] = v[k]
        out_variants[name] = entry
    names = sorted({k for v in out_variants.values() for k in list(v["mean"]) + list(v["cost"])})
    return {"format": "erasekit.text.results/2", "modality": "text", "targets": [TEXT_TARGET],
            "variants": out_variants, "metrics_info": text_metrics_info(names),
            "provenance": {"erasekit_version": __version__, "model": model, "world_sha256": world_sha256,
                           "aggregate": "median over seeds (spread: min and max)", "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "python": platform.python_version(),
                           **(extra or {})}}


RUN_ATTACKS = ("in-context", "step-by-step")  # `run_methods(attacks=...)`: attacks without a budget


def _fixed_attacks(model: Any, tokenizer: Any, world: Any, attacks: Sequence[str]) -> dict[str, Any]:
    """The budget-free attacks on one model: {"in-context": {qa_acc, qa_acc_in_context}, "step-by-step": summary}."""
    out: dict[str, Any] = {}
    if "in-context" in attacks:
        from .attacks import in_context

        out["in-context"] = in_context(model, tokenizer, world.qa("forget"))
    if "step-by-step" in attacks:
        from .reasoning_attack import step_by_step

        res = step_by_step(model, tokenizer, world)
        out["step-by-step"] = {split: {k: v for k, v in res[split].items()} for split in ("forget", "retain")
                               if split in res}
    return out


def run_methods(model: Any, tokenizer: Any, world: Any, specs: Sequence[tuple[str, str, dict[str, Any]]],
                seeds: Sequence[int], reference: tuple[Any, Any] | None = None, relearn_budgets: Sequence[int] = (),
                attacks: Sequence[str] = (), scalability: Sequence[int] = (), sustainability: bool = False,
                threads: int = 1, log: Callable[[str], None] | None = None,
                ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The MUSE table over several seeds: for each (label, method, options) and seed, unlearn the whole forget split
    (the seed sets the method's batch order), evaluate (`evaluate_lm`; with `reference` = (retrained model,
    tokenizer) also PrivLeak and `restor.reference_distance`), and with `relearn_budgets` run the relearning attack
    (`attacks.relearn`, same seed) on the unlearned model; `attacks` (of RUN_ATTACKS) adds the in-context and
    step-by-step attacks. MUSE's last two ways, per method with the first seed: `scalability` (forget-set sizes in
    entities, `scalability_runs`) and `sustainability` (one request per forget entity in sequence,
    `sustainability_runs`), under variants[label]["sixway"]. The base model (and the reference) are evaluated once
    (deterministic, greedy); the
    reference's relearning curve is run per seed (the seed picks the entities shown). Returns (variants for
    `text_results`, per-sample rows); attack results are under variants[label]["attacks"][kind][seed]."""
    import time

    from .unlearn import unlearn

    bad = sorted(set(attacks) - set(RUN_ATTACKS))
    if bad:
        raise InvalidValueError(f"unknown attack(s) {bad}; choose from {', '.join(RUN_ATTACKS)}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InvalidValueError(f"seeds must be distinct integers, at least one, got {list(seeds)}")
    for label, _, opts in specs:
        if "seed" in opts or "threads" in opts:
            raise InvalidValueError(f"{label}: give seeds with --seeds and threads with --threads, not as options")
    say = log or (lambda s: None)
    auc_ret = None
    if reference is not None:
        auc_ret = mink_auc(reference[0], reference[1], *privleak_texts(world))
    forget, retain = world.forget_request()
    variants: dict[str, dict[str, Any]] = {}
    samples: list[dict[str, Any]] = []

    def measure(label: str, seed: int | None) -> dict[str, float]:
        met, rows = evaluate_lm(model, tokenizer, world, auc_ret)
        if reference is not None:
            from .restor import reference_distance

            met.update(reference_distance(model, tokenizer, reference[0], reference[1], world))
        samples.extend({"variant": label, "seed": seed, "metric": k, **r} for k, rs in rows.items() for r in rs)
        return met

    refs = [("base", model, tokenizer)] + ([("retrained", *reference)] if reference is not None else [])
    for label, m, t in refs:
        met, rows = evaluate_lm(m, t, world, auc_ret)
        samples.extend({"variant": label, "seed": None, "metric": k, **r} for k, rs in rows.items() for r in rs)
        if label == "base" and reference is not None:
            from .restor import reference_distance

            met.update(reference_distance(m, t, reference[0], reference[1], world))
        variants[label] = {"seeds": {"-": met}}
        fixed = _fixed_attacks(m, t, world, attacks)
        if fixed:
            variants[label]["attacks"] = {k: {"-": v} for k, v in fixed.items()}
        if relearn_budgets and label == "retrained":  # the baseline: what the shown texts teach a model that never
            from .attacks import RelearnConfig, relearn  # saw the forget split, for each seed's choice of entities

            variants[label].setdefault("attacks", {})["relearn"] = {str(s): relearn(m, t, world, RelearnConfig(
                budgets=tuple(relearn_budgets), seed=s, threads=threads)) for s in seeds}
        say(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in met.items()))
    for label, method, opts in specs:
        entry: dict[str, Any] = {"spec": {"method": method, "options": opts}, "seeds": {}}
        for seed in seeds:
            t0 = time.perf_counter()
            edit = unlearn(model, tokenizer, method, forget, retain, forget_names=["forget-split"], seed=seed,
                           threads=threads, **opts)
            secs = time.perf_counter() - t0
            torch.set_num_threads(threads)
            with edit.applied(model):
                met = measure(label, seed)
                met["edit_seconds"] = round(secs, 2)
                if relearn_budgets:
                    from .attacks import RelearnConfig, relearn

                    res = relearn(model, tokenizer, world, RelearnConfig(budgets=tuple(relearn_budgets), seed=seed,
                                                                         threads=threads))
                    entry.setdefault("attacks", {}).setdefault("relearn", {})[str(seed)] = res
                for k, v in _fixed_attacks(model, tokenizer, world, attacks).items():
                    entry.setdefault("attacks", {}).setdefault(k, {})[str(seed)] = v
            entry["seeds"][str(seed)] = met
            if seed == seeds[0] and (scalability or sustainability):
                six: dict[str, Any] = {"seed": seed}
                if scalability:
                    six["scalability"] = scalability_runs(model, tokenizer, world, method, scalability, seed=seed,
                                                          threads=threads, **opts)
                if sustainability:
                    six["sustainability"] = sustainability_runs(model, tokenizer, world, method, seed=seed,
                                                                threads=threads, **opts)
                entry["sixway"] = six
            say(f"{label} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in met.items()))
        variants[label] = entry
    return variants, samples


def median_curve(curves: Sequence[Sequence[dict[str, Any]]], x: str = "steps") -> list[dict[str, Any]]:
    """Budget curves of several seeds (each a list of {x: budget, metric: value}) -> one list with, per budget
    present in every curve, the median of each metric and its [min, max] under "<metric>_range"."""
    if not curves:
        raise InvalidValueError("no curves to aggregate")
    common = sorted(set.intersection(*({row[x] for row in c} for c in curves)))
    out = []
    for b in common:
        rows = [next(r for r in c if r[x] == b) for c in curves]
        med, spread = median_spread([{k: v for k, v in r.items() if k != x} for r in rows])
        out.append({x: b, **med, **{f"{k}_range": s for k, s in spread.items()}, "n": len(rows)})
    return out
