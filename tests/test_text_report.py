"""Text-world results in the evaluation report: multi-seed MUSE table (median, spread), relearning curves, RESTOR
budget curves, `erasekit report` on text runs, and the CLI's refusals (tiny random GPT-2; plumbing only)."""

from __future__ import annotations

import json

import pytest
import torch

from erasekit.errors import ErasekitError, InvalidValueError
from erasekit.text import muse
from erasekit.testing import small_text_world_config, tiny_text_lm
from erasekit.text.world import build_world

SMALL = small_text_world_config()


@pytest.fixture(scope="module")
def world():
    return build_world(SMALL)


@pytest.fixture(scope="module")
def tiny_lm(world):
    """A random 1-layer GPT-2 with a BPE tokenizer trained on the small world (plumbing only)."""
    return tiny_text_lm(world)


def test_median_spread_and_median_curve_by_hand():
    med, spread = muse.median_spread([{"a": 1.0, "b": 5, "s": "x"}, {"a": 3.0, "b": 1}, {"a": 2.0, "b": 2}])
    assert med == {"a": 2.0, "b": 2.0} and spread == {"a": [1.0, 3.0], "b": [1.0, 5.0]}
    curve = muse.median_curve([[{"steps": 0, "q": 0.1}, {"steps": 5, "q": 0.9}],
                               [{"steps": 0, "q": 0.3}, {"steps": 5, "q": 0.5}, {"steps": 9, "q": 1.0}],
                               [{"steps": 0, "q": 0.2}, {"steps": 5, "q": 0.7}]])
    assert [r["steps"] for r in curve] == [0, 5]  # 9 is not in every seed's curve
    assert curve[1]["q"] == pytest.approx(0.7) and curve[1]["q_range"] == [0.5, 0.9] and curve[1]["n"] == 3
    with pytest.raises(InvalidValueError, match="no runs"):
        muse.median_spread([])


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, world, tiny_lm):
    from transformers import GPT2LMHeadModel

    model, tok = tiny_lm
    torch.manual_seed(3)  # a second random model as the "retrained" reference (its Min-40% AUC is 0.5 > 0)
    ref = GPT2LMHeadModel(model.config).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    variants, samples = muse.run_methods(model, tok, world, [("ga", "ga", {"steps": 1, "batch_size": 2})],
                                         seeds=[0, 1], reference=(ref, tok), relearn_budgets=(0, 1),
                                         attacks=("in-context", "step-by-step"), scalability=(1,),
                                         sustainability=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    results = muse.text_results(variants, model="tiny", world_sha256=world.content_sha256())
    out = tmp_path_factory.mktemp("textbench")
    muse.write_results(out, results, samples)
    return out, results


def test_multi_seed_results_have_medians_spread_and_the_image_side_shape(bench_run):
    _, res = bench_run
    assert res["targets"] == [muse.TEXT_TARGET] and list(res["variants"]) == ["base", "retrained", "ga"]
    ga = res["variants"]["ga"]
    assert sorted(ga["seeds"]) == ["0", "1"] and "edit_seconds" in ga["cost"] and "edit_seconds" not in ga["mean"]
    for k, v in ga["mean"].items():  # the median of two runs = their mean, inside the spread
        runs = [ga["seeds"][s][k] for s in ("0", "1")]
        assert v == pytest.approx(sum(runs) / 2) and ga["spread"][k] == [min(runs), max(runs)]
    assert ga["metrics"][muse.TEXT_TARGET] == ga["mean"]
    assert res["variants"]["retrained"]["mean"]["privleak"] == pytest.approx(0.0)  # its own reference
    assert res["variants"]["base"]["mean"]["ref_absgap_f"] > 0 and "ref_agree_f" in ga["mean"]
    assert res["metrics_info"]["verbmem_f"]["higher_is_better"] is False
    assert res["metrics_info"]["privleak"]["higher_is_better"] is None
    assert sorted(ga["attacks"]["relearn"]) == ["0", "1"]
    assert [c["steps"] for c in ga["attacks"]["relearn"]["0"]["curve"]] == [0, 1]
    assert sorted(res["variants"]["retrained"]["attacks"]["relearn"]) == ["0", "1"]
    assert set(ga["attacks"]["in-context"]["1"]) == {"qa_acc", "qa_acc_in_context"}
    assert "direct" in ga["attacks"]["step-by-step"]["0"]["forget"]
    assert list(res["variants"]["base"]["attacks"]["in-context"]) == ["-"]  # deterministic: evaluated once
    six = ga["sixway"]
    assert six["seed"] == 0 and [r["forget_entities"] for r in six["scalability"]] == [1]
    assert [r["requests"] for r in six["sustainability"]] == [1, 2]  # the small world has 2 forget entities


def test_report_renders_text_results_and_markdown_table(bench_run):
    from erasekit.report.eval_report import write_report
    from erasekit.report.markdown import results_table

    out, res = bench_run
    html = write_report(out).read_text()
    for needle in ('id="leaderboard-table"', 'id="spread-table"', 'id="runs-table"', 'id="relearn-table"',
                   'id="in-context-table"', 'id="step-by-step-table"', 'id="sixway-table"',
                   'id="provenance"', "median over seeds"):
        assert needle in html, needle
    assert html.count("<img") == 1 and "http://" not in html  # the relearning plot, inline
    md = results_table(json.loads((out / "results.json").read_text()))
    assert md.splitlines()[0].startswith("| variant | ") and "verbmem_f ↓" in md and "knowmem_r ↑" in md
    assert "\n| ga | " in md and "\n| retrained | " in md
    md = results_table(res, ["verbmem_f", "privleak", "edit_seconds"])  # the CLI's column choice: costs too
    assert md.splitlines()[0] == "| variant | verbmem_f ↓ | privleak | edit_seconds ↓ |"
    assert md.splitlines()[2].startswith("| base | ") and md.splitlines()[2].endswith("|  |")  # no cost for base


def test_restor_budget_curve(world, tiny_lm):
    from erasekit.text.restor import RestorConfig, restor

    model, tok = tiny_lm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = RestorConfig(n_entities=1, min_frequency=0, mentions=2, inject_steps=1, batch_size=2, threads=1)
    res = restor(model, tok, world, ["ga"], cfg, {"ga": {"batch_size": 2}}, budgets=(2, 0, 1))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    curve = res["curves"]["ga"]
    assert [p["steps"] for p in curve] == [0, 1, 2]
    assert curve[0]["acc_clean"] == res["states"]["corrupted"]["acc_clean"]
    assert all("recovery" in p and "qa_acc_retain" in p for p in curve)
    with pytest.raises(InvalidValueError, match="both set the unlearning steps"):
        restor(model, tok, world, ["ga"], cfg, {"ga": {"steps": 3}}, budgets=(1,))
    with pytest.raises(InvalidValueError, match="budgets must be"):
        restor(model, tok, world, ["ga"], cfg, budgets=(-1,))


def test_restor_injection_curve(world, tiny_lm):
    from erasekit.text.restor import RestorConfig, injection_curve

    model, tok = tiny_lm
    cfg = RestorConfig(n_entities=1, min_frequency=0, mentions=2, inject_steps=1, batch_size=2, threads=1)
    rows = injection_curve(model, tok, world, ["ga"], (2, 1), cfg, {"ga": {"steps": 1, "batch_size": 2}})
    assert [r["inject_steps"] for r in rows] == [1, 2] and [r["inject"]["steps_done"] for r in rows] == [1, 2]
    assert rows[0]["states"]["clean"] == rows[1]["states"]["clean"]  # the same clean model and facts
    with pytest.raises(InvalidValueError, match="inject_steps must be"):
        injection_curve(model, tok, world, ["ga"], (0,), cfg)


def test_report_of_attack_and_old_results_files(tmp_path):
    from erasekit.report.eval_report import write_report
    from erasekit.report.markdown import results_table

    restor_res = {"format": "erasekit.text.attack/1", "kind": "restor", "model": "m", "world_sha256": "ab",
                  "result": {"states": {"clean": {"acc_clean": 1.0, "recovery": 1.0}, "corrupted": {"acc_clean": 0.0,
                             "recovery": 0.0}}, "curves": {"ga": [{"steps": 0, "acc_clean": 0.0, "recovery": 0.0},
                                                                  {"steps": 5, "acc_clean": 0.5, "recovery": 0.5}]}}}
    muse.write_results(tmp_path / "a", restor_res)  # no samples.jsonl: allowed for text runs
    html = write_report(tmp_path / "a").read_text()
    assert 'id="restor-table"' in html and 'id="restor-curve-table"' in html and html.count("<img") == 1
    with pytest.raises(ErasekitError, match="no variants"):
        results_table(restor_res)
    muse.write_results(tmp_path / "b", {"format": "erasekit.text.results/1", "metrics": {"verbmem_f": 0.5}}, [])
    assert "verbmem_f" in write_report(tmp_path / "b").read_text()
    muse.write_results(tmp_path / "c", {"format": "image", "variants": {}})
    with pytest.raises(ErasekitError, match="no samples.jsonl"):  # image runs still need their samples
        write_report(tmp_path / "c")


@pytest.mark.parametrize("args,match", [
    (["--method", "npoo"], "npo"),
    (["--method", "ga:bogus=1"], "bogus"),
    (["--method", "ga", "--seeds", "x"], "--seeds must be comma-separated"),
    (["--method", "ga", "--seeds", ","], "names no number"),
    (["--method", "ga:seed=3"], "give seeds with --seeds"),
    (["--method", "ga", "--model", "."], "not a causal-LM folder"),
    (["--method", "ga", "--attack", "relearn"], "Invalid value for '--attack'"),
    (["--method", "ga", "--scalability", "1,x"], "--scalability must be comma-separated"),
])
def test_cli_bench_refuses_bad_input(tmp_path, args, match):
    from click.testing import CliRunner

    from erasekit.cli import main

    r = CliRunner().invoke(main, ["text", "bench", *args, "--retrained", "none", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and match in r.output, r.output


def test_cli_attack_budgets_only_for_curves(tmp_path):
    from click.testing import CliRunner

    from erasekit.cli import main

    r = CliRunner().invoke(main, ["text", "attack", "--kind", "in-context", "--budgets", "1", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "--budgets is for --kind relearn or restor" in r.output


def test_folders_that_are_not_causal_lms_are_refused(tmp_path):
    """Issue 20's bad input "a model folder that is not a causal LM": an encoder checkpoint (by its recorded
    architecture, and by its missing LM-head weights when the record is changed) and a causal LM without a
    tokenizer each get one clear line instead of a random head or a crash later."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    from erasekit.text.train import load_lm

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         vocab_size=50)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ErasekitError, match="not a causal LM: its config records BertModel"):
        load_lm(tmp_path / "bert")
    conf = json.loads((tmp_path / "bert" / "config.json").read_text())
    conf["architectures"] = ["BertLMHeadModel"]  # claims to be causal, but the weights have no LM head
    (tmp_path / "bert" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ErasekitError, match="weights lack .* parameters"):
        load_lm(tmp_path / "bert")
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ErasekitError, match="no usable tokenizer"):
        load_lm(tmp_path / "gpt2")


def test_cli_bench_writes_results_and_report_that_erasekit_report_rebuilds(tmp_path, world, tiny_lm):
    from click.testing import CliRunner

    from erasekit.cli import main

    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    world.save(tmp_path / "w")
    out = tmp_path / "bench"
    args = ["text", "bench", "--model", str(tmp_path / "lm"), "--world", str(tmp_path / "w"), "--retrained", "none",
            "--method", "ga:steps=1,batch_size=2", "--seeds", "0,1", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert list(res["variants"]) == ["base", "ga:steps=1,batch_size=2"] and res["provenance"]["seeds"] == [0, 1]
    assert "| variant | verbmem_f ↓ |" in r.output and (out / "report.html").is_file()
    (out / "report.html").unlink()
    r = CliRunner().invoke(main, ["report", str(out), "--markdown"])
    assert r.exit_code == 0 and 'id="leaderboard-table"' in (out / "report.html").read_text(), r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "overwrite" in r.output
    for cmd in (["eval"], ["attack", "--kind", "in-context"], ["curve"]):
        extra = ["--retrained", "none"] if cmd == ["eval"] else []
        folder = tmp_path / cmd[-1]
        r = CliRunner().invoke(main, ["text", *cmd, "--model", str(tmp_path / "lm"), "--world", str(tmp_path / "w"),
                                      *extra, "--out", str(folder)])
        assert r.exit_code == 0, (cmd, r.output)
        assert json.loads((folder / "results.json").read_text())["format"].startswith("erasekit.text.")
        assert 'id="provenance"' in (folder / "report.html").read_text()
    assert list(json.loads((tmp_path / "eval" / "results.json").read_text())["variants"]) == ["base"]
    assert 'id="frequency-table"' in (tmp_path / "curve" / "report.html").read_text()
