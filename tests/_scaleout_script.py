"""Run by test_scaleout.py under `accelerate launch --cpu --num_processes 2`: a tiny evaluation, sharded."""

import json
import sys

from erasekit.evaluation import evaluate
from erasekit.suite import Suite
from erasekit.testing import tiny_pipeline

suite = Suite(name="tiny", targets=("Zorbo", "nudity"), samples=dict(direct=3, heldout=2, keyword=2, indirect=2,
                                                                     neighbours=1, unrelated=3),
              steps=2, guidance=3.0, neighbours=1, world="toyworld")
res = evaluate(suite, [], sys.argv[1], pipe=tiny_pipeline())
if res:  # rank 0 only
    print(json.dumps(res["variants"]["base"]["metrics"], sort_keys=True))
