"""Benchmarks as data: specs load with clear errors, run through the one evaluation harness, reuse their edits,
and their tables come from results.json alone."""

from __future__ import annotations

import json

import pytest

from erasekit.benchmark import BenchSpec, VariantSpec, load_bench_spec, run_bench, shipped_specs
from erasekit.errors import ErasekitError, InvalidValueError, UnknownNameError
from erasekit.metrics import COSTS, RESULT_METRICS
from erasekit.report.markdown import results_table
from erasekit.suite import Suite


def tiny_suite() -> Suite:
    return Suite(name="tiny", targets=("Zorbo",), samples=dict(direct=2, heldout=2, neighbours=1, unrelated=2),
                 steps=2, guidance=3.0, neighbours=1, world="toyworld")


def test_every_shipped_spec_loads():
    names = shipped_specs()
    assert {"erasure-toy", "erasure-quick", "shields-toy", "attacks-toy"} <= set(names)
    for n in names:
        spec = load_bench_spec(n)
        assert (spec.variants or spec.base_only) and spec.description
        assert set(spec.table) <= set(RESULT_METRICS) | set(COSTS) | {"training_count"}  # the vocabulary


@pytest.mark.parametrize("text, exc, needle", [
    ("name: x\nvariants: [{name: a, method: uce}]\ntabel: []\n", UnknownNameError, "table"),
    ("name: x\nvariants: [{name: a, mehtod: uce}]\n", UnknownNameError, "method"),
    ("name: x\nvariants: [{name: base, method: uce}]\n", InvalidValueError, "base"),
    ("name: x\nvariants: [{name: a}]\n", InvalidValueError, "no method"),
    ("name: x\nvariants: []\n", InvalidValueError, "no variants"),
    ("name: x\nlimit: 0\nvariants: [{name: a, method: uce}]\n", InvalidValueError, "limit"),
    ("name: [x\n", InvalidValueError, "YAML"),
    ("name: x\nbase_only: true\nvariants: [{name: a, method: uce}]\n", InvalidValueError, "base_only"),
    ("name: x\nrows: concept\nvariants: [{name: a, method: uce}]\n", UnknownNameError, "concept"),
])
def test_bad_specs_get_clear_errors(tmp_path, text, exc, needle):
    p = tmp_path / "b.yaml"
    p.write_text(text)
    with pytest.raises(exc, match=needle):
        load_bench_spec(str(p))


def test_run_bench_goes_through_the_harness_and_reuses_edits(tiny_pipe, tmp_path, monkeypatch):
    import erasekit.erasers as erasers_mod

    spec = BenchSpec(name="t", concepts=("Zorbo",), variants=(
        VariantSpec("uce", method="uce"), VariantSpec("neg", shield="negative_prompt"),
        VariantSpec("uce+neg", method="uce", shield="negative_prompt")))
    res = run_bench(spec, tmp_path, pipe=tiny_pipe, suite=tiny_suite())
    assert set(res["variants"]) == {"base", "uce", "neg", "uce+neg"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["variants"]["uce"]["metrics"]["Zorbo"] == res["variants"]["uce"]["metrics"]["Zorbo"]
    assert (tmp_path / "zorbo" / "results.json").exists() and (tmp_path / "samples.jsonl").exists()
    assert saved["bench"]["spec_sha256"] == spec.sha256()
    assert saved["variants"]["uce"]["cost_by_target"]["Zorbo"] == saved["variants"]["uce"]["cost"]  # one concept
    table = results_table(saved, ["detection", "accuracy_unrelated", "edit_seconds"])
    assert "detection ↓" in table and "accuracy_unrelated ↑" in table and "| uce |" in table
    calls = []
    real = erasers_mod.erase
    monkeypatch.setattr(erasers_mod, "erase", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = run_bench(spec, tmp_path, pipe=tiny_pipe, suite=tiny_suite())
    assert calls == []  # identical request and base weights: the saved edits are reused
    assert again["variants"]["uce"]["metrics"] == res["variants"]["uce"]["metrics"]
    from erasekit.report.eval_report import write_report

    html = write_report(tmp_path).read_text()
    assert "uce+neg" in html and 'id="leaderboard-table"' in html
    # an edit made by other code of the method (its source file changed) is remade, not reused
    import erasekit.benchmark as bench_mod

    monkeypatch.setattr(bench_mod, "method_source_sha256", lambda m: "0" * 64)
    run_bench(spec, tmp_path, pipe=tiny_pipe, suite=tiny_suite())
    assert len(calls) == 1 and len(list((tmp_path / "edits").glob("*.safetensors"))) == 2


def test_base_only_spec_gives_rows_per_family(tiny_pipe, tmp_path):
    """A fidelity spec: no variants, the base model alone, its markdown one row per evaluator family, with the
    family means results.json holds (nothing recomputed by the table)."""
    spec = BenchSpec(name="fid", variants=(), base_only=True, rows="family", table=("detection", "accuracy_direct"))
    suite = Suite(name="tiny", targets=("Zorbo", "Mossy", "triangle"), samples=dict(direct=2), steps=2, guidance=3.0,
                  world="toyworld")
    res = run_bench(spec, tmp_path, pipe=tiny_pipe, suite=suite)
    assert list(res["variants"]) == ["base"] and res["families"]["Mossy"] == "character"
    fam = res["variants"]["base"]["by_family"]
    per = res["variants"]["base"]["metrics"]
    assert set(fam) == {"character", "object"}
    assert fam["character"]["detection"] == pytest.approx((per["Zorbo"]["detection"] + per["Mossy"]["detection"]) / 2)
    assert "accuracy_direct" in per["Zorbo"]
    table = results_table(res, ["detection", "accuracy_direct"], per_family=True)
    assert "| variant | family | detection ↓ | accuracy_direct |" in table
    assert table.count("\n| base | ") == 2


GRID_SPEC = """
name: g
concepts: [Zorbo]
grid:
  protections:
    - {name: base}
    - {name: neg, shield: negative_prompt}
  attacks:
    - {name: copycat, attack: "copycat:steps=1"}
    - {name: arith, attack: "arithmetic:steps=1"}
"""


def test_grid_spec_expands_and_writes_the_matrix(tiny_pipe, tmp_path):
    """Issue 19's grid: protections x attacks from one spec, through the harness; the matrix and the report's heat
    map come from results.json."""
    from erasekit.report.eval_report import write_report
    from erasekit.report.markdown import grid_matrix, grid_table

    path = tmp_path / "g.yaml"
    path.write_text(GRID_SPEC)
    spec = load_bench_spec(str(path))
    assert [v.name for v in spec.variants] == ["base+copycat", "base+arith", "neg", "neg+copycat", "neg+arith"]
    assert spec.variants[3].shield == "negative_prompt" and spec.variants[3].attack == "copycat:steps=1"
    res = run_bench(spec, tmp_path / "run", pipe=tiny_pipe, suite=tiny_suite())
    header, labels, values = grid_matrix(res)
    assert labels == ["base", "neg"] and len(header) == 4
    assert values[1][1] == res["variants"]["neg+copycat"]["mean"]["attack_success"]
    assert values[0][0] == res["variants"]["base"]["mean"]["detection"]
    assert "| neg |" in grid_table(res)
    c = res["targets"][0]
    _, _, per = grid_matrix(res, concept=c)  # one concept's matrix: its own values, not the means
    assert per[1][1] == res["variants"]["neg+copycat"]["metrics"][c]["attack_success"]
    with pytest.raises(ErasekitError, match="'Nobody' is not in these results"):
        grid_table(res, concept="Nobody")
    assert 'id="grid-table"' in write_report(tmp_path / "run").read_text()


@pytest.mark.parametrize("grid, needle", [
    ("grid: {protections: [{name: base}]}\n", "grid.attacks"),
    ("grid: {protections: [{name: x}], attacks: [{name: a, attack: copycat}]}\n", "no method or shield"),
    ("grid: {protections: [{name: base, method: uce}], attacks: [{name: a, attack: copycat}]}\n", "'base'"),
    ("grid: {protections: [{name: base}], attacks: [{name: a}]}\n", "attack spec"),
    ("grid: {protections: [{name: base}], atacks: []}\n", "attacks"),
])
def test_bad_grids_get_clear_errors(tmp_path, grid, needle):
    p = tmp_path / "b.yaml"
    p.write_text("name: x\n" + grid)
    with pytest.raises((InvalidValueError, UnknownNameError), match=needle):
        load_bench_spec(str(p))


def test_transport_variant_measures_the_same_spm_edit_through_the_shield(tiny_pipe, tmp_path, monkeypatch):
    """`transport: true`: the SPM edit the applied variant uses (one file, trained once) is measured through the
    spm_transport shield instead of being applied."""
    from erasekit.testing import random_spm_edit

    made = []

    def fake_erase(pipe, method, erase, **kw):  # no training in a unit test: a random rank-1 SPM
        made.append(method)
        return random_spm_edit(pipe, erase[0], 0, scale=0.5)

    monkeypatch.setattr("erasekit.erasers.erase", fake_erase)
    spec = BenchSpec(name="t", concepts=("Zorbo",), variants=(
        VariantSpec("spm", method="spm", early_stop=False),
        VariantSpec("spm-transport", method="spm", early_stop=False, transport=True)))
    res = run_bench(spec, tmp_path, pipe=tiny_pipe, suite=tiny_suite())
    assert made == ["spm"]  # one edit for both variants
    tv = res["variants"]["spm-transport"]
    assert tv["shield"].startswith("spm_transport:edits=") and not tv["edits"]
    assert res["variants"]["spm"]["edits"] and res["variants"]["spm"]["shield"] is None
    with pytest.raises(InvalidValueError, match="transport: true needs method: spm"):
        VariantSpec("x", method="uce", transport=True)


def test_jobs_run_concepts_in_worker_processes_with_the_same_results(tiny_pipe, tmp_path):
    """jobs=2: each concept in its own spawned process (loading the model from its folder, one torch thread each);
    the merged results equal a one-process run at the same thread count."""
    import torch

    tiny_pipe.save_pretrained(tmp_path / "model")
    spec = BenchSpec(name="t", concepts=("Zorbo", "Mossy"), variants=(VariantSpec("uce", method="uce"),))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_bench(spec, tmp_path / "one", model=str(tmp_path / "model"), suite=tiny_suite())
    finally:
        torch.set_num_threads(threads)
    two = run_bench(spec, tmp_path / "two", model=str(tmp_path / "model"), suite=tiny_suite(), jobs=2)
    assert two["targets"] == one["targets"] == ["Zorbo", "Mossy"]
    for v in ("base", "uce"):
        assert two["variants"][v]["metrics"] == one["variants"][v]["metrics"]
    assert (tmp_path / "two" / "mossy" / "results.json").exists()
    # per-target rows show each concept's own edit time, the mean row the median
    table = results_table(two, ["edit_seconds"], per_target=True)
    for c in ("Zorbo", "Mossy"):
        assert f"| uce | {c} | {two['variants']['uce']['cost_by_target'][c]['edit_seconds']:.3f} |" in table
    with pytest.raises(InvalidValueError, match="not a loaded pipe"):
        run_bench(spec, tmp_path / "three", pipe=tiny_pipe, suite=tiny_suite(), jobs=2)
    with pytest.raises(InvalidValueError, match="jobs must be an integer >= 1, got 0"):
        run_bench(spec, tmp_path / "three", model=str(tmp_path / "model"), suite=tiny_suite(), jobs=0)
