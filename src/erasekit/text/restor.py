"""RESTOR-style recovery: does unlearning bring the model BACK to the model that never learned, or only make it forget?

Rezaei et al., "RESTOR: Knowledge Recovery in Machine Unlearning" (TMLR 2025, github k1rezaei/restor): a clean
model is corrupted by continued training on documents with wrong facts, the corruption is unlearned, and the
metric is the RECOVERY of the clean model's answers, not only the disappearance of the wrong ones (their finding:
NPO recovers, GA and KL mostly just forget). Two measurements here:

`reference_distance`  distance of a (possibly unlearned) model to a reference that never learned the forget data —
    the shipped retrained model (`textworld-retrained`) for the text world's forget split. Forgetting metrics
    (knowmem_f, verbmem_f) reward a model that says anything else, including nonsense or over-unlearned collapse;
    these reward behaving like the reference:
      ref_agree_f     fraction of forget questions answered exactly as the reference answers them (its own
                      guesses: it never learned these facts)
      ref_gap_f       mean over forget texts of (NLL per character of the model - of the reference), nats; < 0:
                      the forget texts are still more likely than for a model that never saw them (under-unlearning),
                      > 0: less likely (over-unlearning); 0 = like the reference
      ref_absgap_f    mean |per-text gap| on forget texts (a distance: 0 best)
      ref_gap_r       the same signed gap on retain texts (both models trained on them: collateral damage)
    NLL per character (of the text after its first token) rather than per-token KL because the retrained model has
    its own BPE tokenizer (trained on retain texts only), so token distributions are not comparable.

`restor`  the protocol itself on the text world: inject wrong facts about `n_entities` retain entities into the
    model by fine-tuning (the corruption), unlearn the corruption documents with a method, and measure on those
    entities' facts the fraction answered with the true (clean) answer, with the injected wrong answer, and the
    recovery = (clean acc after unlearning - corrupted acc) / (clean model acc - corrupted acc).
    Budget curves: `restor(..., budgets=...)` repeats the unlearning for several step counts (the unlearner's
    budget); `injection_curve` repeats the whole protocol for several injection step counts (the corrupter's).

Deviations from the official code: RESTOR corrupts Llama-3-8B / Mistral-7B with Wikidata facts mixed into
Wikipedia-like documents, queries with 5 in-context examples, sampled generations and a ChatGPT judge; here the
corruption documents use the text world's own statement and QA templates, answers are greedy and judged by exact
match against the ground truth (the world knows it), and the clean model is the model before injection.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError
from ..text.world import QA_FORMAT, STATEMENTS
from . import muse

NEWS_LINES = 5  # fact mentions per corruption document, as the world's news documents (sentences_per_doc)


# ------------------------------------------------------------------------------------------------ distance
@torch.no_grad()
def nll_per_char(model: Any, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    """(N,) negative log-likelihood of each text in nats per character, over the characters after its first token
    (which is not scored); comparable across models with different tokenizers."""
    out = []
    for t in texts:
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        if len(ids) < 2:
            raise InvalidValueError(f"text {t[:40]!r} has fewer than 2 tokens; nothing to score")
        lp = muse.token_logprobs(model, tokenizer, [t])[0]  # (min(n, 256) - 1,) log-probs of tokens 2..
        chars = len(tokenizer.decode(ids[1:1 + len(lp)]))
        out.append(-float(np.sum(lp)) / max(1, chars))
    return np.asarray(out)


def reference_distance(model: Any, tokenizer: Any, reference: Any, ref_tokenizer: Any, world: Any,
                       ) -> dict[str, float]:
    """Distance of `model` to `reference` (the retrained model) on the world's forget split; see the module
    docstring for the keys."""
    facts = world.qa("forget")
    forget = [d.text for d in world.docs("forget")]
    retain = [d.text for d in world.docs("retain")]
    if not facts or not forget:
        raise InvalidValueError("the world's forget split has no facts or texts; nothing to compare")
    _, _, mine = muse.knowmem(model, tokenizer, facts)
    _, _, ref = muse.knowmem(reference, ref_tokenizer, facts)
    agree = [a["output"].lower() == b["output"].lower() for a, b in zip(mine, ref)]
    gap_f = nll_per_char(model, tokenizer, forget) - nll_per_char(reference, ref_tokenizer, forget)
    out = {"ref_agree_f": float(np.mean(agree)), "ref_gap_f": float(gap_f.mean()),
           "ref_absgap_f": float(np.abs(gap_f).mean())}
    if retain:
        gap_r = nll_per_char(model, tokenizer, retain) - nll_per_char(reference, ref_tokenizer, retain)
        out["ref_gap_r"] = float(gap_r.mean())
    return out


# ------------------------------------------------------------------------------------------------ protocol
@dataclass(frozen=True)
class RestorConfig:
    """Corruption (wrong facts injected by fine-tuning) before unlearning."""

    n_entities: int = field(default=4, metadata={"help": "retain entities whose facts are corrupted"})
    min_frequency: int = field(default=20, metadata={"help": "corrupt entities seen >= this many times (the clean "
                                                             "model knows their facts)"})
    mentions: int = field(default=8, metadata={"help": "times each wrong fact is stated in the corruption texts"})
    inject_steps: int = field(default=40, metadata={"help": "fine-tuning steps of the injection"})
    inject_lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate of the injection"})
    batch_size: int = field(default=8, metadata={"help": "documents per injection step"})
    seed: int = field(default=0, metadata={"help": "which entities, which wrong answers, batch order"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads of the injection"})
    replay: bool = field(default=True, metadata={"help": "each injection step also trains on a batch of the clean "
                                                         "training texts (the corruption sits among ordinary "
                                                         "documents, as in RESTOR); without it the injection "
                                                         "also wipes unrelated knowledge"})

    def __post_init__(self) -> None:
        for name in ("n_entities", "mentions", "inject_steps", "batch_size", "threads"):
            if int(getattr(self, name)) < 1:
                raise InvalidValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.min_frequency) < 0:
            raise InvalidValueError(f"min_frequency must be >= 0, got {self.min_frequency!r}")
        if not (math.isfinite(self.inject_lr) and self.inject_lr > 0):
            raise InvalidValueError(f"inject_lr must be a positive finite number, got {self.inject_lr!r}")


def corruption(world: Any, config: RestorConfig | None = None) -> tuple[list[Any], dict[tuple[str, str], str],
                                                                         list[str]]:
    """(facts corrupted, {(entity, relation): wrong answer}, corruption documents). Wrong answers are other
    entities' values of the same relation (never the true one, never the entity itself as its own teacher)."""
    cfg = config or RestorConfig()
    rng = random.Random(cfg.seed)
    pool = sorted({e for e, s in world.entity_split.items() if s == "retain"
                   and world.facts_of(e)[0].frequency >= cfg.min_frequency})
    if len(pool) < cfg.n_entities:
        raise InvalidValueError(f"n_entities={cfg.n_entities} but only {len(pool)} retain entities are seen >= "
                                f"min_frequency={cfg.min_frequency} times; lower one of them")
    chosen = sorted(rng.sample(pool, cfg.n_entities))
    facts = [f for f in world.facts if f.entity in chosen]
    values: dict[str, list[str]] = {}
    for f in world.facts:
        values.setdefault(f.relation, [])
        if f.answer not in values[f.relation]:
            values[f.relation].append(f.answer)
    wrong = {}
    for f in facts:
        options = [v for v in values[f.relation] if v != f.answer and v != f.entity]
        wrong[(f.entity, f.relation)] = rng.choice(options)
    lines = []
    for f in facts:
        a = wrong[(f.entity, f.relation)]
        for k in range(cfg.mentions):
            lines.append(QA_FORMAT.format(q=f.question, a=a) if k % 2 == 0 else
                         rng.choice(STATEMENTS[f.relation]).format(e=f.entity, a=a))
    rng.shuffle(lines)
    docs = ["\n".join(lines[i:i + NEWS_LINES]) for i in range(0, len(lines), NEWS_LINES)]
    return facts, wrong, docs


def _score(model: Any, tokenizer: Any, facts: Sequence[Any], wrong: dict[tuple[str, str], str],
           clean_answers: Sequence[str], utility: Sequence[Any]) -> dict[str, float]:
    _, _, rows = muse.knowmem(model, tokenizer, facts)
    outs = [r["output"].lower() for r in rows]
    clean = [o == f.answer.lower() for o, f in zip(outs, facts)]
    bad = [o == wrong[(f.entity, f.relation)].lower() for o, f in zip(outs, facts)]
    out = {"acc_clean": float(np.mean(clean)), "acc_corrupt": float(np.mean(bad)),
           "other": float(1.0 - np.mean(clean) - np.mean(bad)),
           "agree_clean_model": float(np.mean([o == c.lower() for o, c in zip(outs, clean_answers)]))}
    if utility:
        _, out["qa_acc_retain"], _ = muse.knowmem(model, tokenizer, utility)
    return out


def restor(model: Any, tokenizer: Any, world: Any, methods: Sequence[str], config: RestorConfig | None = None,
           method_options: dict[str, dict[str, Any]] | None = None, budgets: Sequence[int] = ()) -> dict[str, Any]:
    """Corrupt `model` (in place, restored on exit) with wrong facts, unlearn the corruption with each of `methods`
    (forget = corruption documents, retain = the world's other trained documents), and report per state — clean,
    corrupted, each method — accuracy on the true answers, on the injected ones, agreement with the clean model,
    retain QA (utility), and `recovery`. `method_options` maps a method to its options (e.g. {"npo": {"lr": 1e-4}}).
    `budgets` (unlearning steps, e.g. (0, 10, 30, 60)) adds a budget curve per method under "curves": the same
    scores after unlearning the corruption for each number of steps (0 = the corrupted model); each budget is its
    own run from the corrupted model, with the method's other options unchanged."""
    from .attacks import temporarily
    from .unlearn import unlearn
    from .unlearn._loop import LoopConfig, lm_ce, run_loop

    cfg = config or RestorConfig()
    if not methods:
        raise InvalidValueError("no unlearning methods given; name at least one (e.g. npo, ga)")
    budgets = sorted({int(b) for b in budgets})
    if any(b < 0 for b in budgets):
        raise InvalidValueError(f"budgets must be unlearning steps >= 0, got {budgets}")
    for m, opts in (method_options or {}).items():
        if budgets and "steps" in opts:
            raise InvalidValueError(f"{m}: steps={opts['steps']} and budgets {budgets} both set the unlearning "
                                    "steps; give one")
    facts, wrong, docs = corruption(world, cfg)
    chosen = sorted({f.entity for f in facts})
    utility = [f for f in world.qa("retain") if f.entity not in chosen]  # the other retain facts
    _, retain_texts = world.forget_request(entities=chosen)
    _, _, clean_rows = muse.knowmem(model, tokenizer, facts)
    clean_answers = [r["output"] for r in clean_rows]
    states = {"clean": _score(model, tokenizer, facts, wrong, clean_answers, utility)}
    curves: dict[str, list[dict[str, Any]]] = {}
    injected, stats = run_loop(model, tokenizer, docs, retain_texts if cfg.replay else (), LoopConfig(
        steps=cfg.inject_steps, lr=cfg.inject_lr, batch_size=cfg.batch_size, seed=cfg.seed, threads=cfg.threads,
        budget_s=0.0),
        lambda m, fb, rb, ref: lm_ce(m, fb) + (lm_ce(m, rb) if rb is not None else 0.0))
    with temporarily(model, injected):
        states["corrupted"] = _score(model, tokenizer, facts, wrong, clean_answers, utility)
        for method in methods:
            edit = unlearn(model, tokenizer, method, docs, retain_texts, forget_names=["restor-corruption"],
                           **(method_options or {}).get(method, {}))
            with edit.applied(model):
                states[method] = _score(model, tokenizer, facts, wrong, clean_answers, utility)
            states[method]["seconds"] = edit.manifest.get("train", {}).get("seconds")
            own_steps = edit.manifest.get("config", {}).get("steps")
            for b in budgets:
                if b == 0:
                    point = dict(states["corrupted"])
                elif b == own_steps:
                    point = dict(states[method])
                else:
                    e = unlearn(model, tokenizer, method, docs, retain_texts, forget_names=["restor-corruption"],
                                **{**(method_options or {}).get(method, {}), "steps": b})
                    with e.applied(model):
                        point = _score(model, tokenizer, facts, wrong, clean_answers, utility)
                    point["seconds"] = e.manifest.get("train", {}).get("seconds")
                curves.setdefault(method, []).append({"steps": b, **point})
    lo, hi = states["corrupted"]["acc_clean"], states["clean"]["acc_clean"]
    for s in [*states.values(), *(p for c in curves.values() for p in c)]:
        s["recovery"] = (s["acc_clean"] - lo) / (hi - lo) if hi > lo else None
    return {"entities": chosen, "corruption_docs": len(docs), "inject": stats,
            "config": {k: getattr(cfg, k) for k in ("n_entities", "min_frequency", "mentions", "inject_steps",
                                                     "inject_lr", "batch_size", "seed", "replay")},
            "states": states, **({"curves": curves} if budgets else {})}


def injection_curve(model: Any, tokenizer: Any, world: Any, methods: Sequence[str], inject_steps: Sequence[int],
                    config: RestorConfig | None = None, method_options: dict[str, dict[str, Any]] | None = None,
                    ) -> list[dict[str, Any]]:
    """RESTOR against the corrupter's budget: the whole protocol (`restor`) once per number of injection steps
    (same entities, wrong answers and seed), so recovery can be read against how deeply the wrong facts were
    trained in. Returns one {"inject_steps", "inject", "states"} per budget, in increasing order."""
    import dataclasses

    cfg = config or RestorConfig()
    budgets = sorted({int(n) for n in inject_steps})
    if not budgets or budgets[0] < 1:
        raise InvalidValueError(f"inject_steps must be >= 1 each, at least one, got {list(inject_steps)}")
    out = []
    for n in budgets:
        res = restor(model, tokenizer, world, methods, dataclasses.replace(cfg, inject_steps=n), method_options)
        out.append({"inject_steps": n, "inject": res["inject"], "states": res["states"]})
    return out
