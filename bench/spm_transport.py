"""SPM facilitated transport vs plain merged weights on the toy world (one character): does transport keep the other
characters that the merged SPM weights hurt, while still erasing the concept?

    python bench/spm_transport.py            # ~2-3 min on 2 cores; prints a markdown table

SPM with its toy defaults + the concept's 8 training-caption templates, 150 steps (no early stop). Detection of the
concept on 8 direct and 8 keyword prompts; oracle accuracy on 2 direct prompts of each other character; 10 DDIM steps,
the model's guidance. Rows: base, SPM applied as merged weights, SPM through `Transport` (per-prompt gamma).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: no spinning OpenMP threads

import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

CONCEPT = "Zorbo"


def main() -> None:
    from erasekit import erase, generate, load_pipeline
    from erasekit.worlds import get_world
    from erasekit.erasers.spm import Transport
    from erasekit.sampling import sampling_defaults
    from erasekit.toyworld import CATALOGUE, load_oracle, prompts_for

    torch.manual_seed(0)
    pipe, oracle = load_pipeline("toyworld"), load_oracle()
    g = sampling_defaults(pipe).guidance
    req = get_world("toyworld").concept(CONCEPT).request()
    t = time.perf_counter()
    edit = erase(pipe, "spm", erase=req["erase"], preserve=req["preserve"], guide=req["guide"],
                 templates=get_world("toyworld").templates(CONCEPT, 8))
    train_s = time.perf_counter() - t
    direct = [p.text for p in prompts_for("character", CONCEPT, "direct", 8, 0)]
    keyword = [p.text for p in prompts_for("character", CONCEPT, "keyword", 8, 2)]
    others = [p for c in CATALOGUE.characters if c.name != CONCEPT
              for p in prompts_for("character", c.name, "direct", 2, 10)]

    def rates(gen) -> tuple[float, float, float]:
        d = np.mean([p["character"] == CONCEPT for p in oracle.predict(gen(direct, 1000))])
        k = np.mean([p["character"] == CONCEPT for p in oracle.predict(gen(keyword, 1500))])
        o = np.mean([p["character"] == q.labels["character"]
                     for p, q in zip(oracle.predict(gen([q.text for q in others], 2000)), others)])
        return float(d), float(k), float(o)

    def plain(ps, s):
        return generate(pipe, ps, s, steps=10, guidance=g)

    rows = [("base", rates(plain))]
    with edit.applied(pipe):
        rows.append(("SPM merged weights", rates(plain)))
    tr = Transport(pipe, edit)
    rows.append(("SPM + transport", rates(lambda ps, s: tr.generate(ps, s, steps=10, guidance=g))))
    gam_o = tr.gammas([q.text for q in others])[:, 0]
    gam_k = tr.gammas(keyword)[:, 0]
    print(f"SPM training {train_s:.0f} s; transport gamma: other characters {gam_o.min():.2f}-{gam_o.max():.2f}, "
          f"keyword prompts {gam_k.min():.2f}-{gam_k.max():.2f}\n")
    print(f"| model | {CONCEPT} direct detection | keyword detection | other characters accuracy |\n|---|---|---|---|")
    for name, (d, k, o) in rows:
        print(f"| {name} | {d:.2f} | {k:.2f} | {o:.2f} |")


if __name__ == "__main__":
    main()
