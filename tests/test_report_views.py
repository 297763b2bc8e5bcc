"""The HTML report's issue-19 views, rebuilt from the run's files: CopyCat's keyword-trigger ranking and Unsafe
Diffusion's per-category rates. One tiny evaluation (random tiny pipeline, 2 sampling steps) with both measurements
on; every cell of the two tables is checked against results.json."""

from __future__ import annotations

import html as html_lib
import json
import re

import pytest

from erasekit.evaluation import Variant, evaluate
from erasekit.report.eval_report import write_report
from erasekit.suite import Suite


def _table(page: str, table_id: str) -> list[list[str]]:
    """The body rows of the table with `table_id`, as cell texts."""
    m = re.search(rf'<table[^>]*id="{re.escape(table_id)}"[^>]*>(.*?)</table>', page, re.S)
    assert m, f"no table {table_id!r} in the report"
    rows = re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)
    return [[html_lib.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)]
            for r in rows]


def _num(cell: str) -> float:
    return float(cell)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from erasekit.edits import Edit
    from erasekit.testing import tiny_pipeline

    pipe = tiny_pipeline(seed=0, world="toyworld")
    out = tmp_path_factory.mktemp("views")
    name = next(f"unet.{n}" for n, _ in pipe.unet.named_parameters() if n.endswith("attn2.to_v.weight"))
    w = pipe.unet.get_parameter(name.removeprefix("unet.")).detach()
    edit = Edit.from_tensors(pipe, {name: w * 0.5}, "test")  # a second variant whose images differ
    suite = Suite(name="views", targets=("Zorbo", "nudity"), samples={"direct": 2, "heldout": 1}, steps=2,
                  guidance=3.0, world="toyworld", evaluator="toyworld-oracle",
                  copycat={"triggers": 1, "pairs": False}, unsafe={"categories": ["gore", "nudity"]})
    evaluate(suite, [Variant("half", edits=(edit,))], out, pipe=pipe)
    return out


def test_report_shows_trigger_ranking_and_unsafe_categories_from_results(run):
    results = json.loads((run / "results.json").read_text())
    page = write_report(run).read_text()
    assert 'id="triggers"' in page and 'id="unsafe"' in page

    # keyword triggers: one row per phrase of Zorbo, one column per variant, the numbers of results.json
    variants = list(results["variants"])
    rows = _table(page, "triggers-zorbo")
    header, body = rows[0], rows[1:]
    assert header[:2] == ["keyword phrase", "images"] and [h.split(" ")[0] for h in header[2:]] == variants
    ranking = {v: {r["keyword"]: r for r in results["variants"][v]["triggers"]["Zorbo"]} for v in variants}
    assert sorted(r[0] for r in body) == sorted(ranking["base"]) and len(body) >= 2
    for r in body:
        assert int(r[1]) == ranking["base"][r[0]]["images"]
        for v, cell in zip(variants, r[2:]):
            assert _num(cell) == pytest.approx(ranking[v][r[0]]["detection"], abs=5e-4)
    protected = [float(r[2 + variants.index("half")]) for r in body]
    assert protected == sorted(protected, reverse=True)  # most triggering on the protection first
    with_triggers = {t for v in variants for t in results["variants"][v].get("triggers", {})}
    assert set(re.findall(r'id="triggers-([^"]+)"', page)) == {t.lower() for t in with_triggers}

    # unsafe categories: a row per variant, target and prompt set; any + gore + nudity as results.json records them
    rows = _table(page, "unsafe-table")
    assert rows[0] == ["variant", "target", "prompt set", "any ↓", "gore ↓", "nudity ↓"]
    expect = [(v, t, s, rates) for v in variants for t, sets in results["variants"][v]["unsafe"].items()
              for s, rates in sets.items()]
    assert len(rows) - 1 == len(expect) >= 2 * 2 * 2
    for r, (v, t, s, rates) in zip(rows[1:], expect):
        assert r[:3] == [v, t, s]
        assert [_num(c) for c in r[3:]] == pytest.approx([rates["any"], rates["gore"], rates["nudity"]], abs=5e-4)


def test_report_without_copycat_or_unsafe_has_neither_view(tmp_path):
    from erasekit.testing import tiny_pipeline

    suite = Suite(name="plain", targets=("Zorbo",), samples={"direct": 1}, steps=2, guidance=3.0, world="toyworld")
    evaluate(suite, [], tmp_path, pipe=tiny_pipeline(seed=0, world="toyworld"))
    page = write_report(tmp_path).read_text()
    assert 'id="triggers"' not in page and 'id="unsafe"' not in page and 'id="leaderboard-table"' in page


def _bench_result(variants: dict, grid: dict | None = None) -> dict:
    """A minimal merged benchmark result: {variant: {target: metrics}}, families of two targets."""
    from erasekit.metrics import metrics_info

    names = sorted({m for by in variants.values() for ms in by.values() for m in ms})
    spec = {"grid": grid} if grid else {}
    return {"variants": {v: {"metrics": by, "mean": {}, "cost": {}} for v, by in variants.items()},
            "targets": ["Zorbo", "triangle"], "families": {"Zorbo": "character", "triangle": "object"},
            "metrics_info": metrics_info(names), "bench": {"spec": spec}}


def test_family_leaderboard_combines_efficacy_specificity_and_robustness(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main
    from erasekit.errors import ErasekitError
    from erasekit.report.markdown import family_leaderboard, family_scores

    full = {"base": {"Zorbo": {"detection": 1.0, "detection_generality": 1.0, "accuracy_neighbours": 0.8,
                               "accuracy_unrelated": 1.0},
                     "triangle": {"detection": 1.0, "detection_generality": 1.0, "accuracy_unrelated": 1.0}},
            "a": {"Zorbo": {"detection": 0.0, "detection_generality": 0.5, "accuracy_neighbours": 0.4,
                            "accuracy_unrelated": 1.0},
                  "triangle": {"detection": 0.0, "detection_generality": 0.0, "accuracy_unrelated": 0.5}},
            "b": {"Zorbo": {"detection": 0.5, "detection_generality": 0.5, "accuracy_neighbours": 0.8,
                            "accuracy_unrelated": 1.0},
                  "triangle": {"detection": 0.0, "detection_generality": 0.0, "accuracy_unrelated": 1.0}}}
    # the grid: limit-3 numbers of the unattacked rows must NOT override the first result's; attacks give robustness
    grid = {"base": {"Zorbo": {"detection": 0.0}, "triangle": {"detection": 0.0}},
            "a": {"Zorbo": {"detection": 1.0}, "triangle": {"detection": 1.0}},
            "b": {"Zorbo": {"detection": 1.0}, "triangle": {"detection": 1.0}}}
    for p, asr in (("base", 1.0), ("a", 0.0), ("b", 0.5)):
        grid[f"{p}+x"] = {"Zorbo": {"attack_success": asr}, "triangle": {"attack_success": asr}}
    results = [_bench_result(full), _bench_result(grid, {"protections": ["base", "a", "b"], "attacks": ["x"]})]
    s = family_scores(results)
    assert set(s) == {"character", "object"} and set(s["character"]) == {"base", "a", "b"}
    a = s["character"]["a"]
    assert a["efficacy"] == pytest.approx(0.75) and a["specificity"] == pytest.approx((0.5 + 1.0) / 2)
    assert a["robustness"] == pytest.approx(1.0)
    assert a["together"] == pytest.approx(3 / (1 / 0.75 + 1 / 0.75 + 1.0))
    assert s["character"]["base"]["together"] == 0.0  # no efficacy, no robustness
    assert s["object"]["b"]["robustness"] == pytest.approx(0.5) and s["object"]["a"]["specificity"] == 0.5
    only = family_scores(results[:1])  # no attacks: robustness unmeasured, so nothing is ranked
    assert only["character"]["a"]["robustness"] is None and only["character"]["a"]["together"] is None
    assert set(family_scores(results, concepts=["triangle"])) == {"object"}
    with pytest.raises(ErasekitError, match="'Mossy' is in none of the results"):
        family_scores(results, concepts=["Mossy"])
    # robustness measured for "a" only: it is ranked first, "b" and "base" follow unranked (no bold, no together)
    part = [_bench_result(full), _bench_result({"a+x": {t: {"attack_success": 0.0} for t in ("Zorbo", "triangle")}},
                                               {"protections": ["a"], "attacks": ["x"]})]
    rows = [r for r in family_leaderboard(part).splitlines() if r.startswith("| character")]
    assert rows[0].startswith("| character | **a** |") and len(rows) == 3
    assert all(r.split(" | ")[5] == "" for r in rows[1:])  # together column empty
    table = family_leaderboard(results)
    rows = [r for r in table.splitlines() if r.startswith("| character")]
    assert rows[0].startswith("| character | **a** |") and "| base |" in rows[-1]
    # the CLI reads run folders in the order given
    dirs = []
    for i, r in enumerate(results):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(r))
        (d / "samples.jsonl").write_text("")
        dirs.append(str(d))
    res = CliRunner().invoke(main, ["leaderboard", *dirs])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == table
    res = CliRunner().invoke(main, ["leaderboard", *dirs, "--concepts", "triangle"])
    assert res.exit_code == 0 and "| object |" in res.output and "| character |" not in res.output
    bad = tmp_path / "empty"
    bad.mkdir()
    res = CliRunner().invoke(main, ["leaderboard", str(bad)])
    assert res.exit_code != 0 and "results.json" in res.output and "Traceback" not in res.output


def test_scaling_curves_group_method_n_variants():
    from erasekit.report.eval_report import scaling_curves

    res = {"variants": {"base": {"mean": {"detection": 1.0}}, "uce-10": {"mean": {"detection": 0.2}},
                        "uce-1": {"mean": {"detection": 0.0}}, "esd-x+tpl": {"mean": {}}, "mace-1": {"mean": {}}}}
    curves = scaling_curves(res)
    assert list(curves) == ["uce"]  # mace has one count only: no curve
    assert [n for n, _ in curves["uce"]] == [1, 10] and curves["uce"][1][1]["detection"] == 0.2
