"""SEAL (erasekit.marks.seal): key files, the semantic hash, latent-level detection and its null, config errors, and
the generate / detect / bench plumbing on the tiny random pipeline (toy-model behaviour: notes bench_seal.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from erasekit.errors import ErasekitError, InvalidValueError
from erasekit.marks import Key, get_mark, marks
from erasekit.marks.seal import poisson_binomial_sf, semantic_embeddings


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def at_angle(v: torch.Tensor, degrees: float, seed: int) -> torch.Tensor:
    """A unit vector at `degrees` from unit vector v (D,)."""
    u = torch.randn(v.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    u = unit(u - (u @ v) * v)
    a = math.radians(degrees)
    return math.cos(a) * v + math.sin(a) * u


def test_seal_key_round_trip_and_wrong_method(tmp_path, tiny_pipe):
    seal = get_mark("seal")
    assert "seal" in marks.names()
    key = seal.keygen(tiny_pipe)
    assert key.config["k"] == 16 and key.shape == (4, 8, 8)  # official 2x2-pixel patches on the 8x8 latent
    assert key.meta["embedding_dim"] == "32"
    path = key.save(tmp_path / "s.key")
    back = Key.load(path, method="seal")
    assert back.fingerprint() == key.fingerprint() and back.config == key.config
    emb = semantic_embeddings(tiny_pipe, ["a red ring", "Zorbo"])
    assert torch.equal(seal.initial_latents(back, None, emb), seal.initial_latents(key, None, emb))
    assert seal.keygen(tiny_pipe).fingerprint() != key.fingerprint()  # fresh salt every time
    with pytest.raises(InvalidValueError, match="made for watermark 'seal'"):
        Key.load(path, method="gaussian_shading")
    gs_key = get_mark("gaussian_shading").keygen(tiny_pipe)
    with pytest.raises(InvalidValueError, match="not 'seal'"):
        seal.score_latents(gs_key, torch.zeros(1, 4, 8, 8), emb[:1])
    with pytest.raises(InvalidValueError, match="32-dim"):  # another text encoder's embeddings
        seal.initial_latents(key, None, torch.ones(1, 64))


def test_simhash_changes_with_content():
    seal = get_mark("seal")
    key = seal.keygen(shape=(4, 8, 8), entropy=b"h")
    v = unit(torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    same = seal.simhash(key, torch.stack([v, v]))
    assert same.shape == (2, 16, 7) and (same[0] == same[1]).all()
    # SimHash: each bit agrees with probability 1 - theta / 180 (112 bits per image)
    near, far = at_angle(v, 10, 1), at_angle(v, 90, 2)
    bits = seal.simhash(key, torch.stack([v, near, far]))
    agree_near, agree_far = (bits[1] == bits[0]).mean(), (bits[2] == bits[0]).mean()
    assert agree_near > 0.85 and 0.3 < agree_far < 0.7
    # the noise follows the content: other content selects other patch noises
    z = seal.initial_latents(key, None, torch.stack([v, far]))
    same_patch = [(z[0, :, y:y + 2, x:x + 2] == z[1, :, y:y + 2, x:x + 2]).all() for y in range(0, 8, 2)
                  for x in range(0, 8, 2)]
    all_bits = (bits[2] == bits[0]).all(axis=1)
    assert [bool(s) for s in same_patch] == [bool(a) for a in all_bits]
    # another key hashes the same content differently
    other = seal.keygen(shape=(4, 8, 8), entropy=b"i")
    assert (seal.simhash(other, v[None]) != bits[:1]).any()


def test_marked_latent_scores_higher_than_other_contents():
    seal, corr = get_mark("seal"), get_mark("seal:statistic=correlation")
    key = seal.keygen(shape=(4, 8, 8), entropy=b"m")
    g = torch.Generator().manual_seed(3)
    v = unit(torch.randn(2, 64, generator=g, dtype=torch.float64))
    marked = seal.initial_latents(key, None, v)
    recovered = marked + 0.4 * torch.randn(marked.shape, generator=g)  # an imperfect inversion
    own = seal.score_latents(key, recovered, v)
    other = seal.score_latents(key, recovered, v.flip(0))  # the same latents judged as the other content
    assert own.decision.all() and (own.score >= 0.9).all() and (own.p_value < 1e-20).all()
    assert not other.decision.any() and (other.score < own.score).all()
    assert own.rule["marked_if"] == "P(M >= matches) <= 1e-06" and "no calibration" in own.rule["source"]
    assert not seal.score_latents(seal.keygen(shape=(4, 8, 8), entropy=b"n"), recovered, v).decision.any()
    c_own, c_other = corr.score_latents(key, recovered, v), corr.score_latents(key, recovered, v.flip(0))
    assert c_own.decision.all() and (c_own.score > 10).all() and (c_other.score < c_own.score).all()
    # official rule: floor(16 * (1 - 70/180)^7) = 0 is raised to 1 with a warning
    rule = get_mark("seal:match_rule=theta_mid").score_latents(key, recovered, v).rule
    assert rule["marked_if"] == "matches >= 1 of 16" and "warning" in rule


def test_null_p_values_are_conservative():
    seal = get_mark("seal")
    key = seal.keygen(shape=(4, 8, 8), entropy=b"z")
    g = torch.Generator().manual_seed(5)
    n = 300
    v = unit(torch.randn(n, 64, generator=g, dtype=torch.float64))
    z = torch.randn(n, 4, 8, 8, generator=g) * 0.5  # an unmarked, shrunken "inversion": the null still holds
    det = seal.score_latents(key, z, v)
    assert not det.decision.any()
    for level in (0.05, 0.2):
        assert (det.p_value <= level).mean() <= level + 0.05


def test_poisson_binomial_tail_matches_binomial():
    from scipy.stats import binom

    p = np.full((3, 10), 0.3)
    m = np.array([0, 3, 10])
    assert np.allclose(poisson_binomial_sf(p, m), binom.sf(m - 1, 10, 0.3))
    q = np.array([[0.1, 0.5, 0.9]])  # brute force over the 8 outcomes
    outcomes = np.array(np.meshgrid(*[[0, 1]] * 3, indexing="ij")).reshape(3, -1).T
    prob = np.prod(np.where(outcomes == 1, q, 1 - q), axis=1)
    assert math.isclose(poisson_binomial_sf(q, np.array([2]))[0], prob[outcomes.sum(1) >= 2].sum())


@pytest.mark.parametrize("opts, word", [
    ({"k": 15}, "square"), ({"k": 0}, "k must"), ({"b": 0}, "b must"), ({"b": 65}, "b must"),
    ({"patch_distance_threshold": -1.0}, "patch_distance_threshold"),
    ({"patch_distance_threshold": float("nan")}, "patch_distance_threshold"), ({"theta_mid": 180.0}, "theta_mid"),
    ({"match_rule": "vote"}, "match_rule"), ({"statistic": "bits"}, "statistic"), ({"fpr": 1.5}, "fpr"),
    ({"inversion_prompt": "x"}, "inversion_prompt")])
def test_seal_config_errors(opts, word):
    with pytest.raises(InvalidValueError, match=word) as e:
        get_mark("seal", **opts)
    assert "\n" not in str(e.value)


def test_seal_grid_errors():
    with pytest.raises(InvalidValueError, match="do not tile"):
        get_mark("seal", k=9).keygen(shape=(4, 8, 8))  # a 3x3 grid does not divide 8
    assert get_mark("seal", k=1024).keygen(shape=(4, 64, 64)).config["k"] == 1024  # the official grid


def test_seal_generate_detect_plumbing(tiny_pipe):
    from erasekit.testing import tiny_pipeline

    seal = get_mark("seal:inversion_steps=2")
    key = seal.keygen(tiny_pipe)
    imgs = seal.generate(tiny_pipe, key, ["a red ring", "Zorbo"], [0, 1], steps=2, guidance=3.0)
    assert imgs.shape == (2, 32, 32, 3) and imgs.dtype == np.uint8
    det = seal.detect(key, imgs, pipe=tiny_pipe)
    assert det.score.shape == (2,) and len(det.extra["captions"]) == 2 and det.p_value is not None
    idx, scores = seal.identify([key, seal.keygen(tiny_pipe)], imgs, pipe=tiny_pipe)
    assert scores.shape == (2, 2) and idx.shape == (2,)
    with pytest.raises(ErasekitError, match="pass pipe="):
        seal.detect(key, imgs)
    bare = tiny_pipeline(seed=0)  # a model with no world: no captioner
    with pytest.raises(ErasekitError, match="captions="):
        seal.detect(key, imgs, pipe=bare)
    det2 = seal.detect(key, imgs, pipe=bare, captions=["a red ring", "Zorbo"])
    assert det2.extra["captions"] == ["a red ring", "Zorbo"]
    with pytest.raises(InvalidValueError, match="one caption"):
        seal.detect(key, imgs, pipe=bare, captions=["a red ring"])


def test_seal_in_the_bench(tmp_path):
    import json

    from erasekit.marks.bench import run_bench
    from erasekit.testing import tiny_pipeline

    pipe = tiny_pipeline(seed=0, world="toyworld")  # a model card with 2 sampling steps keeps the bench fast
    (tmp_path / "erasekit.json").write_text(json.dumps({"sampling": {"steps": 2, "guidance": 3.0}}))
    pipe.register_to_config(_name_or_path=str(tmp_path))
    res = run_bench(pipe, methods=["seal"], attacks=["none"], n=4, n_keys=2,
                    prompts=["a red ring", "Zorbo", "a blue cross", "Mossy"])
    row = res["rows"][0]
    assert res["pipeline"]["steps"] == 2
    assert row["method"] == "seal" and 0.0 <= row["auc"] <= 1.0 and row["ident_acc"] is not None
    assert res["methods"]["seal"]["rule"]["marked_if"].startswith("P(M >= matches)")
