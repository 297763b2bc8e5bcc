"""Text world, part 2: PrivLeak's orientation (MUSE's official one), the step-by-step reasoning attack, RESTOR
(reference distance and the inject-unlearn-recover protocol). Tiny random GPT-2 for plumbing; the shipped models
only where a check is cheap (a few forward passes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erasekit.errors import InvalidValueError
from erasekit.text import muse
from erasekit.text import reasoning_attack as ra
from erasekit.text.restor import RestorConfig, corruption, nll_per_char, reference_distance, restor
from erasekit.testing import small_text_world_config, tiny_text_lm
from erasekit.text.world import FACTS, STATEMENTS, build_world

SMALL = small_text_world_config()


@pytest.fixture(scope="module")
def world():
    return build_world(SMALL)


@pytest.fixture(scope="module")
def tiny_lm(world):
    """A random 1-layer GPT-2 with a BPE tokenizer trained on the small world (plumbing only)."""
    torch.set_num_threads(1)
    return tiny_text_lm(world, context=256)


# ------------------------------------------------------------------------------------------------ PrivLeak
def official_forget_holdout_auc(forget_mink: list[float], holdout_mink: list[float]) -> float:
    """MUSE's metrics/privleak.py, re-derived: ppl = -Min-K (a positive number), y = 0 for the first split
    (forget) and 1 for the second (holdout), ROC of -ppl, trapezoidal area (sklearn roc_curve + auc)."""
    ppl = -np.asarray(forget_mink + holdout_mink, float)
    y = np.array([0] * len(forget_mink) + [1] * len(holdout_mink))
    score = -ppl
    tpr, fpr = [0.0], [0.0]
    for t in sorted(set(score), reverse=True):
        tpr.append(float(((score >= t) & (y == 1)).sum() / (y == 1).sum()))
        fpr.append(float(((score >= t) & (y == 0)).sum() / (y == 0).sum()))
    return float(np.trapezoid(tpr, fpr))


@pytest.mark.parametrize("forget,holdout", [
    ([-0.1, -0.2, -0.3], [-3.0, -2.5, -2.8]),  # memorised forget texts: the official AUC is 0
    ([-3.0, -2.9], [-0.5, -0.4, -0.6]),  # over-unlearned: forget texts less likely than never-seen ones -> 1
    ([-1.0, -2.0, -1.5, -0.7], [-1.2, -0.9, -2.2]),  # mixed, with no ties
    ([-1.0, -1.0, -2.0], [-1.0, -3.0]),  # ties count one half
])
def test_forget_holdout_auc_matches_the_official_definition(forget, holdout):
    assert muse.forget_holdout_auc(forget, holdout) == pytest.approx(official_forget_holdout_auc(forget, holdout))


def test_mink_auc_orientation_gives_negative_privleak_for_a_memorising_model(monkeypatch):
    """The bug this guards against: erasekit ranked the forget texts as the positive class, so a model that still
    memorises the forget set got PrivLeak > 0 (+63.6 in the text-world table); MUSE's target models get ~ -100."""
    fake = {"member": np.array([-0.1, -0.2, -0.1, -0.3]), "non": np.array([-2.0, -3.0, -2.5, -4.0])}
    monkeypatch.setattr(muse, "token_logprobs", lambda m, t, texts: [fake[x.split()[0]] for x in texts])
    a = muse.mink_auc(None, None, ["member a", "member b"], ["non a", "non b"])
    assert a == 0.0
    assert muse.privleak(a, 0.5) == pytest.approx(-100.0)
    assert muse.privleak(1.0, 0.5) == pytest.approx(100.0)  # over-unlearning is positive


def test_shipped_base_model_has_privleak_near_minus_100():
    from erasekit.text.models import load_text_model

    w = build_world()
    base, tok, _ = load_text_model("textworld")
    ret, rtok, _ = load_text_model("textworld-retrained")
    texts = muse.privleak_texts(w)
    a_base, a_ret = muse.mink_auc(base, tok, *texts), muse.mink_auc(ret, rtok, *texts)
    assert a_base < 0.1 < 0.2 < a_ret < 0.8  # measured: 0.0 and 0.389
    assert muse.privleak(a_base, a_ret) < -75


# ------------------------------------------------------------------------------------------------ step by step
def test_chain_prompts(world):
    f = world.qa("forget")[0]
    steps, final = ra.chain_steps(world, f, "direct", 4)
    assert steps == [] and final == f.prompt
    steps, final = ra.chain_steps(world, f, "indirect", 4)
    assert len(steps) == len(FACTS) - 1 and final == f.prompt and all(f.entity in s for s in steps)
    assert not any(s == f.prompt for s in steps)
    steps, final = ra.chain_steps(world, f, "indirect", 2)
    assert len(steps) == 2
    steps, final = ra.chain_steps(world, f, "implied", 4)
    assert "Question" not in final and final.startswith(("The", "By", f.entity)) and f.entity in final
    for r in FACTS:  # the statement cloze is a training statement cut right before the answer
        filled = STATEMENTS[r][ra.STATEMENT_TEMPLATE].format(e="X", a="ANSWER")
        assert filled.startswith(ra.statement_prompt("X", r) + " ANSWER")
    for e in world.entities:
        students = [g.entity for g in world.facts if g.relation == "teacher" and g.answer == e
                    and world.entity_split[g.entity] == "retain"]
        got = ra.chain_steps(world, world.facts_of(e)[0], "relation", 4)
        assert (got is None) == (not students)
        if got:
            assert all(any(s in p for s in students) for p in got[0])


def test_recovery_counts(world, monkeypatch):
    facts = world.qa("forget")[:4]

    def scripted(model, tok, chains):  # direct right on fact 0 only; indirect right on facts 0-2; others wrong
        out = []
        for k, (steps, final) in enumerate(chains):
            f = next(f for f in facts if f.prompt == final or final == ra.statement_prompt(f.entity, f.relation))
            i = facts.index(f)
            indirect = len(steps) > 0 and steps[0].startswith("Question")
            right = (i == 0) if not steps else (indirect and i <= 2)
            out.append((["x"] * len(steps), f.answer.upper() if right else "nope"))
        return out

    monkeypatch.setattr(ra, "run_chains", scripted)
    cfg = ra.StepByStepConfig(strategies=("indirect", "implied"), retain_min_frequency=10**6)  # no retain facts
    res = ra.step_by_step(None, None, world, cfg, facts=facts)
    t = res["forget"]
    assert t["direct"]["accuracy"] == 0.25 and t["direct"]["recovery"] == 0.0
    assert t["indirect"]["accuracy"] == 0.75 and t["indirect"]["recovered"] == 2
    assert t["indirect"]["recovery"] == pytest.approx(2 / 3)
    assert t["implied"]["accuracy"] == 0.0 and t["any"]["accuracy"] == 0.75
    assert "relation" not in t and {r["strategy"] for r in res["rows"]} == {"direct", "indirect", "implied"}


def test_step_by_step_plumbing_leaves_weights_unchanged(world, tiny_lm):
    model, tok = tiny_lm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = ra.step_by_step(model, tok, world, ra.StepByStepConfig(max_steps=2, retain_min_frequency=0))
    for split in ("forget", "retain"):
        for s in ("direct", "indirect", "implied", "any"):
            assert 0.0 <= res[split][s]["accuracy"] <= 1.0 and res[split][s]["n"] > 0
    rows = [r for r in res["rows"] if r["strategy"] == "indirect"]
    assert rows and all(len(r["steps"]) == 2 for r in rows)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("kwargs,match", [({"strategies": ("cot",)}, "cot"), ({"strategies": ()}, "strategy"),
                                          ({"max_steps": 0}, "max_steps"),
                                          ({"retain_min_frequency": -1}, "retain_min_frequency")])
def test_step_by_step_config_refuses(kwargs, match):
    with pytest.raises(InvalidValueError, match=match):
        ra.StepByStepConfig(**kwargs)


# ------------------------------------------------------------------------------------------------ RESTOR
def test_reference_distance_is_zero_to_itself_and_not_to_a_changed_model(world, tiny_lm):
    model, tok = tiny_lm
    d = reference_distance(model, tok, model, tok, world)
    assert d["ref_agree_f"] == 1.0 and d["ref_gap_f"] == 0.0 and d["ref_absgap_f"] == 0.0 and d["ref_gap_r"] == 0.0
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.transformer.wte.weight.normal_(0.0, 2.0)  # (tied with lm_head) sharp, different distributions
    d2 = reference_distance(model, tok, other, tok, world)
    assert d2["ref_absgap_f"] > 0.01 and abs(d2["ref_gap_f"]) > 0.01
    x = nll_per_char(model, tok, ["Velmora is a place. " * 3])
    assert x.shape == (1,) and np.isfinite(x).all() and x[0] > 0
    with pytest.raises(InvalidValueError, match="fewer than 2 tokens"):
        nll_per_char(model, tok, [""])


def test_corruption_injects_wrong_answers_only(world):
    cfg = RestorConfig(n_entities=2, min_frequency=0, mentions=3)
    facts, wrong, docs = corruption(world, cfg)
    assert len({f.entity for f in facts}) == 2 and len(facts) == 2 * len(FACTS)
    text = "\n".join(docs)
    for f in facts:
        w = wrong[(f.entity, f.relation)]
        assert w != f.answer and w != f.entity
    assert len(docs) == -(-len(facts) * 3 // 5)  # 3 mentions per fact, 5 mentions per document
    for f in facts:
        assert text.count(wrong[(f.entity, f.relation)]) >= 3
    assert all(world.entity_split[f.entity] == "retain" for f in facts) and text
    assert corruption(world, cfg)[2] == docs  # deterministic
    with pytest.raises(InvalidValueError, match="n_entities"):
        corruption(world, RestorConfig(n_entities=99, min_frequency=0))
    with pytest.raises(InvalidValueError, match="inject_lr"):
        RestorConfig(inject_lr=float("nan"))


def test_restor_protocol_plumbing_restores_weights(world, tiny_lm):
    model, tok = tiny_lm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = restor(model, tok, world, ["ga"], RestorConfig(n_entities=1, min_frequency=0, mentions=2,
                                                       inject_steps=2, batch_size=2, threads=1),
                 method_options={"ga": {"steps": 1, "batch_size": 2, "threads": 1}})
    assert set(res["states"]) == {"clean", "corrupted", "ga"}
    for s in res["states"].values():
        assert 0.0 <= s["acc_clean"] <= 1.0 and 0.0 <= s["acc_corrupt"] <= 1.0
        assert s["acc_clean"] + s["acc_corrupt"] + s["other"] == pytest.approx(1.0)
    assert res["states"]["clean"]["agree_clean_model"] == 1.0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(InvalidValueError, match="no unlearning methods"):
        restor(model, tok, world, [])


def test_cli_attack_refuses_method_outside_restor(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main

    r = CliRunner().invoke(main, ["text", "attack", "--kind", "step-by-step", "--method", "npo", "--out",
                                  str(tmp_path / "a")])
    assert r.exit_code != 0 and "--method is for --kind restor" in r.output
    r = CliRunner().invoke(main, ["text", "attack", "--kind", "restor", "--method", "npoo", "--out",
                                  str(tmp_path / "b")])
    assert r.exit_code != 0 and "npo" in r.output and not (tmp_path / "b" / "results.json").exists()


def test_text_attacks_registry_resolves_and_matches_the_cli():
    import importlib

    from erasekit.cli.text_cmds import attack_cmd
    from erasekit.text.attacks import TEXT_ATTACKS

    for spec in TEXT_ATTACKS.values():
        module, _, attr = spec.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
    kinds = next(p for p in attack_cmd.params if p.name == "kind").type.choices
    assert set(kinds) == set(TEXT_ATTACKS)
