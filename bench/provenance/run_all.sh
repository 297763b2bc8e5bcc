#!/usr/bin/env bash
# Runs every stage of bench/provenance/run.py in order (nice 10, one thread, each stage <= 10 min; training resumes
# if a stage is cut). Usage: bash bench/provenance/run_all.sh [OUT]   (from the repo root)
set -u
OUT=${1:-runs/provenance}
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
mkdir -p "$OUT"
for stage in make train-a train-a detect train-b train-b detect; do
  echo "== $stage $(date -u +%H:%M:%S)"
  /usr/bin/time -f "stage $stage: %e s wall, %U s user" timeout 590 nice -n 10 .venv/bin/python bench/provenance/run.py \
    "$stage" --out "$OUT" 2>&1 | grep -v -i "warn\|loss_type\|attention_mask\|pad_token"
done
echo "== done $(date -u +%H:%M:%S)"
