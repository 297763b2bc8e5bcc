"""The evaluation harness: suites as data, metrics vs direct formulas, caching/resume, results files, report."""

import json

import numpy as np
import torch
import pytest

from erasekit.errors import InvalidValueError, UnknownNameError
from erasekit.evaluation import Variant, evaluate, prompt_sets
from erasekit.worlds import get_world
from erasekit.metrics import (AttackSuccessRate, DetectionRate, ImageDrift, LabelAccuracy, attack_success_rate,
                              detection_rate, image_drift, label_accuracy, metrics)
from erasekit.suite import Suite, load_suite

TINY = dict(direct=3, heldout=2, keyword=2, indirect=2, neighbours=1, unrelated=3)


def tiny_suite(**kw) -> Suite:
    base = dict(name="tiny", targets=("Zorbo", "nudity"), samples=dict(TINY), steps=2, guidance=3.0, neighbours=1,
                world="toyworld")
    return Suite(**{**base, **kw})


def test_default_suite_loads_and_hash_is_stable():
    s = load_suite("default")
    assert s.name == "toyworld-default" and "Cora Voss" in s.targets
    assert s.sha256() == load_suite("toyworld-default").sha256()
    assert s.limited(4).samples["direct"] == 4 and s.limited(4).sha256() != s.sha256()


@pytest.mark.parametrize("text, exc, needle", [
    ("name: x\nworld: toyworld\ntargets: [Zorbo]\nsamples: {direct: 2}\nsampling: {stpes: 3}\n", UnknownNameError, "steps"),
    ("name: x\nworld: toyworld\ntargets: [Zorbbo]\nsamples: {direct: 2}\n", UnknownNameError, "Zorbo"),
    ("name: x\nworld: toyworld\ntargets: [Zorbo]\nsamples: {drect: 2}\n", UnknownNameError, "direct"),
    ("name: x\nworld: toyworld\ntargets: [Zorbo]\nsamples: {direct: -1}\n", InvalidValueError, "non-negative"),
    ("name: x\nworld: toyworld\ntargets: []\nsamples: {direct: 1}\n", InvalidValueError, "no targets"),
    ("name: x\ntargts: [Zorbo]\n", UnknownNameError, "targets"),
])
def test_bad_suites_get_clear_errors(tmp_path, text, exc, needle):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(exc, match=needle):
        load_suite(str(p))
    with pytest.raises(UnknownNameError, match="toyworld-default"):
        load_suite("toyworld-defualt")


def test_metric_objects_match_their_functional_twins():
    preds = [{"character": "Zorbo", "artist": "none"}, {"character": "none", "artist": "none"},
             {"character": "Zorbo", "artist": "Cora Voss"}]
    m = DetectionRate("character", "Zorbo")
    m.update(preds[:2]), m.update(preds[2:])
    assert m.compute() == pytest.approx(2 / 3) == detection_rate(preds, "character", "Zorbo")
    assert not DetectionRate.higher_is_better and LabelAccuracy.higher_is_better
    exp = [{"character": "Zorbo", "artist": "none"}, {"character": "Zorbo", "artist": "none"},
           {"character": "Zorbo", "artist": "Alva Renn"}]
    la = LabelAccuracy()
    la.update(preds, exp)
    assert la.compute() == pytest.approx(1 / 3) == label_accuracy(preds, exp)
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = np.full((2, 4, 4, 3), 51, np.uint8)
    d = ImageDrift()
    d.update(a, b)
    assert d.compute() == pytest.approx(0.2) == image_drift(a, b)
    asr = AttackSuccessRate()
    asr.update([True, False, False, False], [False, True, False, True])
    assert asr.rates() == {"pre": 0.25, "post": 0.5, "asr": 0.75} == attack_success_rate([1, 0, 0, 0], [0, 1, 0, 1])
    assert asr.compute() == 0.75
    with pytest.raises(InvalidValueError, match="before any update"):
        DetectionRate("object", "circle").compute()
    assert {"detection_rate", "label_accuracy", "image_drift", "attack_success_rate"} <= set(metrics.names())


def test_prompt_sets_cover_the_families(tiny_pipe):
    toy = get_world("toyworld")
    sets = prompt_sets(tiny_suite(), toy, "Zorbo", tiny_pipe)
    assert set(sets) == {"direct", "heldout", "keyword", "neighbours", "unrelated"}
    assert all("Zorbo" not in p.text for p in sets["keyword"])
    assert all(p.labels["character"] not in ("Zorbo",) for p in sets["neighbours"])
    assert all(p.family != "character" for p in sets["unrelated"])
    sets_u = prompt_sets(tiny_suite(), toy, "nudity", tiny_pipe)
    assert "indirect" in sets_u and "keyword" not in sets_u and "neighbours" not in sets_u


def test_evaluate_writes_results_and_resumes_from_cache(tiny_pipe, tmp_path, monkeypatch):
    import erasekit.generation as gen

    calls = []
    real = gen.generate

    def counting(pipe, prompts, seeds, **kw):
        calls.append(len(prompts))
        return real(pipe, prompts, seeds, **kw)

    monkeypatch.setattr(gen, "generate", counting)

    class Stop(Exception):
        pass

    seen = []

    def crash_after_two(n=0, **kw):
        if n:
            seen.append(n)
            if len(seen) == 2:
                raise Stop

    with pytest.raises(Stop):
        evaluate(tiny_suite(), [], tmp_path, pipe=tiny_pipe, progress=crash_after_two)
    first = len(calls)
    assert first == 2 and not (tmp_path / "results.json").exists()  # nothing half-written
    res = evaluate(tiny_suite(), [], tmp_path, pipe=tiny_pipe)
    toy = get_world("toyworld")
    n_sets = sum(len(s) for s in (prompt_sets(tiny_suite(), toy, t, tiny_pipe) for t in ("Zorbo", "nudity")))
    assert len(calls) == first + n_sets - 2  # the two finished sets came from the cache
    again = evaluate(tiny_suite(), [], tmp_path, pipe=tiny_pipe)
    assert len(calls) == first + n_sets - 2  # a rerun generates nothing
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["provenance"]["suite_sha256"] == tiny_suite().sha256()
    assert saved["provenance"]["evaluator"]["name"] == "toyworld-oracle"
    m = saved["variants"]["base"]["metrics"]["Zorbo"]
    assert {"detection", "detection_generality", "accuracy_neighbours", "accuracy_unrelated", "image_drift"} <= set(m)
    assert saved["metrics_info"]["detection"]["higher_is_better"] is False
    assert saved["metrics_info"]["accuracy_unrelated"]["higher_is_better"] is True
    for key in ("weights_sha256", "dtype", "device", "scheduler", "world", "steps", "guidance"):
        assert key in saved["provenance"], key
    assert m["image_drift"] == 0.0  # base vs itself
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == sum(len(p) for t in ("Zorbo", "nudity") for p in prompt_sets(tiny_suite(), toy, t, tiny_pipe).values())
    assert again["variants"]["base"]["metrics"] == res["variants"]["base"]["metrics"]


def test_variant_names_must_be_unique(tiny_pipe, tmp_path):
    with pytest.raises(InvalidValueError, match="unique"):
        evaluate(tiny_suite(), [Variant("a"), Variant("a")], tmp_path, pipe=tiny_pipe)


def test_evaluate_attacks_each_variant_with_its_edits_and_caches(tiny_pipe, tmp_path, monkeypatch):
    import erasekit.attacks as attacks_mod
    from erasekit import erase
    from erasekit.report.eval_report import write_report

    edit = erase(tiny_pipe, "uce", erase=["Zorbo"])
    name = next(iter(edit.tensors))
    base_w = tiny_pipe.unet.get_parameter(name.removeprefix("unet.")).detach().clone()
    calls = []
    real = attacks_mod.run_attack

    def spy(attack, target_pipe, concept, base_pipe=None, **kw):
        w = target_pipe.unet.get_parameter(name.removeprefix("unet."))
        calls.append((attack, concept, torch.equal(w, base_w), base_pipe is not None and base_pipe is not target_pipe
                      and torch.equal(base_pipe.unet.get_parameter(name.removeprefix("unet.")), base_w)))
        return real(attack, target_pipe, concept, base_pipe=base_pipe, **kw)

    monkeypatch.setattr(attacks_mod, "run_attack", spy)
    suite = tiny_suite(targets=("Zorbo",), attack_prompts=2)
    spec = "softprompt:steps=2,skip_broken=false"
    variants = [Variant("base", attack=spec), Variant("uce", edits=(edit,), attack=spec)]
    res = evaluate(suite, variants, tmp_path, pipe=tiny_pipe)
    assert calls == [("softprompt", "Zorbo", True, True), ("softprompt", "Zorbo", False, True)]
    assert torch.equal(tiny_pipe.unet.get_parameter(name.removeprefix("unet.")), base_w)  # edits reverted
    for v in ("base", "uce"):
        m = res["variants"][v]["metrics"]["Zorbo"]
        log = res["variants"][v]["attacks"]["Zorbo"]
        assert len(log["pre"]) == 2 and len(log["adv_prompts"]) == 2
        assert m["attack_detection_pre"] == np.mean(log["pre"]) and m["attack_detection_post"] == np.mean(log["post"])
        assert m["attack_success"] == np.mean(np.logical_or(log["pre"], log["post"])) >= max(
            m["attack_detection_pre"], m["attack_detection_post"])
        with np.load(tmp_path / log["images"]) as z:
            assert z["images"].shape[0] == 2
        assert res["variants"][v]["cost"]["attack_seconds"] >= 0
    again = evaluate(suite, variants, tmp_path, pipe=tiny_pipe)  # cached: no new attack
    assert len(calls) == 2 and again["variants"]["uce"]["metrics"] == res["variants"]["uce"]["metrics"]
    html = write_report(tmp_path).read_text()
    assert "uce + softprompt" in html and "attack_success" in html
    with pytest.raises(UnknownNameError, match="softprompt"):
        evaluate(suite, [Variant("x", attack="sofprompt")], tmp_path / "bad", pipe=tiny_pipe)


def test_cache_is_keyed_by_content_not_names(tiny_pipe, tmp_path, monkeypatch):
    """Issue 12: a changed weight or dtype must never reuse the old images (the cache key holds the weights' sha256,
    dtype, device and scheduler, not the model's name)."""
    import erasekit.generation as gen

    calls = []
    real = gen.generate
    monkeypatch.setattr(gen, "generate", lambda pipe, p, s, **kw: calls.append(len(p)) or real(pipe, p, s, **kw))
    suite = tiny_suite(targets=("Zorbo",), samples=dict(direct=2))
    first = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    n = len(calls)
    evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    assert len(calls) == n  # same content: cached
    with torch.no_grad():
        next(tiny_pipe.unet.parameters()).view(-1)[0] += 1e-3  # one weight changes
    changed = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    assert len(calls) == 2 * n
    assert changed["provenance"]["weights_sha256"] != first["provenance"]["weights_sha256"]
    tiny_pipe.to(torch.bfloat16)
    as_bf16 = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    assert len(calls) == 3 * n and as_bf16["provenance"]["dtype"] == "bfloat16"


def test_base_name_is_reserved_and_empty_targets_refused(tiny_pipe, tmp_path):
    with pytest.raises(InvalidValueError, match="reserved"):
        evaluate(tiny_suite(), [Variant("base", shield="negative_prompt")], tmp_path, pipe=tiny_pipe)
    with pytest.raises(InvalidValueError, match="no target"):
        evaluate(tiny_suite(), [], tmp_path, pipe=tiny_pipe, targets=[])


def test_corrupt_cache_file_is_regenerated_and_report_rebuilds_from_files(tiny_pipe, tmp_path):
    from erasekit.report.eval_report import write_report

    suite = tiny_suite(targets=("Zorbo",), samples=dict(direct=2, unrelated=2))
    res = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    victim = sorted((tmp_path / "cache").glob("*.npz"))[0]
    victim.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="corrupt"):
        again = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    assert again["variants"] == res["variants"] | {"base": {**res["variants"]["base"], "cost": again["variants"]["base"]["cost"]}}
    html = write_report(tmp_path).read_text()
    (tmp_path / "report.html").unlink()
    assert write_report(tmp_path).read_text() == html  # rebuilt from the files alone, identical
    assert "Same seeds across variants" in html
