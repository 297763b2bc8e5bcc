"""Print the metrics of erasekit eval run folders (results.json) as markdown rows."""
import json, sys
keys = ["detection", "detection_heldout", "detection_keyword", "detection_indirect", "accuracy_neighbours",
        "accuracy_unrelated", "image_drift"]
print("| run | variant | " + " | ".join(keys) + " | edit_seconds |")
for d in sys.argv[1:]:
    r = json.load(open(f"{d}/results.json"))
    for name, v in r["variants"].items():
        m = v["mean"]
        cells = [f"{m[k]:.3f}" if k in m and m[k] is not None else "" for k in keys]
        es = v["cost"].get("edit_seconds", "")
        print(f"| {d.split('/')[-1]} | {name} | " + " | ".join(cells) + f" | {es} |")
