"""Property-based tests (issue 13): thousands of generated inputs to the option parsers, the suite schema, the spec
grammars and the edit-file loader. The only allowed outcomes are success or an ErasekitError (one clear line) — no
other exception type, no hang."""

from __future__ import annotations

import json
import struct

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erasekit.errors import ErasekitError

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                      max_size=3), max_leaves=6)


def allowed(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except ErasekitError as e:
        assert str(e).strip() and "\n" not in str(e).strip().splitlines()[0]


@FAST
@given(steps=scalars, guidance=scalars)
def test_sampling_checks(steps, guidance):
    from erasekit.sampling import check_sampling

    allowed(check_sampling, steps, guidance)


@FAST
@given(method=st.sampled_from(["uce", "rece", "mace", "realera", "esd", "fewshot", "spm", "advunlearn", "leace"]),
       pairs=st.lists(st.tuples(st.sampled_from(["lamb", "steps", "lr", "erase_scale", "token", "check_every",
                                                 "templates", "bogus", "max_stop_frac"]),
                                st.text(max_size=10)), max_size=3))
def test_eraser_option_parsing(method, pairs):
    from erasekit.erasers import get_eraser, parse_options

    def go():
        opts = parse_options(method, [f"{k}={v}" for k, v in pairs])
        get_eraser(method).make_config(opts)

    allowed(go)


@FAST
@given(spec=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_:=,.;+0123456789-", max_size=30))
def test_shield_and_attack_specs(spec):
    from erasekit.attacks import parse_spec as attack_spec
    from erasekit.shields import parse_spec as shield_spec

    allowed(shield_spec, spec)
    allowed(attack_spec, spec)


@FAST
@given(raw=st.dictionaries(st.sampled_from(["name", "world", "model", "evaluator", "sampling", "samples", "targets",
                                            "neighbours", "attack_prompts", "alignment", "extra"]),
                           values, max_size=6))
def test_suite_schema(tmp_path_factory, raw):
    from erasekit.suite import load_suite

    raw.setdefault("world", "toyworld")
    p = tmp_path_factory.mktemp("s") / "s.yaml"
    try:
        p.write_text(yaml.safe_dump(raw))
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    allowed(load_suite, str(p))


@FAST
@given(header=st.one_of(values, st.binary(max_size=40)), tail=st.binary(max_size=64))
def test_edit_loader(tmp_path_factory, header, tail):
    from erasekit.edits import Edit

    blob = header if isinstance(header, bytes) else json.dumps(
        {"__metadata__": {"erasekit_manifest": json.dumps(header)}}, default=str).encode()
    p = tmp_path_factory.mktemp("e") / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(blob)) + blob + tail)
    allowed(Edit.load, p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(num=st.integers(-3, 3), seed=st.integers(-3, 3),
       obj=st.sampled_from(["ring", "rnig", "none", ""]), artist=st.sampled_from(["none", "Alva Renn", "alva"]))
def test_cli_world_render(tmp_path_factory, num, seed, obj, artist):
    from erasekit.cli import main

    out = tmp_path_factory.mktemp("r") / "r.png"
    res = CliRunner().invoke(main, ["world", "render", "--object", obj, "--artist", artist, "-n", str(num),
                                    "--seed", str(seed), "--out", str(out)])
    assert res.exit_code in (0, 1, 2), res.output
    assert "Traceback" not in res.output
    if res.exit_code != 0:
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)


def test_hypothesis_is_a_dev_dependency():
    import tomllib
    from pathlib import Path

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert any(d.startswith("hypothesis") for d in deps["project"]["optional-dependencies"]["dev"])
    pytest.importorskip("hypothesis")
