#!/bin/bash
# The 10 per-family runs of the independent evaluation grammar (5 family sets x seeds 0, 1) for one model.
# Usage: bench/world2/run_model.sh MODEL OUT   (MODEL: a registered name or a pipeline folder)
# then:  .venv/bin/python bench/world2/summarise.py OUT
set -euo pipefail
model=${1:?model name or folder}
out=${2:?output folder}
export OMP_WAIT_POLICY=PASSIVE
for s in 0 1; do
  for fam in object colour artist character unsafe; do
    [ -e "$out/$fam-seed$s/results.json" ] && continue
    .venv/bin/erasekit eval --suite "bench/world2/$fam-seed$s.yaml" --model "$model" --out "$out/$fam-seed$s"
  done
done
