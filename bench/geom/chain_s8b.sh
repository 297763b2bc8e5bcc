#!/bin/bash
# Session-8 binding probes, second chain (run beside chain_s8.sh): see chain_s8.sh.
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
P=".venv/bin/python bench/geom/bind_probe.py --out runs/geom-s8"
run() { tag=$1; shift; /usr/bin/time -v $P --tag "$tag" "$@" > runs/geom-s8/$tag.log 2>&1; }
run before --set token_position=before   # reuses before.safetensors: the signed measures only
run all --set token_position=before --set kv_lr=1e-3 --set box_loss_weight=4 --set text_encoder_lr=7.5e-5 \
    --set tagged_dropout=0
run share_paper --set concept_share=-1 --set tagged_dropout=0
