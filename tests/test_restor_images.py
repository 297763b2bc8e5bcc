"""RESTOR for images (`erasekit.restor_images`): corruption by fine-tuning as an edit, erasure on the corrupted model,
one harness run measured against the clean model. Plumbing on the tiny random pipeline; every reported number is
recomputed here from samples.jsonl / results.json / the edit files, so a wrong aggregation fails."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from erasekit.errors import InvalidValueError
from erasekit.restor_images import (CORRUPTED, MEASURES, RestorImagesConfig, label_shares, recovery,
                                    reference_agreement, run_restor_images, weight_gap)
from erasekit.suite import Suite


@pytest.mark.parametrize("bad", [dict(n_images=0), dict(inject_steps=0), dict(inject_lr=float("nan")),
                                 dict(inject_lr=-1.0), dict(params="all"), dict(sets=("unrelated",)),
                                 dict(source="Zorbo", donor="zorbo"), dict(limit=True), dict(steps=0)])
def test_config_refuses_bad_values(bad):
    with pytest.raises(InvalidValueError):
        RestorImagesConfig(**bad)


def test_label_shares_agreement_and_recovery_by_hand():
    def s(variant, index, char, set_name="direct", target="Zorbo"):
        return {"variant": variant, "target": target, "set": set_name, "index": index, "labels": {"character": char}}

    samples = [s("base", 0, "Zorbo"), s("base", 1, "Zorbo"), s("base", 2, "none"),
               s("x", 0, "Mossy"), s("x", 1, "Zorbo"), s("x", 2, "none"), s("x", 3, "Mossy", "heldout")]
    assert label_shares(samples, "x", "Zorbo", "character", "Mossy") == pytest.approx(1 / 3)
    assert reference_agreement(samples, "x", "Zorbo", "character") == pytest.approx(2 / 3)
    assert recovery(1.0, 0.2, 0.6) == pytest.approx(0.5) and recovery(0.5, 0.5, 0.1) is None
    with pytest.raises(InvalidValueError):
        label_shares(samples, "y", "Zorbo", "character", "Mossy")


def test_run_corrupts_erases_and_measures_against_the_clean_model(tiny_pipe, tmp_path):
    from erasekit.edits import Edit
    from erasekit.fingerprint import pipeline_fingerprint

    before = pipeline_fingerprint(tiny_pipe)["sha256"]
    suite = Suite(name="restor-test", targets=("Zorbo",), samples={"direct": 4}, steps=2, guidance=3.0,
                  world="toyworld", evaluator="toyworld-oracle")
    cfg = RestorImagesConfig(n_images=2, inject_steps=2, inject_lr=0.05, batch_size=1, limit=2,
                             sets=("direct", "unrelated"))
    res = run_restor_images(["uce"], tmp_path, cfg, suite=suite, pipe=tiny_pipe)
    assert pipeline_fingerprint(tiny_pipe)["sha256"] == before  # every edit reverted
    assert list(res["rows"]) == ["base", CORRUPTED, "uce"] and set(res["rows"]["uce"]) == set(MEASURES)
    assert res["corruption"]["source"] == "Zorbo" and res["corruption"]["donor"] == "Mossy"
    assert res["corruption"]["steps"] == 2 and res["corruption"]["images"]["shows"] == "Mossy"

    # the eraser's edit was made on the corrupted weights: it applies only on top of the corruption
    corruption, erasure = Edit.load(res["corruption"]["edit"]), Edit.load(res["erasure_edits"]["uce"])
    assert erasure.mismatches(tiny_pipe)
    with corruption.applied(tiny_pipe):
        assert not erasure.mismatches(tiny_pipe)
    assert "Zorbo" in erasure.manifest["erase"]

    # numbers recomputed from the harness files
    ev = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(ev["variants"]) == {"base", CORRUPTED, "uce"} and set(ev["targets"]) == {"Zorbo", "Mossy"}
    samples = [json.loads(x) for x in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines() if x]
    for v, row in res["rows"].items():
        zs = [x for x in samples if x["variant"] == v and x["target"] == "Zorbo" and x["set"] == "direct"]
        assert row["forgetting"] == pytest.approx(np.mean([x["labels"]["character"] == "Mossy" for x in zs]))
        assert row["restoration"] == pytest.approx(ev["variants"][v]["metrics"]["Zorbo"]["detection"])
        assert row["donor_detection"] == pytest.approx(ev["variants"][v]["metrics"]["Mossy"]["detection"])
    assert res["rows"]["base"]["ref_agree"] == 1.0 and res["rows"]["base"]["weight_gap"] == 0.0
    assert res["rows"][CORRUPTED]["weight_gap"] == pytest.approx(1.0)
    # weight gap of the eraser row by hand: clean -> corruption -> erasure, Frobenius over every touched tensor
    from erasekit.edits import resolve_parameter

    names = sorted(set(corruption.names) | set(erasure.names))
    clean = {n: resolve_parameter(tiny_pipe, n).detach().float() for n in names}
    w = {n: corruption.edited_value(n, clean[n]).float() if n in corruption.names else clean[n] for n in names}
    w = {n: erasure.edited_value(n, w[n]).float() if n in erasure.names else w[n] for n in names}
    num = math.sqrt(sum(float((w[n] - clean[n]).pow(2).sum()) for n in names))
    den = math.sqrt(sum(float((corruption.edited_value(n, clean[n]).float() - clean[n]).pow(2).sum())
                        for n in corruption.names))
    assert res["rows"]["uce"]["weight_gap"] == pytest.approx(num / den, rel=1e-5)
    assert "| corrupted + uce |" in (tmp_path / "restor.md").read_text()

    # a second run reuses the corruption and the erasure edits (same weights, same config)
    mtime = (tmp_path / "edits").stat().st_mtime_ns
    files = sorted(p.name for p in (tmp_path / "edits").iterdir())
    res2 = run_restor_images(["uce"], tmp_path, cfg, suite=suite, pipe=tiny_pipe)
    assert sorted(p.name for p in (tmp_path / "edits").iterdir()) == files and res2["rows"] == res["rows"]
    assert (tmp_path / "edits").stat().st_mtime_ns == mtime


def test_weight_gap_refuses_a_corruption_that_changes_nothing(tiny_pipe):
    from erasekit.edits import Edit

    name = next(f"unet.{n}" for n, _ in tiny_pipe.unet.named_parameters() if n.endswith("attn2.to_k.weight"))
    w = tiny_pipe.unet.get_parameter(name.removeprefix("unet.")).detach().clone()
    same = Edit.from_tensors(tiny_pipe, {name: w}, "restor-injection")
    with pytest.raises(InvalidValueError, match="changes no weight"):
        weight_gap(tiny_pipe, same, {"base": []})
    moved = Edit.from_tensors(tiny_pipe, {name: w + torch.ones_like(w)}, "restor-injection")
    assert weight_gap(tiny_pipe, moved, {"x": [moved]})["x"] == pytest.approx(1.0)
