#!/bin/bash
# Session 8: persistence cells for the one setting whose tokens showed binding (`all` of bind_probe / chain_s8b.sh)
# and its no-token control (same options, geometric_tokens=false). Results merge into runs/geom-s8/results.json.
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
ln -sf ../geom18/data.npz runs/geom-s8/data.npz   # the same 1,024 pairs as session 7 (run.py reads --out/data.npz)
/usr/bin/time -v .venv/bin/python bench/geom/run.py --out runs/geom-s8 \
    --parts edit:control_all,persist:all+neg,persist:all,persist:control_all \
    --set token_position=before --set kv_lr=1e-3 --set box_loss_weight=4 --set text_encoder_lr=7.5e-5 \
    --set tagged_dropout=0 > runs/geom-s8/persist_all.log 2>&1
