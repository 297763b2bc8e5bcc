"""Imitation score, frequency counting and the imitation threshold (FIT): against direct computations, on synthetic
curves with a known change point, on bad inputs, and end-to-end (scaled down) on the shipped toy model."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erasekit.errors import InvalidValueError, UnknownNameError
from erasekit.imitation import (caption_matches, count_by_captions, find_threshold, first_change_point,
                                imitation_score, max_f1_threshold, plot_threshold)
from erasekit.toyworld.imitation import toy_frequencies
from erasekit.toyworld import CATALOGUE
from erasekit.toyworld.dataset import build_dataset, plan_scenes


# ----------------------------------------------------------------------------------------------------------- score
def _direct_score(g: np.ndarray, t: np.ndarray, k: int) -> float:
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    s = np.array([[float(a @ b) for b in tn] for a in gn])
    top = sorted(range(len(tn)), key=lambda j: -s[:, j].mean())[:k]
    return float(np.mean([s[i, j] for i in range(len(gn)) for j in top]))


@pytest.mark.parametrize("n_gen,n_train,k", [(7, 30, 10), (3, 4, 10), (5, 12, 1)])
def test_score_equals_direct_computation(n_gen, n_train, k):
    rng = np.random.default_rng(n_gen * 100 + n_train)
    g, t = rng.normal(size=(n_gen, 16)), rng.normal(size=(n_train, 16))
    res = imitation_score(torch.tensor(g), torch.tensor(t), k=k)
    assert res.score == pytest.approx(_direct_score(g, t, k), abs=1e-9)
    assert res.k == min(k, n_train) and res.n_generated == n_gen and res.n_training == n_train
    means = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    assert list(res.top_indices) == list(np.argsort(-means.mean(0), kind="stable")[:res.k])


def test_score_is_high_for_copies_and_low_for_unrelated():
    rng = np.random.default_rng(0)
    style = rng.normal(size=(1, 8))
    t = style + 0.3 * rng.normal(size=(20, 8))  # training images of one style
    same = imitation_score(style + 0.3 * rng.normal(size=(5, 8)), t).score
    other = imitation_score(rng.normal(size=(5, 8)), t).score
    assert same > 0.8 and other < 0.5


@pytest.mark.parametrize("gen,train,k,match", [
    (np.zeros((0, 4)), np.ones((3, 4)), 10, "no generated images"),
    (np.ones((2, 4)), np.zeros((0, 4)), 10, "no training images"),
    (np.ones((2, 4)), np.ones((3, 5)), 10, "embedding sizes differ"),
    (np.ones((2, 4)), np.ones((3, 4)), 0, "k must be a positive integer"),
    (np.ones(4), np.ones((3, 4)), 10, "2-D"),
])
def test_score_bad_inputs_raise_clear_errors(gen, train, k, match):
    with pytest.raises(InvalidValueError, match=match):
        imitation_score(gen, train, k=k)


# ------------------------------------------------------------------------------------------------------- threshold
def _step_table(change_at: int = 12, n: int = 24, noise: float = 0.01, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    freqs = np.unique(np.round(np.geomspace(3, 3000, n)).astype(int))
    perm = rng.permutation(len(freqs))  # input order must not matter
    return {f"c{i}": (float(freqs[i]), (0.3 if i < change_at else 0.8) + noise * rng.normal()) for i in perm}


def test_pelt_finds_the_known_change_point():
    table = _step_table()
    freqs = sorted(f for f, _ in table.values())
    res = find_threshold(table, n_bootstrap=0)
    assert res.threshold == freqs[12] and res.index == 12
    assert res.breakpoints[-1] == len(table)
    assert list(res.frequencies) == freqs  # sorted by frequency


def test_no_change_point_on_a_flat_curve():
    rng = np.random.default_rng(1)
    cp = first_change_point(np.arange(1, 30), 0.5 + 0.001 * rng.normal(size=29))
    assert cp.threshold is None and cp.index is None


def test_penalty_matters_and_standardize_rescales():
    table = _step_table(noise=0.0)
    small = {c: (f, s * 0.1) for c, (f, s) in table.items()}  # a 0.05 step: below the published penalty's reach
    assert find_threshold(small, n_bootstrap=0).threshold is None
    assert find_threshold(small, n_bootstrap=0, standardize=True).threshold == find_threshold(table, n_bootstrap=0).threshold


def test_bootstrap_interval_brackets_the_threshold():
    table = _step_table(noise=0.05, seed=3)
    res = find_threshold(table, n_bootstrap=200, seed=0)
    lo, hi = res.interval
    assert lo <= res.threshold <= hi and lo < hi
    assert 0.5 < res.bootstrap_found <= 1.0
    again = find_threshold(table, n_bootstrap=200, seed=0)
    assert again.interval == res.interval  # seeded


@pytest.mark.parametrize("table,match", [
    ({}, "no concepts"),
    ({"a": (1, 0.1), "b": (2, 0.9)}, "too few concepts"),
    ({"": (1, 0.1), "b": (2, 0.9), "c": (3, 0.9)}, "empty concept"),
    ({"a": (1, float("nan")), "b": (2, 0.9), "c": (3, 0.9)}, "finite"),
    ({"a": (-1, 0.1), "b": (2, 0.9), "c": (3, 0.9)}, ">= 0"),
])
def test_threshold_bad_inputs_raise_clear_errors(table, match):
    with pytest.raises(InvalidValueError, match=match):
        find_threshold(table, n_bootstrap=0)


def test_plot_is_a_png():
    png = plot_threshold(find_threshold(_step_table(), n_bootstrap=20))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# ------------------------------------------------------------------------------------------------------- frequency
def test_caption_matching_is_whole_word_and_case_insensitive():
    caps = ["a red circle by Alva Renn", "ALVA RENN's square", "by Alva Rennick", "a plain box", "alva renn, art"]
    assert caption_matches(caps, "Alva Renn").tolist() == [True, True, False, False, True]
    assert count_by_captions(caps, {"Alva Renn": ["navy bands"], "Cora Voss": []}) == {"Alva Renn": 3, "Cora Voss": 0}
    with pytest.raises(InvalidValueError, match="empty concept"):
        caption_matches(caps, " ")


def test_max_f1_threshold_separates_separable_data():
    thr, f1 = max_f1_threshold([0.1, 0.2, 0.7, 0.9, 0.3], [False, False, True, True, False])
    assert f1 == pytest.approx(1.0) and 0.3 < thr < 0.7
    with pytest.raises(InvalidValueError, match="no positive"):
        max_f1_threshold([0.1, 0.2], [False, False])


@pytest.fixture(scope="module")
def small_dataset():
    return build_dataset(seed=0, scale=0.05)


def test_toy_frequencies_caption_counts_undercount_the_truth(small_dataset):
    counts = toy_frequencies(small_dataset, "artist")
    core = [c for c in counts.values() if c.true >= 50]
    assert core and all(0.6 * c.true < c.caption < c.true for c in core)  # ~78% named (+ characters by name)
    manifest = small_dataset.manifest["counts"]["artist"]
    assert all(c.true == manifest.get(name, 0) for name, c in counts.items())
    with pytest.raises(UnknownNameError, match="Alva Renn"):
        toy_frequencies(small_dataset, "artist", ["Alva Ren"])


def test_image_confirmation_with_the_oracle_embedding(small_dataset):
    from erasekit.toyworld import Scene, render

    oracle = pytest.importorskip("erasekit.toyworld").load_oracle() if _has_shipped() else None
    if oracle is None:
        pytest.skip("shipped toy model not installed")
    refs = {a: np.stack([render(Scene(object="circle", colour="red", artist=a, seed=s)) for s in range(8)])
            for a in ("Alva Renn", "Boris Kell")}
    counts = toy_frequencies(small_dataset, "artist", ["Alva Renn", "Boris Kell"], oracle.embed, refs)
    for c in counts.values():
        assert c.confirmed is not None and c.confirmed <= c.caption
        assert c.details["confirmed_precision"] > 0.9


def test_counts_override_changes_only_that_concept():
    base = plan_scenes(0, 0.02)
    assert base == plan_scenes(0, 0.02, counts={})  # default dataset unchanged
    cf = plan_scenes(0, 0.02, counts={"kai tamsin": 40})
    n = lambda scenes, a: sum(s.artist == a for s in scenes)
    assert n(cf, "Kai Tamsin") == 40 and n(base, "Kai Tamsin") == 6
    others = [a.name for a in CATALOGUE.artists if a.name != "Kai Tamsin"]
    assert [n(cf, a) for a in others] == [n(base, a) for a in others] and len(cf) == len(base) + 34
    with pytest.raises(UnknownNameError, match="Kai Tamsin"):
        plan_scenes(0, 0.02, counts={"Kai Tamsn": 3})
    with pytest.raises(InvalidValueError, match="integer >= 0"):
        plan_scenes(0, 0.02, counts={"Kai Tamsin": -1})


# ------------------------------------------------------------------------------------------------------------- CLI
def _has_shipped() -> bool:
    from erasekit.toyworld.plugin import assets_dir as toyworld_dir

    return (toyworld_dir() / "pipeline" / "model_index.json").exists()


def test_cli_threshold_writes_json_png_html(tmp_path):
    from erasekit.cli import main

    table = [{"concept": c, "frequency": f, "score": s} for c, (f, s) in _step_table().items()]
    (tmp_path / "t.json").write_text(json.dumps(table))
    r = CliRunner().invoke(main, ["imitation", "threshold", "--table", str(tmp_path / "t.json"), "--bootstrap", "50",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "o" / "threshold.json").read_text())
    assert data["threshold"] == sorted(t["frequency"] for t in table)[12]
    assert (tmp_path / "o" / "threshold.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64" in (tmp_path / "o" / "threshold.html").read_text()
    (tmp_path / "few.json").write_text(json.dumps(table[:2]))
    r = CliRunner().invoke(main, ["imitation", "threshold", "--table", str(tmp_path / "few.json"), "--out",
                                  str(tmp_path / "o2")])
    assert r.exit_code == 2 and "too few concepts" in r.output


def test_cli_score_needs_all_three_folder_options(tmp_path):
    from erasekit.cli import main

    r = CliRunner().invoke(main, ["imitation", "score", "--generated", str(tmp_path)])
    assert r.exit_code == 2 and "go together" in r.output


@pytest.mark.skipif(not _has_shipped(), reason="shipped toy model not installed")
def test_end_to_end_on_the_shipped_model_scaled_down(small_dataset):
    """Few images: a core artist is imitated more than a 3-image tail artist, and the CLI writes its files."""
    from erasekit import load_pipeline
    from erasekit.toyworld.imitation import toy_imitation
    from erasekit.toyworld import load_oracle

    from erasekit.toyworld.plugin import assets_dir as toyworld_dir

    pipe, oracle = load_pipeline(str(toyworld_dir() / "pipeline")), load_oracle()
    # training images: the 5% sample of the training set suffices for a plumbing-and-ordering check
    scores = toy_imitation(pipe, oracle.embed, small_dataset, "artist", ["Alva Renn", "Rhea Solis"], n=6, steps=10,
                           guidance=5.0)
    assert all(-1 <= s.score <= 1 for s in scores.values())
    assert scores["Alva Renn"].score > scores["Rhea Solis"].score
    with pytest.raises(InvalidValueError, match="no training images"):
        toy_imitation(pipe, oracle.embed, build_dataset(0, 0.02, counts={"Rhea Solis": 0}), "artist", ["Rhea Solis"],
                      n=2, steps=2)
