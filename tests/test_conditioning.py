"""erasekit.conditioning: the layer the erasers and the attacks share (and the rule that neither imports the other)."""

import ast
from pathlib import Path

import pytest
import torch

from erasekit.conditioning import (
    SoftPrompt,
    adversarial_embedding,
    encode_prompts,
    kv_weights,
    tokenize,
)
from erasekit.errors import InvalidValueError
from erasekit.sampling import partial_ddim

F64 = torch.float64
SRC = Path(__file__).resolve().parents[1] / "src" / "erasekit"


def _imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) of every import in src/erasekit/<package>, relative imports made absolute."""
    out = []
    for path in sorted((SRC / package).rglob("*.py")):
        parts = ["erasekit", package] + list(path.relative_to(SRC / package).with_suffix("").parts)
        pkg = parts if path.name == "__init__.py" else parts[:-1]
        pkg = [p for p in pkg if p != "__init__"]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg[:len(pkg) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
                out += [(path.name, node.lineno, n) for n in names]
            elif isinstance(node, ast.Import):
                out += [(path.name, node.lineno, a.name) for a in node.names]
    return out


@pytest.mark.parametrize("package, forbidden", [("erasers", "erasekit.attacks"), ("attacks", "erasekit.erasers")])
def test_erasers_and_attacks_do_not_import_each_other(package, forbidden):
    bad = [(f, line, m) for f, line, m in _imports(package) if m == forbidden or m.startswith(forbidden + ".")]
    assert not bad, f"{package} imports {forbidden} (use erasekit.conditioning): {bad}"


def test_the_import_scan_sees_relative_imports():
    """The layering test above would pass vacuously if relative imports were misread."""
    mods = {m for _, _, m in _imports("attacks")}
    assert "erasekit.conditioning.SoftPrompt" in mods and "erasekit.attacks._common.Budget" in mods


def test_adversarial_embedding_forms_its_products_in_float64():
    """float32 weights give the float64 re-derivation of c' = (reg I + sum W'^T W')^-1 sum W'^T W c to float64
    precision (float32 Gram products are off by ~2e-5 relative here: large weights, small reg)."""
    g = torch.Generator().manual_seed(0)
    d, n, reg = 24, 5, 1e-3
    now = [(30 * torch.randn(o, d, generator=g)).float() for o in (40, 64, 40, 64)]
    old = [w + 3 * torch.randn(w.shape, generator=g) for w in now]
    emb = torch.randn(n, d, generator=g)
    target = torch.randn(n, d, generator=g)
    for t in (None, target):
        got = adversarial_embedding(now, old, emb, reg, t)
        assert got.dtype == F64
        a = reg * torch.eye(d, dtype=F64) + sum(w.double().T @ w.double() for w in now)
        b = sum(w.double().T @ w0.double() for w, w0 in zip(now, old, strict=True))
        rhs = emb.double() @ b.T + (0 if t is None else reg * t.double())
        want = torch.linalg.solve(a, rhs.T).T
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_adversarial_embedding_with_no_regularisation_and_too_few_rows_names_reg():
    w = [torch.randn(3, 8, dtype=F64)]
    with pytest.raises(InvalidValueError, match="singular.*reg=0"):
        adversarial_embedding(w, w, torch.randn(2, 8, dtype=F64), 0.0)


def test_encode_prompts_equals_the_text_encoder_on_padded_ids(tiny_pipe):
    ids = tokenize(tiny_pipe, ["a red circle", ""])
    assert ids.shape == (2, tiny_pipe.tokenizer.model_max_length)
    with torch.no_grad():
        want = tiny_pipe.text_encoder(ids)[0]
    assert torch.equal(encode_prompts(tiny_pipe, ["a red circle", ""]), want)


def test_kv_weights_are_every_cross_attention_projection(tiny_pipe):
    kv = kv_weights(tiny_pipe)
    names = [n for n, _ in tiny_pipe.unet.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n]
    assert sorted(kv) == sorted(f"unet.{n}" for n in names)
    assert all(w.shape[1] == tiny_pipe.unet.config.cross_attention_dim for w in kv.values())
    assert sorted(kv_weights(tiny_pipe, with_to_k=False)) == sorted(n for n in kv if ".to_v." in n)


def test_soft_prompt_step_moves_only_its_prefix(tiny_pipe):
    unet_before = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    te_before = {k: v.clone() for k, v in tiny_pipe.text_encoder.state_dict().items()}
    soft = SoftPrompt(tiny_pipe, "a red circle", 2, 1e-2, torch.Generator().manual_seed(0))
    emb0 = soft.embeddings().detach()
    assert emb0.shape == (1, 77, tiny_pipe.text_encoder.config.hidden_size)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    loss = soft.step(tiny_pipe.unet, z, 500, torch.zeros_like(z))
    assert loss > 0 and soft.delta.grad is None
    assert not torch.equal(soft.embeddings().detach(), emb0)
    for model, before in ((tiny_pipe.unet, unet_before), (tiny_pipe.text_encoder, te_before)):
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
    text = soft.reading()
    assert text.endswith("red circle") and len(text.split()) >= 4


def test_soft_prompt_same_generator_same_start_and_bad_inputs(tiny_pipe):
    a = SoftPrompt(tiny_pipe, "Zorbo", 1, 1e-3, torch.Generator().manual_seed(4))
    b = SoftPrompt(tiny_pipe, "Zorbo", 1, 1e-3, torch.Generator().manual_seed(4))
    assert torch.equal(a.delta, b.delta)
    c = SoftPrompt(tiny_pipe, "Zorbo", 1, 1e-3, init=a.delta * 2)
    assert torch.equal(c.delta, a.delta * 2)
    with pytest.raises(InvalidValueError, match="method='adam'"):
        SoftPrompt(tiny_pipe, "Zorbo", 1, 1e-3, method="adam")
    with pytest.raises(InvalidValueError, match=r"init has shape \(2, 32\)"):
        SoftPrompt(tiny_pipe, "Zorbo", 1, 1e-3, init=torch.zeros(2, 32))


def test_partial_ddim_draws_every_step_from_its_generator(tiny_pipe):
    """With a stochastic scheduler the trajectory depends on `gen` only, not on the global RNG."""
    import diffusers

    sched = diffusers.DDPMScheduler.from_config(tiny_pipe.scheduler.config)
    cond, uncond = encode_prompts(tiny_pipe, ["a red circle"]), encode_prompts(tiny_pipe, [""])
    runs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        runs.append(partial_ddim(tiny_pipe.unet, sched, cond, uncond, 4, 3, 3.0, torch.Generator().manual_seed(2)))
    assert runs[0][1] == runs[1][1] and torch.equal(runs[0][0], runs[1][0])
    other = partial_ddim(tiny_pipe.unet, sched, cond, uncond, 4, 3, 3.0, torch.Generator().manual_seed(3))[0]
    assert not torch.equal(other, runs[0][0])
    with pytest.raises(InvalidValueError, match=r"stop must be in \[0, 4\)"):
        partial_ddim(tiny_pipe.unet, sched, cond, uncond, 4, 4, 3.0, torch.Generator())

