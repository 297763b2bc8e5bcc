"""HTML reports: self-contained, escaped, and rendered by a real browser (headless Chromium) with the table and images.

The browser test runs where Debian's `chromium` is installed (`.ci/run` installs it) and is skipped elsewhere."""

import shutil
import subprocess

import numpy as np
import pytest

from erasekit.evaluation import evaluate
from erasekit.report import HtmlReport
from erasekit.report.eval_report import write_report
from erasekit.suite import Suite

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_html_is_escaped_and_self_contained(tmp_path):
    rep = HtmlReport("t <script>")
    rep.table(["a"], [["<b>x</b>"]], id="t1").image_grid(np.zeros((1, 4, 4, 3), np.uint8), ["<i>"])
    html = rep.render()
    assert "<script>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "data:image/png;base64," in html
    path = rep.write(tmp_path / "r.html")
    assert path.read_text() == html


@pytest.fixture(scope="module")
def eval_report(tmp_path_factory):
    from erasekit.testing import tiny_pipeline

    out = tmp_path_factory.mktemp("eval")
    suite = Suite(name="tiny", targets=("Zorbo",), samples=dict(direct=3, heldout=2, keyword=2, neighbours=1,
                                                                  unrelated=3), steps=2, guidance=3.0, neighbours=1,
                  world="toyworld")
    evaluate(suite, [], out, pipe=tiny_pipeline())
    return write_report(out)


def test_eval_report_has_leaderboard_plots_grids_provenance(eval_report):
    html = eval_report.read_text()
    for needle in ('id="leaderboard-table"', 'id="per-concept"', 'id="grids"', 'id="provenance"', "suite_sha256",
                   "toyworld-oracle"):
        assert needle in html, needle
    assert html.count("<img") >= 2 + 3  # two plots + the base grid
    assert "http://" not in html and "https://" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(eval_report, tmp_path):
    url = eval_report.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'prof1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="leaderboard-table"' in dom.stdout and dom.stdout.count("<img") >= 5
    shot = tmp_path / "shot.png"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'prof2'}", f"--screenshot={shot}",
                          "--window-size=1200,1600", url], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert px.shape[0] >= 1000 and px.std() > 10  # a rendered page, not a blank screen
    # the leaderboard's highlighted/header cells and inline images produce many distinct colours
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 50


def test_results_table_renders_one_or_several_results_with_arrows(eval_report):
    import json

    from erasekit.report.markdown import results_table

    res = json.loads((eval_report.parent / "results.json").read_text())
    one = results_table(res)
    header = one.splitlines()[0]
    assert header.startswith("| variant | detection ↓ | detection_heldout ↓ |") and "accuracy_unrelated ↑" in header
    assert one.splitlines()[2].startswith("| base | ") and "efficacy" not in one
    two = results_table([res, res], ["detection", "image_drift"], runs=["a", "b"], per_target=True)
    assert two.splitlines()[0] == "| run | variant | target | detection ↓ | image_drift ↓ |"
    assert [r.split(" | ")[0] for r in two.splitlines()[2:]] == ["| a", "| b"]
