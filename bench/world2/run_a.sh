#!/bin/bash
# Chain A: (after the character seed-0 run) unsafe and object at seed 0, then object/colour/artist at seed 1.
cd /work/main
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
while kill -0 10833 2>/dev/null; do sleep 10; done
for run in unsafe-seed0 object-seed0 object-seed1 colour-seed1 artist-seed1; do
  out=runs/world2/$run
  [ -e $out ] && continue
  .venv/bin/erasekit eval --suite bench/world2/$run.yaml --out $out > runs/world2/$run.log 2>&1
done
