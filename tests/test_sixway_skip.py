"""`erasekit sixway` scalability sweeps: `SixWayConfig.skip` / `--skip` leave out the ways measured outside the one
harness run (verbatim, privacy, sustainability), so that a request over many concepts costs only its harness run."""

from __future__ import annotations

import json

import pytest

from erasekit.errors import InvalidValueError
from erasekit.sixway import SKIPPABLE, SixWayConfig, run_sixway
from erasekit.suite import Suite


def test_skip_validates_names():
    assert SixWayConfig(skip=SKIPPABLE).skip == SKIPPABLE
    with pytest.raises(InvalidValueError, match="knowledge"):
        SixWayConfig(skip=("knowledge",))


def test_skipped_ways_are_not_measured_and_scalability_is(tiny_pipe, tmp_path, monkeypatch):
    import erasekit.sixway as sixway

    def never(*a, **k):
        raise AssertionError("a skipped way was measured")

    monkeypatch.setattr(sixway, "privacy_images", never)
    monkeypatch.setattr(sixway, "membership_auc", never)
    suite = Suite(name="skip-test", targets=("Zorbo",), samples={"direct": 1, "unrelated": 1}, steps=2, guidance=3.0,
                  world="toyworld", evaluator="toyworld-oracle")
    res = run_sixway(["uce"], ["Zorbo", "Mossy", "Kiko"], tmp_path, SixWayConfig(limit=None, skip=SKIPPABLE),
                     suite=suite, pipe=tiny_pipe)
    t = res["methods"]["uce"]
    assert res["sizes"] == [1, 3] and [r["concepts"] for r in t["scalability"]] == [1, 3]
    assert t["sustainability"] == [] and t["edits"]["sequential"] == [] and t["verbatim"] == {}
    assert t["privacy"]["auc"] is None and "skipped" in t["privacy"]["note"] and res["privacy_images"] == {}
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(ev["variants"]) == {"base", "uce:1", "uce:3"}  # no sequential requests
    per = ev["variants"]["uce:3"]["metrics"]
    assert t["scalability"][1]["detection"] == pytest.approx(sum(per[c]["detection"] for c in per) / 3)
    md = (tmp_path / "sixway.md").read_text()
    assert "sustainability" not in md and "3 concept(s) in one request" in md


def test_cli_skip_refuses_unknown_way(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main

    r = CliRunner().invoke(main, ["sixway", "--method", "uce", "--concepts", "Zorbo", "--skip", "verbatim,utility",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "utility" in r.output and "Traceback" not in r.output
