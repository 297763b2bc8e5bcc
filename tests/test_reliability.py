"""Reliability (issue 13): no code execution from files, no silent wrong results, no lost work, one clear line for
every bad input (traceback only behind --debug)."""

from __future__ import annotations

import json
import os
import pickle
import stat

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from erasekit import erase
from erasekit.cli import main
from erasekit.edits import Edit
from erasekit.errors import ErasekitError, IntegrityError, InvalidValueError
from erasekit.io import RunLock, atomic_write_text, check_writable, load_checkpoint


class _Payload:
    """A pickle that runs code when loaded (writes a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "diffusion.pt"
    with open(ckpt, "wb") as f:
        pickle.dump({"step": 1, "x": _Payload(str(marker))}, f)
    with pytest.raises(ErasekitError, match="refusing checkpoint"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    torch.save({"step": 3, "w": torch.ones(2), "log": {"losses": [0.5]}}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3  # plain checkpoints still load


def test_a_crafted_fine_tuning_checkpoint_is_refused_on_resume(tiny_pipe, tmp_path):
    from erasekit.erasers._training import TrainHooks

    marker = tmp_path / "pwned"
    edit_kw = dict(steps=2, checkpoint_every=1)
    erase(tiny_pipe, "esd", ["Zorbo"], hooks=TrainHooks(checkpoint_dir=tmp_path), **edit_kw)
    ckpts = list(tmp_path.glob("*.pt"))
    assert ckpts, "the run should have left a checkpoint"
    for c in ckpts:
        with open(c, "wb") as f:
            pickle.dump({"x": _Payload(str(marker))}, f)
    with pytest.raises(ErasekitError, match="refusing checkpoint"):
        erase(tiny_pipe, "esd", ["Zorbo"], hooks=TrainHooks(checkpoint_dir=tmp_path), **edit_kw)
    assert not marker.exists()


def test_non_finite_edits_are_refused_at_creation_and_load(tiny_pipe, tmp_path):
    edit = erase(tiny_pipe, "uce", erase=["Zorbo"])
    name = next(iter(edit.tensors))
    bad = {name: edit.tensors[name].clone()}
    bad[name].view(-1)[0] = float("nan")
    with pytest.raises(IntegrityError, match="non-finite"):
        Edit.from_tensors(tiny_pipe, bad, method="x")
    # a file crafted with NaN (hashes made consistent, as a forger would)
    from erasekit.edits import tensor_sha256

    forged = Edit(bad, {**edit.manifest, "edited_sha256": {name: tensor_sha256(bad[name])},
                        "base_sha256": {name: edit.manifest["base_sha256"][name]}})
    path = forged.save(tmp_path / "nan.safetensors")
    with pytest.raises(IntegrityError, match="non-finite"):
        Edit.load(path)


def test_signed_edits_verify_and_tampering_is_caught(tiny_pipe, tmp_path):
    key, other = tmp_path / "key.bin", tmp_path / "other.bin"
    key.write_bytes(os.urandom(32)), other.write_bytes(os.urandom(32))
    edit = erase(tiny_pipe, "uce", erase=["Zorbo"])
    signed = edit.save(tmp_path / "s.safetensors", sign_key=key)
    unsigned = edit.save(tmp_path / "u.safetensors")
    assert sorted(Edit.load(signed, verify_key=key).names) == sorted(edit.names)
    with pytest.raises(IntegrityError, match="not signed"):
        Edit.load(unsigned, verify_key=key)
    with pytest.raises(IntegrityError, match="does not match"):
        Edit.load(signed, verify_key=other)
    short = tmp_path / "short.bin"
    short.write_bytes(b"x")
    with pytest.raises(InvalidValueError, match="at least 16"):
        edit.save(tmp_path / "x.safetensors", sign_key=short)


def test_edit_revert_is_bit_exact_and_half_applied_edits_are_undone(tiny_pipe):
    edit = erase(tiny_pipe, "uce", erase=["Zorbo"])
    before = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    with edit.applied(tiny_pipe):
        pass
    assert all(torch.equal(p, before[n]) for n, p in tiny_pipe.unet.named_parameters())


def test_outputs_are_never_overwritten_without_overwrite_and_get_the_umask(tmp_path):
    target = tmp_path / "grid.png"
    target.write_bytes(b"precious")
    with pytest.raises(ErasekitError, match="--overwrite"):
        check_writable(target)
    assert check_writable(target, overwrite=True) == target
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ErasekitError, match="is a file"):
        check_writable(tmp_path / "afile" / "out.png")
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_is_refused_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ErasekitError, match="cannot write"):
        check_writable(ro / "x.png")


def test_run_folder_lock_refuses_a_second_writer_and_takes_over_stale_ones(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ErasekitError, match="in use"):
            with RunLock(tmp_path):
                pass
    assert not (tmp_path / RunLock.NAME).exists()
    import socket

    (tmp_path / RunLock.NAME).write_text(f"999999999 {socket.gethostname()}")  # a process that does not exist
    with pytest.warns(UserWarning, match="stale"):
        with RunLock(tmp_path):
            pass


@pytest.mark.parametrize("args, needle", [
    (["generate", "--prompt", "a", "--guidance", "nan"], "guidance"),
    (["generate", "--prompt", "a", "--guidance", "inf"], "guidance"),
    (["generate", "--prompt", "a", "--steps", "100000"], "steps"),
    (["generate", "--prompt", "a", "--steps", "0"], "steps"),
    (["generate", "--prompt", "a", "--seed", "-1"], "seed"),
    (["generate", "--prompt", "a", "--shield", "sld:strong"], "--protect"),
    (["world", "render", "-n", "0"], "num"),
    (["erase", "--method", "uce", "--erase", "Zorbo", "-o", "lamb=nan", "--out", "OUT/new.safetensors"], "finite"),
    (["eval", "--concepts", ",", "--out", "OUT/ev"], "names no concept"),
    (["bench", "--methods", ",", "--out", "OUT/b"], "names no eraser"),
    (["eval", "--suite", "SUITE", "--out", "OUT/ev"], "sampling.steps"),
    (["eval", "--device", "bogus", "--dtype", "bfloat16", "--out", "OUT/ev"], "device"),
    (["eval", "--name", "base", "--edit", "EDIT", "--out", "OUT/ev"], "reserved"),
])
def test_bad_cli_input_gets_one_line(tmp_path, tiny_pipe, args, needle):
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: x\nworld: toyworld\ntargets: [Zorbo]\nsamples: {direct: 1}\nsampling: {steps: abc}\n")
    edit = erase(tiny_pipe, "uce", erase=["Zorbo"]).save(tmp_path / "e.safetensors")
    args = [a.replace("OUT", str(tmp_path)).replace("SUITE", str(suite)).replace("EDIT", str(edit)) for a in args]
    res = CliRunner().invoke(main, args)
    assert res.exit_code in (1, 2), res.output
    assert "Traceback" not in res.output
    assert needle in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_debug_shows_the_traceback(tmp_path):
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: [x\n")
    plain = CliRunner().invoke(main, ["eval", "--suite", str(suite), "--out", str(tmp_path / "o")])
    assert plain.exit_code == 2 and "not valid YAML" in plain.output and "Traceback" not in plain.output
    debug = CliRunner().invoke(main, ["--debug", "eval", "--suite", str(suite), "--out", str(tmp_path / "o")])
    assert debug.exit_code != 0 and isinstance(debug.exception, InvalidValueError)


def test_generate_refuses_to_overwrite_before_loading_anything(tmp_path):
    out = tmp_path / "g.png"
    out.write_bytes(b"precious")
    res = CliRunner().invoke(main, ["generate", "--prompt", "a red circle", "-n", "1", "--steps", "2", "--out",
                                    str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output and out.read_bytes() == b"precious"


def test_strict_json_refuses_nan(tmp_path):
    from erasekit.evaluation.results import write_results

    with pytest.raises(InvalidValueError, match="non-finite"):
        write_results(tmp_path, {"variants": {"a": {"mean": {"detection": float("nan")}}}}, [])
    assert not (tmp_path / "results.json").exists()
    write_results(tmp_path, {"variants": {"a": {"mean": {"detection": 0.5}}}}, [{"x": 1}])
    assert json.loads((tmp_path / "results.json").read_text())["variants"]["a"]["mean"]["detection"] == 0.5
    assert np.isfinite(0.5)


@pytest.mark.parametrize("args, needle", [
    (["--scale", "-1"], "--scale must be a finite number > 0"),
    (["--scale", "nan"], "got nan"),
    (["--vae-steps", "-5"], "--vae-steps must be >= 0, got -5"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--init-from", "/no/such/run"], "--init-from '/no/such/run' is not a finished toy-world folder"),
])
def test_world_train_refuses_bad_numbers_before_any_work(tmp_path, args, needle):
    res = CliRunner().invoke(main, ["world", "train", "--out", str(tmp_path / "t"), *args])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (tmp_path / "t").exists()  # nothing was written


def test_world_train_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    res = CliRunner().invoke(main, ["world", "train", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not a previous training run" in res.output and "'notes.txt'" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
