"""The shipped oracle: accuracy on fresh renders, identity, input validation."""

import numpy as np
import pytest

from erasekit.errors import IntegrityError, InvalidValueError
from erasekit.toyworld import FAMILIES, render
from erasekit.toyworld.oracle import ToyOracle, random_scenes


def test_oracle_reads_fresh_renders(oracle):
    scenes = random_scenes(400, seed=98765)  # seeds never used in training or in the shipped held-out check
    acc = oracle.accuracy(np.stack([render(s) for s in scenes]), scenes)
    assert all(acc[f] >= 0.98 for f in FAMILIES), acc


def test_oracle_identity_is_pinned(oracle):
    ident = oracle.identity()
    assert ident["name"] == "toyworld-oracle" and len(ident["weights_sha256"]) == 64
    assert ident["classes"]["unsafe"] == ["none", "gore", "nudity"]


def test_oracle_features_and_shapes(oracle):
    imgs = np.stack([render(s) for s in random_scenes(5, seed=1)])
    assert oracle.embed(imgs).shape == (5, 256)
    probs = oracle.probs(imgs)
    assert all(np.allclose(probs[f].sum(-1).numpy(), 1, atol=1e-5) for f in FAMILIES)
    with pytest.raises(InvalidValueError, match=r"\(N, 3, 32, 32\)"):
        oracle.predict(np.zeros((2, 64, 64, 3), np.uint8))


def test_tampered_oracle_weights_are_refused(tmp_path):
    from erasekit.toyworld.plugin import assets_dir as toyworld_dir
    import shutil

    for name in ("oracle.json", "oracle.safetensors"):
        shutil.copy(toyworld_dir() / name, tmp_path / name)
    with open(tmp_path / "oracle.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    with pytest.raises(IntegrityError, match="sha256"):
        ToyOracle.load(tmp_path)
