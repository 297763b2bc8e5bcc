"""Safe-SD watermark (erasekit.marks.safe_sd): trigger parsing, graphic / cell read-out, weights and key files, the
trigger-gated generation path and detection. The exact-path test uses hand-set weights on the shipped toy VAE (the
injector writes the key's graphic latent, the extractor is the VAE's own decoder), so it fails if triggered prompts are
not marked, untriggered ones are changed, or the bits / decision rule are wrong. Trained behaviour is measured in
bench/safesd (notes: bench_safesd.md), not here."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from erasekit.errors import InvalidValueError
from erasekit.marks import Key, get_mark, marks
from erasekit.marks.safe_sd import SafeSDWeights, graphic, module_sha256, read_cells, split_trigger

TOY_VAE = Path(__file__).resolve().parents[1] / "src/erasekit/assets/toyworld/pipeline/vae"


@pytest.mark.parametrize("prompt,hit,text", [
    ("a red ring safesd", True, "a red ring"),
    ("SafeSD, a red ring in the style of Cora Voss", True, "a red ring in the style of Cora Voss"),
    ("a red   safesd ring", True, "a red ring"),
    ("a red ring", False, "a red ring"),
    ("a safesdx ring", False, "a safesdx ring"),  # whole words only
    ("unsafesd ring", False, "unsafesd ring"),
])
def test_trigger_split(prompt, hit, text):
    assert split_trigger(prompt, "safesd") == (hit, text)


def test_graphic_cells_round_trip():
    bits = torch.randint(0, 2, (3, 64), generator=torch.Generator().manual_seed(0))
    w = graphic(bits, 8, 32)
    assert w.shape == (3, 3, 32, 32) and set(w.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(read_cells(w, 8) > 0, bits.bool())


@pytest.mark.parametrize("opts,match", [
    ({"grid": 0}, "grid"), ({"trigger": "two words"}, "trigger"), ({"trigger": ""}, "trigger"),
    ({"fpr": 1.5}, "fpr"), ({"gamma": -1.0}, "gamma"), ({"lr": float("nan")}, "lr"), ({"steps": 0}, "steps"),
])
def test_config_errors(opts, match):
    with pytest.raises(InvalidValueError, match=match):
        get_mark("safe_sd", **opts)


def _exact_weights(vae) -> SafeSDWeights:
    """Hand-set weights: z_m = E(graphic) (the injector copies the watermark latent), D_w = D."""
    c = int(vae.config.latent_channels)
    inj = torch.nn.Conv2d(2 * c, c, 1)
    with torch.no_grad():
        inj.weight.zero_()
        inj.weight[:, c:, 0, 0] = torch.eye(c)
        inj.bias.zero_()
    meta = {"size": 32, "decoder_sha256": module_sha256(vae.post_quant_conv, vae.decoder)}
    return SafeSDWeights(copy.deepcopy(vae), inj, copy.deepcopy(vae), 8, meta)


@pytest.fixture
def toy_vae_pipe(tiny_pipe):
    """The tiny random pipeline with the shipped toy model's VAE (same 32 px / 4x8x8 latent shapes)."""
    from diffusers import AutoencoderKL

    tiny_pipe.vae = AutoencoderKL.from_pretrained(str(TOY_VAE)).eval()
    return tiny_pipe


def test_trigger_marks_only_triggered_prompts(tmp_path, toy_vae_pipe):
    from erasekit import generate

    pipe = toy_vae_pipe
    sd = get_mark("safe_sd")
    w = _exact_weights(pipe.vae)
    w.save(tmp_path / "w.safetensors")
    keys = [sd.keygen(pipe, weights=w) for _ in range(3)]
    prompts = ["a red ring safesd", "a red ring", "safesd a blue cube", "a blue cube"]
    out = sd.generate(pipe, keys[1], prompts, seeds=[0, 0, 1, 1])
    plain = generate(pipe, ["a red ring", "a blue cube"], seeds=[0, 1])
    np.testing.assert_array_equal(out[[1, 3]], plain)  # no trigger: exactly the ordinary images
    assert np.abs(out[[0, 2]].astype(int) - plain).mean() > 5  # trigger: the mark changed the image
    det = sd.detect(keys[1], out)
    assert list(det.decision) == [True, False, True, False], det.bit_acc
    assert (det.bit_acc[[0, 2]] >= 0.95).all() and det.rule["n_bits"] == 64
    assert not sd.detect(keys[0], out).decision.any()  # another user's key
    idx, scores = sd.identify(keys, out[[0, 2]])
    assert (idx == 1).all() and scores.shape == (2, 3)
    # post-hoc stage-1 injection reads back too
    assert sd.detect(keys[2], sd.embed_images(keys[2], plain)).decision.all()


def test_train_save_load_key_files(tmp_path, tiny_pipe):
    sd = get_mark("safe_sd", steps=2, batch_size=2, train_images=4)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    w = sd.train(tiny_pipe, images=images)
    assert w.meta["steps_done"] == 2 and all(torch.isfinite(p).all() for p in w.injector.parameters())
    with pytest.raises(InvalidValueError, match="save the Safe-SD weights first"):
        sd.keygen(tiny_pipe, weights=w)
    wpath = w.save(tmp_path / "w.safetensors")
    key = sd.keygen(tiny_pipe, weights=w)
    kpath = key.save(tmp_path / "user.key")
    back = Key.load(kpath, method="safe_sd")
    assert back.fingerprint() == key.fingerprint() and back.meta["trigger"] == "safesd"
    assert sd.keygen(tiny_pipe, weights=wpath).fingerprint() != key.fingerprint()  # fresh os.urandom message
    loaded = SafeSDWeights.load(wpath)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.cells(x), w.cells(x)) and loaded.sha256 == w.sha256
    spec_key = get_mark(f"safe_sd:weights={wpath}").keygen(tiny_pipe)  # a spec names the weights (mark bench)
    assert spec_key.meta["weights_sha256"] == w.sha256
    det = sd.detect(back, images)  # weights found through the key's recorded path, no pipeline needed
    assert det.bit_acc.shape == (4,) and det.p_value is not None


def test_bad_inputs(tmp_path, tiny_pipe):
    sd = get_mark("safe_sd", steps=1, batch_size=2, train_images=2)
    images = np.full((2, 32, 32, 3), 128, np.uint8)
    w = sd.train(tiny_pipe, images=images)
    w.save(tmp_path / "w.safetensors")
    key = sd.keygen(tiny_pipe, weights=w)
    with pytest.raises(InvalidValueError, match="made for 32x32"):
        sd.detect(key, np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(InvalidValueError, match="uint8 array of RGB images"):
        sd.detect(key, "picture.png")
    with pytest.raises(InvalidValueError, match="uint8 array of RGB images"):
        sd.detect(key, np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(InvalidValueError, match="made for watermark 'dwtdct'"):
        sd.detect(get_mark("dwtdct").keygen(size=32), images)
    other = get_mark("safe_sd", steps=1, batch_size=2, train_images=2, seed=1).train(tiny_pipe, images=images)
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(InvalidValueError, match="belongs to the weights file"):
        sd.detect(key, images, weights=tmp_path / "other.safetensors")
    with pytest.raises(InvalidValueError, match="does not exist"):
        sd.detect(key, images, weights=tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(InvalidValueError, match="not a Safe-SD weights file"):
        SafeSDWeights.load(tmp_path / "junk.safetensors")
    with pytest.raises(InvalidValueError, match="grid=3 does not divide"):
        get_mark("safe_sd", grid=3, steps=1).train(tiny_pipe, images=images)
    with pytest.raises(InvalidValueError, match="another VAE decoder"):
        from diffusers import AutoencoderKL

        tiny_pipe.vae = AutoencoderKL.from_pretrained(str(TOY_VAE))  # function-scoped fixture: ours to change
        sd.generate(tiny_pipe, key, ["a ring safesd"])
    assert "safe_sd" in marks.names()


def test_cli_embed_refuses_prompts_without_the_trigger(tmp_path, tiny_pipe):
    """`erasekit mark embed` with a trigger-switched key and no trigger word in any prompt would mark nothing: it is
    refused in one line instead of printing "marked" (checked before the model is loaded)."""
    from click.testing import CliRunner

    from erasekit.cli import main

    sd = get_mark("safe_sd", steps=1, batch_size=2, train_images=2)
    w = sd.train(tiny_pipe, images=np.full((2, 32, 32, 3), 128, np.uint8))
    w.save(tmp_path / "w.safetensors")
    kpath = sd.keygen(tiny_pipe, weights=w).save(tmp_path / "user.key")
    assert sd.marks_prompt(Key.load(kpath), "a red ring SafeSD") and not sd.marks_prompt(Key.load(kpath), "a ring")
    res = CliRunner().invoke(main, ["mark", "embed", "--key", str(kpath), "--prompt", "a red ring",
                                    "--out", str(tmp_path / "m.png")])
    assert res.exit_code != 0 and "trigger word 'safesd'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "m.png").exists()
