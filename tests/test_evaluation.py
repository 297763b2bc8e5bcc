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
    ("name: x\nworld: toyworld\ntargets: [Zorbo]\nsamples: {direct: -1}\n", InvalidValueError, "non-negative|>= 0"),
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
    assert len(lines) == sum(len(p) for t in ("Zorbo", "nudity")
                             for p in prompt_sets(tiny_suite(), toy, t, tiny_pipe).values())
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
    assert again["variants"]["base"]["metrics"] == res["variants"]["base"]["metrics"]
    html = write_report(tmp_path).read_text()
    (tmp_path / "report.html").unlink()
    assert write_report(tmp_path).read_text() == html  # rebuilt from the files alone, identical
    assert "Same seeds across variants" in html


def test_results_json_is_the_returned_dict_with_full_provenance(tiny_pipe, tmp_path):
    """evaluate returns exactly what results.json holds; edits are recorded with their file and content sha256."""
    import hashlib

    from erasekit import erase

    path = erase(tiny_pipe, "uce", erase=["Zorbo"]).save(tmp_path / "uce.safetensors")
    suite = tiny_suite(targets=("Zorbo",), samples=dict(direct=2, unrelated=2))
    res = evaluate(suite, [Variant("uce", edits=(str(path),))], tmp_path / "run", pipe=tiny_pipe)
    assert res == json.loads((tmp_path / "run" / "results.json").read_text())
    assert not [k for k in res if k.startswith("_")]
    prov = res["provenance"]
    (info,) = prov["edits"]["uce"]
    assert info["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and len(info["sha256"]) == 64
    assert res["variants"]["uce"]["edits"] == [info]
    assert prov["world"]["name"] == "toyworld" and prov["evaluator"]["name"] == "toyworld-oracle"
    assert prov["scheduler"]["class"] == "DDIMScheduler" and prov["dtype"] == "float32" and prov["device"] == "cpu"
    assert set(prov["weights"]) == {"unet", "text_encoder", "vae"} and prov["steps"] == 2 and prov["guidance"] == 3.0


def test_every_result_name_is_in_the_vocabulary_with_its_metric_class_direction(tiny_pipe, tmp_path):
    from erasekit.metrics import RESULT_METRICS, higher_is_better, metrics, metrics_info

    res = evaluate(tiny_suite(), [], tmp_path, pipe=tiny_pipe)
    names = {k for v in res["variants"].values() for k in list(v["mean"]) + list(v["cost"])}
    assert set(res["metrics_info"]) == names
    for name in res["variants"]["base"]["mean"]:
        cls = metrics.get(RESULT_METRICS[name].metric)
        want = cls.higher_is_better if RESULT_METRICS[name].direction == "from the metric class" else None
        assert res["metrics_info"][name]["higher_is_better"] is want, name
        assert res["metrics_info"][name]["help"]
    assert higher_is_better("detection") is False and higher_is_better("accuracy_unrelated") is True
    assert higher_is_better("clip_score_direct") is None and higher_is_better("clip_score_unrelated") is True
    assert higher_is_better("accuracy_direct") is None  # fidelity: an erasure lowers it on purpose
    with pytest.raises(UnknownNameError, match="detection"):
        metrics_info(["detecton"])


def test_a_nan_metric_is_an_error_naming_it(tiny_pipe, tmp_path, monkeypatch):
    import erasekit.evaluation.results as results_mod

    real = results_mod.target_metrics
    monkeypatch.setattr(results_mod, "target_metrics",
                        lambda *a, **k: {**real(*a, **k), "image_drift": float("nan")})
    with pytest.raises(InvalidValueError, match=r"variants\.base\.metrics\.Zorbo\.image_drift is nan"):
        evaluate(tiny_suite(targets=("Zorbo",), samples=dict(direct=1, unrelated=1)), [], tmp_path, pipe=tiny_pipe)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("content", [b"", b"not an npz", b"PK\x03\x04 truncated zip"])
def test_empty_or_corrupt_cache_file_is_discarded_with_a_warning_naming_it(tiny_pipe, tmp_path, content):
    suite = tiny_suite(targets=("Zorbo",), samples=dict(direct=2))
    first = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    (victim,) = (tmp_path / "cache").glob("*.npz")
    victim.write_bytes(content)
    with pytest.warns(UserWarning, match=f"discarding corrupt cache file .*{victim.name}"):
        again = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    assert again["variants"]["base"]["metrics"] == first["variants"]["base"]["metrics"]
    with np.load(victim) as z:
        assert z["images"].shape[0] == 2  # regenerated in place


def test_shield_and_attack_keys_hold_what_they_depend_on(tiny_pipe, monkeypatch):
    """The key of a shielded unit holds the protected concept and the world; an unshielded one does not depend on
    them; every key changes with the steps (content, not names)."""
    from erasekit.evaluation.plan import build_plan, prepare_variants

    toy = get_world("toyworld")
    suite = tiny_suite(targets=("Zorbo",), samples=dict(direct=2))
    judge = __import__("erasekit.evaluators", fromlist=["get_evaluator"]).get_evaluator("toyworld-oracle")
    variants = prepare_variants([Variant("neg", shield="negative_prompt")])
    plan = build_plan(suite, variants, ["Zorbo"], tiny_pipe, "tiny", judge, toy, 2, 3.0)
    base, neg = plan.units
    assert base.variant == "base" and neg.variant == "neg" and base.key != neg.key and base.seeds == neg.seeds
    other = build_plan(suite, variants, ["Zorbo"], tiny_pipe, "tiny", judge, toy, 3, 3.0)
    assert {u.key for u in other.units}.isdisjoint(u.key for u in plan.units)
    import erasekit.evaluation.plan as plan_mod
    from erasekit.shields import ProtectedConcept

    real = plan_mod.protected_concept
    monkeypatch.setattr(plan_mod, "protected_concept", lambda w, t: ProtectedConcept(t, ("blue hat",), family="x"))
    rekeyed = build_plan(suite, variants, ["Zorbo"], tiny_pipe, "tiny", judge, toy, 2, 3.0)
    assert rekeyed.units[0].key == base.key and rekeyed.units[1].key != neg.key  # only the shielded unit changes
    assert real(toy, "Zorbo").name == "Zorbo"


def test_cli_eval_and_report_rebuild_from_files(tiny_pipe, tmp_path):
    """`erasekit eval` on a model folder, then `erasekit report RUN_DIR` rebuilds the same report from the files."""
    from click.testing import CliRunner

    from erasekit.cli import main

    tiny_pipe.save_pretrained(tmp_path / "model")
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: t\nworld: toyworld\nmodel: {tmp_path / 'model'}\ntargets: [Zorbo]\n"
                     "samples: {direct: 2, unrelated: 1}\nsampling: {steps: 2, guidance: 3.0}\n")
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["eval", "--suite", str(suite), "--limit", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "detection ↓" in res.output and "accuracy_unrelated ↑" in res.output and "efficacy" not in res.output
    html = (out / "report.html").read_text()
    (out / "report.html").unlink()
    res = CliRunner().invoke(main, ["report", str(out), "--markdown"])
    assert res.exit_code == 0, res.output
    assert (out / "report.html").read_text() == html and "| variant | detection ↓ |" in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code != 0 and "results.json" in res.output and "Traceback" not in res.output
    from erasekit import erase

    edit = erase(tiny_pipe, "uce", erase=["Zorbo"]).save(tmp_path / "e.safetensors")
    res = CliRunner().invoke(main, ["eval", "--suite", str(suite), "--edit", str(edit), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "e" / "results.json").read_text())
    assert saved["targets"] == ["Zorbo"] and saved["variants"]["edited"]["edits"][0]["file"] == str(edit)
    for args, needle in ((["--concepts", ","], "names no concept"), (["--name", "base", "--shield", "negative_prompt"],
                                                                     "reserved")):
        res = CliRunner().invoke(main, ["eval", "--suite", str(suite), "--out", str(tmp_path / "x"), *args])
        assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output, res.output


def test_bench_methods_stops_fine_tuning_on_the_evaluator_and_world(tiny_pipe, tmp_path, monkeypatch):
    """The early-stop hook of a fine-tuning method comes from `concept_hooks(world, evaluator, concept)`."""
    import erasekit.erasers as erasers_mod
    import erasekit.erasers._training as training
    from erasekit.evaluation import bench_methods

    seen, sentinel = [], object()
    monkeypatch.setattr(training, "concept_hooks",
                        lambda world, evaluator, concept, **kw: seen.append((world.name, evaluator.name, concept))
                        or sentinel)
    real = erasers_mod.erase

    def fake_esd(pipe, method, erase, hooks=None, **kw):  # a closed form stands in for the training run
        assert method == "esd" and hooks is sentinel
        return real(pipe, "uce", erase)

    monkeypatch.setattr(erasers_mod, "erase", fake_esd)
    res = bench_methods(tiny_suite(targets=("Zorbo",), samples=dict(direct=1, unrelated=1)), ["esd"], ["Zorbo"],
                        tmp_path, pipe=tiny_pipe)
    assert seen == [("toyworld", "toyworld-oracle", "Zorbo")] and set(res["variants"]) == {"base", "esd"}
    with pytest.raises(InvalidValueError, match="no eraser"):
        bench_methods(tiny_suite(), [""], ["Zorbo"], tmp_path / "x", pipe=tiny_pipe)


def test_uce_lowers_detection_on_the_toy_model(toy_pipe, tmp_path):
    """Behaviour on the shipped toy model (small sample): the base shows Zorbo, the UCE edit mostly stops it and
    leaves unrelated prompts recognisable."""
    from erasekit import erase

    edit = erase(toy_pipe, "uce", erase=["Zorbo"])
    suite = Suite(name="toy", targets=("Zorbo",), samples=dict(direct=4, unrelated=4), world="toyworld")
    res = evaluate(suite, [Variant("uce", edits=(edit,))], tmp_path, pipe=toy_pipe)
    base, uce = res["variants"]["base"]["mean"], res["variants"]["uce"]["mean"]
    assert res["provenance"]["steps"] == 25 and res["provenance"]["guidance"] == 5.0  # the model card's
    assert base["detection"] >= 0.75 and uce["detection"] <= 0.25
    assert uce["accuracy_unrelated"] >= 0.5 and 0 < uce["image_drift"] < 0.2


def test_a_target_with_its_own_lists_uses_its_own_neighbours_and_unrelated(tiny_pipe, tmp_path):
    """Own (unlabelled) neighbour/unrelated lists are scored by image drift only; the world's are never consulted."""
    from erasekit.evaluators import CallableEvaluator

    ev = CallableEvaluator(lambda images: images.reshape(len(images), -1).mean(1) > 127, concept="blob")
    suite = Suite(name="own", targets=("blob",), samples={}, steps=2, guidance=3.0, evaluator="callable",
                  prompts={"blob": {"direct": ["a blob"], "neighbours": ["a puddle", "a cloud"],
                                    "unrelated": ["a bicycle"]}})
    sets = prompt_sets(suite, suite.world_for(ev), "blob", tiny_pipe)
    assert [p.text for p in sets["neighbours"]] == ["a puddle", "a cloud"] and sets["neighbours"][0].labels == {}
    res = evaluate(suite, [Variant("neg", shield="negative_prompt")], tmp_path, pipe=tiny_pipe, evaluator=ev)
    m = res["variants"]["neg"]["metrics"]["blob"]
    assert set(m) == {"detection", "image_drift", "image_drift_neighbours"}
    assert res["variants"]["base"]["metrics"]["blob"]["image_drift_neighbours"] == 0.0


def test_eval_measures_spm_transport_and_its_cache_follows_the_edit_file(tiny_pipe, tmp_path, monkeypatch):
    """Issue 12 item 7: SPM's facilitated transport is a shield `eval` measures; the unit's key holds the SPM file's
    content, so another SPM written to the same path is a cache miss."""
    import erasekit.shields as sh
    from erasekit.testing import random_spm_edit

    calls = []
    real = sh.run_plan
    monkeypatch.setattr(sh, "run_plan", lambda pipe, plan, seeds: calls.append(len(seeds)) or real(pipe, plan, seeds))
    path = random_spm_edit(tiny_pipe, "Zorbo", 0, scale=0.5).save(tmp_path / "spm.safetensors")
    suite = tiny_suite(targets=("Zorbo",), samples=dict(direct=2, unrelated=2))
    v = [Variant("spm-transport", shield=f"spm_transport:edits={path}")]
    res = evaluate(suite, v, tmp_path / "run", pipe=tiny_pipe)
    assert "spm-transport" in res["variants"] and calls
    n = len(calls)
    evaluate(suite, v, tmp_path / "run", pipe=tiny_pipe)
    assert len(calls) == n  # same file content: cached
    random_spm_edit(tiny_pipe, "Zorbo", 1, scale=0.5).save(path)
    evaluate(suite, v, tmp_path / "run", pipe=tiny_pipe)
    assert len(calls) > n  # same path, other content: regenerated


def test_imitation_score_through_the_harness_and_threshold_table(tiny_pipe, tmp_path, monkeypatch):
    """The suite's `imitation` asks the score stage for FIT's imitation score against the world's training images
    (here: renders stand in for the toy dataset, which takes ~30 s to rebuild); results.json carries the training
    counts, and `erasekit imitation threshold` reads its table from the run."""
    from erasekit.cli.imitation_cmds import read_table
    from erasekit.imitation import imitation_score
    from erasekit.toyworld.plugin import ToyWorld

    toy = get_world("toyworld")
    monkeypatch.setattr(ToyWorld, "training_images", lambda self, c, model=None: toy.images(c, 6, 1))
    # the random tiny pipeline has no training set; stand in the shipped model's counts for it
    shipped = ToyWorld.training_counts
    assert shipped(toy, tiny_pipe) is None
    monkeypatch.setattr(ToyWorld, "training_counts", lambda self, model=None: shipped(self))
    suite = tiny_suite(targets=("Zorbo", "Mossy"), samples=dict(direct=3), imitation={"k": 2})
    res = evaluate(suite, [], tmp_path, pipe=tiny_pipe)
    m = res["variants"]["base"]["metrics"]["Zorbo"]
    judge = __import__("erasekit.evaluators", fromlist=["get_evaluator"]).get_evaluator("toyworld-oracle")
    from erasekit.evaluation import run_images

    want = imitation_score(judge.embed(run_images(tmp_path, "base", "Zorbo", "direct")),
                           judge.embed(toy.images("Zorbo", 6, 1)), 2).score
    assert m["imitation"] == pytest.approx(want, abs=1e-6)
    assert res["metrics_info"]["imitation"]["higher_is_better"] is False
    assert set(res["training_counts"]) == {"Zorbo", "Mossy"}
    table = read_table(str(tmp_path / "results.json"), "true")
    assert table["Mossy"] == (res["training_counts"]["Mossy"], res["variants"]["base"]["metrics"]["Mossy"]["imitation"])
    with pytest.raises(InvalidValueError, match="imitation.k"):
        tiny_suite(imitation={"k": 0})


def test_attack_options_naming_files_enter_the_cache_key_by_content(tmp_path):
    """A file an attack option names (relearn's freeze mask) keys the cache by its bytes: editing it in place under
    the same path must not reuse stale attack results."""
    from erasekit.evaluation.plan import prepare_variant

    mask = tmp_path / "mask.json"
    mask.write_text('{"frozen": ["a"]}')
    v = Variant("r", attack=f"relearn:steps=2,freeze={mask}")
    first = prepare_variant(v).attack
    mask.write_text('{"frozen": ["b"]}')
    second = prepare_variant(v).attack
    assert first["spec"] == second["spec"] and first["files_sha256"] != second["files_sha256"]
    assert "files_sha256" not in prepare_variant(Variant("c", attack="copycat:steps=2")).attack
