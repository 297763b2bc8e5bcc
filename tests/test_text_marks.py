"""Text watermarks (erasekit.text.marks, issue 21): every method embeds through `model.generate` and detects its own
key, refuses unmarked text and other keys, fails in one line on bad input; the green list agrees with transformers'
WatermarkDetector; EXP-edit's alignment equals the official recursion and its sampling is distortion-free; attacks
and the zero-shot test behave; the `erasekit text mark` CLI round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erasekit.errors import ErasekitError, InvalidValueError
from erasekit.text.marks import TextKey, get_text_mark, sample

TOKENS = 160  # new tokens per test text (the shipped model is low-entropy: detection needs length)
# strong settings so that 4 texts of TOKENS tokens are all detected on the shipped text-world model
METHODS = {
    "greenlist": {"delta": 4.0},
    "exp_edit": {"key_length": 64, "n_runs": 19, "fpr": 0.05},
    "majority_bits": {"delta": 6.0, "fpr": 0.01},
}


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(1)
    from erasekit.text.models import load_text_model

    model, tok, _ = load_text_model("textworld")
    return model, tok


@pytest.fixture(scope="module")
def marked(lm):
    """method -> (watermark, key, other key, marked ids, unmarked ids)."""
    model, tok = lm
    clean = sample(model, tok, [""] * 4, TOKENS, seed=11)
    out = {}
    for name, opts in METHODS.items():
        wm = get_text_mark(name, **opts)
        kw = {"message": 0b10110010} if wm.multibit else {}
        key = wm.keygen(tok, entropy=name.encode(), **kw)
        other = wm.keygen(tok, entropy=b"other" + name.encode(), **kw)
        ids = wm.generate(model, tok, key, [""] * 4, max_new_tokens=TOKENS, seed=3)
        out[name] = (wm, key, other, ids, clean)
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_embed_then_detect_is_positive(marked, name):
    wm, key, _, ids, _ = marked[name]
    assert all(len(x) == TOKENS for x in ids)
    det = wm.detect_ids(key, ids)
    assert det.decision.all(), (det.p_value, det.score)
    assert (det.p_value <= wm.config.fpr).all()
    if wm.multibit:
        assert det.bit_acc.mean() >= 0.9 and any(det.extra["exact"])


@pytest.mark.parametrize("name", list(METHODS))
def test_unmarked_and_wrong_key_are_negative(marked, name):
    wm, key, other, ids, clean = marked[name]
    wrong = wm.detect_ids(other, ids)
    false_pos = int(wm.detect_ids(key, clean).decision.sum() + wrong.decision.sum())
    # exp_edit runs at fpr 0.05 here (19 null keys, to stay fast): 8 null texts give > 2 false positives with
    # probability 0.006 (binomial tail); the others run at fpr <= 0.01 and must give none
    assert false_pos <= (2 if name == "exp_edit" else 0)
    right = wm.detect_ids(key, ids, p_values=False) if name == "exp_edit" else wm.detect_ids(key, ids)
    assert wrong.score.mean() < right.score.mean()


@pytest.mark.parametrize("name", list(METHODS))
def test_bad_inputs_fail_in_one_line(lm, marked, tmp_path, name):
    model, tok = lm
    wm, key, _, _, _ = marked[name]
    with pytest.raises(InvalidValueError, match="empty"):
        wm.detect(key, [""], tok)
    with pytest.raises(InvalidValueError, match="no texts"):
        wm.detect(key, [], tok)
    from erasekit.text.train import train_tokenizer

    other_tok = train_tokenizer(["a different corpus entirely, with other merges"] * 4, 300)
    with pytest.raises(InvalidValueError, match="tokenizer"):
        wm.detect(key, ["Question: Who taught Zorbo?"], other_tok)
    other_method = next(n for n in METHODS if n != name)
    with pytest.raises(InvalidValueError, match=f"made for text watermark '{name}'"):
        get_text_mark(other_method, **METHODS[other_method]).detect(key, ["some text here"], tok)
    with pytest.raises(InvalidValueError, match="outside the key's vocabulary"):
        wm.detect_ids(key, [[1, 2, key.vocab_size + 5]])
    # the key file: round trip, no silent overwrite, not-a-key
    path = tmp_path / "k.key"
    key.save(path)
    back = TextKey.load(path, method=name)
    assert back.fingerprint() == key.fingerprint() and back.tokenizer == key.tokenizer
    with pytest.raises(ErasekitError, match="overwrite"):
        key.save(path)
    (tmp_path / "bad.key").write_bytes(b"not a key")
    with pytest.raises(InvalidValueError, match="not an erasekit text-watermark key"):
        TextKey.load(tmp_path / "bad.key")


@pytest.mark.parametrize("ignore_repeated", [False, True])
def test_greenlist_matches_transformers_detector(marked, ignore_repeated):
    """Peer check: our green lists and z / p equal transformers' WatermarkDetector on marked and unmarked text."""
    from transformers import GPT2Config, WatermarkDetector

    wm0, key, _, ids, clean = marked["greenlist"]
    wm = get_text_mark("greenlist", delta=wm0.config.delta, ignore_repeated=ignore_repeated)
    cfg = GPT2Config(vocab_size=key.vocab_size, bos_token_id=0)
    peer = WatermarkDetector(model_config=cfg, device="cpu", watermarking_config=wm.transformers_config(key),
                             ignore_repeated_ngrams=ignore_repeated)
    for batch in (ids, clean):
        ours = wm.detect_ids(key, batch)
        theirs = peer(torch.tensor(batch), return_dict=True)  # no leading BOS: every token after the first scored
        np.testing.assert_allclose(ours.extra["green"], theirs.num_green_tokens)
        np.testing.assert_allclose(ours.score, theirs.z_score, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ours.p_value, theirs.p_value, rtol=1e-6, atol=1e-12)


def test_exp_alignment_equals_official_recursion():
    """The vectorised DP equals the official levenshtein recursion (demo/levenshtein.pyx) for gamma 0 and 0.4."""
    from erasekit.text.marks.exp_edit import alignment_cost

    def official(cost, gamma):
        m, k = cost.shape
        A = np.zeros((m + 1, k + 1))
        for i in range(m + 1):
            for j in range(k + 1):
                if i == 0:
                    A[i][j] = j * gamma
                elif j == 0:
                    A[i][j] = i * gamma
                else:
                    A[i][j] = min(A[i - 1][j] + gamma, A[i][j - 1] + gamma, A[i - 1][j - 1] + cost[i - 1, j - 1])
        return A[m][k]

    rng = np.random.default_rng(0)
    cost = np.log1p(-rng.random((3, 7, 9)))
    for gamma in (0.0, 0.4):
        got = alignment_cost(torch.from_numpy(cost), gamma).numpy()
        np.testing.assert_allclose(got, [official(c, gamma) for c in cost], rtol=1e-12)


def test_exp_sampling_is_distortion_free():
    """Over random key rows, argmax u^(1/p) is distributed as p (exponential-minimum sampling)."""
    from erasekit.text.marks.exp_edit import ExpSampler

    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20000
    xi = torch.from_numpy(np.random.default_rng(1).random((n, 4)).astype(np.float32))
    samp = ExpSampler(xi, torch.arange(n))
    out = samp(torch.zeros((n, 1), dtype=torch.long), p.log().expand(n, 4).clone())
    freq = torch.bincount(out.argmax(dim=1), minlength=4).double() / n
    np.testing.assert_allclose(freq.numpy(), p.numpy(), atol=0.015)


def test_attacks_rates_determinism_and_needs(lm):
    from erasekit.text.marks.attacks import apply_text_attack

    model, tok = lm
    ids = [list(range(1, 101)), list(range(200, 260))]
    sub = apply_text_attack("substitute:rate=0.2", ids, 768, seed=0)
    assert [len(x) for x in sub] == [100, 60] and sum(a != b for a, b in zip(sub[0], ids[0])) <= 20
    assert sub == apply_text_attack("substitute:rate=0.2", ids, 768, seed=0)
    assert [len(x) for x in apply_text_attack("delete:rate=0.1+insert:rate=0.2", ids, 768)] == [108, 64]  # 100 - 10 = 90, + int(0.2 * 90); 60 - 6 + 10
    mixed = apply_text_attack("mix:keep=0.25", ids, 768, human=list(range(500, 700)))
    assert len(mixed[0]) == 100 and sum(t < 101 for t in mixed[0]) == 25
    syn = apply_text_attack("synonym:rate=0.1", ids[:1], 768, model=model)
    assert sum(a != b for a, b in zip(syn[0], ids[0])) == 10
    with pytest.raises(InvalidValueError, match="needs human"):
        apply_text_attack("mix", ids, 768)
    with pytest.raises(InvalidValueError, match=r"rate must be in \[0, 1\]"):
        apply_text_attack("substitute:rate=1.5", ids, 768)
    with pytest.raises(ErasekitError, match="substitute"):
        apply_text_attack("substitue", ids, 768)


@pytest.mark.parametrize("bound", ["hoeffding", "bennett"])
def test_zero_shot_keeps_model_samples_and_rejects_random_tokens(lm, bound):
    from erasekit.text.marks.zeroshot import ZeroShotConfig, zero_shot_test

    model, tok = lm
    own = sample(model, tok, [""] * 4, 120, seed=5)
    rng = np.random.default_rng(0)
    noise = [rng.integers(1, 768, 120).tolist() for _ in range(2)]
    det = zero_shot_test(model, tok, own + noise, ZeroShotConfig(delta=0.01, bound=bound))
    assert not det.decision[:4].any()  # guaranteed (<= delta each) for the model's own samples
    assert det.decision[4:].all()
    with pytest.raises(InvalidValueError, match="clip"):
        ZeroShotConfig(clip=-1.0)
    with pytest.raises(InvalidValueError, match="bound"):
        ZeroShotConfig(bound="chernof")


def test_cli_keygen_embed_detect_attack(tmp_path, monkeypatch):
    import erasekit.text.marks as marks
    from erasekit.cli import main

    # a key from os.urandom makes the detection margin a coin toss on this low-entropy model: fix the secret here
    real = marks.random_secret
    monkeypatch.setattr(marks, "random_secret", lambda entropy=None, n=marks.SEED_BYTES: real(b"cli-test", n))

    def run(*args):
        return CliRunner().invoke(main, ["text", "mark", *args])

    key, out = str(tmp_path / "g.key"), str(tmp_path / "m.jsonl")
    assert run("keygen", "--method", "greenlist:delta=4", "--out", key).exit_code == 0
    res = run("embed", "--key", key, "--prompt", "", "-n", "2", "--max-new-tokens", "150", "--out", out)
    assert res.exit_code == 0, res.output
    res = run("detect", "--key", key, "--file", out)
    assert res.exit_code == 0 and res.output.count("MARKED") == 2, res.output
    att = str(tmp_path / "a.jsonl")
    assert run("attack", "--attack", "substitute:rate=0.1", "--file", out, "--out", att).exit_code == 0
    assert run("embed", "--key", key, "--prompt", "", "--out", out).exit_code == 2  # no silent overwrite
    res = run("detect", "--key", key, "--text", "")
    assert res.exit_code == 2 and "empty" in res.output and len(res.output.strip().splitlines()) == 1
    res = run("detect", "--key", str(tmp_path / "missing.key"), "--text", "x")
    assert res.exit_code == 2 and "does not exist" in res.output
    res = run("keygen", "--method", "greenlist", "--message", "3", "--out", str(tmp_path / "x.key"))
    assert res.exit_code == 2 and "carries no message" in res.output


def test_sliding_window_generation_follows_one_key_segment(lm):
    """Past the context, `sample(window=W)` continues from the last W tokens and EXP-edit's sampler keeps counting
    key rows across chunks: a step-by-step replay (full forward passes) picks the same tokens. Without a window the
    length is refused in one line."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = lm
    torch.manual_seed(0)
    tiny = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)).eval()
    with pytest.raises(InvalidValueError, match="sliding window"):
        sample(tiny, tok, [""], 64)
    for bad in (0, 32, True):
        with pytest.raises(InvalidValueError, match="window must be"):
            sample(tiny, tok, [""], 64, window=bad)
    assert sample(tiny, tok, [""], 20, seed=1) == sample(tiny, tok, [""], 20, seed=1, window=8)  # within context
    wm = get_text_mark("exp_edit", key_length=16)
    key = wm.keygen(tok, entropy=b"window")
    proc = wm.logits_processor(key, batch_size=1, seed=4)
    L, W = 64, 12
    got = sample(tiny, tok, [""], L, seed=4, processor=proc, window=W)[0]
    assert len(got) == L and proc.step == L
    xi, off = wm.xi(key), int(proc.offsets[0])
    full, out = [tok.bos_token_id], []
    with torch.no_grad():
        while len(out) < L:
            cur = list(full if not out else full[-W:])
            for _ in range(min(L - len(out), 32 - len(cur))):
                p = torch.softmax(tiny(torch.tensor([cur])).logits[0, -1], dim=-1)
                t = int((torch.log(xi[(off + len(out)) % 16]) / p).argmax())
                cur.append(t)
                out.append(t)
                full.append(t)
    assert got == out


def test_cli_wrong_key_wrong_tokenizer_empty_text_one_line(tmp_path):
    """The issue's CLI contract: keys are user files; a file that is not a key, a key made for another tokenizer or
    vocabulary, and empty text give one clear line (exit 2), for detect, embed and attack."""
    import json

    from erasekit.cli import main

    def fails(args, text):
        r = CliRunner().invoke(main, ["text", "mark", *args])
        assert r.exit_code == 2 and text in r.output and "Traceback" not in r.output, r.output
        assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1, r.output

    key = tmp_path / "g.key"
    r = CliRunner().invoke(main, ["text", "mark", "keygen", "--method", "greenlist", "--out", str(key)])
    assert r.exit_code == 0, r.output
    k = TextKey.load(key)
    (tmp_path / "junk.key").write_bytes(b"\x00" * 64)
    fails(["detect", "--key", str(tmp_path / "junk.key"), "--text", "Question: Who taught Zorbo?"], "not an")
    (tmp_path / "img.key").write_bytes(b"")
    fails(["detect", "--key", str(tmp_path / "img.key"), "--text", "Question: Who taught Zorbo?"], "img.key")
    other = TextKey(k.method, k.config, k.vocab_size, "0123456789abcdef", k.tensors)  # another tokenizer's key
    other.save(tmp_path / "other.key")
    fails(["detect", "--key", str(tmp_path / "other.key"), "--text", "Question: Who taught Zorbo?"],
          "made for tokenizer 0123456789abcdef")
    fails(["embed", "--key", str(tmp_path / "other.key"), "--prompt", "", "--out", str(tmp_path / "o.jsonl")],
          "made for tokenizer")
    wide = TextKey(k.method, k.config, k.vocab_size + 1, k.tokenizer, k.tensors)  # a key for another vocabulary
    wide.save(tmp_path / "wide.key")
    fails(["embed", "--key", str(tmp_path / "wide.key"), "--prompt", "", "--out", str(tmp_path / "o.jsonl")],
          "logits have")
    fails(["detect", "--key", str(key), "--text", ""], "empty")
    (tmp_path / "empty.jsonl").write_text("\n")
    fails(["detect", "--key", str(key), "--file", str(tmp_path / "empty.jsonl")], "no texts given")
    fails(["attack", "--attack", "delete:rate=0.1", "--text", "", "--out", str(tmp_path / "a.jsonl")], "empty")
    fails(["attack", "--attack", "delete:rate=2", "--text", "a b c", "--out", str(tmp_path / "a.jsonl")], "rate")
    fails(["embed", "--key", str(key), "--prompt", "", "--max-new-tokens", "400", "--out",
           str(tmp_path / "o.jsonl")], "sliding window")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "a.jsonl").exists()
    r = CliRunner().invoke(main, ["text", "mark", "embed", "--key", str(key), "--prompt", "", "--max-new-tokens",
                                  "260", "--window", "128", "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 0 and "260 tokens" in r.output, r.output
    assert json.loads((tmp_path / "o.jsonl").read_text())["method"] == "greenlist"
