"""ItD's sparse-autoencoder shield (`erasekit.shields.sae`): plumbing on a tiny random pipeline. Random weights prove
code paths and invariants (training lowers the reconstruction error, only classified prompts change, nothing is
left modified), never that the concept is erased: that is measured on the toy model (BENCHMARKS.md, SAE section)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from erasekit.errors import ErasekitError, InvalidValueError
from erasekit.fingerprint import module_sha256
from erasekit.shields import get_shield, parse_spec, shielded_generate
from erasekit.shields._sae import (SAETrainConfig, corpus, default_layer, layer_outputs, load_record, load_sae,
                                   save_sae, train_sae)
from erasekit.shields.sae import SAEShield, SAEShieldConfig, deactivate

STEPS = 2
PROTECTED = "a picture of Zorbo"
UNPROTECTED = "a red circle"
TRAIN = SAETrainConfig(expansion=8, k=8, auxk=32, dead_tokens=2000, prompts=300, steps=150, batch_tokens=512)
# Classification that holds by construction on random weights: PROTECTED is one of Zorbo's concept prompts (the
# threshold is below its score) and UNPROTECTED is the only neutral prompt with every feature compared (top = all),
# so no concept feature fires in it (score 0 < threshold). The world's own neutral prompts are tested separately.
OPTS = "templates=2,top=256"
NEG = {"negatives": [UNPROTECTED]}


@pytest.fixture(scope="module")
def pipe():
    from erasekit.testing import tiny_pipeline

    return tiny_pipeline(seed=0, world="toyworld")


@pytest.fixture(scope="module")
def trained(pipe, tmp_path_factory):
    """(path, sae, record): one SAE trained on the tiny pipeline's text encoder over the toy world's corpus."""
    prompts = corpus("toyworld", TRAIN.prompts, TRAIN.seed)
    sae, record = train_sae(pipe, prompts, TRAIN)
    path = save_sae(sae, tmp_path_factory.mktemp("sae") / "tiny.safetensors", record)
    return path, sae, record


def test_sae_trains_reconstructs_and_round_trips(pipe, trained):
    path, sae, record = trained
    assert sae.layer == default_layer(2) == 1 and default_layer(12) == 8 and default_layer(3) == 1
    acts = layer_outputs(pipe, [PROTECTED, UNPROTECTED, "Mossy in the style of Cora Voss"], sae.layer)[:, 1:]
    x = acts.reshape(-1, acts.shape[-1])
    z = sae.encode(x)
    assert int((z > 0).sum(-1).max()) <= sae.k  # TopK: at most k active features per token
    fvu = float(((sae.decode(z) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    # an untrained SAE (same init, pre_bias at the mean) reconstructs far worse than the trained one
    torch.manual_seed(TRAIN.seed)
    from erasekit.shields._sae import SparseAutoencoder

    raw = SparseAutoencoder(sae.d_model, sae.n_features, sae.k, sae.layer)
    with torch.no_grad():
        raw.pre_bias.copy_(x.mean(0))
    fvu_raw = float(((raw.decode(raw.encode(x)) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert fvu < 0.5 * fvu_raw, (fvu, fvu_raw)
    assert 0 <= record["fvu_train"] < 1 and record["train_seconds"] > 0 and record["tokens"] == record["prompts"] * 76
    # file round trip: same latents; the JSON record beside it holds config, data hash, time, file hash
    again = load_sae(path)
    torch.testing.assert_close(again.encode(x), z)
    rec = load_record(path)
    assert rec["data_sha256"] == record["data_sha256"] and len(rec["data_sha256"]) == 64
    assert rec["config"]["k"] == TRAIN.k and rec["train_seconds"] == record["train_seconds"]
    assert rec["file_sha256"] == SAEShield.content_identity(SAEShieldConfig(file=str(path)))["sae_sha256"]
    # deterministic in the seed: the same training gives the same weights
    sae2, record2 = train_sae(pipe, corpus("toyworld", 40, 0), SAETrainConfig(expansion=2, k=4, steps=5,
                                                                              batch_tokens=64, prompts=40))
    sae3, _ = train_sae(pipe, corpus("toyworld", 40, 0), SAETrainConfig(expansion=2, k=4, steps=5, batch_tokens=64,
                                                                        prompts=40))
    torch.testing.assert_close(sae2.encoder.weight, sae3.encoder.weight, rtol=0, atol=0)


def test_features_found_and_classifier_scores(pipe, trained):
    path = trained[0]
    shield = get_shield(f"sae:file={path},{OPTS}", concepts=["Zorbo"], pipe=pipe, **NEG)
    feats = shield.features["Zorbo"]
    assert feats and all(0 <= f < shield.sae.n_features for f in feats)
    scores = shield.scores(pipe, [PROTECTED, "Zorbo", UNPROTECTED])
    assert scores[0] >= shield.threshold > 0 and scores[1] >= shield.threshold and scores[2] == 0
    official = get_shield(f"sae:file={path},{OPTS},score=official", concepts=["Zorbo"], pipe=pipe, **NEG)
    assert official.scores(pipe, [UNPROTECTED])[0] > 0  # the official score adds the reconstruction error
    # the world's neutral prompts (calibration corpus + every other concept's terms) exclude generic features
    world = get_shield(f"sae:file={path},top=8,neutral=24,templates=2", concepts=["Zorbo"], pipe=pipe)
    assert world.features["Zorbo"] and set(world.features["Zorbo"]) <= set(range(shield.sae.n_features))
    assert len(world.neutral_prompts()) > 24 and "Zorbo" not in " ".join(world.neutral_prompts())
    # deactivation is the identity on the features' complement: no concept feature -> score = reconstruction error
    h = layer_outputs(pipe, [UNPROTECTED], shield.sae.layer)
    out0, s0 = deactivate(shield.sae, h, [], -8.0)
    out1, s1 = deactivate(shield.sae, h, feats, 1.0)
    torch.testing.assert_close(out0, out1) and torch.testing.assert_close(s0, s1)
    assert torch.equal(out0[:, 0], h[:, 0])  # BOS is never touched
    kept, sk = deactivate(shield.sae, h, [], -8.0, keep_error=True)
    torch.testing.assert_close(kept, h) and float(sk) < 1e-10  # with the error added back, nothing else changes
    # one SAE, several concepts: erase= adds them, each with its own features, one union ablated
    multi = get_shield(f"sae:file={path},{OPTS},erase=Mossy;Zorbo", concepts=["Zorbo"], pipe=pipe, **NEG)
    assert [c.name for c in multi.concepts] == ["Zorbo", "Mossy"] and set(multi.features) == {"Zorbo", "Mossy"}
    assert set(multi.all_features) == set(multi.features["Zorbo"]) | set(multi.features["Mossy"])


def test_shield_changes_only_classified_prompts_and_no_weights(pipe, trained):
    path = trained[0]
    base, _ = shielded_generate(pipe, [PROTECTED, UNPROTECTED], [0, 1], None, steps=STEPS)
    before = {c: module_sha256(getattr(pipe, c)) for c in ("text_encoder", "unet", "vae")}
    from erasekit.conditioning import encode_prompts

    emb_before = encode_prompts(pipe, [PROTECTED, UNPROTECTED])
    shield = get_shield(f"sae:{path},{OPTS}", concepts=["Zorbo"], pipe=pipe, **NEG)
    images, info = shielded_generate(pipe, [PROTECTED, UNPROTECTED], [0, 1], shield, steps=STEPS)
    json.dumps(info)
    assert info["details"]["deactivated"] == [True, False]
    assert not np.array_equal(images[0], base[0])
    np.testing.assert_array_equal(images[1], base[1])  # the other prompt is generated bit-exactly as before
    assert info["shield"]["name"] == "sae" and info["shield"]["sae_sha256"] == load_record(path)["file_sha256"]
    # reversible: no weight changed, no hook left on the text encoder
    assert {c: module_sha256(getattr(pipe, c)) for c in before} == before
    torch.testing.assert_close(encode_prompts(pipe, [PROTECTED, UNPROTECTED]), emb_before, rtol=0, atol=0)
    # classify=false deactivates every prompt (the unprotected one changes too)
    every = get_shield(f"sae:{path},{OPTS},classify=false", concepts=["Zorbo"], pipe=pipe, **NEG)
    _, info2 = shielded_generate(pipe, [PROTECTED, UNPROTECTED], [0, 1], every, steps=STEPS)
    assert info2["details"]["deactivated"] == [True, True]


def test_cache_identity_follows_the_file_content(pipe, trained, tmp_path):
    path, sae, record = trained
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(path).read_bytes())
    ident = SAEShield.content_identity(SAEShieldConfig(file=str(path)))
    assert SAEShield.content_identity(SAEShieldConfig(file=str(copy))) == ident  # content, not path
    with torch.no_grad():
        other = load_sae(path)
        other.latent_bias[0] += 1.0
    save_sae(other, copy, record)
    assert SAEShield.content_identity(SAEShieldConfig(file=str(copy))) != ident
    # the evaluation plan's cache key carries it: same spec text, changed file -> another variant identity
    from erasekit.evaluation.plan import Variant, prepare_variant

    spec = f"sae:file={copy}"
    before = prepare_variant(Variant("sae", shield=spec)).identity()
    save_sae(load_sae(path), copy, record)
    after = prepare_variant(Variant("sae", shield=spec)).identity()
    assert before != after and after["shield"]["parts"][0][2] == ident


@pytest.mark.parametrize("spec,match", [
    ("sae", "needs an SAE file"),
    ("sae:file=MISSING", "cannot read SAE file"),
    ("sae:file=NOTSAE", "not a safetensors SAE file|not an erasekit SAE file"),
    ("sae:file=NAN", "NaN/inf"),
    ("sae:file=GOOD,margin=1", "margin"),
    ("sae:file=GOOD,strength=nan", "finite"),
    ("sae:file=GOOD,top=0", "top must be >= 1"),
    ("sae:file=GOOD,bogus=1", "bogus"),
])
def test_bad_inputs_give_one_line_errors(pipe, trained, tmp_path, spec, match):
    path, sae, _ = trained
    notsae = tmp_path / "notsae.safetensors"
    notsae.write_bytes(b"this is not a safetensors file")
    nan = load_sae(path)
    with torch.no_grad():
        nan.encoder.weight[0, 0] = float("nan")
    save_sae(nan, tmp_path / "nan.safetensors")
    spec = (spec.replace("MISSING", str(tmp_path / "missing.safetensors")).replace("NOTSAE", str(notsae))
            .replace("NAN", str(tmp_path / "nan.safetensors")).replace("GOOD", str(path)))
    with pytest.raises(ErasekitError, match=match) as e:
        get_shield(spec, concepts=["Zorbo"], pipe=pipe)
    assert "\n" not in str(e.value)


def test_bad_training_and_model_inputs(pipe, trained):
    path = trained[0]
    for bad in ({"k": 0}, {"lr": float("nan")}, {"layer": -1}, {"steps": 0}):
        with pytest.raises(InvalidValueError):
            SAETrainConfig(**bad)
    with pytest.raises(InvalidValueError, match="layers 0..1"):
        train_sae(pipe, ["a red circle"], SAETrainConfig(layer=5, steps=1))
    with pytest.raises(InvalidValueError, match="non-empty"):
        train_sae(pipe, [], SAETrainConfig(steps=1))
    with pytest.raises(InvalidValueError, match="no prompt corpus"):
        corpus("none", 10, 0)
    from erasekit.testing import tiny_pipeline

    wide = tiny_pipeline(seed=0, cross_attention_dim=48, world="toyworld")  # another text-encoder width
    with pytest.raises(InvalidValueError, match="width 32"):
        get_shield(f"sae:file={path},{OPTS}", concepts=["Zorbo"], pipe=wide, **NEG)
    terms = ["Zorbo", "tin robot", "robot with an antenna", "metal android"]  # neutral = the concept prompts
    with pytest.raises(InvalidValueError, match="no feature of"):
        get_shield(f"sae:file={path},top=10000,templates=1", concepts=["Zorbo"], pipe=pipe, negatives=terms)
    assert parse_spec(f"sae:{path}")[0][1].file == str(path)  # the primary option is the file


def test_cli_train_and_check(pipe, tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main

    pipe.save_pretrained(tmp_path / "tiny")
    (tmp_path / "tiny" / "erasekit.json").write_text(json.dumps({"world": "toyworld"}))
    out = tmp_path / "cli.safetensors"
    args = ["sae", "train", "--model", str(tmp_path / "tiny"), "--out", str(out)]  # the fixture's SAE (TRAIN)
    for k in ("steps", "prompts", "expansion", "k", "auxk", "dead_tokens", "batch_tokens"):
        args += ["--option", f"{k}={getattr(TRAIN, k)}"]
    runner = CliRunner()
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    rec = json.loads(out.with_suffix(".json").read_text())
    assert out.exists() and rec["config"]["prompts"] == 300 and rec["prompts"] > 300  # + every concept's terms
    res = runner.invoke(main, args)  # never overwritten without --overwrite
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = runner.invoke(main, ["sae", "train", "--model", str(tmp_path / "tiny"), "--out", str(tmp_path / "x.bin")])
    assert res.exit_code == 2 and ".safetensors" in res.output
    res = runner.invoke(main, ["sae", "check", "--sae", str(out), "--model", str(tmp_path / "tiny"), "--protect",
                               "Zorbo", "--options", "top=8,neutral=24,templates=2", "--prompt", PROTECTED,
                               "--prompt", UNPROTECTED, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("{"):])["results"]
    assert len(rows) == 2 and all(np.isfinite(r["score"]) for r in rows)
