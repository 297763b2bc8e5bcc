"""ESD (erasekit.erasers.esd): the loss target against a direct computation of the published formulas, the parameter
sets, config errors. Tiny random pipeline: these prove the computation, not efficacy (bench/erasure.py measures that)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from erasekit import erase
from erasekit.erasers._training import partial_ddim
from erasekit.erasers.esd import ESDConfig, parameter_names
from erasekit.errors import InvalidValueError
from erasekit.sampling import encode_prompts


def _first_loss(pipe, concept: str, eta_paper: float, ddim_steps: int = 4, seed: int = 0,
                erase_from: str = "") -> float:
    """ESD's first-step loss computed directly: x_t from the frozen model (draw order of esd.run: erase-prompt index,
    stop, noise), t its DDIM timestep, target eps("") - eta (eps(c) - eps("")) (paper) or, with erase_from,
    eps(c_from) - eta (eps(c) - eps("")) (current code, eta = eta_paper here)."""
    unet = pipe.unet.float()
    with torch.no_grad():
        c, u = encode_prompts(pipe, [concept]).float(), encode_prompts(pipe, [""]).float()
        c_from = encode_prompts(pipe, [erase_from]).float() if erase_from else c
        gen = torch.Generator().manual_seed(seed)
        torch.randint(1, (1,), generator=gen)  # which erase prompt
        stop = int(torch.randint(ddim_steps, (1,), generator=gen))
        x, t = partial_ddim(unet, pipe.scheduler, c_from, u, ddim_steps, stop, 3.0, gen)
        eps_c = unet(x, t, encoder_hidden_states=c).sample
        eps_0 = unet(x, t, encoder_hidden_states=u).sample
        base = unet(x, t, encoder_hidden_states=c_from).sample if erase_from else eps_0
        target = base - eta_paper * (eps_c - eps_0)
        return float(F.mse_loss(unet(x, t, encoder_hidden_states=c_from).sample, target))


def _loss(pipe, **config) -> float:
    return erase(pipe, "esd", erase=["Zorbo"], steps=1, ddim_steps=4, **config).manifest["info"]["train"]["final_loss"]


def test_loss_target_is_the_published_formula(tiny_pipe):
    expected = _first_loss(tiny_pipe, "Zorbo", eta_paper=1.0)
    paper = _loss(tiny_pipe, target="paper", negative_guidance=1.0)
    current = _loss(tiny_pipe, target="current", negative_guidance=2.0)
    assert paper == pytest.approx(expected, rel=1e-4)
    assert current == pytest.approx(expected, rel=1e-4)  # eta=2 current == eta=1 paper
    assert _loss(tiny_pipe, target="paper", negative_guidance=2.0) == pytest.approx(
        _first_loss(tiny_pipe, "Zorbo", eta_paper=2.0), rel=1e-4)
    assert _loss(tiny_pipe, target="paper", negative_guidance=2.0) != pytest.approx(expected, rel=1e-2)


def test_erase_from_uses_the_source_prompt(tiny_pipe):
    got = _loss(tiny_pipe, erase_from="a painting", negative_guidance=1.5)
    assert got == pytest.approx(_first_loss(tiny_pipe, "Zorbo", 1.5, erase_from="a painting"), rel=1e-4)
    assert got != pytest.approx(_first_loss(tiny_pipe, "Zorbo", 1.5), rel=1e-2)


def test_parameter_sets_pick_exactly_the_documented_tensors(tiny_pipe):
    unet = tiny_pipe.unet
    names = [n for n, _ in unet.named_parameters()]
    blocks = [n for n, m in unet.named_modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert len(blocks) == 4
    xattn = {f"{b}.attn2.{p}" for b in blocks
             for p in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias")}
    assert set(parameter_names(unet, "esd-x")) == xattn
    assert set(parameter_names(unet, "esd-x-strict")) == {f"{b}.attn2.to_{p}.weight" for b in blocks for p in "kv"}
    head = {"time_embedding.linear_1.weight", "time_embedding.linear_1.bias", "time_embedding.linear_2.weight",
            "time_embedding.linear_2.bias", "conv_norm_out.weight", "conv_norm_out.bias", "conv_out.weight",
            "conv_out.bias"}
    assert head <= set(names)
    esd_u = set(parameter_names(unet, "esd-u"))
    assert esd_u == set(names) - xattn - head
    assert {"conv_in.weight", "down_blocks.0.resnets.0.time_emb_proj.weight",
            f"{blocks[0]}.attn1.to_q.weight", f"{blocks[0]}.norm2.weight"} <= esd_u
    assert parameter_names(unet, "esd-all") == names
    edit = erase(tiny_pipe, "esd", erase=["Zorbo"], steps=1, ddim_steps=3, train_method="esd-x-strict")
    assert set(edit.tensors) == {f"unet.{n}" for n in parameter_names(unet, "esd-x-strict")}


def test_edit_has_the_pipeline_dtype(tiny_pipe):
    pipe = tiny_pipe.to(torch.float16)
    edit = erase(pipe, "esd", erase=["Zorbo"], steps=1, ddim_steps=3)
    assert {t.dtype for t in edit.tensors.values()} == {torch.float16}
    with edit.applied(pipe):
        pass


@pytest.mark.parametrize("kwargs,needle", [
    ({"train_method": "esd-y"}, "'esd-y'"),
    ({"target": "papr"}, "'papr'"),
    ({"trajectory": "online"}, "'online'"),
    ({"ddim_steps": 0}, "got 0"),
    ({"start_guidance": -1.0}, "got -1.0"),
    ({"erase_from": "a painting", "target": "paper"}, "'a painting'"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"templates": ("a painting of",)}, "'a painting of'"),
])
def test_bad_config_names_the_value(kwargs, needle):
    with pytest.raises(InvalidValueError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        ESDConfig(**kwargs)


def test_typo_in_parameter_set_suggests_the_close_one():
    with pytest.raises(InvalidValueError, match="Did you mean: 'esd-x'"):
        ESDConfig(train_method="esd-xx")


def test_cli_erase_trains_with_oracle_check(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main
    from erasekit.edits import Edit

    out = tmp_path / "esd.safetensors"
    res = CliRunner().invoke(main, ["erase", "--method", "esd", "--erase", "Zorbo", "-o", "steps=2", "-o",
                                    "ddim_steps=2", "-o", "check_every=1", "--check", "oracle", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    edit = Edit.load(out)
    assert edit.method == "esd" and edit.manifest["info"]["train"]["checks"]  # the oracle ran
    res = CliRunner().invoke(main, ["erase", "--method", "uce", "--erase", "Zorbo", "--progress", "--out",
                                    str(tmp_path / "u.safetensors")])
    assert res.exit_code != 0 and "fine-tuning" in res.output

