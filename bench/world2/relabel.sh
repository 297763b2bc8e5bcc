#!/bin/bash
# Judge the images of finished per-family runs (bench/world2/run_model.sh) again with another evaluator, without
# regenerating (content-keyed reuse), then compare the judges with `erasekit agree`.
# Usage: bench/world2/relabel.sh RUNS_DIR EVALUATOR OUT [MODEL]   e.g. relabel.sh runs/world2 toyworld-oracle-v2:abstain=true runs/w2-ov2
# MODEL: the model the runs were made with when it is not the suites' own (run_model.sh's MODEL argument).
set -euo pipefail
runs=${1:?runs folder}; judge=${2:?evaluator spec}; out=${3:?output folder}; model=${4:-}
export OMP_WAIT_POLICY=PASSIVE
for s in 0 1; do
  for fam in object colour artist character unsafe; do
    [ -e "$runs/$fam-seed$s/results.json" ] || continue
    [ -e "$out/$fam-seed$s/results.json" ] && continue
    .venv/bin/erasekit eval --suite "bench/world2/$fam-seed$s.yaml" --evaluator "$judge" ${model:+--model "$model"} \
      --images-from "$runs/$fam-seed$s" --out "$out/$fam-seed$s" > /dev/null
    .venv/bin/erasekit agree "$runs/$fam-seed$s" "$out/$fam-seed$s" --json "$out/$fam-seed$s.agree.json"
  done
done
