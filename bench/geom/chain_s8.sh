#!/bin/bash
# Session-8 binding probes (issue 18): each trains one 300-step edit on runs/geom18/data.npz and measures the binding.
# Records: runs/geom-s8/bind.jsonl; logs: runs/geom-s8/<tag>.log (with /usr/bin/time -v).
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
P=".venv/bin/python bench/geom/bind_probe.py --out runs/geom-s8"
run() { tag=$1; shift; /usr/bin/time -v $P --tag "$tag" "$@" > runs/geom-s8/$tag.log 2>&1; }
/usr/bin/time -v .venv/bin/python bench/geom/neg_strength.py --edit runs/geom18/geom.safetensors > runs/geom-s8/default_recheck.log 2>&1
run before --set token_position=before
run before_kv --set token_position=before --set kv_lr=1e-3
run before_box --set token_position=before --set box_loss_weight=2
run before_te --set token_position=before --set text_encoder_lr=7.5e-5
run after_kv --set kv_lr=1e-3
