#!/bin/bash
# Runs the per-family independent-grammar evaluations of the base toy model (oracle labels), seed 0 then seed 1.
cd /work/main
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
for seed in 0 1; do
  for fam in character unsafe object colour artist; do
    out=runs/world2/$fam-seed$seed
    [ -e $out ] && continue
    .venv/bin/erasekit eval --suite bench/world2/$fam-seed$seed.yaml --out $out > runs/world2/$fam-seed$seed.log 2>&1
  done
done
