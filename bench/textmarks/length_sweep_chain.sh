#!/bin/bash
# The empty-prompt length sweep of /work/notes/bench_text21.md as chained runs of <= 11.5 min each (the shared box
# rule); each run resumes where the last stopped (negatives cached, finished methods kept). From the repo root:
#   bash bench/textmarks/length_sweep_chain.sh
set -u
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
for i in 1 2 3 4 5 6; do
  echo "== run $i $(date -u +%H:%M:%S)"
  /usr/bin/time -f "run $i: %e s wall, %U s user, %S s sys" timeout 690 .venv/bin/python bench/textmarks/length_sweep.py \
    --prompts bos --method greenlist --method majority_bits --method exp_edit --n-pos 32 --n-neg 64 \
    --lengths 150,300,600,1000 --edit-lengths 150 --resume --out runs/bench/length_sweep_bos.json 2>&1 \
    | grep --line-buffered -v "attention_mask\|ignore this"
  if grep -q '"exp_edit"' runs/bench/length_sweep_bos.json 2>/dev/null; then echo "== all methods done"; break; fi
done
