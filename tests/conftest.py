"""Shared fixtures. `tiny_pipe`: a random SD1.x-shaped pipeline (plumbing only). `toy_pipe` / `oracle`: the shipped
toy-world model and its oracle (behaviour). No test touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenMP threads that spin while waiting make torch 50-100x slower when the cores are shared with other processes
# (measured here: a toy UNet forward 2-5 s instead of 35 ms at load 5-10); passive waiting costs nothing when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_pipe():
    from erasekit.testing import tiny_pipeline

    return tiny_pipeline(seed=0, world="toyworld")


@pytest.fixture(scope="session")
def toy_pipe_shared():
    """The shipped toy model, loaded once. Do not mutate it; use `toy_pipe` for a private copy."""
    from erasekit import load_pipeline

    return load_pipeline("toyworld")


@pytest.fixture
def toy_pipe(toy_pipe_shared):
    """A private deep copy of the shipped toy model (safe to edit in place)."""
    import copy

    return copy.deepcopy(toy_pipe_shared)


@pytest.fixture(scope="session")
def oracle():
    from erasekit.toyworld import load_oracle

    return load_oracle()
