"""Closed forms, wave 2 (issue 16): RECE's official start, UCE span preservation of "", SPEED, TRCE, AdaVD.

References are written out independently here in float64 (the official loops, per layer, with explicit inverses).
"""

from __future__ import annotations

import pytest
import torch

from erasekit.erasers import erase
from erasekit.erasers._closed_form import cross_attention_kv

F64 = torch.float64


@pytest.fixture
def tiny64(tiny_pipe):
    tiny_pipe.unet.double()
    tiny_pipe.text_encoder.double()
    return tiny_pipe


def _emb(pipe, prompt):
    """(77, d) text-encoder rows and the official last-word index attention_mask.sum() - 2."""
    t = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(t.input_ids)[0][0], int(t.attention_mask.sum()) - 2


def _official_train_uce(pipe, old_texts, new_texts, retain_texts, lamb, erase_scale, preserve_scale):
    """RECE's erase_methods/train_uce.py::edit_model (technique 'replace'): '' guides become ' ', span rows from the
    last word token cut to equal length, retain texts contribute all 77 rows."""
    layers = cross_attention_kv(pipe.unet)
    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach().clone()
        mat1 = lamb * w
        mat2 = lamb * torch.eye(w.shape[1], dtype=F64)
        for old, new in zip(old_texts, new_texts, strict=True):
            eo, ko = _emb(pipe, old)
            en, kn = _emb(pipe, " " if new == "" else new)
            far = max(ko, kn)
            c = eo[ko:77 - max(0, far - ko)]
            v = en[kn:77 - max(0, far - kn)] @ w.T
            mat1 = mat1 + erase_scale * v.T @ c
            mat2 = mat2 + erase_scale * c.T @ c
        for r in retain_texts:
            er, _ = _emb(pipe, r)
            mat1 = mat1 + preserve_scale * (er @ w.T).T @ er
            mat2 = mat2 + preserve_scale * er.T @ er
        out[name] = mat1 @ torch.inverse(mat2)
    return out


def _official_rece_epoch(pipe, start, concept, guide, retain_texts, lamb, erase_scale, preserve_scale, reg):
    """close_form_emb_regzero + erase_methods/uce.py::edit_model_adversarial (technique 'replace')."""
    layers = cross_attention_kv(pipe.unet)
    names = list(layers)
    orig = {n: layers[n].weight.detach() for n in names}
    ec, _ = _emb(pipe, concept)
    eg, _ = _emb(pipe, guide)
    d = ec.shape[1]
    mat1 = reg * torch.eye(d, dtype=F64)
    mat2 = torch.zeros(d, d, dtype=F64)
    for n in names:
        mat1 = mat1 + start[n].T @ start[n]
        mat2 = mat2 + start[n].T @ orig[n]
    adv = ec @ (torch.inverse(mat1) @ mat2).T
    out = {}
    for n in names:
        w = start[n]
        m1 = lamb * w + erase_scale * (eg @ w.T).T @ adv
        m2 = lamb * torch.eye(d, dtype=F64) + erase_scale * adv.T @ adv
        for r in retain_texts:
            er, _ = _emb(pipe, r)
            m1 = m1 + preserve_scale * (er @ w.T).T @ er
            m2 = m2 + preserve_scale * er.T @ er
        out[n] = m1 @ torch.inverse(m2)
    return out


# ------------------------------------------------------------------------------------------------ RECE start


@pytest.mark.parametrize("preserve", [[], ["Kiko", "Mossy"]])
def test_rece_default_start_is_the_official_train_uce(tiny64, preserve):
    retain = [""] + preserve
    scale = round(max(0.1, 1 / len(retain)), 3)  # 1.0 with no preserve prompts, 0.333 with two
    start = _official_train_uce(tiny64, ["Zorbo"], [""], retain, 0.5, 1.0, scale)
    edit0 = erase(tiny64, "rece", erase=["Zorbo"], guide="", preserve=preserve, epochs=0)
    for name, ref in start.items():
        torch.testing.assert_close(edit0.tensors[name], ref, rtol=1e-7, atol=1e-8)
    edit = erase(tiny64, "rece", erase=["Zorbo"], guide="", preserve=preserve, regular_scale=0.05)
    ref = _official_rece_epoch(tiny64, start, "Zorbo", "", preserve or [""], 0.1, 1.0, 0.1, 0.05)
    for name in ref:
        torch.testing.assert_close(edit.tensors[name], ref[name], rtol=1e-6, atol=1e-8)


def test_rece_plain_start_differs_and_scale_override(tiny64):
    official = erase(tiny64, "rece", erase=["Zorbo"], guide="a robot", epochs=0)
    plain = erase(tiny64, "rece", erase=["Zorbo"], guide="a robot", epochs=0, start="plain")
    name = next(iter(official.tensors))
    assert not torch.allclose(official.tensors[name], plain.tensors[name])
    ref = _official_train_uce(tiny64, ["Zorbo"], ["a robot"], [""], 0.5, 1.0, 0.25)
    over = erase(tiny64, "rece", erase=["Zorbo"], guide="a robot", epochs=0, uce_preserve_scale=0.25)
    torch.testing.assert_close(over.tensors[name], ref[name], rtol=1e-7, atol=1e-8)


# ------------------------------------------------------------------------------------------------ UCE span


def test_uce_span_without_preserve_keeps_the_empty_prompt(tiny64):
    edit = erase(tiny64, "uce", erase=["Zorbo"], guide="a robot", token="span", preserve_scale=0.1)
    ref = _official_train_uce(tiny64, ["Zorbo"], ["a robot"], [""], 0.5, 1.0, 0.1)
    for name in ref:
        torch.testing.assert_close(edit.tensors[name], ref[name], rtol=1e-7, atol=1e-8)
    assert edit.manifest["info"]["preserve_rows"] == 77


# ------------------------------------------------------------------------------------------------ SPEED


def test_speed_without_retain_rows_is_uce(tiny64):
    got = erase(tiny64, "speed", erase=["Zorbo"], guide="a robot", retain_empty_prompt=False, invariant=False,
                retain_scale=0.7)
    uce = erase(tiny64, "uce", erase=["Zorbo"], guide="a robot", with_to_k=False, lamb=0.7, empty_guide="bos")
    assert set(got.tensors) == set(uce.tensors) and all(n.endswith("to_v.weight") for n in got.tensors)
    for name in uce.tensors:
        torch.testing.assert_close(got.tensors[name], uce.tensors[name], rtol=1e-8, atol=1e-10)
    two = erase(tiny64, "speed", erase=["Zorbo", "Kiko"], guide="", retain_empty_prompt=False, invariant=False)
    uce2 = erase(tiny64, "uce", erase=["Zorbo", "Kiko"], guide="", with_to_k=False, lamb=2.0, empty_guide="bos")
    for name in uce2.tensors:  # mean over concepts = UCE with lamb n * retain_scale
        torch.testing.assert_close(two.tensors[name], uce2.tensors[name], rtol=1e-8, atol=1e-10)


def test_speed_keeps_retained_keys_and_invariants(tiny64):
    preserve = ["Mossy", "a red circle", "Kiko"]
    edit = erase(tiny64, "speed", erase=["Zorbo"], guide="a robot", preserve=preserve, aug_num=0, threshold=1e-9,
                 with_to_k=True)
    layers = cross_attention_kv(tiny64.unet)
    rows = torch.stack([_emb(tiny64, p)[0][_emb(tiny64, p)[1]] for p in preserve])  # last word tokens
    empty, _ = _emb(tiny64, "")
    zorbo, k = _emb(tiny64, "Zorbo")
    moved = 0.0
    for name, layer in layers.items():
        w0 = layer.weight.detach()
        w1 = edit.tensors[name]
        rel = ((rows @ w1.T - rows @ w0.T).norm(dim=1) / (rows @ w0.T).norm(dim=1)).max()
        assert rel < 1e-5, (name, float(rel))
        bos = (empty[0] @ w1.T - empty[0] @ w0.T).norm() / (empty[0] @ w0.T).norm()
        assert bos < 1e-5
        moved = max(moved, float((zorbo[k] @ w1.T - zorbo[k] @ w0.T).norm() / (zorbo[k] @ w0.T).norm()))
    assert moved > 1e-3  # the concept itself did move


def test_speed_default_runs_and_is_seeded(tiny_pipe):
    a = erase(tiny_pipe, "speed", erase=["Zorbo"])
    b = erase(tiny_pipe, "speed", erase=["Zorbo"])
    name = next(iter(a.tensors))
    assert torch.equal(a.tensors[name], b.tensors[name])
    assert a.manifest["info"]["retain_prompts"] == 0


# ------------------------------------------------------------------------------------------------ TRCE


def test_trce_maps_the_eot_row(tiny64):
    bad, safe = "a photo of Zorbo", "a photo of a robot"
    edit = erase(tiny64, "trce", erase=[bad], guide=safe, preserve=["Kiko"], lamb=0.3, preserve_scale=0.5)
    eb, kb = _emb(tiny64, bad)
    es, ks = _emb(tiny64, safe)
    ek, _ = _emb(tiny64, "Kiko")
    c, g = eb[kb + 1], es[ks + 1]  # first [EoT]
    d = c.shape[0]
    for name, layer in cross_attention_kv(tiny64.unet).items():
        w = layer.weight.detach()
        m1 = 0.3 * w + torch.outer(w @ g, c) + 0.5 * (ek @ w.T).T @ ek
        m2 = 0.3 * torch.eye(d, dtype=F64) + torch.outer(c, c) + 0.5 * ek.T @ ek
        torch.testing.assert_close(edit.tensors[name], m1 @ torch.inverse(m2), rtol=1e-7, atol=1e-8)


def test_trce_rejects_all_zero_token_weights(tiny_pipe):
    from erasekit.errors import InvalidValueError

    with pytest.raises(InvalidValueError, match="token_weights are all 0"):
        erase(tiny_pipe, "trce", erase=["Zorbo"], token_weights=(0.0, 0.0, 0.0))


# ------------------------------------------------------------------------------------------------ AdaVD


def test_adavd_projection_removes_the_target_component():
    from erasekit.shields.adavd import AdaVDConfig, project_values

    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(2, 5, 12, generator=g, dtype=F64), torch.randn(1, 5, 12, generator=g, dtype=F64)
    out = project_values(v, t, AdaVDConfig(adaptive=False))
    torch.testing.assert_close((out[:, 1:] * t[0, 1:]).sum(-1), torch.zeros(2, 4, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out[:, 0], v[:, 0])  # BOS untouched
    t2 = torch.randn(2, 5, 12, generator=g, dtype=F64)
    out2 = project_values(v, t2, AdaVDConfig(adaptive=False))
    for k in range(2):
        torch.testing.assert_close((out2[:, 1:] * t2[k, 1:]).sum(-1), torch.zeros(2, 4, dtype=F64), atol=1e-12,
                                   rtol=0)
    # adaptive: a value far from the target (cosine << b) is left almost as it is
    ortho = v - (v * t).sum(-1, keepdim=True) / (t * t).sum(-1, keepdim=True) * t
    kept = project_values(ortho + 1e-3 * t, t, AdaVDConfig())
    torch.testing.assert_close(kept, ortho + 1e-3 * t, atol=1e-9, rtol=0)


def test_adavd_shield_changes_only_during_generation(tiny_pipe):
    from erasekit.generation import generate
    from erasekit.shields import get_shield, shielded_generate

    procs = dict(tiny_pipe.unet.attn_processors)
    plain = generate(tiny_pipe, ["Zorbo"], seeds=[0], steps=2, guidance=5.0)
    off, _ = shielded_generate(tiny_pipe, ["Zorbo"], seeds=[0], steps=2, guidance=5.0,
                               shields=get_shield("adavd:shift_c=0", concepts=["Zorbo"]))
    assert abs(off.astype(int) - plain.astype(int)).max() <= 1  # s = 0: same attention, explicit processor
    on, info = shielded_generate(tiny_pipe, ["Zorbo"], seeds=[0], steps=2, guidance=5.0,
                                 shields=get_shield("adavd:adaptive=false", concepts=["Zorbo"]))
    assert abs(on.astype(int) - plain.astype(int)).max() > 1
    assert info["shield"]["targets"] == ["Zorbo"]
    assert dict(tiny_pipe.unet.attn_processors) == procs  # the very same processor objects are back


# ------------------------------------------------------------------------------------------------ RECE speed path


def _rece_chained(pipe, erase_, guide, lamb, reg, epochs, embedding, uce_token):
    """RECE as it was written before the (d, d) path: a UCE solve, then per epoch `adversarial_embedding` of the
    current weights and a `solve` of them (layer by layer, float64 here)."""
    from erasekit.erasers._closed_form import Rows, adversarial_embedding, encode, kv_weights, solve
    from erasekit.erasers.uce import build

    orig = {n: w.clone() for n, w in kv_weights(pipe).items()}
    rows, _ = build(pipe, erase_, [guide] * len(erase_), [""], uce_token, "bos", 1.0, 1.0)
    weights = solve(orig, rows, 0.5)
    c, t, keep = encode(pipe, erase_), encode(pipe, [guide] * len(erase_)), encode(pipe, [""])
    d = c.hidden.shape[-1]
    for _ in range(epochs):
        adv = adversarial_embedding(list(weights.values()), list(orig.values()), c.hidden.reshape(-1, d), reg,
                                    t.hidden.reshape(-1, d) if embedding == "standard" else None)
        r = Rows.empty(d)
        r.add_erase(adv, t.hidden.reshape(-1, d), 1.0)
        r.add_preserve(keep.hidden.reshape(-1, d), 0.1)
        weights = solve(weights, r, lamb)
    return weights


@pytest.mark.parametrize("dim,erase_,token,embedding", [
    (32, ["Zorbo", "Kiko"], "span", "standard"),  # dense (d, d) updates
    (160, ["Zorbo"], "last", "regzero"),  # low-rank factors in epoch 1 (1 + 77 rows <= d / 2), dense after epoch 2
])
def test_rece_gram_path_equals_chained_solves(dim, erase_, token, embedding):
    from erasekit.testing import tiny_pipeline

    pipe = tiny_pipeline(seed=1, cross_attention_dim=dim)
    pipe.unet.double()
    pipe.text_encoder.double()
    got = erase(pipe, "rece", erase=erase_, guide="a robot", epochs=2, regular_scale=0.05, uce_token=token,
                embedding=embedding)
    ref = _rece_chained(pipe, erase_, "a robot", 0.1, 0.05, 2, embedding, token)
    for name, w in ref.items():
        torch.testing.assert_close(got.tensors[name], w, rtol=1e-7, atol=1e-9)
    assert len(got.manifest["info"]["epochs"]) == 2


def test_weight_gram_is_cached_per_weight_state(tiny_pipe):
    from erasekit.erasers._closed_form import kv_weights, weight_gram

    ws = list(kv_weights(tiny_pipe).values())
    direct = sum(w.double().T @ w.double() for w in ws)
    g1 = weight_gram(ws)
    torch.testing.assert_close(g1, direct)
    assert weight_gram(list(kv_weights(tiny_pipe).values())) is g1  # same state: the cached matrix
    layer = next(iter(cross_attention_kv(tiny_pipe.unet).values()))
    with torch.no_grad():
        layer.weight[0, 0] += 1.0  # one entry, in place
    ws2 = list(kv_weights(tiny_pipe).values())
    g2 = weight_gram(ws2)
    assert g2 is not g1
    torch.testing.assert_close(g2, sum(w.double().T @ w.double() for w in ws2))


def test_multi_concept_spec_erases_the_probes_but_never_their_neighbours():
    from erasekit.benchmark import load_bench_spec

    spec = load_bench_spec("multi-concept-toy")
    sizes = {}
    for v in spec.variants:
        erased = v.request.get("erase", [])
        method, n = v.name.rsplit("-", 1)
        sizes.setdefault(method, []).append(len(erased) or 1)
        assert v.request["preserve"] == [] and v.request["guide"] == "art"
        if erased:
            assert len(set(erased)) == len(erased) and set(spec.concepts) <= set(erased)
            assert not {"Hugo Brandt", "Jonas Pike"} & set(erased)  # the probes' neighbours (specificity)
    assert sizes == {m: [1, 10, 50, 100] for m in ("uce", "rece", "mace", "realera", "speed", "trce")}
