"""A second judge on the same images: --images-from reuses a run's content-keyed images, `agree` compares labels."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from erasekit.cli import main
from erasekit.errors import InvalidValueError
from erasekit.evaluation import evaluate
from erasekit.evaluation.agreement import agreement
from erasekit.evaluation.generate import reuse_images
from erasekit.evaluators import parse_evaluator_spec
from erasekit.suite import Suite


def test_second_judge_reuses_the_images_and_agreement_is_per_family(toy_pipe_shared, tmp_path, monkeypatch):
    suite = Suite(name="agree", targets=("red", "Zorbo"), samples=dict(direct=2), steps=2, world="toyworld")
    a = evaluate(suite, [], tmp_path / "a", pipe=toy_pipe_shared)
    assert reuse_images(tmp_path / "a", tmp_path / "b") == 2 and reuse_images(tmp_path / "a", tmp_path / "b") == 0

    import erasekit.generation as generation

    def no_generation(*args, **kwargs):
        raise AssertionError("the images should have come from the first run")

    monkeypatch.setattr(generation, "generate", no_generation)
    b = evaluate(suite, [], tmp_path / "b", pipe=toy_pipe_shared, evaluator="toyworld-judge2")
    assert b["provenance"]["evaluator"]["name"] == "toyworld-judge2" != a["provenance"]["evaluator"]["name"]
    table = agreement(tmp_path / "a", tmp_path / "b")
    assert set(table) == {"direct/colour", "direct/character"} and all(r["n"] == 2 for r in table.values())
    rows_a = [json.loads(x) for x in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (tmp_path / "b" / "samples.jsonl").read_text().splitlines()]
    same = np.mean([ra["labels"]["colour"] == rb["labels"]["colour"] for ra, rb in zip(rows_a, rows_b)
                    if ra["family"] == "colour"])
    assert table["direct/colour"]["agree_label"] == pytest.approx(same)
    res = CliRunner().invoke(main, ["agree", str(tmp_path / "a"), str(tmp_path / "b")])
    assert res.exit_code == 0 and "direct/colour" in res.output, res.output
    monkeypatch.undo()
    evaluate(Suite(name="other", targets=("blue",), samples=dict(direct=1), steps=2, world="toyworld"), [],
             tmp_path / "c", pipe=toy_pipe_shared)
    with pytest.raises(InvalidValueError, match="share no image"):
        agreement(tmp_path / "a", tmp_path / "c")


def test_evaluator_specs_parse_and_refuse_bad_options():
    assert parse_evaluator_spec("toyworld-oracle-v2:abstain=true") == ("toyworld-oracle-v2", {"abstain": True})
    assert parse_evaluator_spec("nudenet:threshold=0.75") == ("nudenet", {"threshold": 0.75})
    assert parse_evaluator_spec("toyworld-judge2") == ("toyworld-judge2", {})
    with pytest.raises(InvalidValueError, match="key=value"):
        parse_evaluator_spec("toyworld-judge2:abstain")
    res = CliRunner().invoke(main, ["eval", "--suite", "default", "--evaluator", "toyworld-judg2", "--limit", "1"])
    assert res.exit_code != 0 and "toyworld-judge2" in res.output  # close match named
