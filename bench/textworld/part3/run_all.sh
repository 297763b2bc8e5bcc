#!/usr/bin/env bash
# Issue 20, part 3: the multi-seed MUSE table (+ scalability/sustainability per method), the multi-seed attack table
# (npo_gdr: relearning curve, in-context, step-by-step) and the RESTOR budget curves. One run at a time, each under
# 10 minutes (timeout 600), threads 1, nice 10 (the session-6 CPU rule). Run from the repo root:
#     bash bench/textworld/part3/run_all.sh            # ~60 min in all on a free core (estimate, not measured)
# then: .venv/bin/python bench/textworld/part3/merge.py runs/tw3/muse runs/tw3/muse-*/
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
EK=".venv/bin/erasekit"
SIX="--seeds 0,1,2 --scalability 1,2,4 --sustainability --threads 1"
run() { local name=$1; shift; echo "== $name $(date -u +%T)"; /usr/bin/time -v nice -n 10 timeout 600 "$@" \
          > "runs/tw3/$name.log" 2> "runs/tw3/$name.time" || { echo "FAILED $name"; tail -3 "runs/tw3/$name.log"; }
        grep -E "Elapsed|User time" "runs/tw3/$name.time"; }
mkdir -p runs/tw3
run muse-ga      $EK text bench --method ga:lr=5e-5 $SIX --out runs/tw3/muse-ga --overwrite
run muse-ga_gdr  $EK text bench --method ga_gdr:lr=2e-4 $SIX --out runs/tw3/muse-ga_gdr --overwrite
run muse-ga_klr  $EK text bench --method ga_klr:lr=2e-4 $SIX --out runs/tw3/muse-ga_klr --overwrite
run muse-npo     $EK text bench --method npo:lr=5e-5 $SIX --out runs/tw3/muse-npo --overwrite
run muse-npo_gdr $EK text bench --method npo_gdr:lr=2e-4 $SIX --relearn 0,5,10,20 --attack in-context \
                     --out runs/tw3/muse-npo_gdr --overwrite
run muse-npo_klr $EK text bench --method npo_klr:lr=2e-4 $SIX --out runs/tw3/muse-npo_klr --overwrite
run muse-tv      $EK text bench --method task_vector:lr=5e-4,alpha=3.0 $SIX --out runs/tw3/muse-tv --overwrite
run muse-whp     $EK text bench --method whp:lr=5e-4,alpha=20.0 $SIX --out runs/tw3/muse-whp --overwrite
run restor-a .venv/bin/python bench/textworld/part2/restor_bench.py bench/textworld/part3/restor_budgets_a.json \
    ga:lr=5e-5 ga_gdr:lr=2e-4 ga_klr:lr=2e-4 npo:lr=5e-5 --budgets=0,10,30,60 --report=runs/tw3/restor-a
run restor-b .venv/bin/python bench/textworld/part2/restor_bench.py bench/textworld/part3/restor_budgets_b.json \
    npo_gdr:lr=2e-4 npo_klr:lr=2e-4 task_vector:lr=5e-4,alpha=3.0 whp:lr=5e-4,alpha=20.0 --budgets=0,10,30,60 \
    --report=runs/tw3/restor-b
ALL="ga:lr=5e-5 ga_gdr:lr=2e-4 ga_klr:lr=2e-4 npo:lr=5e-5 npo_gdr:lr=2e-4 npo_klr:lr=2e-4 task_vector:lr=5e-4,alpha=3.0 whp:lr=5e-4,alpha=20.0"
for s in 1 2; do  # RESTOR with other entities / wrong answers / batch order (seed 0 = bench/textworld/part2/restor.json)
  run restor-seed$s .venv/bin/python bench/textworld/part2/restor_bench.py bench/textworld/part3/restor_seed$s.json \
      $ALL --seed=$s
done
run restor-inject .venv/bin/python bench/textworld/part2/restor_bench.py bench/textworld/part3/restor_inject.json \
    npo_gdr:lr=2e-4 whp:lr=5e-4,alpha=20.0 --inject=10,20,40,80
.venv/bin/python bench/textworld/part3/merge.py runs/tw3/muse runs/tw3/muse-*/ | tee runs/tw3/merge.md
