import gzip
import hashlib

import pytest

from erasekit.tokenizer import BPE_SHA256, clip_tokenizer


def test_sd1_ids_match_openai_clip_vit_large():
    tok = clip_tokenizer()
    ids = tok("a painting in the style of Van Gogh", padding="max_length", max_length=77).input_ids
    assert ids[:10] == [49406, 320, 3086, 530, 518, 1844, 539, 2451, 19697, 49407]
    assert ids[10:] == [49407] * 67
    assert len(ids) == 77 and tok.model_max_length == 77
    assert tok.pad_token_id == 49407 and tok.bos_token_id == 49406 and tok.eos_token_id == 49407


def test_vocab_size_and_round_trip():
    tok = clip_tokenizer()
    assert len(tok) == 49408
    ids = tok("Zorbo in the style of Alva Renn").input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "zorbo in the style of alva renn"


def test_truncation_at_77():
    tok = clip_tokenizer()
    ids = tok("word " * 200, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_shipped_vocab_hash_is_recorded():
    from importlib import resources

    raw = resources.files("erasekit.assets").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == BPE_SHA256
    assert gzip.decompress(raw).decode().split("\n")[0].startswith('"bpe_simple_vocab_16e6.txt#version')


def test_damaged_vocab_is_refused(monkeypatch):
    import erasekit.tokenizer as t
    from erasekit.errors import IntegrityError

    t._vocab_and_merges.cache_clear()
    monkeypatch.setattr(t, "BPE_SHA256", "0" * 64)
    with pytest.raises(IntegrityError, match="sha256"):
        t.clip_tokenizer()
    monkeypatch.undo()
    t._vocab_and_merges.cache_clear()
