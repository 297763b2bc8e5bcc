"""Every `erasekit ...` line of README.md is checked, so the README cannot drift from the CLI (issue 13).

Each line is parsed by the real CLI (command names, option names and value types, through click's own parser, no
work done). Lines in RUN are also executed for real, with small budgets appended where the full run is long; every
other line must be listed in PARSE_ONLY with the reason it is not executed here, so a new README line fails this test
until someone decides which it is."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from erasekit.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

# command prefix -> extra arguments that keep the real run small (appended), for lines executed here
RUN = {
    "erasekit ls": [],
    "erasekit world render": [],
    "erasekit world info": [],
    "erasekit shield check": [],
    "erasekit erase --method uce": [],
    "erasekit erase --method esd --show-config": [],
    "erasekit generate --prompt": ["-n", "1", "--steps", "2"],
    "erasekit report": [],
}
# command prefix -> why it is only parsed here (each is exercised by its own test file on small budgets)
PARSE_ONLY = {
    "erasekit erase --method esd --erase": "fine-tuning (minutes); tests/test_esd.py trains it on small budgets",
    "erasekit erase --method spm": "fine-tuning; tests/test_spm.py",
    "erasekit generate --edit": "needs the edit file written by an earlier README line",
    "erasekit eval": "a full suite (minutes); tests/test_evaluation.py runs the same path on small suites",
    "erasekit bench": "a benchmark (minutes); tests/test_benchmark.py runs a small spec through the same code",
    "erasekit attack": "needs an edit file; tests/test_attacks.py",
    "erasekit imitation score": "generates every artist (minutes); tests/test_imitation.py",
    "erasekit imitation threshold": "reads the table `imitation score` writes; tests/test_imitation.py",
    "erasekit world train": "trains the toy model (~35 min)",
    "erasekit demo": "the main job (minutes); `make demo`",
    "erasekit sae": "trains an SAE (minutes) / needs its file; tests/test_sae.py runs both on small budgets",
    "erasekit sixway": "erases and evaluates every request (minutes); tests/test_measure2.py runs it small",
    "erasekit leaderboard": "reads finished benchmark runs; tests/test_report_views.py runs it on made results",
    "erasekit agree": "compares two finished runs; tests/test_agreement.py makes two and runs it",
    "erasekit mark": "keys, marked images and DDIM inversion (minutes); tests/test_marks.py runs the same commands",
    "erasekit report runs/marks": "needs a mark bench folder; tests/test_mark_compose.py writes one and reports it",
    "erasekit text": "unlearning and MUSE evaluation (minutes); tests/test_text.py runs the CLI on small budgets",
}


def readme_commands() -> list[str]:
    """Every line of a fenced code block of README.md that starts with `erasekit ` (comments stripped)."""
    text = README.read_text()
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():  # join continuation lines
            line = line.split("  #")[0].strip()
            if line.startswith("erasekit "):
                lines.append(line)
    return lines


def parse(args: list[str]) -> click.Context:
    """Parse `args` down to the leaf command with click (raises click.UsageError / BadParameter on a bad line)."""
    ctx = main.make_context("erasekit", list(args))
    cmd: click.Command = main
    while isinstance(cmd, click.Group):
        rest = ctx.protected_args + ctx.args
        if not rest:
            break
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)
    return ctx


def test_readme_has_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("line", readme_commands())
def test_readme_line_parses_and_is_classified(line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = shlex.split(line)[1:]
    for i, a in enumerate(args):  # inputs named by earlier README lines: stand-ins, since click checks they exist
        if "/" in a and not a.startswith("-") and " " not in a:
            if a.startswith("/"):  # an absolute path of the user's (e.g. /models/...): a stand-in under tmp_path
                args[i] = a = str(tmp_path / a.lstrip("/"))
            p = tmp_path / a
            if p.suffix:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.touch()
            else:
                p.mkdir(parents=True, exist_ok=True)
    parse(args)  # a renamed command or option fails here
    longest = max([p for p in list(RUN) + list(PARSE_ONLY) if line.startswith(p)], key=len, default="")
    assert longest, f"README line {line!r} is neither in RUN nor in PARSE_ONLY of tests/test_readme.py"


@pytest.mark.parametrize("line", [ln for ln in readme_commands()
                                  if max([p for p in list(RUN) + list(PARSE_ONLY) if ln.startswith(p)], key=len,
                                         default="") in RUN])
def test_readme_line_runs(line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prefix = max([p for p in RUN if line.startswith(p)], key=len)
    args = shlex.split(line)[1:] + RUN[prefix]
    if prefix == "erasekit report":  # needs a run folder: make a tiny one with the same harness
        from erasekit.evaluation import evaluate
        from erasekit.suite import Suite
        from erasekit.testing import tiny_pipeline

        run_dir = Path(args[1])
        evaluate(Suite(name="t", targets=("Zorbo",), samples={"direct": 2}, steps=2, guidance=3.0, world="toyworld"),
                 [], run_dir, pipe=tiny_pipeline())
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, f"{line!r} failed:\n{res.output}"
