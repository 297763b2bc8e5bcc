"""AMUSE dataset watermark on text (erasekit.text.provenance.amuse; issue 21): the official adaptive (N, K) choice and
multi-segment code round-trip, documents carry sub-messages in keyed synonym choices, a model that memorised the marked
documents gives the message back and one that memorised the originals does not, bad inputs fail in one line."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from erasekit.errors import InvalidValueError
from erasekit.text.marks import TextKey
from erasekit.text.provenance import amuse, get_provenance, text_provenance
from erasekit.text.world import TextWorldConfig, build_world

MESSAGE = 0xBEEF
TAIL = 6  # positions the memoriser looks up per row (longer than any synonym's tokens)


@pytest.fixture(scope="module")
def docs() -> list[str]:
    w = build_world(TextWorldConfig(sentences_per_paragraph=8, n_holdout_books=1))
    return [d.text for d in w.docs("holdout", "book")]  # 4 paragraphs of ~24 lexicon words


class Memorizer(torch.nn.Module):
    """A causal LM that memorised `texts`: +10 on the token that followed the same last `n` tokens, 0 elsewhere."""

    def __init__(self, tok, texts, n: int = 8):
        super().__init__()
        self.n, self.V, self.table = n, len(tok), {}
        for t in texts:
            ids = [tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"]
            for i in range(1, len(ids)):
                self.table[tuple(ids[max(0, i - n):i])] = ids[i]

    def forward(self, input_ids, attention_mask=None):
        """Only the last TAIL positions of each row are looked up: the candidates of a slot share their prefix, whose
        (uniform) scores cancel in every comparison the decoder makes."""
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.V)
        rows = input_ids.tolist()
        lengths = attention_mask.sum(1).tolist() if attention_mask is not None else [T] * B
        start = max(0, min(lengths) - TAIL)  # the same positions for every row
        for b in range(B):
            for t in range(start, lengths[b]):
                nxt = self.table.get(tuple(rows[b][max(0, t + 1 - self.n):t + 1]))
                if nxt is not None:
                    logits[b, t, nxt] = 10.0
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from erasekit.text.models import model_folder

    return AutoTokenizer.from_pretrained(model_folder("textworld"))


def test_registered():
    assert "amuse" in text_provenance.names()
    assert get_provenance("amuse").config_cls is amuse.AmuseConfig


def test_adaptive_choice_and_code_roundtrip():
    # official search by hand: L=16, guarantee 0.5 -> N=2, one segment of 8 bits + bitlen(C(2,1))=2 index bits
    assert amuse.choose_nk(16, 0.5) == (2, 1)
    assert amuse.choose_nk(16, 0.2) == (1, 1)  # nothing shorter than L: every sample carries the whole message
    assert amuse.choose_nk(30, 0.4) == (3, 2)
    rng = np.random.default_rng(0)
    for L, g in ((16, 0.5), (30, 0.4), (9, 0.9), (16, 0.2)):
        code = amuse.AmuseCode(L, g)
        msg = rng.integers(0, 2, L).astype(np.uint8)
        subs = code.encode(msg)
        assert all(s.shape == (code.sub_length,) for s in subs) and code.sub_length <= L + code.index_bits
        out, info = code.decode(subs * 3)
        assert (out == msg).all() and info["segments_missing"] == 0
        noisy = [s.copy() for s in subs * 5]
        noisy[0][code.index_bits:] ^= 1  # one corrupted copy is outvoted
        assert (code.decode(noisy)[0] == msg).all()
    code = amuse.AmuseCode(30, 0.4)  # 3 segments, 2 per sub-message: one sub-message misses a segment
    out, info = code.decode(code.encode(np.ones(30, np.uint8))[:1])
    assert info["segments_missing"] == 1 and (out == -1).sum() == 10
    bad = np.ones(code.sub_length, np.int8)  # index 3 of 3 sub-messages: dropped like the official decoder
    assert code.decode([bad])[1]["submessages_used"] == 0


def test_documents_carry_the_message(docs):
    key, other = amuse.keygen(MESSAGE, entropy=b"a1"), amuse.keygen(MESSAGE, entropy=b"a2")
    marked = amuse.embed_dataset(key, docs)
    assert marked != docs
    code = amuse.AmuseCode(16, 0.5)
    dec, _ = code.decode([amuse.read_text(key, d) for d in marked])
    assert (dec == key.message).all()
    wrong, _ = code.decode([amuse.read_text(other, d) for d in marked])
    assert not (wrong == key.message).all()


def test_memorising_model_gives_the_message_back(docs, tok):
    key = amuse.keygen(MESSAGE, entropy=b"a3")
    marked = amuse.embed_dataset(key, docs)
    res = amuse.detect_dataset(key, Memorizer(tok, marked), tok, marked)
    assert res.exact and res.bit_acc == 1.0 and res.decision and res.p_value < 1e-6, res.to_dict()
    assert int("".join(map(str, res.decoded.tolist())), 2) == MESSAGE
    clean = amuse.detect_dataset(key, Memorizer(tok, docs), tok, marked)  # trained on the originals only
    assert not clean.exact and not clean.decision and clean.bit_acc < 0.9, clean.to_dict()
    wrong = amuse.detect_dataset(amuse.keygen(MESSAGE, entropy=b"a4"), Memorizer(tok, marked), tok, marked)
    assert not wrong.decision and not wrong.exact


def test_bad_inputs_one_line(docs, tmp_path):
    key = amuse.keygen(entropy=b"a5")
    with pytest.raises(InvalidValueError, match="eligible words"):
        amuse.embed_dataset(key, ["The amber orchard."])
    with pytest.raises(InvalidValueError, match="no documents"):
        amuse.embed_dataset(key, [])
    with pytest.raises(InvalidValueError, match="empty"):
        amuse.embed_dataset(key, [""])
    with pytest.raises(InvalidValueError, match="does not fit"):
        amuse.keygen(1 << 16)
    with pytest.raises(InvalidValueError, match="guarantee"):
        amuse.AmuseConfig(guarantee=0.0)
    with pytest.raises(InvalidValueError, match="bits"):
        amuse.AmuseConfig(bits=0)
    from erasekit.text.marks import get_text_mark

    bb = get_text_mark("blackbox_lexical").keygen(entropy=b"x")
    with pytest.raises(InvalidValueError, match="made for text watermark 'blackbox_lexical'"):
        amuse.embed_dataset(bb, docs)
    back = TextKey.load(key.save(tmp_path / "a.key"), method="amuse")
    assert (back.message == key.message).all()
    assert amuse.embed_dataset(back, docs[:1]) == amuse.embed_dataset(key, docs[:1])


def test_cli_embed_detect_and_one_line_errors(docs, tmp_path):
    """`erasekit text provenance amuse-embed | amuse-detect`: keys are user files; a wrong key, empty input and bad
    values fail in one line; the embedded documents carry the key's sub-messages; detection reads a model."""
    import json

    from click.testing import CliRunner

    from erasekit.cli import main
    from erasekit.text.marks import get_text_mark

    run = CliRunner().invoke
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    key, out = tmp_path / "me.amusekey", tmp_path / "pub.jsonl"

    def fails(args, text):
        r = run(main, ["text", "provenance", *args])
        assert r.exit_code != 0 and text in r.output and "Traceback" not in r.output, r.output
        assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1, r.output

    embed = ["amuse-embed", "--file", str(src), "--out", str(out)]
    fails([*embed, "--key", str(key)], "does not exist")  # no key yet, no --new-key
    fails([*embed, "--key", str(key), "--message", "5"], "add --new-key")
    fails([*embed, "--key", str(key), "--new-key", "--message", str(1 << 16)], "does not fit")
    fails([*embed, "--key", str(key), "--new-key", "--bits", "0"], "bits must be")
    fails([*embed, "--key", str(key), "--new-key", "--guarantee", "nan"], "guarantee")
    (tmp_path / "empty.jsonl").write_text("")
    fails(["amuse-embed", "--key", str(key), "--new-key", "--file", str(tmp_path / "empty.jsonl"), "--out", str(out)],
          "no documents")
    (tmp_path / "short.txt").write_text("The amber orchard.")
    fails(["amuse-embed", "--key", str(key), "--new-key", "--file", str(tmp_path / "short.txt"), "--out", str(out)],
          "eligible words")
    assert not key.exists() and not out.exists()  # refused runs write nothing

    r = run(main, ["text", "provenance", *embed, "--key", str(key), "--new-key", "--message", str(MESSAGE)])
    assert r.exit_code == 0 and "4 of 4 documents marked" in r.output, r.output
    marked = [json.loads(ln)["text"] for ln in out.read_text().splitlines()]
    k = TextKey.load(key, method="amuse")
    code = amuse.AmuseCode(16, 0.5)
    assert (code.decode([amuse.read_text(k, d) for d in marked])[0] == k.message).all()
    fails([*embed, "--key", str(key)], "exists")  # outputs are never replaced without --overwrite

    gl = tmp_path / "g.key"
    assert run(main, ["text", "mark", "keygen", "--method", "greenlist", "--out", str(gl)]).exit_code == 0
    fails(["amuse-detect", "--key", str(gl), "--file", str(out), "--model", "textworld"],
          "made for text watermark 'greenlist'")
    fails(["amuse-embed", "--key", str(gl), "--file", str(src), "--out", str(tmp_path / "x.jsonl")],
          "made for text watermark 'greenlist'")
    fails(["amuse-detect", "--key", str(key), "--file", str(tmp_path / "empty.jsonl"), "--model", "textworld"],
          "no marked documents")
    fails(["amuse-detect", "--key", str(key), "--file", str(out), "--model", str(tmp_path / "no-model")],
          "not a causal-LM folder")
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": marked[0]}) + "\n")
    r = run(main, ["text", "provenance", "amuse-detect", "--key", str(key), "--file", str(one), "--model", "textworld",
                   "--out", str(tmp_path / "res.json")])
    assert r.exit_code == 0 and "bit accuracy" in r.output and "key's message 1011111011101111" in r.output, r.output
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["documents"] == 1 and 0.0 <= res["bit_acc"] <= 1.0 and 0.0 <= res["p_value"] <= 1.0
