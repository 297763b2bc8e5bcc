"""Data-parallel evaluation: the runner under `accelerate launch` with 2 CPU processes gives the same results as
one process, each process generating a disjoint share of the prompt sets."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("_scaleout_script.py")


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate is not installed")
def test_two_process_launch_matches_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    two = subprocess.run([accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    ref = json.loads(one.stdout.strip().splitlines()[-1])
    got = json.loads(two.stdout.strip().splitlines()[-1])
    assert got == ref
    cached = sorted(p.name for p in (tmp_path / "two" / "cache").iterdir())
    assert cached == sorted(p.name for p in (tmp_path / "one" / "cache").iterdir())
    assert json.loads((tmp_path / "two" / "results.json").read_text())["variants"]["base"]["metrics"] == ref
