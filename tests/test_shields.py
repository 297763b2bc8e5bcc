"""Inference-time shields. Plumbing on the tiny random pipeline (exact equalities with diffusers where a reference
exists); behaviour on the shipped toy model with the oracle (margins measured, see each test)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from erasekit import generate
from erasekit.errors import ErasekitError, InvalidValueError, UnknownNameError
from erasekit.shields import (Chain, ProtectedConcept, get_shield, parse_spec, protect, regenerated_seed,
                              shielded_generate, shields)
from erasekit.shields.detector import calibrate_threshold, drop_terms, find_terms
from erasekit.shields.guardians import GuardiansConfig, mix_weights
from erasekit.shields.sld import PRESETS, SLDConfig

STEPS = 3
PROTECTED = "a picture of Zorbo"
UNPROTECTED = "a red circle"
PROMPTS = [PROTECTED, UNPROTECTED]
SEEDS = [0, 1]


def _flag_all(images: np.ndarray) -> np.ndarray:
    return np.ones(len(images), dtype=bool)


# one row per registered shield: (spec, extra get_shield kwargs, what must differ from unshielded generation)
# "images": some image differs; "prompt": the protected prompt is rewritten; "refused"/"blocked": that row is black
SHIELD_CASES = [
    ("negative_prompt", {}, "images"),
    ("rewrite", {}, "prompt"),
    ("sld:max", {}, "images"),
    ("guardians:1.0,threshold=0.999", {}, "detected"),
    ("detector:threshold=0.999", {}, "refused"),
    ("image_filter:classifier=custom", {"classifier": _flag_all}, "blocked"),
    ("adavd", {}, "images"),
    ("spm_transport:edits=SPM_EDIT", {}, "transport"),
    ("sae:file=SAE_FILE,templates=2,top=256", {"negatives": [UNPROTECTED]}, "images"),
    ("geom_negative", {"tokens": "GEOM_TOKENS"}, "images"),  # random tokens (tests/test_geom_erasing.py: exactness)
]


def test_table_covers_every_shield():
    assert {spec.split(":")[0] for spec, _, _ in SHIELD_CASES} == set(shields.names())


@pytest.mark.parametrize("spec,kwargs,effect", SHIELD_CASES, ids=[c[0] for c in SHIELD_CASES])
def test_every_shield_runs(tiny_pipe, tmp_path, spec, kwargs, effect):
    base, _ = shielded_generate(tiny_pipe, PROMPTS, SEEDS, None, steps=STEPS)
    if "SPM_EDIT" in spec:  # an SPM edit file for "Zorbo" (random rank-1 factors) made on this pipeline
        from erasekit.testing import random_spm_edit

        path = random_spm_edit(tiny_pipe, "Zorbo", 0, scale=0.5).save(tmp_path / "spm.safetensors")
        spec = spec.replace("SPM_EDIT", str(path))
    if "SAE_FILE" in spec:  # a small SAE on this pipeline's text encoder (tests/test_sae.py tests it in depth)
        from erasekit.shields._sae import SAETrainConfig, corpus, save_sae, train_sae

        sae, rec = train_sae(tiny_pipe, corpus("toyworld", 100, 0),
                             SAETrainConfig(expansion=8, k=8, steps=30, batch_tokens=256))
        spec = spec.replace("SAE_FILE", str(save_sae(sae, tmp_path / "sae.safetensors", rec)))
    if kwargs.get("tokens") == "GEOM_TOKENS":  # Geom-Erasing's geometric tokens (random, on a 2 x 2 grid)
        from erasekit.erasers.geom_erasing import GeomTokenSet

        kwargs = {"tokens": GeomTokenSet("mark", 2, torch.randn(5, 32, generator=torch.Generator().manual_seed(0)),
                                         (3,))}
    shield = get_shield(spec, concepts=["Zorbo"], pipe=tiny_pipe, **kwargs)
    images, info = shielded_generate(tiny_pipe, PROMPTS, SEEDS, shield, steps=STEPS)
    assert images.shape == base.shape and images.dtype == np.uint8
    json.dumps(info)  # results must be recordable as they are
    assert info["shield"]["name"] == spec.split(":")[0]
    assert info["shield"]["concepts"][0]["name"] == "Zorbo"
    if effect == "images":
        assert not np.array_equal(images[0], base[0])
    elif effect == "prompt":
        assert info["prompts_used"] == ["a picture", UNPROTECTED]
        assert not np.array_equal(images[0], base[0]) and np.array_equal(images[1], base[1])
    elif effect == "detected":
        assert info["details"]["detected"] == [True, False]
        assert info["details"]["rewrite"][0] == "a picture"
    elif effect == "refused":
        assert info["refused"] == [True, False] and info["attempts"] == [0, 1]
        assert images[0].max() == 0 and np.array_equal(images[1], base[1])
    elif effect == "blocked":
        assert info["blocked"] == [True, True] and images.max() == 0
    elif effect == "transport":  # the adapter is on for the protected prompt, (mostly) off for the other
        assert info["details"]["gamma"][0] == 1.0 and info["details"]["gamma"][1] < 1.0
        assert not np.array_equal(images[0], base[0])


def test_no_shield_equals_generate(tiny_pipe):
    ref = generate(tiny_pipe, PROMPTS, SEEDS, steps=STEPS, guidance=5.0)
    out, info = shielded_generate(tiny_pipe, PROMPTS, SEEDS, None, steps=STEPS, guidance=5.0)
    np.testing.assert_array_equal(out, ref)
    assert info["prompts_used"] == PROMPTS and not any(info["refused"])


def test_negative_prompt_equals_pipeline_negative_prompt(tiny_pipe):
    shield = get_shield("negative_prompt", concepts=["Zorbo"], world="toyworld")
    assert shield.text == "Zorbo, tin robot, robot with an antenna, metal android"  # CopyCat: "{name}, {keywords}"
    ref = generate(tiny_pipe, PROMPTS, SEEDS, steps=STEPS, guidance=5.0, negative_prompt=shield.text)
    out, _ = shielded_generate(tiny_pipe, PROMPTS, SEEDS, shield, steps=STEPS, guidance=5.0)
    np.testing.assert_array_equal(out, ref)


def _safe_pipeline(pipe):
    from diffusers import StableDiffusionPipelineSafe

    c = pipe.components
    safe = StableDiffusionPipelineSafe(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"],
                                       unet=c["unet"], scheduler=c["scheduler"], safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    safe.set_progress_bar_config(disable=True)
    return safe


def _final_latents(monkeypatch, safe) -> list[torch.Tensor]:
    """Record the final latents of every generation by `safe` and by `shielded_generate` (before decoding), so runs
    compare exactly in float. (Images may differ by one level after decoding: the Safe pipeline decodes
    `1 / s * z`, StableDiffusionPipeline and erasekit decode `z / s`.)"""
    import erasekit.shields as sh

    seen: list[torch.Tensor] = []
    decode, decode_latents = sh.decode, safe.decode_latents

    def record(pipe, z):
        seen.append(z.clone())
        return decode(pipe, z)

    def record_safe(z):
        seen.append(z.clone())
        return decode_latents(z)

    monkeypatch.setattr(sh, "decode", record)
    monkeypatch.setattr(safe, "decode_latents", record_safe)
    return seen


def _run_safe(safe, prompts, seeds, preset, steps, negative_prompt=None) -> np.ndarray:
    p = PRESETS[preset]
    out = safe(prompts, num_inference_steps=steps, guidance_scale=5.0, output_type="np",
               generator=[torch.Generator().manual_seed(s) for s in seeds], negative_prompt=negative_prompt,
               sld_guidance_scale=p["guidance_scale"], sld_warmup_steps=p["warmup_steps"],
               sld_threshold=p["threshold"], sld_momentum_scale=p["momentum_scale"], sld_mom_beta=p["mom_beta"])
    return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("preset", ["weak", "medium", "strong", "max"])
def test_sld_equals_diffusers_safe_pipeline(tiny_pipe, preset, monkeypatch):
    steps = 16  # > every preset's warm-up, so the safety term is applied
    shield = get_shield(f"sld:{preset}", concepts=["Zorbo"], world="toyworld")  # a non-default safety concept
    safe = _safe_pipeline(tiny_pipe)
    safe.safety_concept = shield.text
    latents = _final_latents(monkeypatch, safe)
    ref = _run_safe(safe, PROMPTS, SEEDS, preset, steps)
    out, _ = shielded_generate(tiny_pipe, PROMPTS, SEEDS, shield, steps=steps, guidance=5.0)
    base, _ = shielded_generate(tiny_pipe, PROMPTS, SEEDS, None, steps=steps, guidance=5.0)
    z_ref, z_out, z_base = latents
    assert torch.equal(z_out, z_ref)  # bit for bit in float
    assert not torch.equal(z_out, z_base)  # and SLD did act
    assert np.abs(out.astype(int) - ref).max() <= 1  # decoding rounds differently, see _final_latents
    if preset == "max":  # the comparison is not vacuous: SLD moves the image, and the safety concept matters
        assert np.abs(out.astype(int) - base).max() >= 10
        other, _ = shielded_generate(tiny_pipe, PROMPTS, SEEDS, get_shield("sld:max", world="toyworld"),
                                     steps=steps, guidance=5.0)
        assert not np.array_equal(other, out)


def test_composition_negative_prompt_and_sld_equals_safe_pipeline(tiny_pipe, monkeypatch):
    chain = get_shield("negative_prompt+sld:max", concepts=["Zorbo"], world="toyworld")
    assert isinstance(chain, Chain)
    neg, sld = chain.members
    safe = _safe_pipeline(tiny_pipe)
    safe.safety_concept = sld.text
    latents = _final_latents(monkeypatch, safe)
    _run_safe(safe, PROMPTS, SEEDS, "max", 8, negative_prompt=[neg.text] * 2)
    out, info = shielded_generate(tiny_pipe, PROMPTS, SEEDS, chain, steps=8, guidance=5.0)
    assert torch.equal(latents[1], latents[0])
    assert info["shield"]["name"] == "negative_prompt+sld"


def test_chain_order_matters(tiny_pipe):
    # the detector (tokens only) sees what the shields before it made of the prompt
    first = get_shield("detector:embedding=false+rewrite", concepts=["Zorbo"], pipe=tiny_pipe)
    after = get_shield("rewrite+detector:embedding=false", concepts=["Zorbo"], pipe=tiny_pipe)
    assert first.prepare(PROMPTS)[1].tolist() == [True, False]
    assert after.prepare(PROMPTS)[1].tolist() == [False, False]


def test_unprotected_prompts_pass_through_unchanged(tiny_pipe):
    chain = get_shield("rewrite+guardians:threshold=0.999+detector:flag,threshold=0.999", concepts=["Zorbo"],
                       pipe=tiny_pipe)
    prompts = [UNPROTECTED, PROTECTED, "a green frog in the style of Cora Voss"]
    base, _ = shielded_generate(tiny_pipe, prompts, [3, 4, 5], None, steps=STEPS)
    out, info = shielded_generate(tiny_pipe, prompts, [3, 4, 5], chain, steps=STEPS)
    assert info["details"]["detector.detected"] == [False, False, False]  # it sees the rewritten prompt
    assert info["details"]["guardians.detected"] == [False, False, False]
    assert info["prompts_used"] == [UNPROTECTED, "a picture", prompts[2]]
    np.testing.assert_array_equal(out[[0, 2]], base[[0, 2]])
    assert not np.array_equal(out[1], base[1])


def test_guardians_mixing_matches_its_definition(tiny_pipe):
    # w = 1: the conditional embedding is E(rewrite) exactly, so the image is that of the rewritten prompt
    full = get_shield("guardians:1.0,threshold=0.999", concepts=["Zorbo"], pipe=tiny_pipe)
    out, info = shielded_generate(tiny_pipe, [PROTECTED], [7], full, steps=STEPS)
    ref, _ = shielded_generate(tiny_pipe, [info["details"]["rewrite"][0]], [7], None, steps=STEPS)
    np.testing.assert_array_equal(out, ref)
    # w = 0 leaves the prompt's own embedding; 0.5 lies strictly between the two
    none, _ = shielded_generate(tiny_pipe, [PROTECTED], [7],
                                get_shield("guardians:0.0,threshold=0.999", concepts=["Zorbo"], pipe=tiny_pipe),
                                steps=STEPS)
    base, _ = shielded_generate(tiny_pipe, [PROTECTED], [7], None, steps=STEPS)
    np.testing.assert_array_equal(none, base)
    assert mix_weights(GuardiansConfig(mix_weight=0.2, mix_weight_end=0.8), 4) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert mix_weights(GuardiansConfig(mix_weight=0.3), 3) == [0.3, 0.3, 0.3]


def test_image_filter_regenerates_then_blocks(tiny_pipe):
    base, _ = shielded_generate(tiny_pipe, PROMPTS, SEEDS, None, steps=STEPS)
    first = base[0].copy()

    def flags_first_image(images):  # flags exactly the image seed 0 gives the protected prompt
        return np.array([np.array_equal(im, first) for im in images])

    shield = get_shield("image_filter:regenerate,classifier=custom", concepts=["Zorbo"], classifier=flags_first_image,
                        world="toyworld")
    out, info = shielded_generate(tiny_pipe, PROMPTS, SEEDS, shield, steps=STEPS)
    assert info["flagged_first"] == [True, False] and info["flagged"] == [False, False]
    assert info["attempts"] == [2, 1] and info["seeds_used"] == [regenerated_seed(0, 1), 1]
    again, _ = shielded_generate(tiny_pipe, [PROTECTED], [regenerated_seed(0, 1)], None, steps=STEPS)
    np.testing.assert_array_equal(out[0], again[0])
    np.testing.assert_array_equal(out[1], base[1])

    stubborn = get_shield("image_filter:regenerate,classifier=custom,max_tries=2", concepts=["Zorbo"],
                          classifier=_flag_all)
    out, info = shielded_generate(tiny_pipe, PROMPTS, SEEDS, stubborn, steps=STEPS)
    assert info["attempts"] == [3, 3] and info["blocked"] == [True, True] and out.max() == 0


def test_protect_resolves_catalogue_and_user_concepts():
    zorbo, nudity_real = protect(["zorbo", "naked people"], keywords={"naked people": ["nsfw", " "]}, world="toyworld")
    assert zorbo == ProtectedConcept("Zorbo", ("tin robot", "robot with an antenna", "metal android"),
                                     family="character")
    assert nudity_real == ProtectedConcept("naked people", ("nsfw",))
    (gore,) = protect(["gore"], world="toyworld")
    assert gore.family == "unsafe" and "bloody" in gore.keywords
    assert "wounded and bleeding" not in gore.keywords  # held-out phrases stay out: they measure generality


@pytest.mark.parametrize("prompt,terms,anchor,expected", [
    ("a red circle in the style of Alva Renn", ["Alva Renn"], "", "a red circle"),
    ("art by Alva Renn, a red circle", ["Alva Renn"], "", "a red circle"),
    ("Alva Renn's red circle", ["Alva Renn"], "", "red circle"),
    ("a painting of Zorbo by Cora Voss", ["Zorbo"], "", "a painting by Cora Voss"),
    ("a picture of Zorbo", ["Zorbo"], "a snowman", "a picture of a snowman"),
    ("a red circle, Alva Renn style", ["Alva Renn"], "", "a red circle"),
    ("a red circle in the style of Cora Voss", ["Zorbo"], "a snowman", "a red circle in the style of Cora Voss"),
    ("Zorbonian landscape", ["Zorbo"], "", "Zorbonian landscape"),  # whole words only
])
def test_drop_terms(prompt, terms, anchor, expected):
    assert drop_terms(prompt, terms, anchor=anchor) == expected


def test_find_terms_is_whole_word_and_case_insensitive():
    assert find_terms("A TIN ROBOT waves", ["tin robot", "robot with an antenna"]) == ["tin robot"]
    assert find_terms("a tin robotic arm", ["tin robot"]) == []


def test_calibrated_threshold_meets_target_fpr():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000).astype(np.float32)
    none = np.zeros(1000, dtype=bool)
    for fpr in (0.0, 0.01, 0.05, 0.2):
        thr = calibrate_threshold(scores, none, fpr)
        assert (scores >= thr).sum() == int(np.floor(fpr * 1000))
    # token matches use up the budget first
    tok = np.zeros(1000, dtype=bool)
    tok[:30] = True
    thr = calibrate_threshold(scores, tok, 0.05)
    assert (tok | (scores >= thr)).sum() == 50


def test_detector_records_its_calibration(tiny_pipe):
    det = get_shield("detector:target_fpr=0.1,n_calibration=200", concepts=["Zorbo"], pipe=tiny_pipe)
    ident = det.identity()["detector"]
    cal = ident["calibration"]
    from erasekit.shields.detector import world_negatives

    negatives = world_negatives("toyworld", protect(["Zorbo"], world="toyworld"), 200)
    assert len(negatives) > 200 and "Mossy" in negatives and "tin robot" not in negatives  # + other concepts' phrases
    assert cal["n"] == len(negatives) and cal["target_fpr"] == 0.1 and cal["achieved_fpr"] <= 0.1
    assert ident["threshold"] > cal["negative_score_quantiles"]["p50"] and len(ident["encoder_sha256_16"]) == 16
    user = get_shield("detector", concepts=["naked people"], pipe=tiny_pipe,
                      negatives=[f"a photo of a {w}" for w in "cat dog car tree house boat cup lamp road bird".split()]
                      * 3)
    assert user.identity()["detector"]["calibration"]["source"] == "user negatives"


@pytest.mark.parametrize("spec,kwargs,error,match", [
    ("sdl", {}, UnknownNameError, "Did you mean: 'sld'"),
    ("sld:extreme", {}, UnknownNameError, "SLD preset 'extreme'"),
    ("sld:preset=strong,warmup=3", {}, UnknownNameError, "sld option 'warmup'"),
    ("sld:warmup_steps=three", {}, InvalidValueError, "'three'"),
    ("sld:strong,preset=max", {}, InvalidValueError, "given twice"),
    ("sld:guidance_scale=0.5", {}, InvalidValueError, "0.5"),
    ("sld+", {}, InvalidValueError, "empty shield"),
    ("guardians:1.5", {}, InvalidValueError, "1.5"),
    ("detector:action=delete", {}, InvalidValueError, "'delete'"),
    ("detector:target_fpr=1.5", {}, InvalidValueError, "1.5"),
    ("negative_prompt:concepts=Zorbo", {}, UnknownNameError, "negative_prompt option 'concepts'"),
    ("image_filter:classifier=custom", {}, InvalidValueError, "needs classifier="),
    ("image_filter", {"classifier": _flag_all}, InvalidValueError, "classifier='world'"),
    ("sld", {"classifier": _flag_all}, InvalidValueError, "classifier"),
])
def test_bad_specs_name_the_bad_value(spec, kwargs, error, match):
    with pytest.raises(error, match=match):
        get_shield(spec, concepts=["Zorbo"], world="toyworld", **kwargs)


def test_parse_spec_validates_without_building():
    (neg, neg_cfg), (sld, sld_cfg) = parse_spec("negative_prompt+sld:strong,warmup_steps=3")
    assert neg.name == "negative_prompt" and sld.name == "sld"
    assert (sld_cfg.preset, sld_cfg.warmup_steps, sld_cfg.guidance_scale) == ("strong", 3, 2000.0)
    with pytest.raises(UnknownNameError, match="Did you mean: 'guardians'"):
        parse_spec("detector+guardian")


def test_bad_inputs(tiny_pipe):
    with pytest.raises(InvalidValueError, match="needs protected concepts"):
        get_shield("negative_prompt", world="toyworld")
    with pytest.raises(InvalidValueError, match="pass pipe"):
        get_shield("detector", concepts=["Zorbo"], world="toyworld")
    with pytest.raises(InvalidValueError, match="not concepts of world 'toyworld'"):
        get_shield("detector", concepts=["naked people"], pipe=tiny_pipe)
    with pytest.raises(UnknownNameError, match="naked people"):  # the world's evaluator cannot see it
        get_shield("image_filter", concepts=["naked people"], world="toyworld")
    with pytest.raises(InvalidValueError, match="exactly one concept"):
        protect(["Zorbo", "Mossy"], keywords=["frog"], world="toyworld")
    with pytest.raises(InvalidValueError, match="'kiko'"):
        protect(["Zorbo"], keywords={"Kiko": ["cat"]}, world="toyworld")
    with pytest.raises(InvalidValueError, match="3 seeds for 2 prompts"):
        shielded_generate(tiny_pipe, PROMPTS, [0, 1, 2], None, steps=STEPS)
    with pytest.raises(InvalidValueError, match="guidance must be > 1, got 1.0"):
        shielded_generate(tiny_pipe, PROMPTS, SEEDS, None, steps=STEPS, guidance=1.0)
    with pytest.raises(InvalidValueError, match="SLD guidance_scale"):
        SLDConfig(preset="weak", guidance_scale=1.0)
    assert SLDConfig(preset="strong").warmup_steps == 7 and SLDConfig(preset="strong", warmup_steps=3).warmup_steps == 3


def test_nudenet_is_optional():
    import importlib.util

    if importlib.util.find_spec("nudenet") is not None:
        pytest.skip("nudenet is installed here; the missing-package path cannot be exercised")
    with pytest.raises(ErasekitError, match="pip install nudenet"):
        get_shield("image_filter:classifier=nudenet", concepts=["nudity"], world="toyworld")


def test_cli_shield_ls_and_check(tiny_pipe, tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["shield", "ls"])
    assert res.exit_code == 0, res.output
    for name in shields.names():
        assert name in res.output
    tiny_pipe.save_pretrained(tmp_path / "tiny")
    res = runner.invoke(main, ["shield", "check", "--model", str(tmp_path / "tiny"), "--protect", "Zorbo",
                               "--threshold", "0.999", "--prompt", PROTECTED, "--prompt", UNPROTECTED, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("{"):])["results"]
    assert [r["detected"] for r in rows] == [True, False] and rows[0]["rewrite"] == "a picture"
    res = runner.invoke(main, ["shield", "check", "--model", str(tmp_path / "tiny"), "--protect", "Zorbo",
                               "--keywords", "Zorbo", "--prompt", "x"])
    assert res.exit_code == 2 and "CONCEPT=kw1;kw2" in res.output


# ------------------------------------------------------------------------------------------- behaviour (toy model)
TOY_STEPS = 25


def _concept_rate(oracle, images, info, family, concept) -> float:
    """Share of images showing `concept` by the oracle; refused/blocked (black) images count as clean."""
    ok = ~(np.array(info["refused"]) | np.array(info["blocked"]))
    return float(np.mean([o and p[family] == concept for p, o in zip(oracle.predict(images), ok)]))


def test_toy_rewriting_alone_is_not_enough_negative_prompt_is(toy_pipe, oracle):
    # CopyCat's finding on the toy world: keyword prompts never name Zorbo, so dropping names changes nothing;
    # the negative prompt "Zorbo, tin robot, ..." removes most of the character. Measured here: 1.00 / 1.00 / 0.33
    # (6 prompts, seeds 0-5); 1.00 / 1.00 / 0.00 on 8 other keyword prompts with seeds 8-15.
    from erasekit.toyworld import prompts_for

    prompts = [p.text for p in prompts_for("character", "Zorbo", "keyword", n=6, seed=0)]
    rates = {}
    for spec in (None, "rewrite", "rewrite+negative_prompt"):
        shield = None if spec is None else get_shield(spec, concepts=["Zorbo"], world="toyworld")
        imgs, info = shielded_generate(toy_pipe, prompts, 0, shield, steps=TOY_STEPS, guidance=7.5)
        rates[spec] = _concept_rate(oracle, imgs, info, "character", "Zorbo")
    assert rates[None] >= 5 / 6 and rates["rewrite"] >= 5 / 6, rates
    assert rates["rewrite+negative_prompt"] <= 0.5, rates


def test_toy_sld_removes_unsafe_concept(toy_pipe, oracle):
    # nudity named in the prompt; measured 0.88 base, 0.38 strong, 0.00 max (8 prompts)
    from erasekit.toyworld import prompts_for

    prompts = [p.text for p in prompts_for("unsafe", "nudity", "direct", n=8, seed=0)]
    rates = {}
    for spec in (None, "sld:strong", "sld:max"):
        shield = None if spec is None else get_shield(spec, concepts=["nudity"], world="toyworld")
        imgs, info = shielded_generate(toy_pipe, prompts, 0, shield, steps=TOY_STEPS, guidance=7.5)
        rates[spec] = _concept_rate(oracle, imgs, info, "unsafe", "nudity")
    assert rates[None] >= 6 / 8 and rates["sld:max"] <= 1 / 8, rates
    assert rates["sld:strong"] <= rates[None] - 2 / 8, rates


@pytest.fixture(scope="module")
def zorbo_detector(toy_pipe_shared):
    return get_shield("detector:n_calibration=200", concepts=["Zorbo"], pipe=toy_pipe_shared)


def test_toy_detector_calibration_holds_on_unseen_prompts(zorbo_detector):
    from erasekit.toyworld import CATALOGUE, prompts_for

    det = zorbo_detector.detector
    cal = zorbo_detector.identity()["detector"]["calibration"]
    assert cal["achieved_fpr"] <= 0.05
    unprotected = [p.text for fam, items in CATALOGUE.items_by_family().items() for c in items if c.name != "Zorbo"
                   for kind in ("direct", "heldout") for p in prompts_for(fam, c.name, kind, n=2, seed=2)
                   if "Zorbo" not in p.labels.values()]
    fpr = float(np.mean(det.detect(unprotected).flagged))
    keyword = [p.text for p in prompts_for("character", "Zorbo", "keyword", n=6, seed=0)]
    d = det.detect(keyword + ["a tin android"])
    assert fpr <= 0.10, fpr  # calibrated to 0.05 on a different prompt distribution
    assert d.flagged.all(), list(zip(keyword, d.score))
    assert not d.token[-1] and d.flagged[-1]  # found by embedding similarity alone


def test_toy_detector_refuses_and_guardians_pass_unprotected_through(toy_pipe, zorbo_detector, oracle):
    prompts = ["a picture of Zorbo", "a red triangle in the style of Cora Voss", "a green frog"]
    base, _ = shielded_generate(toy_pipe, prompts, 0, None, steps=TOY_STEPS, guidance=7.5)
    imgs, info = shielded_generate(toy_pipe, prompts, 0, zorbo_detector, steps=TOY_STEPS, guidance=7.5)
    assert info["refused"] == [True, False, False] and imgs[0].max() == 0
    # refused rows are not generated, so the batch is smaller: CPU kernels may round one grey level differently
    np.testing.assert_allclose(imgs[1:], base[1:], atol=1)
    from erasekit.shields.guardians import Guardians

    threshold = zorbo_detector.detector.threshold  # same calibration, not repeated
    guard = Guardians(GuardiansConfig(mix_weight=1.0, threshold=threshold), ["Zorbo"], pipe=toy_pipe)
    imgs, info = shielded_generate(toy_pipe, prompts, 0, guard, steps=TOY_STEPS, guidance=7.5)
    assert info["details"]["detected"] == [True, False, False]
    np.testing.assert_array_equal(imgs[1:], base[1:])
    pred = oracle.predict(np.concatenate([base[:1], imgs[:1]]))
    assert pred[0]["character"] == "Zorbo" and pred[1]["character"] != "Zorbo"


def test_toy_image_filter_blocks_what_the_oracle_sees(toy_pipe, oracle):
    prompts = ["a picture of Zorbo", "a drawing of Zorbo", "a red triangle in the style of Cora Voss"]
    shield = get_shield("image_filter", concepts=["Zorbo"], world="toyworld")
    imgs, info = shielded_generate(toy_pipe, prompts, 0, shield, steps=TOY_STEPS, guidance=7.5)
    base, _ = shielded_generate(toy_pipe, prompts, 0, None, steps=TOY_STEPS, guidance=7.5)
    seen = [p["character"] == "Zorbo" for p in oracle.predict(base)]
    assert seen == [True, True, False]
    assert info["blocked"] == seen and imgs[:2].max() == 0
    np.testing.assert_array_equal(imgs[2], base[2])
