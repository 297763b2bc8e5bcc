"""Dataset provenance (erasekit.text.provenance): copyright traps and LexiMark.

Plumbing on a tiny GPT-2 trained here for a few dozen steps, and behaviour on the same model: its corpus holds traps
repeated many times and LexiMark-marked documents, so the trap test must rank the traps above never-seen controls and
LexiMark's tests must find the marked documents (both can fail).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erasekit.errors import ErasekitError, InvalidValueError, UnknownNameError
from erasekit.text.provenance import get_provenance, text_provenance
from erasekit.text.provenance import leximark as lx
from erasekit.text.provenance import traps as tp

SYLLABLES = ("ka", "lo", "mir", "tu", "zen", "vo", "ri", "sha", "pex", "dul", "quo", "nim", "bre", "yat", "fol", "gim")
TRAP_REPS = 24


def _pseudo(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(SYLLABLES) + rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(n))


def _owner_docs(n: int, seed: int) -> list[str]:
    from erasekit.text.world import _book_sentence

    rng = random.Random(seed)
    cast = ["Alva Renn", "Boris Kell", "Cora Voss"]
    return [" ".join(_book_sentence(rng, cast) for _ in range(3)) for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LM trained on text-world news + injected pseudo-word traps + LexiMark-marked documents (x10)."""
    from erasekit.text.train import TrainConfig, load_lm, train_lm, train_tokenizer
    from erasekit.text.world import build_world

    torch.set_num_threads(1)
    world = build_world()
    news = [d.text for d in world.docs("retain", "news")][:80]
    rng = random.Random(0)
    texts8 = [_pseudo(rng, 8) for _ in range(8)]
    tok0 = train_tokenizer(news + texts8, 400)
    traps = [tp.Trap(t, tuple(tok0(t, add_special_tokens=False)["input_ids"]), 8, 0.0,
                     TRAP_REPS if i < 4 else 0) for i, t in enumerate(texts8)]
    injected, placements = tp.inject_traps(news, traps, tok0, seed=0, max_tokens=150)
    owner = _owner_docs(12, 1)
    key = lx.keygen(owner, entropy=b"test")
    members, nonmembers = owner[:6], owner[6:]
    corpus = injected + lx.mark(members, key) * 10
    out = tmp_path_factory.mktemp("prov") / "lm"
    cfg = TrainConfig(vocab_size=400, n_embd=48, n_layer=2, n_head=4, n_positions=160, steps=90, batch_size=16,
                      lr=5e-3, warmup=10, threads=1, save_every=1000)
    train_lm(corpus, out, cfg)
    model, tok = load_lm(out)
    # re-tokenize the traps with the trained tokenizer (train_lm trains its own on the corpus)
    traps = [tp.Trap(t.text, tuple(tok(t.text, add_special_tokens=False)["input_ids"]), t.length, t.perplexity,
                     t.repetitions) for t in traps]
    return {"model": model, "tok": tok, "folder": out, "traps": traps, "news": news, "injected": injected,
            "placements": placements, "key": key, "members": members, "nonmembers": nonmembers}


# ------------------------------------------------------------------------------------------------------- registry
def test_registry_lists_both_methods():
    assert {"traps", "leximark"} <= set(text_provenance.names())
    assert get_provenance("traps").config_cls is tp.TrapConfig
    assert get_provenance("leximark").module is lx
    with pytest.raises(UnknownNameError):
        get_provenance("trapz")


# ------------------------------------------------------------------------------------------------------- traps
@pytest.mark.parametrize("options", [
    {"lengths": (1,)}, {"lengths": ()}, {"repetitions": (0, 4)}, {"repetitions": (4, 4)}, {"traps_per_cell": 0},
    {"traps_per_cell": 3, "buckets": 2}, {"perplexity_band": (5.0, 2.0)}, {"perplexity_band": (0.5, 2.0)},
    {"temperatures": (0.0,)}, {"jaccard_threshold": 1.5}, {"novelty_ngram": -1},
])
def test_trap_config_refuses(options):
    with pytest.raises(InvalidValueError):
        tp.TrapConfig(**options)


def test_make_traps_plumbing(trained, tmp_path):
    m, tok = trained["model"], trained["tok"]
    cfg = tp.TrapConfig(lengths=(6, 10), repetitions=(1, 3), traps_per_cell=2, perplexity_band=(1.0, 1e9),
                        temperatures=(1.5,), jaccard_threshold=0.9, novelty_ngram=0, max_batches=20)
    traps = tp.make_traps(m, tok, cfg)
    assert len(traps) == 2 * 3 * 2
    for length in (6, 10):
        roles = sorted(t.repetitions for t in traps if t.length == length)
        assert roles == [0, 0, 1, 1, 3, 3]
    for t in traps:
        assert len(t.ids) == t.length and list(t.ids) == tok(t.text, add_special_tokens=False)["input_ids"]
        assert np.isfinite(t.perplexity) and t.perplexity >= 1
    assert len({t.text for t in traps}) == len(traps)
    path = tp.save_traps(tmp_path / "t.json", traps, cfg)
    back, data = tp.load_traps(path)
    assert back == traps and data["config"]["lengths"] == [6, 10]
    with pytest.raises(ErasekitError, match="exists"):
        tp.save_traps(path, traps, cfg)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InvalidValueError, match="not a valid trap file"):
        tp.load_traps(tmp_path / "bad.json")
    with pytest.raises(InvalidValueError, match="context"):
        tp.make_traps(m, tok, tp.TrapConfig(lengths=(500,)))
    with pytest.raises(ErasekitError, match="widen"):  # an impossible band gives up with the fix
        tp.make_traps(m, tok, tp.TrapConfig(lengths=(6,), repetitions=(1,), traps_per_cell=1,
                                            perplexity_band=(1.0, 1.0001), max_batches=1))


def test_inject_counts_and_errors(trained):
    traps, injected, news = trained["traps"], trained["injected"], trained["news"]
    for i, t in enumerate(traps):
        copies = sum(doc.count(t.text) for doc in injected)
        assert copies == t.repetitions, (i, copies)
        hosts = [p["document"] for p in trained["placements"] if p["trap"] == i]
        assert len(hosts) == len(set(hosts)) == t.repetitions  # one copy per document
    assert len(injected) == len(news)
    with pytest.raises(InvalidValueError, match="empty"):
        tp.inject_traps([], traps, trained["tok"])
    with pytest.raises(InvalidValueError, match="room"):
        tp.inject_traps(news[:5], traps, trained["tok"], max_tokens=400)


def test_trap_ratio_test_is_zero_against_itself(trained):
    m, tok = trained["model"], trained["tok"]
    res = tp.detect_traps(m, tok, trained["traps"], reference=m, change_point=False)
    assert all(abs(r["score"]) < 1e-9 for r in res.rows)
    assert [c["auc"] for c in res.cells] == [0.5]


def test_traps_rank_above_controls(trained):
    """Behaviour: traps seen 24 x ~18 epochs have lower loss than never-seen controls of the same distribution."""
    res = tp.detect_traps(trained["model"], trained["tok"], trained["traps"], reference=None, change_point=False)
    (cell,) = res.cells
    assert cell["repetitions"] == TRAP_REPS
    assert cell["auc"] >= 0.9, res.rows
    assert cell["p_value"] < 0.05


# ------------------------------------------------------------------------------------------------------- leximark
def test_leximark_marking_is_keyed_and_consistent(tmp_path):
    docs = _owner_docs(8, 5)
    k1, k2 = lx.keygen(docs, entropy=b"a"), lx.keygen(docs, entropy=b"b")
    m1, m2 = lx.mark(docs, k1), lx.mark(docs, k2)
    assert m1 != docs and m1 != m2
    subs: dict[str, set[str]] = {}
    for d in docs:
        text, rows = lx.mark_text(d, k1)
        assert len(text.split()) == len(d.split())
        for r in rows:
            subs.setdefault(r["word"].lower(), set()).add(r["substitute"].lower())
            assert r["substitute"].lower() in lx.LEXICON[r["word"].lower()]
    assert subs and all(len(v) == 1 for v in subs.values())  # the same word always gets the same substitute
    text, rows = lx.mark_text("At dawn the amber lantern, the crimson river and the pale tower were hidden.",
                              lx.LexiKey(b"s" * 32, 2, {}))
    assert len(rows) == 2 and text.endswith(".")  # at most k per sentence; punctuation kept
    text, rows = lx.mark_text("Golden crown.", lx.LexiKey(b"s" * 32, 5, {}))
    assert text[0].isupper() and text.endswith(".") and len(rows) == 2
    path = k1.save(tmp_path / "k.json")
    assert lx.LexiKey.load(path) == k1
    with pytest.raises(ErasekitError, match="exists"):
        k1.save(path)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(InvalidValueError, match="not a valid LexiMark key"):
        lx.LexiKey.load(tmp_path / "bad.json")
    with pytest.raises(InvalidValueError, match="no documents"):
        lx.keygen([])
    with pytest.raises(InvalidValueError, match="lexicon"):
        lx.keygen(["Nothing here matches."])
    with pytest.raises(InvalidValueError):
        lx.LexiMarkConfig(k=0)


def test_leximark_detects_trained_documents(trained):
    """Behaviour: the model trained on the marked members prefers the true key's wording (permutation test) and
    scores the members above the held-back documents (the paper's Min-K%++ AUROC)."""
    cfg = lx.LexiMarkConfig(null_keys=19)
    res = lx.detect(trained["model"], trained["tok"], trained["key"], trained["members"], trained["nonmembers"], cfg)
    assert res.permutation_p <= 0.1 and res.permutation_z > 2, res
    assert res.auc >= 0.8 and res.p_value < 0.05
    assert res.key_auc >= 0.8
    # a key the model never saw: not significant
    other = lx.keygen(trained["members"] + trained["nonmembers"], entropy=b"other")
    res2 = lx.detect(trained["model"], trained["tok"], other, trained["members"], (), cfg)
    assert res2.permutation_p > 0.1 and res2.auc is None


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_errors_and_roundtrip(trained, tmp_path):
    from erasekit.cli import main

    run = CliRunner().invoke
    r = run(main, ["text", "provenance", "traps-make", "--lengths", "1", "--out", str(tmp_path / "t.json")])
    assert r.exit_code != 0 and "lengths must be" in r.output and "Traceback" not in r.output
    r = run(main, ["text", "provenance", "traps-detect", "--traps", str(tmp_path / "none.json"), "--model", "x"])
    assert r.exit_code != 0 and "does not exist" in r.output
    (tmp_path / "empty.jsonl").write_text("")
    r = run(main, ["text", "provenance", "leximark-mark", "--new-key", "--key", str(tmp_path / "k.json"),
                   "--file", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "m.jsonl")])
    assert r.exit_code != 0 and "no documents" in r.output
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in trained["members"]))
    r = run(main, ["text", "provenance", "leximark-mark", "--new-key", "--key", str(tmp_path / "k.json"),
                   "--file", str(docs), "--out", str(tmp_path / "m.jsonl")])
    assert r.exit_code == 0, r.output
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == len(trained["members"])
    r = run(main, ["text", "provenance", "leximark-detect", "--key", str(tmp_path / "k.json"), "--members", str(docs),
                   "--model", str(tmp_path / "no-model"), "--null-keys", "3"])
    assert r.exit_code != 0 and "not a causal-LM folder" in r.output
    r = run(main, ["text", "provenance", "leximark-detect", "--key", str(tmp_path / "k.json"), "--members", str(docs),
                   "--model", str(trained["folder"]), "--null-keys", "3", "--out", str(tmp_path / "res.json")])
    assert r.exit_code == 0 and "key-permutation p" in r.output, r.output
    assert json.loads((tmp_path / "res.json").read_text())["substitutions"] > 0
    r = run(main, ["text", "provenance", "ls"])
    assert r.exit_code == 0 and "traps" in r.output and "leximark" in r.output
    tfile = tp.save_traps(tmp_path / "traps.json", trained["traps"], tp.TrapConfig(lengths=(8,), repetitions=(24,),
                                                                                   traps_per_cell=4))
    news = tmp_path / "news.jsonl"
    news.write_text("".join(json.dumps({"text": t}) + "\n" for t in trained["news"]))
    r = run(main, ["text", "provenance", "traps-inject", "--traps", str(tfile), "--file", str(news), "--model",
                   str(trained["folder"]), "--max-tokens", "150", "--out", str(tmp_path / "pub.jsonl")])
    assert r.exit_code == 0 and "96 trap copies" in r.output, r.output
    r = run(main, ["text", "provenance", "traps-detect", "--traps", str(tfile), "--model", str(trained["folder"]),
                   "--reference", "none"])
    assert r.exit_code == 0 and "| 8 | 24 |" in r.output, r.output
