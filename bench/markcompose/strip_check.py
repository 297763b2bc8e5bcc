"""Recompute the strip check (compose.strip_warnings, with the AUC standard errors) from a finished mark bench
folder's results.json: `.venv/bin/python bench/markcompose/strip_check.py runs/markcompose/edit`."""

import json
import sys

from erasekit.marks.compose import describe, strip_warnings

res = json.load(open(f"{sys.argv[1]}/results.json"))
comp = res["compose"]
rows = [r for r in res["rows"] if r["method"] in comp["reference"]]
for w in strip_warnings(rows, comp["reference"], describe(comp)):
    print("WARNING:", w)
for r in rows:
    if r["attack"] == "none":
        print(r["method"].split(":")[0], r.get("detector_model"), "AUC", comp["reference"][r["method"]]["auc"], "->",
              r["auc"], "stripped", r.get("stripped"), "z", r.get("strip_z"))
