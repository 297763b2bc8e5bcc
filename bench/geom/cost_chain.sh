#!/bin/bash
# Peak memory (RSS) and one-off cost of each issue-18 method, one process per method (bench/geom/cost_probe.py).
set -u
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
R=runs/geom18
for m in base mempruning sae geom base_v1; do
  model=toyworld-v2; [ $m = mempruning ] && model=/work/runs/train-v2g; [ $m = sae ] || [ $m = base_v1 ] && model=toyworld
  timeout 600 /usr/bin/time -v .venv/bin/python bench/geom/cost_probe.py --method ${m%_v1} --model $model > $R/cost_$m.log 2>&1
done
