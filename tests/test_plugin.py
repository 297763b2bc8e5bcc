"""The core knows no toy world (issue 12): the toy world is a plugin the core reaches only through the worlds and
evaluators registries, and a user's world plugs in the same way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "erasekit"
CORE = ("erasers", "attacks", "shields", "imitation", "evaluation", "metrics", "report")
CORE_FILES = ("sampling.py", "generation.py", "edits.py", "conditioning.py", "evaluators.py", "worlds.py", "suite.py",
              "benchmark.py", "fingerprint.py", "models.py", "io.py", "config.py")


def core_sources() -> list[Path]:
    files = [p for d in CORE for p in (SRC / d).rglob("*.py")]
    return files + [SRC / f for f in CORE_FILES if (SRC / f).exists()]


def test_no_core_module_names_the_toy_world():
    pattern = re.compile(r"(from \.+toyworld[ .]|import erasekit\.toyworld|erasekit\.toyworld\b|CATALOGUE|load_oracle)")
    offenders = []
    for path in core_sources():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if pattern.search(code) and '"erasekit.toyworld.plugin:' not in code:
                offenders.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not offenders, "core code names the toy world:\n" + "\n".join(offenders)


def test_importing_the_core_loads_no_toy_world():
    code = ("import sys, erasekit.erasers, erasekit.attacks, erasekit.shields, erasekit.imitation, erasekit.evaluation, "
            "erasekit.metrics, erasekit.edits, erasekit.report, erasekit.generation, erasekit.sampling, "
            "erasekit.benchmark; print(sorted(m for m in sys.modules if m.startswith('erasekit.toyworld.') "
            "or m == 'erasekit.toyworld'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out


def test_a_user_world_goes_through_the_same_code(tiny_pipe, tmp_path):
    """A world written outside the package: its concepts, prompts and judge drive an evaluation and an attack."""
    from erasekit.evaluation import evaluate
    from erasekit.evaluators import CallableEvaluator
    from erasekit.suite import Suite
    from erasekit.worlds import ConceptInfo, Prompt, World, worlds

    class Shapes(World):
        name = "shapes-test"
        evaluator = ""

        def concept(self, name):
            if name.lower() != "blob":
                from erasekit.errors import UnknownNameError

                raise UnknownNameError("concept", name, ["blob"])
            return ConceptInfo("blob", "blob", keywords=("round thing",))

        def concepts(self):
            return {"blob": ["blob"]}

        def prompts(self, concept, kind, n, seed):
            if kind != "direct":
                return []
            return [Prompt(f"a blob number {seed + i}", {"blob": "blob"}, "blob", "blob", kind) for i in range(n)]

    worlds.add("shapes-test", Shapes)
    try:
        judge = CallableEvaluator(lambda im: im.mean(axis=(1, 2, 3)) > 100, concept="blob")
        suite = Suite(name="t", targets=("blob",), samples={"direct": 2}, steps=2, guidance=3.0, world="shapes-test",
                      evaluator="callable")
        res = evaluate(suite, [], tmp_path, pipe=tiny_pipe, evaluator=judge)
        assert set(res["variants"]["base"]["metrics"]["blob"]) == {"detection"}
        assert res["provenance"]["world"]["name"] == "shapes-test"
        from erasekit.attacks import run_attack

        r = run_attack("copycat", tiny_pipe, "blob", world=Shapes(), evaluator=judge, steps=1, sample_steps=2,
                       skip_broken=False)
        assert r.prompts[0] == "a blob number 0"  # the world's prompts, its keywords, its judge
        assert all("round thing" in p and "blob" not in p for p in r.adv_prompts), r.adv_prompts
    finally:
        worlds._entries.pop("shapes-test", None)
    assert isinstance(np.float64(res["variants"]["base"]["mean"]["detection"]), float)
