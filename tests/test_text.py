"""erasekit.text: corpus, tokenizer, unlearning edits, MUSE metrics, errors (tiny random GPT-2; no real training)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from erasekit.edits import Edit
from erasekit.errors import ErasekitError, InvalidValueError, UnknownNameError
from erasekit.text import muse
from erasekit.testing import small_text_world_config, tiny_text_lm
from erasekit.text.world import TextWorldConfig, build_world

SMALL = small_text_world_config()


@pytest.fixture(scope="module")
def world():
    return build_world(SMALL)


@pytest.fixture(scope="module")
def tiny_lm(world):
    """A random 1-layer GPT-2 with a BPE tokenizer trained on the small world (plumbing only)."""
    return tiny_text_lm(world)


# ------------------------------------------------------------------------------------------------ corpus
def test_world_is_deterministic_and_seeded():
    a, b = build_world(SMALL), build_world(SMALL)
    assert a.content_sha256() == b.content_sha256() and a.manifest() == b.manifest()
    assert build_world(dataclasses.replace(SMALL, seed=1)).content_sha256() != a.content_sha256()


def test_splits_are_disjoint_and_frequencies_controlled(world):
    subjects = {s: {d.subject for d in world.docs(s)} for s in ("forget", "retain", "holdout")}
    assert subjects["forget"] and subjects["retain"] and subjects["holdout"]
    assert not (subjects["forget"] & subjects["retain"]) and not (subjects["forget"] & subjects["holdout"])
    assert not (subjects["retain"] & subjects["holdout"])
    retrain = set(world.training_texts(include_forget=False))
    assert not retrain & {d.text for d in world.docs("forget")}
    assert not set(world.training_texts()) & {d.text for d in world.docs("holdout")}
    for e, split in world.entity_split.items():  # every fact mentioned exactly `frequency` times in its docs
        if split == "forget":
            assert world.facts_of(e)[0].frequency >= SMALL.forget_min_frequency
        text = "\n".join(d.text for d in world.documents if d.subject == e)
        for f in world.facts_of(e):
            assert text.count(f.answer) >= f.frequency
    man = world.manifest()
    assert man["content_sha256"] == world.content_sha256() and man["facts"] == len(world.facts)


def test_world_save_load_roundtrip(tmp_path, world):
    from erasekit.text.world import load_world

    world.save(tmp_path)
    assert load_world(tmp_path).content_sha256() == world.content_sha256()
    man = json.loads((tmp_path / "manifest.json").read_text())
    man["config"]["seed"] = 5
    (tmp_path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ErasekitError, match="sha256"):
        load_world(tmp_path)


def test_tokenizer_roundtrip(world, tiny_lm):
    _, tok = tiny_lm
    for d in world.documents[:20]:
        assert tok.decode(tok(d.text, add_special_tokens=False)["input_ids"]) == d.text


# ------------------------------------------------------------------------------------------------ errors
def test_clear_errors(tmp_path, world, tiny_lm):
    from erasekit.text.train import load_lm
    from erasekit.text.unlearn import unlearn

    with pytest.raises(UnknownNameError, match="Nobody"):
        world.facts_of("Nobody")
    with pytest.raises(UnknownNameError, match="trained text-world name"):
        world.forget_request(entities=["Nobody"])
    with pytest.raises(InvalidValueError, match="empty forget set"):
        world.forget_request(entities=[], books=[])
    model, tok = tiny_lm
    with pytest.raises(InvalidValueError, match="empty forget set"):
        unlearn(model, tok, "ga", forget=[], steps=1)
    with pytest.raises(InvalidValueError, match="needs retain texts"):
        unlearn(model, tok, "ga_gdr", forget=["a"], retain=[], steps=1)
    with pytest.raises(UnknownNameError, match="npo"):
        unlearn(model, tok, "npoo", forget=["a"])
    with pytest.raises(InvalidValueError, match="no option"):
        unlearn(model, tok, "ga", forget=["a"], bogus=1)
    with pytest.raises(ErasekitError, match="not a causal-LM folder"):
        load_lm(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with pytest.raises(ErasekitError, match="not a loadable causal LM"):
        load_lm(tmp_path)
    with pytest.raises(InvalidValueError, match="forget split is empty"):
        TextWorldConfig(n_forget_entities=0, n_forget_books=0)


# ------------------------------------------------------------------------------------------------ unlearning
METHODS = [("ga", {}), ("ga_gdr", {}), ("ga_klr", {}), ("npo", {}), ("npo_gdr", {}), ("npo_klr", {}),
           ("task_vector", {}), ("whp", {"reinforce_steps": 1})]


@pytest.mark.parametrize("method,extra", METHODS, ids=[m for m, _ in METHODS])
def test_unlearning_step_changes_weights_and_edit_reverts(tmp_path, world, tiny_lm, method, extra):
    from erasekit.text.unlearn import unlearn

    model, tok = tiny_lm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    forget, retain = world.forget_request()
    edit = unlearn(model, tok, method, forget, retain, steps=1, batch_size=2, lr=1e-2, forget_names=["x"], **extra)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the model is left unchanged
    assert edit.method == method and edit.names and edit.manifest["modality"] == "text"
    edit.save(tmp_path / "e.safetensors")
    loaded = Edit.load(tmp_path / "e.safetensors", model)
    with loaded.applied(model):
        assert any(not torch.equal(model.get_parameter(n), before[n]) for n in loaded.names)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # bit-exact revert


def test_npo_loss_matches_hand_value():
    from erasekit.text.unlearn.npo import npo_loss

    z = torch.zeros(3)
    assert float(npo_loss(z, z, 0.1)) == pytest.approx(2 * math.log(2) / 0.1)
    # lower likelihood than the reference -> smaller loss; the loss is bounded below by 0
    assert 0 < float(npo_loss(torch.full((3,), -50.0), z, 0.1)) < float(npo_loss(z, z, 0.1))


def test_ga_lowers_forget_likelihood(world, tiny_lm):
    from erasekit.text.train import batch_tensors, lm_loss
    from erasekit.text.unlearn import unlearn

    model, tok = tiny_lm
    forget, _ = world.forget_request()
    batch = batch_tensors(tok, forget[:4], 128)
    with torch.no_grad():
        base = float(lm_loss(model, *batch))
    edit = unlearn(model, tok, "ga", forget[:4], steps=3, batch_size=4, lr=1e-2)
    with edit.applied(model), torch.no_grad():
        assert float(lm_loss(model, *batch)) > base


# ------------------------------------------------------------------------------------------------ metrics
def test_metric_functions_on_hand_made_inputs():
    assert muse.rouge_l(["the cat sat"], ["the cat sat"]) == [1.0]
    assert muse.rouge_l(["dog"], ["the cat sat"]) == [0.0]
    assert muse.rouge_l(["a b c d"], ["a c d e"])[0] == pytest.approx(0.75)  # LCS 3 of 4 and 4
    assert muse.auc([3, 4], [1, 2]) == 1.0 and muse.auc([1], [1]) == 0.5 and muse.auc([1, 2], [3, 4]) == 0.0
    assert muse.auc([1, 3], [2]) == 0.5
    assert muse.min_k_scores([[-1, -2, -3, -4, -5]], 0.4) == [pytest.approx(-4.5)]
    assert muse.min_k_scores([[-1.0]], 0.4) == [-1.0]  # at least one token
    assert muse.privleak(0.75, 0.5) == pytest.approx(50.0) and muse.privleak(0.5, 0.5) == 0.0
    with pytest.raises(InvalidValueError):
        muse.auc([], [1])
    with pytest.raises(InvalidValueError):
        muse.auc([float("nan")], [1])
    assert muse._answer(" Velmora.\nQuestion: x") == "Velmora"


def test_evaluate_lm_plumbing_and_results_file(tmp_path, world, tiny_lm):
    model, tok = tiny_lm
    metrics, rows = muse.evaluate_lm(model, tok, world, auc_retrained=0.5)
    assert set(metrics) >= {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "qa_acc_forget"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert len(rows["knowmem_f"]) == len(world.qa("forget"))
    muse.write_results(tmp_path, {"metrics": metrics}, [r for rs in rows.values() for r in rs])
    assert json.loads((tmp_path / "results.json").read_text())["metrics"] == metrics
    with pytest.raises(InvalidValueError, match="non-finite"):
        muse.write_results(tmp_path, {"x": float("nan")})


def test_train_resumes_and_loads_with_auto_classes(tmp_path, world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from erasekit.text.train import TrainConfig, train_lm

    texts = world.training_texts()[:8]
    cfg = TrainConfig(vocab_size=320, n_embd=16, n_layer=1, n_head=2, n_positions=128, steps=2, batch_size=4,
                      save_every=1, threads=1)
    train_lm(texts, tmp_path, cfg)
    info = train_lm(texts, tmp_path, dataclasses.replace(cfg, steps=3))  # resumes from the step-2 checkpoint
    assert info["steps_done"] == 3 and len(info) > 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert model.dtype == torch.float16 and tok.decode(tok("Velmora")["input_ids"]) == "Velmora"


def test_cli_world_build_refuses_overwrite(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main

    r = CliRunner().invoke(main, ["text", "world", "build", "--out", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "w" / "manifest.json").read_text())["content_sha256"] == \
        build_world().content_sha256()
    r = CliRunner().invoke(main, ["text", "world", "build", "--out", str(tmp_path / "w")])
    assert r.exit_code != 0 and "overwrite" in r.output


# ------------------------------------------------------------------------------------------------ attacks
def test_attacks_plumbing_leave_weights_unchanged(world, tiny_lm):
    from erasekit.text.attacks import RelearnConfig, fact_statement, in_context, relearn

    model, tok = tiny_lm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = relearn(model, tok, world, RelearnConfig(budgets=(0, 1), batch_size=2))
    assert [c["steps"] for c in res["curve"]] == [0, 1] and set(res["shown"]).isdisjoint(res["unseen"])
    assert res["shown"] and res["unseen"]
    facts = world.qa("forget")[:3]
    r = in_context(model, tok, facts)
    assert set(r) == {"qa_acc", "qa_acc_in_context"}
    assert fact_statement(facts[0]).endswith(facts[0].answer + ".")
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(InvalidValueError, match="shown_fraction"):
        RelearnConfig(shown_fraction=1.0)


# ------------------------------------------------------------------------------------------------ shipped model + CLI
def test_shipped_models_load_with_auto_classes_and_match_their_world():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from erasekit.text.models import assets_dir, resolve_world

    for name in ("base", "retrained"):
        folder = assets_dir() / name
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert model.dtype == torch.float16 and model.config.model_type == "gpt2" and len(tok) == 768
        info = json.loads((folder / "erasekit_text.json").read_text())
        assert info["include_forget"] == (name == "base")
    man = json.loads((assets_dir() / "world_manifest.json").read_text())
    assert resolve_world(None, "textworld").content_sha256() == man["content_sha256"] == build_world().content_sha256()


def test_cli_unlearn_writes_an_edit_of_the_shipped_model(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main
    from erasekit.text.models import load_text_model

    out = tmp_path / "e.safetensors"
    r = CliRunner().invoke(main, ["text", "unlearn", "--method", "npo", "--entity", "Felix Orme", "-o", "steps=1",
                                  "-o", "batch_size=2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    model, _, _ = load_text_model("textworld")
    edit = Edit.load(out, model)  # base hashes match the shipped weights
    assert edit.method == "npo" and edit.manifest["erase"] == ["Felix Orme"]
    r = CliRunner().invoke(main, ["text", "unlearn", "--method", "npo", "--entity", "Felix Ormee", "--out",
                                  str(tmp_path / "x.safetensors")])
    assert r.exit_code != 0 and "Did you mean: 'Felix Orme'" in r.output
    r = CliRunner().invoke(main, ["text", "eval", "--model", str(tmp_path), "--out", str(tmp_path / "ev")])
    assert r.exit_code != 0 and "not a causal-LM folder" in r.output
