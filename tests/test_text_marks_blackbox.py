"""Black-box lexical watermark (erasekit.text.marks.blackbox_lexical, Yang et al. 2023; issue 21): post-hoc synonym
substitutions detected by a binomial test; the right key detects marked book text, unmarked text and other keys are
not detected, the synonym attack and the CLI work, bad inputs fail in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erasekit.errors import InvalidValueError
from erasekit.text.marks import TextKey, get_text_mark, text_marks
from erasekit.text.marks.blackbox_lexical import Lexicon, synonym_attack, word_bit, world_lexicon
from erasekit.text.world import TextWorldConfig, build_world


@pytest.fixture(scope="module")
def books() -> list[str]:
    """Book-style texts of the text world (grammar prose: many lexicon words), two paragraphs each."""
    w = build_world(TextWorldConfig(seed=3))
    paras = [d.text for d in w.documents if d.kind == "book"]
    return [paras[i] + "\n" + paras[i + 1] for i in range(0, 16, 2)]


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    from erasekit.text.models import load_text_model

    model, tok, _ = load_text_model("textworld")
    return model, tok


def test_registered_and_configurable():
    assert "blackbox_lexical" in text_marks.names()
    wm = get_text_mark("blackbox_lexical:classes=adj,fpr=0.01")
    assert wm.config.classes == "adj" and wm.config.fpr == 0.01 and wm.posthoc


def test_right_key_detects_wrong_key_and_plain_do_not(books):
    wm = get_text_mark("blackbox_lexical")
    key, other = wm.keygen(entropy=b"k1"), wm.keygen(entropy=b"k2")
    marked = wm.embed_texts(key, books)
    assert all(m != b for m, b in zip(marked, books))
    det = wm.detect(key, marked)
    assert det.decision.all() and (det.p_value <= 1e-3).all(), det.p_value
    assert det.extra["ones"] == det.extra["words"]  # every eligible pair encodes 1 after embedding
    assert not wm.detect(other, marked).decision.any()
    assert not wm.detect(key, books).decision.any()
    # the unmarked texts' bit-1 share is a fair coin: near 1/2 over all texts
    plain = wm.detect(key, books)
    assert 0.3 < sum(plain.extra["ones"]) / sum(plain.extra["words"]) < 0.7
    # only lexicon words changed, each within its class, names and titles untouched
    lex = Lexicon(world_lexicon(), ["adj", "noun", "verb"])
    a, b = books[0].split(), marked[0].split()
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if x != y:
            xs, ys = x.strip(".,"), y.strip(".,")
            assert xs in lex.of and ys in lex.of[xs]


def test_synonym_attack_and_model_ranked_embedding(books, lm):
    model, tok = lm
    wm = get_text_mark("blackbox_lexical")
    key = wm.keygen(tok, entropy=b"k3")
    assert synonym_attack(books[:2], 0.0) == books[:2]
    marked = wm.embed_texts(key, books[:2], model=model, tokenizer=tok)
    assert wm.detect(key, marked).decision.all()
    hit = synonym_attack(marked, 1.0, seed=1)
    det = wm.detect(key, hit)
    assert not det.decision.any()  # every eligible word redrawn: the mark is gone
    half = wm.detect(key, synonym_attack(marked, 0.3, seed=1))
    assert (half.score < wm.detect(key, marked).score).all()
    ids = wm.generate(model, tok, key, ["The Crimson Lantern, chapter 2.\n"] * 2, max_new_tokens=120, seed=3)
    d = wm.detect_ids(key, ids, tokenizer=tok)
    assert sum(d.extra["ones"]) >= 0.9 * sum(d.extra["words"]) > 0


def test_bad_inputs_one_line(books):
    wm = get_text_mark("blackbox_lexical")
    key = wm.keygen(entropy=b"k4")
    for bad, msg in (([""], "empty"), ([], "no texts"), ([3], "not a string")):
        with pytest.raises(InvalidValueError, match=msg):
            wm.detect(key, bad)
    green = get_text_mark("greenlist")
    with pytest.raises(InvalidValueError, match="made for text watermark 'blackbox_lexical'"):
        green.detect_ids(key, [[1, 2, 3]])
    with pytest.raises(InvalidValueError, match="classes"):
        get_text_mark("blackbox_lexical:classes=adverb")
    with pytest.raises(InvalidValueError, match="carries no message"):
        wm.keygen(message=3)
    with pytest.raises(InvalidValueError, match="tokenizer="):
        wm.detect_ids(key, [[1, 2]])
    with pytest.raises(InvalidValueError, match="no logits processor"):
        wm.logits_processor(key)
    other = type(wm)(lexicon={"adj": ["red", "blue"], "noun": ["cat", "dog"], "verb": ["ran", "sat"]})
    with pytest.raises(InvalidValueError, match="lexicon"):
        other.detect(key, books[:1])
    assert word_bit(key.secret, "the", "amber") in (0, 1)


def test_key_file_roundtrip(tmp_path, books):
    wm = get_text_mark("blackbox_lexical")
    key = wm.keygen(entropy=b"k5")
    path = key.save(tmp_path / "bb.key")
    back = TextKey.load(path, method="blackbox_lexical")
    marked = wm.embed_texts(key, books[:1])
    assert np.allclose(wm.detect(back, marked).p_value, wm.detect(key, marked).p_value)
    from erasekit.errors import ErasekitError

    with pytest.raises(ErasekitError, match="--overwrite"):
        key.save(path)


def test_cli_posthoc_embed_detect(tmp_path, books):
    from erasekit.cli import main

    def run(*args):
        return CliRunner().invoke(main, ["text", "mark", *args])

    key, plain, out = str(tmp_path / "b.key"), tmp_path / "plain.txt", str(tmp_path / "m.jsonl")
    plain.write_text(books[0])
    assert run("keygen", "--method", "blackbox_lexical", "--out", key).exit_code == 0
    res = run("embed", "--key", key, "--file", str(plain), "--out", out)
    assert res.exit_code == 0, res.output
    res = run("detect", "--key", key, "--file", out)
    assert res.exit_code == 0 and res.output.count("MARKED") == 1, res.output
    res = run("detect", "--key", key, "--file", str(plain))
    assert res.exit_code == 0 and "not marked" in res.output, res.output
    gkey = str(tmp_path / "g.key")
    assert run("keygen", "--method", "greenlist", "--out", gkey).exit_code == 0
    res = run("embed", "--key", gkey, "--text", "the amber orchard", "--out", str(tmp_path / "x.jsonl"))
    assert res.exit_code == 2 and "post-hoc" in res.output and len(res.output.strip().splitlines()) == 1
