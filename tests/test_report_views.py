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
