"""Why RECE wrecks specificity on the toy model: how much each edit moves the cross-attention *values* of unrelated
prompts (no generation needed; seconds).

    python bench/rece_probe.py

For every to_v matrix: ||(W_edit - W) E(p)|| / ||W E(p)|| over all 77 rows of unrelated prompts p (median over the
16 matrices), and the cosine between RECE's closed-form adversarial embedding and the concept's own rows.
"""

from __future__ import annotations

import torch

from erasekit import erase, load_pipeline
from erasekit.erasers._closed_form import encode
from erasekit.worlds import get_world

UNRELATED = ["a red circle", "a blue square in the style of Cora Voss", "Mossy", "a green ring"]
VARIANTS = [("uce", {}), ("rece", {"epochs": 0}), ("rece", {}), ("rece", {"regular_scale": 0.1}),
            ("rece", {"preserve_scale": 1.0})]


def main(concept: str = "Zorbo") -> None:
    torch.manual_seed(0)
    pipe = load_pipeline("toyworld")
    req = get_world("toyworld").concept(concept).request()
    unrelated = encode(pipe, UNRELATED).hidden.float()  # (n, 77, d)
    rows = encode(pipe, [concept]).hidden.float()[0]
    sv = torch.linalg.svdvals(rows)
    print(f"{concept}: E(concept) is 77 x {rows.shape[-1]}, numerical rank {int((sv > 0.01 * sv[0]).sum())}")
    print("| method | options | unrelated V change (median rel.) | adversarial cosine |\n|---|---|---|---|")
    for method, opts in VARIANTS:
        edit = erase(pipe, method, erase=req["erase"], preserve=req["preserve"], guide=req["guide"], **opts)
        rel = []
        for name, w in edit.tensors.items():
            if name.endswith("to_v.weight"):
                w0 = pipe.unet.get_parameter(name.removeprefix("unet.")).detach().float()
                rel.append(float((unrelated @ (w.float() - w0).T).norm() / (unrelated @ w0.T).norm()))
        epochs = edit.manifest["info"].get("epochs") or [{}]
        cos = epochs[-1].get("adv_cosine", ["-"])[0]
        print(f"| {method} | {opts or 'defaults'} | {sorted(rel)[len(rel) // 2]:.3f} | {cos} |")


if __name__ == "__main__":
    main()
