#!/usr/bin/env bash
# Issue 19 six-way scalability sweep: one request erasing the first k of the toy world's 18 artists (k = SIZES and N),
# UCE and MACE (closed forms), 1 direct + 1 unrelated image per concept at 10 sampling steps
# (bench/measure19/scalability-suite.yaml). Run from the repo root:
#   N=12 SIZES=1,4 bench/measure19/scalability.sh runs/m19/scal        # what bench_measure19.md reports
#   N=18 SIZES=1,4,16 bench/measure19/scalability.sh runs/m19/scal18   # the whole artist family (not run: CPU)
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
ALL="Alva Renn,Boris Kell,Cora Voss,Dmitri Hale,Esme Quist,Felix Orme,Greta Lund,Hugo Brandt,Ines Moro,Jonas Pike,Kai Tamsin,Lena Stroud,Milo Varga,Nadia Frey,Oskar Wende,Pia Lorne,Quin Harrow,Rhea Solis"
N=${N:-18}
CONCEPTS=$(echo "$ALL" | cut -d, -f1-"$N")
/usr/bin/time -v .venv/bin/erasekit sixway --method uce --method mace --concepts "$CONCEPTS" \
  --suite bench/measure19/scalability-suite.yaml --sizes "${SIZES:-1,4,16}" --skip verbatim,privacy,sustainability \
  --limit 1 --out "${1:-runs/m19/scal}" "${@:2}"
