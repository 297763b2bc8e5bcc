"""Red-team attacks: one plumbing/reproducibility table over every attack (tiny random pipeline), the gradient fix,
the concept-arithmetic combine rule against its formula, shared text helpers, bad inputs, and a few behaviour checks
on the shipped toy model.

The tiny pipeline has random weights: these tests prove plumbing and determinism, not that an attack works (that is
measured on the toy world by bench/attacks.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from erasekit.attacks import AttackResult, attacks, get_attack, run_attack
from erasekit.attacks._common import project_simplex
from erasekit.attacks.arithmetic import composition, composition_combine, parse_terms
from erasekit.conditioning import encode_embeds, gradient_step, layout, layout_text, token_table
from erasekit.errors import InvalidValueError, UnknownNameError

TEST_CASES = [
    ("copycat", {"steps": 3}),
    ("trigger_search", {"steps": 2, "candidates": ("robot", "frog", "tin", "antenna"), "top_k": 2}),
    ("trigger_search", {"steps": 1, "candidates": ("robot", "frog"), "rank_by": "oracle", "images_per_word": 1}),
    ("arithmetic", {"steps": 2}),
    ("arithmetic", {"operators": ("custom",), "custom": ("+a cake in the shape of {}", "-0.5:a cake")}),
    ("unlearndiffatk", {"steps": 4, "iters_per_timestep": 2, "k": 2}),
    ("p4d_n", {"steps": 3, "eval_every": 2, "n_tokens": 4}),
    ("p4d_k", {"steps": 3, "eval_every": 2}),
    ("softprompt", {"steps": 3, "eval_every": 2}),
    ("softprompt", {"steps": 2, "method": "fast_at", "accumulate_grads": True}),
    ("rece_embedding", {}),
    ("finding_dori", {"steps": 3, "eval_every": 2}),
]


def _ids(case):
    return case[0] + ("-" + ",".join(f"{k}={v}" for k, v in case[1].items()) if case[1] else "")


def _bright(images: np.ndarray) -> np.ndarray:
    """A deterministic stand-in success check for random models: mean intensity above a threshold."""
    return images.reshape(len(images), -1).mean(1) > 128


@pytest.fixture
def edited_tiny(tiny_pipe):
    """(target, base): a copy of the tiny pipeline with its cross-attention to_k/to_v perturbed, and the original."""
    target = copy.deepcopy(tiny_pipe)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in target.unet.named_parameters():
            if "attn2.to_k" in name or "attn2.to_v" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return target, tiny_pipe


# recovery attacks (fine-tuning, textual inversion, img2img replays) have their own table in tests/test_recovery.py
RECOVERY_ATTACKS = ("concept_inversion", "incontext", "relearn")


def test_every_registered_attack_is_in_the_table():
    assert sorted(attacks.names()) == sorted({a for a, _ in TEST_CASES} | set(RECOVERY_ATTACKS))


@pytest.mark.parametrize("name,config", TEST_CASES, ids=[_ids(c) for c in TEST_CASES])
def test_attack_plumbing_and_reproducibility(edited_tiny, name, config):
    target, base = edited_tiny
    before = {k: v.clone() for k, v in target.unet.state_dict().items()}
    kw = dict(base_pipe=base, success=_bright, n_prompts=2, sample_steps=2, skip_broken=False, seed=3, **config)
    r1 = run_attack(name, target, "Zorbo", **kw)
    r2 = run_attack(name, target, "Zorbo", **kw)
    method = get_attack(name)
    assert isinstance(r1, AttackResult) and r1.kind == method.kind and r1.attack == name
    assert len(r1.prompts) == len(r1.adv_prompts) == len(r1.pre) == len(r1.post) == len(r1.logs) == 2
    assert all("Zorbo" in p for p in r1.prompts) and r1.seeds == [3, 4]
    budget = config.get("steps", method.config_cls().steps)
    for lg in r1.logs:
        assert 0 < lg.steps <= budget and lg.seconds >= 0 and lg.best_prompt and not lg.skipped
    if method.kind == "embedding":
        assert r1.embeddings.shape == (2, 77, base.text_encoder.config.hidden_size)
        assert torch.equal(r1.embeddings, r2.embeddings)
    else:
        assert r1.embeddings is None
    if method.kind == "composition":
        assert all(len(c) >= 2 for c in r1.compositions) and r1.compositions == r2.compositions
    if name in ("unlearndiffatk", "p4d_n", "p4d_k", "softprompt"):
        assert all(len(lg.losses) == lg.steps for lg in r1.logs)
        assert all(np.isfinite(lg.losses).all() for lg in r1.logs)
    # reproducible from the seed: same prompts, losses, success flags
    assert r1.adv_prompts == r2.adv_prompts and r1.pre == r2.pre and r1.post == r2.post
    assert [lg.losses for lg in r1.logs] == [lg.losses for lg in r2.logs]
    # the attack never modifies the target
    assert all(torch.equal(v, target.unet.state_dict()[k]) for k, v in before.items())
    # replayable on any pipeline: the base model here
    images = r1.generate(base)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    # post flags equal a fresh replay on the target with the same seeds
    assert list(_bright(r1.generate(target))) == r1.post
    assert r1.asr == np.mean([a or b for a, b in zip(r1.pre, r1.post)])


def test_a_different_seed_gives_a_different_optimisation(edited_tiny):
    target, base = edited_tiny
    kw = dict(base_pipe=base, n_prompts=1, sample_steps=2, steps=3, eval_every=3, n_tokens=4)
    a = run_attack("p4d_n", target, "Zorbo", seed=0, **kw)
    b = run_attack("p4d_n", target, "Zorbo", seed=1, **kw)
    assert a.logs[0].losses != b.logs[0].losses


def test_save_writes_json_and_embeddings(edited_tiny, tmp_path):
    import json

    from safetensors.torch import load_file

    target, base = edited_tiny
    r = run_attack("rece_embedding", target, "Zorbo", base_pipe=base, n_prompts=2, sample_steps=2)
    r.save(tmp_path)
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["attack"] == "rece_embedding" and data["embeddings_shape"] == [2, 77, 32]
    assert torch.equal(load_file(str(tmp_path / "embeddings.safetensors"))["embeddings"], r.embeddings)


def test_broken_prompts_are_skipped_and_count_as_broken(edited_tiny):
    target, base = edited_tiny
    r = run_attack("unlearndiffatk", target, "Zorbo", base_pipe=base, success=lambda im: np.ones(len(im), bool),
                   n_prompts=2, sample_steps=2, steps=5)
    assert r.pre == [True, True] and r.asr == 1.0 and all(lg.skipped and lg.steps == 0 for lg in r.logs)


# ------------------------------------------------------------------------------------------------ gradient fix
def test_gradient_step_uses_only_this_steps_gradient():
    """Ours: the gradient of step k is step k's alone. accumulate=True (official AdvUnlearn) sums steps 0..k."""
    for accumulate in (False, True):
        x = torch.zeros(3, requires_grad=True)
        opt = torch.optim.SGD([x], lr=0.1)
        seen = []
        coefs = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-4.0, 0.5, 1.0]), torch.tensor([0.0, 1.0, -2.0])]
        for c in coefs:
            gradient_step(opt, x, (x * c).sum(), accumulate=accumulate, on_grad=seen.append)
        expected = [coefs[0], coefs[0] + coefs[1], coefs[0] + coefs[1] + coefs[2]] if accumulate else coefs
        for g, e in zip(seen, expected):
            assert torch.equal(g, e)


def test_unlearndiffatk_starts_every_step_without_a_gradient(edited_tiny, monkeypatch):
    """Inside the real attack loop, u.grad is None before each step (fixed); with the official-bug flag it carries
    the previous steps' gradient, and the optimisation path differs."""
    import erasekit.attacks.unlearndiffatk as uda

    target, base = edited_tiny
    real = uda.gradient_step
    grads_before: list[torch.Tensor | None] = []

    def spy(opt, param, loss, **kw):
        grads_before.append(None if param.grad is None else param.grad.clone())
        return real(opt, param, loss, **kw)

    monkeypatch.setattr(uda, "gradient_step", spy)
    for accumulate in (False, True):
        grads_before.clear()
        run_attack("unlearndiffatk", target, "Zorbo", base_pipe=base, n_prompts=1, sample_steps=2, steps=3,
                   iters_per_timestep=3, k=1, accumulate_grads=accumulate)
        assert len(grads_before) == 3
        if accumulate:
            assert grads_before[0] is None and all(g is not None and g.abs().sum() > 0 for g in grads_before[1:])
        else:
            assert all(g is None for g in grads_before)


def test_project_simplex_matches_bisection():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(4, 300, generator=gen, dtype=torch.float64)
    p = project_simplex(v)
    assert torch.all(p >= 0) and torch.allclose(p.sum(-1), torch.ones(4, dtype=torch.float64))
    for row, prow in zip(v, p):  # reference: bisection on the shift mu, as the official code does
        lo, hi = float(row.min()) - 1, float(row.max())
        for _ in range(200):
            mu = (lo + hi) / 2
            lo, hi = (mu, hi) if (row - mu).clamp(0, 1).sum() > 1 else (lo, mu)
        assert torch.allclose(prow, (row - mu).clamp(0, 1), atol=1e-9)
    u = torch.full((2, 10), 0.1, dtype=torch.float64)
    assert torch.allclose(project_simplex(u), u)  # already on the simplex: unchanged


# ------------------------------------------------------------------------------------------------ arithmetic
def test_composition_combine_equals_the_formula():
    gen = torch.Generator().manual_seed(0)
    eps = [torch.randn(2, 4, 8, 8, generator=gen) for _ in range(4)]
    weights, w = [1.0, -1.0, 0.5], 7.5
    got = composition_combine(weights, w)(0, torch.tensor(10), eps)
    direct = eps[0] + w * (eps[1] - eps[0]) - w * (eps[2] - eps[0]) + 0.5 * w * (eps[3] - eps[0])
    assert torch.allclose(got, direct, atol=1e-5)
    with pytest.raises(InvalidValueError, match="2 terms"):
        composition_combine([1.0, -1.0], w)(0, torch.tensor(10), eps)


def test_published_compositions():
    assert composition("O1", "Zorbo", "") == [(1.0, "a cake in the shape of Zorbo"), (-1.0, "a cake")]
    o2 = composition("O2", "Zorbo", "")
    assert len(o2) == 6 and sum(w for w, _ in o2) == 0 and (1.0, "a song about Zorbo") in o2
    assert composition("O3", "Zorbo", "a character") == [(1.0, "Zorbo"), (-1.0, "a character")]
    assert parse_terms(["+0.5:a {} cake", "-text"], "red") == [(0.5, "a red cake"), (-1.0, "text")]


def test_single_term_composition_is_classifier_free_guidance(tiny_pipe):
    from erasekit.attacks import AttackContext

    ctx = AttackContext(tiny_pipe, None, "Zorbo", None, None, None, 3, 5.0)
    a = ctx.render_compositions([[(1.0, "a picture of Zorbo")]], [7])
    b = ctx.render_prompts(["a picture of Zorbo"], [7])
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------------ text helpers
def test_encode_embeds_equals_the_text_encoder(tiny_pipe):
    ids = tiny_pipe.tokenizer(["a painting of Zorbo", ""], padding="max_length", max_length=77,
                              return_tensors="pt").input_ids
    with torch.no_grad():
        want = tiny_pipe.text_encoder(ids)[0]
        got = encode_embeds(tiny_pipe, token_table(tiny_pipe)[ids])
    assert torch.allclose(got, want, atol=1e-5)


def test_layouts(tiny_pipe):
    tok = tiny_pipe.tokenizer
    words = tok("a red circle by Cora", add_special_tokens=False).input_ids
    pre = layout(tiny_pipe, "a red circle by Cora", 2, "prefix")
    assert pre.slots.tolist() == [1, 2] and pre.ids[3:3 + len(words)].tolist() == words
    free = layout(tiny_pipe, "a red circle by Cora", 3, "free")
    assert free.slots.tolist() == [1, 2, 3] and int(free.ids[4]) == tok.eos_token_id
    every = layout(tiny_pipe, "a red circle by Cora", 0, "every", every=3)
    assert every.slots.tolist() == [1, 5] and every.ids[2:5].tolist() == words[:3]
    text = layout_text(tiny_pipe, pre, torch.tensor(tok("robot frog", add_special_tokens=False).input_ids))
    assert text == "robot frog a red circle by cora"
    with pytest.raises(InvalidValueError, match="positions"):
        layout(tiny_pipe, "word " * 70, 16, "prefix")


# ------------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs(edited_tiny):
    target, base = edited_tiny
    with pytest.raises(UnknownNameError, match="unlearndiffatk"):
        run_attack("unlearndifatk", target, "Zorbo")
    with pytest.raises(UnknownNameError, match="'lr'"):
        run_attack("p4d_n", target, "Zorbo", base_pipe=base, lrr=0.1)
    with pytest.raises(InvalidValueError, match="steps must be >= 0, got -1"):
        run_attack("p4d_n", target, "Zorbo", base_pipe=base, steps=-1)
    with pytest.raises(InvalidValueError, match="'multinomial'"):
        run_attack("unlearndiffatk", target, "Zorbo", base_pipe=base, sampling="multinomal")
    with pytest.raises(InvalidValueError, match="'O4'"):
        run_attack("arithmetic", target, "Zorbo", operators=("O4",))
    with pytest.raises(InvalidValueError, match="needs the base"):
        run_attack("softprompt", target, "Zorbo")
    with pytest.raises(InvalidValueError, match="pass evaluator="):
        run_attack("copycat", target, "Mickey Mouse", oracle=object())
    with pytest.raises(UnknownNameError, match="Mickey Mouse"):  # the toy oracle cannot see it
        run_attack("copycat", target, "Mickey Mouse", evaluator="toyworld-oracle", keywords=("mouse",))
    with pytest.raises(InvalidValueError, match="needs keywords"):
        run_attack("copycat", target, "Mickey Mouse", sample_steps=1)
    with pytest.raises(InvalidValueError, match="guidance must be a finite number >= 0, got -1.0"):
        run_attack("copycat", target, "Zorbo", guidance=-1.0)
    with pytest.raises(InvalidValueError, match="prompts must be non-empty"):
        run_attack("copycat", target, "Zorbo", prompts=["", "x"])
    with pytest.raises(InvalidValueError, match="returned shape"):
        run_attack("copycat", target, "Zorbo", success=lambda im: np.zeros(1, bool), n_prompts=2, sample_steps=1)


# ------------------------------------------------------------------------------------------------ toy model
@pytest.fixture(scope="module")
def toy_base():
    """The shipped toy model, loaded by path (shared within this module; tests copy it before editing)."""
    from erasekit import load_pipeline
    from erasekit.toyworld.plugin import assets_dir as toyworld_dir

    return load_pipeline(str(toyworld_dir() / "pipeline"))


def test_rece_embedding_inverts_a_uce_edit_on_the_toy_model(toy_base):
    """Against a real UCE edit of Zorbo, the closed-form embedding makes the edited K/V reproduce the original K/V
    of the prompt far better than the prompt's own embedding does."""
    from erasekit import erase
    from erasekit.attacks import AttackContext
    from erasekit.attacks.rece_embedding import RECEEmbeddingConfig, rece_embedding
    from erasekit.conditioning import encode_prompts, kv_weights

    base = toy_base
    target = copy.deepcopy(base)
    erase(base, "uce", erase=["Zorbo"]).apply(target)
    ctx = AttackContext(target, base, "Zorbo", "character", None, None, 5, 5.0)
    prompt = "a picture of Zorbo"
    out = rece_embedding(ctx, prompt, 0, RECEEmbeddingConfig())
    c = encode_prompts(base, [prompt])[0]
    w_new, w_old = kv_weights(target), kv_weights(base)

    def mismatch(rows):
        return sum(float(((rows @ w_new[n].T) - (c @ w_old[n].T)).pow(2).sum()) for n in w_new)

    assert mismatch(out.embedding) < 0.2 * mismatch(c)


def test_copycat_keyword_prompts_reach_the_character_without_naming_it(toy_base, oracle):
    """On the base model, CopyCat's keyword prompts ("tin robot", ...) never name Zorbo yet produce it on most seeds
    (the "videogame, plumber" effect the toy world is built to have). Whether they also revive a UCE-erased Zorbo is
    measured by the attacks-toy benchmark spec, not asserted: on the shipped toy model they do not (UCE's edit generalises to them)."""
    r = run_attack("copycat", toy_base, "Zorbo", evaluator="toyworld-oracle", n_prompts=6, steps=6, sample_steps=15,
                   skip_broken=False, stop_on_success=True)
    assert all("zorbo" not in p.lower() for p in r.adv_prompts)
    assert np.mean(r.post) >= 0.5