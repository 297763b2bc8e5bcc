#!/usr/bin/env bash
# Marks composed with an erasure edit and a shield on the toy model (issue 15, item 5); notes: bench_markcompose.md.
# Usage: bench/markcompose/run.sh plain|edit|sld|sld2|edit_tr32   (each run <= 8 min on one free core)
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
OUT=runs/markcompose
EDIT=$OUT/zorbo-uce.safetensors
[ -f "$EDIT" ] || .venv/bin/erasekit erase --method uce --erase Zorbo --out "$EDIT"
# the detector of notes/bench_marks15.md (captioned inversion at guidance 2 after 50 decoder-inversion steps), at
# generation guidance 2, where it detects Gaussian Shading (the papers' empty-prompt detector is at chance here)
DET="decoder_steps=50,inversion_prompt=caption,inversion_guidance=2"
COMMON=(-n 16 --keys 4 --guidance 2 --method "tree_ring:$DET" --method "gaussian_shading:$DET,statistic=correlation"
        --method dwtdct --grid-images 8)
# edit / sld: attack "none" only (the question is whether the composition alone strips the mark; each run also
# measures its own no-edit / no-shield reference, and the edit run inverts twice: edited and base detector)
case "${1:-}" in
  plain) .venv/bin/erasekit mark bench "${COMMON[@]}" --attack none --attack jpeg:quality=50 --out $OUT/plain ;;
  edit)  .venv/bin/erasekit mark bench "${COMMON[@]}" --attack none --edit "$EDIT" --out $OUT/edit ;;
  sld)   .venv/bin/erasekit mark bench "${COMMON[@]}" --attack none --shield sld:strong --protect Zorbo --out $OUT/sld ;;
  sld2)  .venv/bin/erasekit mark bench "${COMMON[@]}" --attack none --shield sld:strong --protect Zorbo --out $OUT/sld2 ;;
  # Tree-Ring alone at n = 32 with the base detector: is the edit run's Tree-Ring drop (1.2-1.6 standard errors at
  # n = 16) real?
  edit_tr32) .venv/bin/erasekit mark bench -n 32 --keys 4 --guidance 2 --method "tree_ring:$DET" --attack none \
               --edit "$EDIT" --detector base --grid-images 8 --out $OUT/edit_tr32 ;;
  *) echo "usage: $0 plain|edit|sld|sld2|edit_tr32" >&2; exit 2 ;;
esac
.venv/bin/erasekit report "$OUT/${1}"
