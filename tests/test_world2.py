"""Toy world v2 (issue 14): the independent evaluation grammar (disjoint from the training grammar, >= 100 prompts per
family, exposed as prompt kinds of the toy world and by the toyworld-independent suite) and the second judge."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from erasekit.errors import InvalidValueError, UnknownNameError
from erasekit.toyworld import eval_grammar as g
from erasekit.toyworld.catalogue import CATALOGUE

# prompts per concept in the measurement slices (BENCHMARKS.md, toy world v2): >= 100 per family
PER_CONCEPT = {"object": 13, "colour": 13, "artist": 10, "character": 17, "character_keyword": 17, "unsafe": 50,
               "unsafe_indirect": 50}


def test_grammar_is_disjoint_from_training_grammar():
    report = g.check_disjoint(captions_sample=1500)
    assert report["ok"], report
    assert report["frames"] == g.frame_count() >= 40
    assert report["ngram3_overlap"] < 0.1  # reported; a frame table copied from training would be near 1
    # the check can fail: a training template slipped in is caught
    from erasekit.toyworld import captions

    g.PLAIN_FRAMES += (captions.PLAIN_TEMPLATES[1].replace("{subject}", "{s}"),)
    try:
        assert not g.check_disjoint(captions_sample=10)["ok"]
    finally:
        g.PLAIN_FRAMES = g.PLAIN_FRAMES[:-1]


@pytest.mark.parametrize("family_set", g.FAMILY_SETS)
def test_at_least_100_distinct_prompts_per_family(family_set):
    prompts = g.family_prompts(family_set, PER_CONCEPT[family_set], seed=0)
    family = family_set.split("_")[0]
    assert len(prompts) >= 100 and len({p.text for p in prompts}) >= 100
    for p in prompts:
        assert p.family == family and p.labels[family] == p.concept
        if family_set in ("character_keyword", "unsafe_indirect"):  # never names the concept
            assert not re.search(rf"\b{p.concept.lower()}\b", p.text.lower()), p.text
    again = g.family_prompts(family_set, PER_CONCEPT[family_set], seed=0)
    assert [p.text for p in again] == [p.text for p in prompts]  # deterministic in the seed
    assert [p.text for p in g.family_prompts(family_set, PER_CONCEPT[family_set], seed=1)] != [p.text for p in prompts]


def test_toy_world_exposes_the_independent_kinds():
    from erasekit.worlds import SHOWING_KINDS, get_world

    world = get_world("toyworld")
    assert {"independent", "independent_keyword"} <= set(SHOWING_KINDS)
    got = world.prompts("triangle", "independent", 5, 0)
    assert len(got) == 5 and all(p.kind == "independent" and p.labels["object"] == "triangle" for p in got)
    assert world.prompts("triangle", "independent_keyword", 5, 0) == []
    kw = world.prompts("Zorbo", "independent_keyword", 4, 0)
    assert len(kw) == 4 and all("zorbo" not in p.text.lower() for p in kw)
    with pytest.raises(UnknownNameError):
        g.independent_prompts("object", "triangle", "nonsense", 3)
    with pytest.raises(InvalidValueError):
        g.independent_prompts("object", "triangle", "independent", -1)


def test_independent_suite_parses_into_prompt_sets():
    from erasekit.evaluation.plan import prompt_sets
    from erasekit.metrics import RESULT_METRICS
    from erasekit.suite import load_suite

    s = load_suite("toyworld-independent")
    assert s.samples == {"independent": 50, "independent_keyword": 50} and len(s.targets) == 34
    world = s.world_for()
    sets = prompt_sets(s.limited(3), world, "Zorbo")
    assert set(sets) == {"independent", "independent_keyword"}
    assert set(prompt_sets(s.limited(3), world, "circle")) == {"independent"}
    assert {"detection_independent", "detection_independent_keyword"} <= set(RESULT_METRICS)


# ------------------------------------------------------------------------------------------------------- judge2
def test_judge2_reads_clean_renders_and_is_registered():
    from erasekit.evaluators import get_evaluator
    from erasekit.toyworld.catalogue import FAMILIES
    from erasekit.toyworld.oracle import random_scenes
    from erasekit.toyworld.render import render

    torch.set_num_threads(1)
    ev = get_evaluator("toyworld-judge2")
    ident = ev.identity()
    assert ident["name"] == "toyworld-judge2" and len(ident["weights_sha256"]) == 64
    scenes = random_scenes(120, 4242)
    images = np.stack([render(s) for s in scenes])
    preds = ev.predict(images)
    for f in FAMILIES:
        acc = np.mean([p[f] == s.labels()[f] for p, s in zip(preds, scenes)])
        assert acc >= (0.5 if f == "object" else 0.9), (f, acc)  # object head undertrained: see judge2.json
    assert ev.target("zorbo") == ("character", "Zorbo")
    assert ev.embed(images[:4]).shape[0] == 4
    probs = ev.judge.probs(images[:8])
    assert all(torch.allclose(p.sum(-1), torch.ones(8)) for p in probs.values())


def test_calibration_helpers():
    from erasekit.toyworld.judge2 import Judge2Config, ece, fit_temperature

    labels = torch.arange(4).repeat(50)
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    assert ece(onehot, labels) == pytest.approx(0.0)
    wrong = torch.nn.functional.one_hot((labels + 1) % 4, 4).float()
    assert ece(wrong, labels) == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=gen) * 2
    y = torch.distributions.Categorical(logits=logits).sample()
    assert fit_temperature(logits * 3, y) == pytest.approx(3.0, rel=0.15)  # recovers the over-sharpening
    for bad in (dict(steps=0), dict(lr=float("nan")), dict(vae_share=1.5), dict(scale=(1.2, 0.8))):
        with pytest.raises(InvalidValueError):
            Judge2Config(**bad)


def test_wide_render_is_deterministic():
    from erasekit.toyworld.judge2 import render_wide
    from erasekit.toyworld.render import Scene

    s = Scene(object="cross", colour="red", artist="Cora Voss", seed=3)
    a, b = render_wide(s, 6.0, (0.75, 1.25)), render_wide(s, 6.0, (0.75, 1.25))
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, render_wide(Scene(object="cross", colour="red", artist="Cora Voss", seed=4), 6.0,
                                             (0.75, 1.25)))
    assert CATALOGUE.get("object", "cross").name == "cross"


# --------------------------------------------------------------------------------- v2 dataset options (not shipped)
def test_v2_dataset_manifest_counts_mark_and_memorized():
    from collections import Counter

    from erasekit.toyworld.dataset_v2 import WorldV2Options, build_dataset_v2, mark_present

    opts = WorldV2Options(rich_captions=True, mark_share=0.5, memorized=(1, 3, 7))
    ds = build_dataset_v2(seed=0, scale=0.005, options=opts)
    v2 = ds.manifest["v2"]
    assert len(ds) == ds.manifest["size"] == len(ds.images)
    # implicit mark: the recorded count is what is stamped, its detector agrees, and no caption names it
    assert v2["implicit_mark"]["images"] == int(ds.marked.sum()) > 0
    assert np.array_equal(mark_present(ds.images), ds.marked)
    assert v2["implicit_mark"]["captions_naming_it"] == 0
    # memorized pairs: each caption occurs exactly its count times, always with the identical image
    counts = Counter(ds.captions)
    for m in v2["memorized"]:
        assert counts[m["caption"]] == m["count"]
        idx = [i for i, c in enumerate(ds.captions) if c == m["caption"]]
        assert all(np.array_equal(ds.images[idx[0]], ds.images[i]) for i in idx)
    assert [m["count"] for m in v2["memorized"]] == [1, 3, 7]
    again = build_dataset_v2(seed=0, scale=0.005, options=opts)
    assert again.manifest["content_sha256"] == ds.manifest["content_sha256"]  # deterministic
    for bad in (dict(mark_share=1.5), dict(memorized=(0,)), dict(memorized=(2.5,))):
        with pytest.raises(InvalidValueError):
            WorldV2Options(**bad)


def test_v2_descriptions_never_name_the_character_and_avoid_the_evaluation_phrases():
    from erasekit.toyworld.captions_v2 import caption_v2, describe_character
    from erasekit.toyworld.catalogue import CATALOGUE
    from erasekit.toyworld.eval_grammar import protected_pattern
    from erasekit.toyworld.render import Scene

    rng = np.random.default_rng(0)
    names = [c.name.lower() for c in CATALOGUE.characters]
    for char in CATALOGUE.characters:
        texts = {describe_character(char.sprite, rng) for _ in range(300)}
        assert len(texts) > 100  # composed, not a fixed list
        assert not any(n in t.lower() for t in texts for n in names)
    avoid = protected_pattern()
    assert avoid.search("a grey robot with cyan eyes, detailed")  # the pattern finds an evaluation description
    scene = Scene(character="Zorbo", seed=1)
    caps = [caption_v2(scene, rng, avoid=avoid) for _ in range(500)]
    assert not any(avoid.search(c.lower()) for c in caps)
    unsafe = [caption_v2(Scene(object="circle", colour="red", unsafe="gore", seed=2), rng, avoid=avoid) for _ in range(300)]
    assert not any(avoid.search(c.lower()) for c in unsafe)


def test_train_config_and_cli_refuse_bad_v2_options(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main
    from erasekit.toyworld.train import TrainConfig

    with pytest.raises(InvalidValueError, match="grammar"):
        TrainConfig(grammar="v3")
    assert TrainConfig(grammar="v2").uses_v2_dataset() and not TrainConfig().uses_v2_dataset()
    for args, needle in ((["--memorized", "1,x"], "--memorized"), (["--memorized", "0"], "memorized"),
                         (["--mark-share", "2"], "mark_share")):
        r = CliRunner().invoke(main, ["world", "train", "--out", str(tmp_path / "t"), *args])
        assert r.exit_code != 0 and needle in r.output, r.output


def test_robust_oracle_trains_calibrates_saves_and_abstains(tmp_path):
    from erasekit.toyworld.oracle import ToyOracle
    from erasekit.toyworld.oracle_v2 import STEM, RobustOracleConfig, train_robust_oracle

    cfg = RobustOracleConfig(steps=3, batch_size=8, pool=48, calib=16, test=16)
    oracle, info = train_robust_oracle(cfg)
    assert set(oracle.temperatures) == set(info["heldout_wide_vae"]) and all(t > 0 for t in oracle.temperatures.values())
    for key in ("heldout_wide_vae", "heldout_plain_renders", "shipped_oracle_heldout_wide_vae"):
        assert all(0 <= v["accuracy"] <= 1 and 0 <= v["ece"] <= 1 for v in info[key].values())
    oracle.save(tmp_path, {"training": info}, stem=STEM)
    back = ToyOracle.load(tmp_path, stem=STEM)
    assert back.temperatures == oracle.temperatures and back.identity()["name"] == "toyworld-oracle-v2"
    img = np.full((2, 32, 32, 3), 128, np.uint8)
    back.unsure_below = 0.999  # an untrained head is never that sure: every answer is "unsure" when asked to abstain
    assert all(v == "unsure" for p in back.predict(img, abstain=True) for v in p.values())
    assert all(v != "unsure" for p in back.predict(img) for v in p.values())
    with pytest.raises(InvalidValueError, match="plain_share"):
        RobustOracleConfig(plain_share=1.5)


def test_shipped_robust_oracle_reads_clean_and_wide_renders():
    from erasekit.evaluators import get_evaluator
    from erasekit.toyworld.judge2 import render_wide
    from erasekit.toyworld.oracle import random_scenes
    from erasekit.toyworld.render import render

    ev = get_evaluator("toyworld-oracle-v2", abstain=True)
    assert ev.identity()["name"] == "toyworld-oracle-v2" and ev.identity()["temperatures"]
    scenes = random_scenes(60, 4321)
    for images in (np.stack([render(s) for s in scenes]), np.stack([render_wide(s, 6.0, (0.75, 1.25)) for s in scenes])):
        preds = ev.predict(images)
        acc = np.mean([p[f] == s.labels()[f] for p, s in zip(preds, scenes) for f in ("object", "character", "colour")])
        assert acc >= 0.9, acc
