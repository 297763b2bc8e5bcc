"""Fine-tuning erasers: the shared training loop (budget, resume, early stop) and one plumbing table over every
trainer on the tiny random pipeline (plumbing only; efficacy is measured on the toy world by bench/finetune.py).

Each trainer adds its rows to TRAINER_CASES: (method, config) with a small step budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erasekit import erase
from erasekit.edits import Edit
from erasekit.erasers import erasers, get_eraser
from erasekit.erasers._training import TrainHooks, TrainingConfig, TrainingLoop
from erasekit.errors import InvalidValueError

from test_erasers import _ids, _unet_out  # noqa: E402  (tests/ is on sys.path under pytest)

TRAINER_CASES: list[tuple[str, dict]] = [
    ("fewshot", {"steps": 2}),
    ("fewshot", {"steps": 2, "params": "all", "batch_size": 3, "flip": False}),
    ("advunlearn", {"steps": 2, "warmup": 1, "attack_steps": 1, "ddim_steps": 2}),
    ("advunlearn", {"steps": 2, "warmup": 0, "attack_steps": 2, "ddim_steps": 2, "attack_method": "fast_at",
                    "attack_init": "latest", "attack_every": 2, "retain_weight": 0.0, "train_final_norm": False}),
    ("esd", {"steps": 2, "ddim_steps": 4}),
    ("esd", {"steps": 2, "ddim_steps": 4, "train_method": "esd-u", "target": "paper", "negative_guidance": 1.0,
             "trajectory": "trained"}),
    ("spm", {"steps": 2, "ddim_steps": 4}),
    ("spm", {"steps": 2, "ddim_steps": 4, "trajectory": "frozen", "preserve_anchors": True, "anchor_null": False}),
    ("doco", {"steps": 2, "warm_up": 1, "n_anchor": 2, "anchor_steps": 2}),
    ("allbutone", {"steps": 2, "ddim_steps": 3}),
    ("ant", {"steps": 2, "ddim_steps": 4, "early_frac": 0.5, "saliency_steps": 1}),
    ("coerasing", {"steps": 2, "text_steps": 1, "n_images": 2, "sample_steps": 2, "fit_steps": 2, "ddim_steps": 3}),
    ("safegen", {"steps": 2, "n_images": 2, "n_safe": 2, "sample_steps": 2, "batch_size": 2}),
    ("trce_stage2", {"steps": 2, "ddim_steps": 3, "reg_batch": 1, "margin": 1.0}),  # margin: the hinge is active
    ("sfd", {"steps": 2, "batch": 1, "n_remain": 4, "allow_empty_guide": True}),  # plumbing: no guide given
]


ELSEWHERE = {"geom_erasing"}  # needs a detector and captioned images: tests/test_geom_erasing.py (plumbing, seeds)


def trainer_names() -> list[str]:
    return sorted(n for n in erasers.names() if get_eraser(n).trains and n not in ELSEWHERE)


def test_every_trainer_is_in_the_table():
    assert trainer_names() == sorted({m for m, _ in TRAINER_CASES})


@pytest.mark.parametrize("method,config", TRAINER_CASES, ids=[_ids(c) for c in TRAINER_CASES])
def test_trainer_plumbing(tiny_pipe, tmp_path, method, config):
    state = {f"{c}.{k}": v.clone() for c in ("unet", "text_encoder")
             for k, v in getattr(tiny_pipe, c).state_dict().items()}
    out_before = _unet_out(tiny_pipe, "a painting of Zorbo")
    edit = erase(tiny_pipe, method, erase=["Zorbo"], preserve=["Mossy", "a red circle"], **config)
    assert isinstance(edit, Edit) and edit.method == method
    now = {f"{c}.{k}": v for c in ("unet", "text_encoder") for k, v in getattr(tiny_pipe, c).state_dict().items()}
    assert all(torch.equal(v, now[k]) for k, v in state.items())  # erase() never mutates the pipeline
    assert edit.names and all(torch.isfinite(t).all() for t in edit.tensors.values())
    assert all(torch.isfinite(f.up).all() and torch.isfinite(f.down).all() for f in edit.factors.values())
    changed = {n: edit.edited_value(n, state[n]) for n in edit.names if n in state}  # dense or low-rank (SPM)
    assert any(not torch.equal(t, state[n]) for n, t in changed.items())
    m = edit.manifest
    assert m["paper"] and set(m["config"]) == {f[0] for f in get_eraser(method).options()}
    train = m["info"]["train"]
    assert train["steps"] >= 1 and len(train["losses"]) >= 1 and all(np.isfinite(train["losses"]))
    edit.apply(tiny_pipe)
    try:
        assert not torch.allclose(_unet_out(tiny_pipe, "a painting of Zorbo"), out_before)
    finally:
        edit.revert(tiny_pipe)
    assert torch.equal(_unet_out(tiny_pipe, "a painting of Zorbo"), out_before)
    again = Edit.load(edit.save(tmp_path / f"{method}.safetensors"), pipe=tiny_pipe)
    assert all(torch.equal(again.tensors[k], edit.tensors[k]) for k in edit.tensors)


FIRST_CASES = list({m: (m, c) for m, c in reversed(TRAINER_CASES)}.values())  # each method's first row


@pytest.mark.parametrize("method,config", FIRST_CASES, ids=[_ids(c) for c in FIRST_CASES])
def test_trainers_are_seeded(tiny_pipe, method, config):
    a = erase(tiny_pipe, method, erase=["Kiko"], **config)
    b = erase(tiny_pipe, method, erase=["Kiko"], **config)
    assert a.manifest["edited_sha256"] == b.manifest["edited_sha256"]
    c = erase(tiny_pipe, method, erase=["Kiko"], **(config | {"seed": 1}))
    assert c.manifest["edited_sha256"] != a.manifest["edited_sha256"]


# ------------------------------------------------------------------------------------------------ the loop itself
class _Quadratic:
    """A 4-parameter least-squares problem trained with noisy SGD: enough to see the loop's bookkeeping."""

    def __init__(self, cfg: TrainingConfig, hooks: TrainHooks | None = None):
        torch.manual_seed(0)
        self.net = torch.nn.Linear(2, 2)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.loop = TrainingLoop("quad", cfg, hooks, {"net": self.net}, self.opt, key_extra="x")

    def step(self, i: int, gen: torch.Generator) -> float:
        x = torch.randn(8, 2, generator=gen)
        loss = ((self.net(x) - 3 * x) ** 2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss)


def test_loop_resumes_exactly_from_a_checkpoint(tmp_path):
    full = _Quadratic(TrainingConfig(steps=12, lr=0.05))
    log_full = full.loop.run(full.step)
    hooks = TrainHooks(checkpoint_dir=tmp_path)
    part = _Quadratic(TrainingConfig(steps=12, lr=0.05, checkpoint_every=5, max_seconds=1e9), hooks)
    calls = []

    def stop_after_7(i, gen):  # a run "killed" after 7 steps (checkpoint at 5)
        if i == 7:
            raise KeyboardInterrupt
        calls.append(i)
        return part.step(i, gen)

    with pytest.raises(KeyboardInterrupt):
        part.loop.run(stop_after_7)
    resumed = _Quadratic(TrainingConfig(steps=12, lr=0.05, checkpoint_every=5, max_seconds=1e9), hooks)
    log = resumed.loop.run(resumed.step)
    assert log.resumed_from == 5 and log.steps == 12 and len(log.losses) == 12
    assert log.losses == pytest.approx(log_full.losses, rel=1e-6)
    assert torch.allclose(resumed.net.weight, full.net.weight, atol=1e-6)
    other = _Quadratic(TrainingConfig(steps=12, lr=0.01, checkpoint_every=5), hooks)  # different config: fresh
    assert other.loop.run(other.step).resumed_from == 0


def test_loop_stops_on_time_budget_and_on_check():
    q = _Quadratic(TrainingConfig(steps=10_000, lr=0.05, max_seconds=0.2))
    log = q.loop.run(q.step)
    assert log.stopped == "time" and 0 < log.steps < 10_000
    flags = iter([[True, False, False, False], [True, False, False, False], [False] * 4, [True] * 4])
    hooks = TrainHooks(check=lambda images: np.array(next(flags)))
    q = _Quadratic(TrainingConfig(steps=100, lr=0.05, check_every=4, stop_at=0.1), hooks)
    log = q.loop.run(q.step, render=lambda: np.zeros((4, 8, 8, 3), np.uint8))
    assert log.stopped == "check" and log.steps == 12
    assert [c["rate"] for c in log.checks] == [0.25, 0.25, 0.0]


def test_training_config_errors_name_the_value():
    with pytest.raises(InvalidValueError, match="steps must be >= 1, got 0"):
        TrainingConfig(steps=0)
    with pytest.raises(InvalidValueError, match="stop_at must be in"):
        TrainingConfig(stop_at=1.5)
    with pytest.raises(InvalidValueError, match="max_seconds"):
        TrainingConfig(max_seconds=-1.0)


@pytest.mark.parametrize("method, frac, low, high", [
    ("esd", 1.0, 0, 10), ("esd", 0.5, 0, 5), ("esd", 0.01, 0, 1),  # ESD stops k in [0, K)
    ("spm", 1.0, 1, 10), ("spm", 0.5, 1, 5),                         # SPM (official) stops k in [1, K)
])
def test_max_stop_frac_keeps_training_latents_at_high_noise(tiny_pipe, monkeypatch, method, frac, low, high):
    import importlib

    module = importlib.import_module(f"erasekit.erasers.{method}")
    stops = []
    real = module.partial_ddim

    def spy(unet, scheduler, cond, uncond, n_steps, stop, *args, **kw):
        stops.append(stop)
        return real(unet, scheduler, cond, uncond, n_steps, stop, *args, **kw)

    monkeypatch.setattr(module, "partial_ddim", spy)
    erase(tiny_pipe, method, erase=["Zorbo"], steps=10, ddim_steps=10, max_stop_frac=frac)
    assert len(stops) == 10 and low <= min(stops) and max(stops) < high
    if frac == 1.0:
        assert max(stops) >= 5  # uniform over all 10 steps reaches the low-noise half
    with pytest.raises(InvalidValueError, match="max_stop_frac"):
        get_eraser(method).make_config({"max_stop_frac": 1.5 if method == "spm" else 0.0})
