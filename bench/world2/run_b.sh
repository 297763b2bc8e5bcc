#!/bin/bash
# Second chain (parallel to run_all.sh on a contended machine): artist and colour at seed 0, then characters at seed 1.
cd /work/main
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
for run in artist-seed0 colour-seed0 character-seed1 unsafe-seed1; do
  fam=${run%-seed*}; out=runs/world2/$run
  [ -e $out ] && continue
  .venv/bin/erasekit eval --suite bench/world2/$run.yaml --out $out > runs/world2/$run.log 2>&1
done
