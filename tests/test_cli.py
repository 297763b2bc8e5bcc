"""The command line: listing, generation, demo, friendly errors with suggestions."""

import json

from click.testing import CliRunner

from erasekit.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_ls_lists_models_and_concepts():
    res = run("ls")
    assert res.exit_code == 0
    assert "toyworld" in res.output and "Zorbo" in res.output and "Rhea Solis" in res.output


def test_ls_unknown_kind_suggests():
    res = CliRunner().invoke(main, ["ls", "modles"])
    assert res.exit_code == 2 and "models" in res.output


def test_generate_writes_a_grid(tmp_path):
    out = tmp_path / "g.png"
    res = run("generate", "--prompt", "a red circle", "--prompt", "Zorbo", "-n", "2", "--steps", "4", "--out", str(out))
    assert res.exit_code == 0, res.output
    from PIL import Image

    im = Image.open(out)
    assert im.size == ((2 * 32 + 2) * 4, (2 * 32 + 2) * 4)


def test_unknown_model_is_a_usage_error():
    res = CliRunner().invoke(main, ["generate", "--model", "toywrld", "--prompt", "x"])
    assert res.exit_code == 2 and "Did you mean: 'toyworld'" in res.output


def test_world_render_and_bad_concept(tmp_path):
    res = run("world", "render", "--object", "ring", "--colour", "cyan", "--artist", "Felix Orme", "-n", "3",
              "--out", str(tmp_path / "r.png"))
    assert res.exit_code == 0 and (tmp_path / "r.png").exists()
    bad = CliRunner().invoke(main, ["world", "render", "--object", "rnig", "--colour", "cyan"])
    assert bad.exit_code == 2 and "ring" in bad.output


def test_demo_writes_report_and_grid(tmp_path):
    res = run("demo", "--out", str(tmp_path / "demo"), "--methods", "uce", "--limit", "1")
    assert res.exit_code == 0, res.output
    assert "mean over target concepts" in res.output and "detection" in res.output  # the leaderboard is printed
    html = (tmp_path / "demo" / "report.html").read_text()
    assert 'id="fidelity"' in html and "toyworld-oracle" in html and 'id="leaderboard-table"' in html
    assert "http://" not in html and "https://" not in html  # self-contained
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(results["fidelity"]["targets"]) == 14
    assert set(results["erasure"]["variants"]) == {"base", "uce"}
    assert list((tmp_path / "demo" / "erasure" / "edits").glob("uce-zorbo-*.safetensors"))
    assert (tmp_path / "demo" / "grid.png").exists()
    # the demo's numbers come from the harness: its run folders rebuild their reports from files
    assert (tmp_path / "demo" / "fidelity" / "samples.jsonl").exists()
    assert (tmp_path / "demo" / "erasure" / "results.json").exists()


def test_generate_and_attack_accept_a_shield(tmp_path):
    res = run("generate", "--prompt", "a picture of Zorbo", "-n", "1", "--steps", "3", "--shield", "negative_prompt",
              "--protect", "Zorbo", "--out", str(tmp_path / "g.png"))
    assert res.exit_code == 0 and (tmp_path / "g.png").exists(), res.output
    bad = CliRunner().invoke(main, ["generate", "--prompt", "x", "--shield", "sdl", "--protect", "Zorbo"])
    assert bad.exit_code == 2 and "sld" in bad.output
    res = run("attack", "--attack", "copycat", "--concept", "Zorbo", "--shield", "negative_prompt", "-n", "1",
              "--steps", "1", "--out", str(tmp_path / "att"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "att" / "result.json").read_text())["config"]["shield"] == "negative_prompt"


def test_eval_with_edit_shield_and_attack(tmp_path):
    edit = tmp_path / "uce.safetensors"
    assert run("erase", "--method", "uce", "--erase", "Zorbo", "--out", str(edit)).exit_code == 0
    res = run("eval", "--edit", str(edit), "--attack", "copycat:steps=3", "--concepts", "Zorbo", "--limit", "1",
              "--out", str(tmp_path / "ev"))
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    for v in ("base", "edited"):
        m = saved["variants"][v]["metrics"]["Zorbo"]
        assert {"attack_detection_pre", "attack_detection_post", "attack_success"} <= set(m)
        assert saved["variants"][v]["attacks"]["Zorbo"]["attack"] == "copycat"
    assert "attack_success" in res.output
    bad = CliRunner().invoke(main, ["eval", "--attack", "copycta", "--limit", "1", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "copycat" in bad.output
