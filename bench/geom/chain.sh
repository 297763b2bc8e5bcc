#!/bin/bash
# The session-7 sequence of bench/geom/run.py runs (one at a time, each <= 12 min; edits resume from --out/ckpt).
set -u
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
R=runs/geom18
run() { local log=$1; shift; timeout 720 /usr/bin/time -v .venv/bin/python bench/geom/run.py --out $R "$@" > $R/$log 2>&1; }
run r5_geom300.log --parts edit:geom,persist:geom+neg,persist:geom
run r6_control300.log --parts edit:control,persist:control
run r7_gen.log --parts gen:geom+neg,gen:geom,gen:control --guidances 5
# after the cost probes: the paper's sampling (the data's own marked share, no over-sampling)
# run r8_share.log --parts edit:geomshare,persist:geomshare+neg,gen:geomshare+neg,gen:geomshare --guidances 5 --concept-share -1
