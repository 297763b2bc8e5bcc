"""Memorization: the conditional-magnitude detector (Wen et al. 2024) read inside erasekit's sampler, and verbatim
copies judged against other renderings of the same content."""

import numpy as np
import pytest
import torch

from erasekit.errors import InvalidValueError
from erasekit.memorization import conditional_magnitude, detection_auc, rmse, verbatim_copies
from erasekit.sampling import cfg_combine, denoise, encode_prompts


def test_magnitude_is_the_norm_of_the_conditional_part_along_the_guided_trajectory(toy_pipe_shared):
    pipe = toy_pipe_shared
    prompts, seeds = ["a red circle", "Zorbo"], [3, 4]
    got = conditional_magnitude(pipe, prompts, seeds, steps=3, guidance=5.0)
    # independent re-derivation: the same sampler, recording the norm per step by hand
    norms = []

    def combine(i, t, eps):
        norms.append((eps[1] - eps[0]).flatten(1).norm(dim=1))
        return eps[0] + 5.0 * (eps[1] - eps[0])

    with torch.no_grad():
        denoise(pipe, [encode_prompts(pipe, [""] * 2), encode_prompts(pipe, prompts)], combine, seeds, steps=3)
    assert np.allclose(got, torch.stack(norms).mean(0).numpy(), rtol=1e-5)
    first = conditional_magnitude(pipe, prompts, seeds, steps=3, guidance=5.0, first_steps=1)
    assert np.allclose(first, norms[0].numpy(), rtol=1e-5)
    with pytest.raises(InvalidValueError, match="first_steps"):
        conditional_magnitude(pipe, prompts, seeds, steps=3, first_steps=4)
    with pytest.raises(InvalidValueError, match="seed"):
        conditional_magnitude(pipe, prompts, [1], steps=3)


def test_detection_auc_plumbing(toy_pipe_shared):
    res = detection_auc(toy_pipe_shared, ["Zorbo"], ["a red circle", "a blue ring"], n_seeds=1, steps=2)
    assert 0.0 <= res.auc <= 1.0 and res.memorized.shape == (1,) and res.other.shape == (2,)
    assert res.auc == float(np.mean(res.memorized[0] > res.other) + 0.5 * np.mean(res.memorized[0] == res.other))


def test_verbatim_copies_are_closer_than_any_reference():
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    refs = np.clip(original[None].astype(int) + rng.integers(-30, 31, (5, 8, 8, 3)), 0, 255).astype(np.uint8)
    copy = np.clip(original.astype(int) + 2, 0, 255).astype(np.uint8)
    other = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    is_copy, dist, thr = verbatim_copies(np.stack([copy, other]), original, refs)
    assert is_copy.tolist() == [True, False] and thr == pytest.approx(rmse(refs, original).min())
    assert dist[0] < thr < dist[1]
    with pytest.raises(InvalidValueError):
        verbatim_copies(np.stack([copy]), original, refs[:0])
