"""Reliability probes (issue 13): hostile-but-ordinary inputs through the real CLI, counted by outcome.

    python bench/probes.py            # prints the markdown table of BENCHMARKS.md's "Reliability" section

Each probe is a command line (with files it needs made first) and what it must do: "error" (exit 1 or 2 with one
`error:` line naming the problem, no traceback) or "ok". Outcomes counted: clear errors, raw tracebacks (goal 0), silent
wrong results (exit 0 where an error was due, goal 0), data lost (a file that existed before a refused command changed,
goal 0), code executed (a marker file written by a crafted checkpoint, goal 0).
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from click.testing import CliRunner  # noqa: E402

from erasekit.cli import main  # noqa: E402


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def setup(d: Path) -> dict[str, str]:
    """Files the probes use: a good edit, a NaN edit, a pickled checkpoint, broken suites, a stub model folder."""
    import json

    import torch

    from erasekit import erase
    from erasekit.edits import Edit, tensor_sha256
    from erasekit.testing import tiny_pipeline

    pipe = tiny_pipeline(world="toyworld")
    good = erase(pipe, "uce", erase=["Zorbo"])
    good.save(d / "good.safetensors")
    name = next(iter(good.tensors))
    bad = good.tensors[name].clone()
    bad.view(-1)[0] = float("nan")
    Edit({name: bad}, {**good.manifest, "edited_sha256": {name: tensor_sha256(bad)},
                       "base_sha256": {name: good.manifest["base_sha256"][name]}}).save(d / "nan.safetensors")
    (d / "list.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":1}')
    (d / "empty.safetensors").write_bytes(b"")
    suites = {"steps": "samples: {direct: 1}\nsampling: {steps: abc}",
              "guidance": "samples: {direct: 1}\nsampling: {guidance: high}",
              "seed": "samples: {direct: 1}\nsampling: {seed: -1}", "nan": "samples: {direct: 1}\nsampling: {guidance: .nan}",
              "nosamples": "samples: {}", "yaml": "targets: [Zorbo"}
    for k, v in suites.items():
        (d / f"suite-{k}.yaml").write_text(f"name: {k}\nmodel: toyworld\nworld: toyworld\ntargets: [Zorbo]\n"
                                           + v + "\n" if k != "yaml" else "name: x\n" + v + "\n")
    (d / "stub").mkdir()
    (d / "stub" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (d / "pkl").mkdir()
    (d / "pkl" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                             "unet": ["diffusers", "UNet2DConditionModel"]}))
    (d / "pkl" / "unet").mkdir()
    torch.save({"w": torch.ones(1)}, d / "pkl" / "unet" / "diffusion_pytorch_model.bin")
    run = d / "resume"
    run.mkdir()
    with open(run / "diffusion.pt", "wb") as f:
        pickle.dump({"x": Payload(str(d / "PWNED"))}, f)
    (d / "precious.png").write_bytes(b"precious")
    (d / "afile").write_text("x")
    return {"D": str(d)}


PROBES: list[tuple[str, str, list[str]]] = [
    # (kind, expected, argv with {D} for the scratch folder)
    ("bad value", "error", ["generate", "--prompt", "a", "--guidance", "nan", "--out", "{D}/g1.png"]),
    ("bad value", "error", ["generate", "--prompt", "a", "--guidance", "inf", "--out", "{D}/g2.png"]),
    ("bad value", "error", ["generate", "--prompt", "a", "--guidance", "-1", "--out", "{D}/g3.png"]),
    ("bad value", "error", ["generate", "--prompt", "a", "--steps", "100000", "--out", "{D}/g4.png"]),
    ("bad value", "error", ["generate", "--prompt", "a", "--steps", "0", "--out", "{D}/g5.png"]),
    ("bad value", "error", ["generate", "--prompt", "a", "--seed", "-1", "--out", "{D}/g6.png"]),
    ("bad value", "error", ["generate", "--prompt", "a", "-n", "0", "--out", "{D}/g7.png"]),
    ("bad value", "error", ["world", "render", "-n", "0", "--out", "{D}/r1.png"]),
    ("bad value", "error", ["world", "render", "--object", "rnig", "--out", "{D}/r2.png"]),
    ("bad value", "error", ["erase", "--method", "uce", "--erase", "Zorbo", "-o", "lamb=nan", "--out", "{D}/e1.safetensors"]),
    ("bad value", "error", ["erase", "--method", "ucee", "--erase", "Zorbo", "--out", "{D}/e2.safetensors"]),
    ("bad value", "error", ["erase", "--method", "esd", "--erase", "Zorbo", "-o", "lr=inf", "--out", "{D}/e3.safetensors"]),
    ("bad value", "error", ["eval", "--device", "bogus", "--dtype", "bfloat16", "--out", "{D}/ev1"]),
    ("bad value", "error", ["eval", "--device", "cuda:7", "--dtype", "bfloat16", "--out", "{D}/ev2"]),
    ("bad value", "error", ["eval", "--attack", "copycta", "--out", "{D}/ev3"]),
    ("bad value", "error", ["eval", "--shield", "sdl", "--out", "{D}/ev4"]),
    ("bad value", "error", ["bench", "--spec", "erasure-tyo", "--out", "{D}/b1"]),
    ("bad value", "error", ["attack", "--attack", "copycat", "--concept", "Zorbo", "-o", "steps=-3", "--out", "{D}/a1"]),
    ("wrong type", "error", ["eval", "--suite", "{D}/suite-steps.yaml", "--out", "{D}/ev5"]),
    ("wrong type", "error", ["eval", "--suite", "{D}/suite-guidance.yaml", "--out", "{D}/ev6"]),
    ("wrong type", "error", ["eval", "--suite", "{D}/suite-seed.yaml", "--out", "{D}/ev7"]),
    ("wrong type", "error", ["eval", "--suite", "{D}/suite-nan.yaml", "--out", "{D}/ev8"]),
    ("wrong type", "error", ["eval", "--suite", "{D}/suite-yaml.yaml", "--out", "{D}/ev9"]),
    ("silent no-op", "error", ["generate", "--prompt", "a", "--shield", "sld:strong", "--out", "{D}/g8.png"]),
    ("silent no-op", "error", ["eval", "--concepts", ",", "--out", "{D}/ev10"]),
    ("silent no-op", "error", ["bench", "--methods", ",", "--out", "{D}/b2"]),
    ("silent no-op", "error", ["eval", "--suite", "{D}/suite-nosamples.yaml", "--out", "{D}/ev11"]),
    ("silent no-op", "error", ["eval", "--name", "base", "--edit", "{D}/good.safetensors", "--out", "{D}/ev12"]),
    ("bad file", "error", ["generate", "--prompt", "a", "--edit", "{D}/nan.safetensors", "--out", "{D}/g9.png"]),
    ("bad file", "error", ["generate", "--prompt", "a", "--edit", "{D}/list.safetensors", "--out", "{D}/g10.png"]),
    ("bad file", "error", ["generate", "--prompt", "a", "--edit", "{D}/empty.safetensors", "--out", "{D}/g11.png"]),
    ("bad file", "error", ["generate", "--prompt", "a", "--model", "{D}/stub", "--out", "{D}/g12.png"]),
    ("bad file", "error", ["generate", "--prompt", "a", "--model", "{D}/pkl", "--out", "{D}/g13.png"]),
    ("bad file", "error", ["generate", "--prompt", "a", "--model", "{D}/nowhere", "--out", "{D}/g14.png"]),
    ("bad file", "error", ["report", "{D}/stub"]),
    ("path", "error", ["generate", "--prompt", "a", "--out", "{D}/afile/x.png"]),
    ("path", "error", ["erase", "--method", "uce", "--erase", "Zorbo", "--out", "{D}/afile/e.safetensors"]),
    ("path", "error", ["eval", "--out", "{D}/afile"]),
    ("data loss", "error", ["generate", "--prompt", "a", "-n", "1", "--steps", "2", "--out", "{D}/precious.png"]),
    ("data loss", "error", ["world", "render", "--out", "{D}/precious.png"]),
    ("data loss", "error", ["erase", "--method", "uce", "--erase", "Zorbo", "--out", "{D}/good.safetensors"]),
    ("code execution", "error", []),  # loads the crafted checkpoint the way every resume does (below)
    ("ok", "ok", ["world", "render", "--object", "ring", "--colour", "red", "--out", "{D}/ok.png"]),
    ("ok", "ok", ["ls", "benchmarks"]),
]


def main_() -> None:
    runner = CliRunner()
    rows: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        setup(d)
        precious = {p: p.read_bytes() for p in (d / "precious.png", d / "good.safetensors")}
        from erasekit.errors import ErasekitError
        from erasekit.io import load_checkpoint

        for kind, expected, argv in PROBES:
            argv = [a.replace("{D}", str(d)) for a in argv]
            if kind == "code execution":  # resuming a run folder that holds a crafted checkpoint
                try:
                    load_checkpoint(d / "resume" / "diffusion.pt")
                    outcome = "silent"
                except ErasekitError:
                    outcome = "clear"
            else:
                t0 = time.time()
                res = runner.invoke(main, argv)
                text = res.output or ""
                if "Traceback" in text or (res.exception is not None and not isinstance(res.exception, SystemExit)):
                    outcome = "traceback"
                elif expected == "error":
                    outcome = "clear" if res.exit_code in (1, 2) and "error" in text.lower() else "silent"
                else:
                    outcome = "clear" if res.exit_code == 0 else "traceback"
                if time.time() - t0 > 120:
                    print(f"slow probe: {argv}", file=sys.stderr)
            r = rows.setdefault(kind, {"probes": 0, "clear": 0, "traceback": 0, "silent": 0})
            r["probes"] += 1
            r[outcome] += 1
            if outcome != "clear" or os.environ.get("PROBES_VERBOSE"):
                last = res.output.strip().splitlines()[-1] if kind != "code execution" and res.output else ""
                print(f"{outcome}: {' '.join(argv)}\n  {last}",
                      file=sys.stderr)
        lost = sum(p.read_bytes() != b for p, b in precious.items())
        executed = int((d / "PWNED").exists())
    print("| kind | probes | clear errors (or success for `ok`) | raw tracebacks (goal 0) | silent wrong results (goal 0) |")
    print("|---|---|---|---|---|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['probes']} | {r['clear']} | {r['traceback']} | {r['silent']} |")
    total = {k: sum(r[k] for r in rows.values()) for k in ("probes", "clear", "traceback", "silent")}
    print(f"| **all** | {total['probes']} | {total['clear']} | {total['traceback']} | {total['silent']} |")
    print(f"\nData lost (files changed by refused commands, goal 0): {lost}. Code executed by crafted files (goal 0): "
          f"{executed}.")


if __name__ == "__main__":
    main_()
