"""Angles (degrees) between L2-normalised caption embeddings of the toy model's text encoder (pooled output, pooled
minus the empty caption's, mean over tokens): how far apart SEAL's SimHash inputs are.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python bench/seal/caption_angles.py
"""

from __future__ import annotations

import numpy as np
import torch

CAPTIONS = ["a red ring in the style of Cora Voss", "a red ring", "a blue ring", "a red square",
            "Zorbo in the style of Cora Voss", "Zorbo", "Mossy in the style of Alva Renn",
            "a green triangle in the style of Alva Renn", "a picture", ""]  # the last: the centring reference


def main() -> None:
    torch.set_num_threads(1)
    from erasekit import load_pipeline
    from erasekit.conditioning import tokenize

    pipe = load_pipeline("toyworld")
    with torch.no_grad():
        out = pipe.text_encoder(tokenize(pipe, CAPTIONS))
    pooled = out.pooler_output.double()
    mean = out[0].double().mean(1)
    print("captions:", CAPTIONS[:-1])
    for name, e in (("pooled", pooled), ("pooled-centered", pooled - pooled[-1:]), ("mean", mean)):
        v = e[:-1] / e[:-1].norm(dim=1, keepdim=True)
        print(name)
        print(np.round(torch.rad2deg(torch.acos((v @ v.T).clamp(-1, 1))).numpy(), 0))


if __name__ == "__main__":
    main()
