"""Marks composed with the rest of erasekit (issue 15, items 4-5): `mark bench --edit / --shield` (the edit recorded,
applied while generating and reverted after; the shield's loop carries the mark's latents; a stripped mark is
flagged), the report's robustness-vs-quality plot and same-seed grids, and the CLI's one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from erasekit.sampling import SamplingDefaults

STEPS = 2  # the tiny pipeline's generation steps here (plumbing only)


@pytest.fixture
def few_steps(monkeypatch):
    """Every generation / inversion of the tiny pipeline with 2 steps at guidance 3 (its defaults are 50 / 7.5)."""
    monkeypatch.setattr("erasekit.sampling.sampling_defaults",
                        lambda pipe, model=None: SamplingDefaults(STEPS, 3.0, 32, "test"))


def _edit(pipe, scale: float = 10.0):
    from erasekit.edits import Edit

    name, w = next((n, p) for n, p in pipe.unet.named_parameters() if "attn2.to_v" in n)
    return Edit.from_tensors(pipe, {"unet." + name: w.detach() * scale}, method="test", erase=["Zorbo"])


def _rows_png(path, n_rows: int) -> list[np.ndarray]:
    """The rows of a grid PNG written by the bench (upscaled 4x, 2 px padding between 32 px tiles)."""
    img = np.asarray(Image.open(path).convert("RGB"))
    h = img.shape[0] // 4
    tile = (h + 2) // n_rows
    return [img[r * tile * 4:(r * tile + 32) * 4] for r in range(n_rows)]


def test_bench_with_edit_records_it_changes_images_and_restores_weights(tiny_pipe, few_steps, tmp_path):
    from erasekit.evaluation.plan import edit_sha256
    from erasekit.fingerprint import pipeline_fingerprint
    from erasekit.marks.bench import markdown, run_bench

    edit = _edit(tiny_pipe)
    path = edit.save(tmp_path / "e.safetensors")
    before = pipeline_fingerprint(tiny_pipe)["sha256"]
    kw = dict(methods=["gaussian_shading:inversion_steps=2", "dwtdct"], attacks=["none"], n=4, n_keys=2,
              prompts=["a red ring"] * 4, grid_images=4)
    res = run_bench(tiny_pipe, edit=str(path), grid_dir=tmp_path / "with", **kw)
    plain = run_bench(tiny_pipe, grid_dir=tmp_path / "without", **kw)
    assert pipeline_fingerprint(tiny_pipe)["sha256"] == before  # the edit was reverted
    comp = res["compose"]
    assert comp["edit"]["sha256"] == edit_sha256(edit) and comp["edit"]["file"] == str(path)
    assert len(comp["edit"]["file_sha256"]) == 64 and comp["edit"]["erase"] == ["Zorbo"]
    assert plain["compose"] is None and "detector_model" in plain["rows"][0]
    gs = [r for r in res["rows"] if r["method"].startswith("gaussian")]
    assert sorted(r["detector_model"] for r in gs) == ["base", "edited"]  # latent: both detector models
    assert [r["detector_model"] for r in res["rows"] if r["method"] == "dwtdct"] == [None]
    assert set(comp["reference"]) == set(kw["methods"]) and all("stripped" in r for r in res["rows"])
    # same prompts and seeds: the clean row of the grid differs only through the edit
    clean_with = _rows_png(tmp_path / "with" / res["grids"]["dwtdct"], 3)[0]
    clean_without = _rows_png(tmp_path / "without" / plain["grids"]["dwtdct"], 3)[0]
    assert np.abs(clean_with.astype(int) - clean_without).mean() > 1.0
    assert "Reference without the test edit (erase Zorbo)" in markdown(res)


def test_shielded_mark_latents_are_bit_exact_and_shield_recorded(tiny_pipe, few_steps):
    from erasekit.marks import get_mark
    from erasekit.marks.bench import run_bench
    from erasekit.marks.compose import composed_generate
    from erasekit.shields import Shield, get_shield, shielded_generate

    gs = get_mark("gaussian_shading:inversion_steps=2")
    key = gs.keygen(tiny_pipe)
    direct = gs.generate(tiny_pipe, key, ["a red ring", "Zorbo"], [3, 4])
    # a shield that changes nothing: the shielded loop from the mark's latents gives the mark's images bit for bit
    via, info = composed_generate(tiny_pipe, ["a red ring", "Zorbo"], [3, 4], shield=Shield(),
                                  latents_fn=lambda s: gs.initial_latents(key, s))
    assert np.array_equal(direct, via) and info == {"refused": 0, "blocked": 0, "regenerated": 0}
    # a real shield, no mark: the same images as erasekit.shields.shielded_generate
    neg = get_shield("negative_prompt", concepts=["Zorbo"])
    assert np.array_equal(composed_generate(tiny_pipe, ["Zorbo", "a red ring"], [1, 2], shield=neg)[0],
                          shielded_generate(tiny_pipe, ["Zorbo", "a red ring"], [1, 2], shields=neg)[0])
    res = run_bench(tiny_pipe, ["gaussian_shading:inversion_steps=2"], ["none"], n=2, n_keys=1,
                    prompts=["Zorbo"] * 2, shield="negative_prompt", protect=["Zorbo"])
    sh = res["compose"]["shield"]
    assert sh["spec"] == "negative_prompt" and sh["concepts"][0]["name"] == "Zorbo"
    assert res["compose"]["edit"] is None and res["rows"][0]["detector_model"] == "base"


def test_strip_warnings_flag_only_real_drops():
    from erasekit.marks.compose import auc_se, strip_warnings

    ref = {"tr": {"tpr@1%fpr": 1.0, "auc": 1.0, "tpr_rule": 1.0}, "gs": {"tpr@1%fpr": 0.5, "auc": 0.78}}
    rows = [{"method": "tr", "attack": "none", "detector_model": "base", "tpr@1%fpr": 0.95, "auc": 0.99,
             "tpr_rule": 0.95, "n": 16},
            {"method": "tr", "attack": "none", "detector_model": "edited", "tpr@1%fpr": 1.0, "auc": 1.0,
             "tpr_rule": 0.5, "n": 64},  # calibrated detection intact, the method's own rule loses half
            {"method": "tr", "attack": "jpeg", "detector_model": "edited", "tpr@1%fpr": 0.0, "auc": 0.5, "n": 16},
            {"method": "gs", "attack": "none", "detector_model": "base", "tpr@1%fpr": 0.38, "auc": 0.56, "n": 16}]
    w = strip_warnings(rows, ref, "the uce edit")
    assert len(w) == 2 and "edited model" in w[0] and "tpr_rule 1.0 -> 0.5" in w[0] and w[0].endswith("significant")
    assert "within sampling noise" in w[1] and "auc 0.78 -> 0.56 (1.7 standard errors)" in w[1]
    assert [r.get("stripped") for r in rows] == [False, True, None, True]
    assert rows[1]["strip_z"]["tpr_rule"] > 5 and rows[1]["strip_z"]["auc"] is None is rows[1]["strip_z"]["tpr@1%fpr"]
    assert auc_se(0.5, 16, 16) == pytest.approx(0.1043, abs=1e-3) and auc_se(1.0, 16, 16) == 0.0


def _fake_results(grids=None):
    return {"format": "erasekit.mark_bench/1", "n": 4, "n_keys": 2, "seed": 0, "seconds": 1.0,
            "pipeline": {"steps": 2, "guidance": 3.0, "size": 32}, "protocol": "p", "forgeries": [],
            "grids": grids, "grid_residual_gain": 10,
            "methods": {"a": {"drift": 2.0, "label_acc_marked": 0.9, "label_acc_clean": 1.0, "embed_s": 0.1},
                        "b": {"drift": 10.0, "label_acc_marked": 1.0, "label_acc_clean": 1.0, "embed_s": 0.1}},
            "rows": [{"method": "a", "attack": "none", "tpr@1%fpr": 1.0, "detector_model": None},
                     {"method": "a", "attack": "jpeg", "tpr@1%fpr": 0.5, "detector_model": None},
                     {"method": "b", "attack": "none", "tpr@1%fpr": 0.25, "detector_model": None},
                     {"method": "b", "attack": "jpeg", "tpr@1%fpr": 0.75, "detector_model": None}],
            "compose": {"edit": None, "shield": {"spec": "sld:strong", "name": "sld"}, "reference": {"a": {"auc": 1}},
                        "warnings": ["a: shield sld:strong strips the mark"], "strip_tolerance": 0.1}}


def test_plot_grid_and_report_from_results_json(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main
    from erasekit.report.mark_report import (is_mark_run, robustness_quality_points, write_mark_grid,
                                             write_robustness_quality)

    pts = {p["label"]: (p["x"], p["y"]) for p in robustness_quality_points(_fake_results())}
    assert pts == {"a": (2.0, 0.75), "b": (10.0, 0.5)}
    drop = {p["label"]: p["x"] for p in robustness_quality_points(_fake_results(), "label_drop")}
    assert drop == {"a": pytest.approx(0.1), "b": 0.0}
    png = write_robustness_quality(_fake_results(), tmp_path / "rq.png")
    assert Image.open(png).size[0] > 100
    with pytest.raises(Exception, match="--overwrite"):
        write_robustness_quality(_fake_results(), tmp_path / "rq.png")
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    marked = np.clip(clean.astype(int) + 3, 0, 255).astype(np.uint8)
    g = write_mark_grid(tmp_path / "grid_a.png", clean, marked, {"jpeg": clean}, gain=10)
    rows = _rows_png(g, 4)  # clean, marked, attacked, residual
    assert Image.open(g).size == (4 * (3 * 34 - 2), 4 * (4 * 34 - 2))
    assert np.array_equal(rows[0][::4, ::4][:, :32], clean[0]) and rows[3][::4, ::4][:, :32].max() <= 30
    with pytest.raises(Exception, match="--overwrite"):
        write_mark_grid(g, clean, marked, {})
    (tmp_path / "results.json").write_text(json.dumps(_fake_results({"a": "grid_a.png"})))
    assert is_mark_run(tmp_path)
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--markdown"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert "Robustness vs quality" in html and "WARNING: a: shield sld:strong strips the mark" in html
    assert html.count("data:image/png;base64,") == 3  # two plots (drift, label drop) + one grid
    assert "| a | none |" in res.output


@pytest.mark.parametrize("args, message", [
    (["--edit", "nowhere.safetensors"], "no edit file at 'nowhere.safetensors'"),
    (["--shield", "sldd:strong", "--protect", "Zorbo"], "unknown shield 'sldd'. Did you mean: 'sld'?"),
    (["--shield", "sld:strongest", "--protect", "Zorbo"], "unknown SLD preset 'strongest'"),
    (["--shield", "sld:strong"], "needs --protect"),
    (["--detector", "edited", "--grid-images", "-1"], "--grid-images must be >= 0"),
])
def test_cli_refuses_bad_edit_and_shield_in_one_line(tmp_path, monkeypatch, args, message):
    from click.testing import CliRunner

    from erasekit.cli import main

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["mark", "bench", "--out", "b"] + args)
    assert res.exit_code != 0 and message in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "b" / "results.json").exists()


def test_cli_passes_composition_options_to_run_bench(tiny_pipe, tmp_path, monkeypatch):
    """`mark bench --edit --shield --protect --detector --grid-images` reach run_bench (a stand-in records them; the
    model is loaded, nothing is generated) and the composition's warnings are printed."""
    from click.testing import CliRunner

    import erasekit.marks.bench as bench_mod
    from erasekit.cli import main

    edit = _edit(tiny_pipe).save(tmp_path / "e.safetensors")
    seen = {}

    def fake_run_bench(pipe, methods, attacks, **kw):
        seen.update(kw)
        return {"rows": [], "compose": {"warnings": ["tree_ring: stripped"]}, "grids": {"tree_ring": "g.png"}}

    def fake_write(res, out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text("T")
        return out / "results.json", out / "table.md"

    monkeypatch.setattr(bench_mod, "run_bench", fake_run_bench)
    monkeypatch.setattr(bench_mod, "write_results", fake_write)
    res = CliRunner().invoke(main, ["mark", "bench", "--edit", str(edit), "--shield", "sld:strong", "--protect",
                                    "Zorbo", "--detector", "base", "--grid-images", "3", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert seen["edit"] == str(edit) and seen["shield"] == "sld:strong" and seen["protect"] == ["Zorbo"]
    assert seen["detectors"] == ["base"] and seen["grid_images"] == 3 and seen["grid_dir"] == tmp_path / "b"
    assert "WARNING tree_ring: stripped" in res.output and "1 grid(s)" in res.output
