"""Shared set-up of the FreezeAsGuard measurements (toy model `toyworld`): the published model is the toy model with
Zorbo (illegal) and Mossy (legal) both erased by UCE, so relearning either is a real adaptation."""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

OUT = Path(os.environ.get("FREEZE_OUT", "runs/freeze"))  # FREEZE_OUT=runs/freeze8: another run folder
EDIT = OUT / "uce-zorbo-mossy.safetensors"
ILLEGAL, LEGAL = "Zorbo", "Mossy"


def published_pipe():
    """The toy model with the UCE edit (Zorbo + Mossy) applied; the edit is made once and saved."""
    import erasekit
    from erasekit.edits import Edit

    pipe = erasekit.load_pipeline("toyworld")
    if EDIT.exists():
        edit = Edit.load(EDIT)
    else:
        t = time.perf_counter()
        edit = erasekit.erase(pipe, "uce", erase=[ILLEGAL, LEGAL])
        OUT.mkdir(parents=True, exist_ok=True)
        edit.save(EDIT)
        print(f"uce edit {time.perf_counter() - t:.1f}s -> {EDIT}")
    edit.apply(pipe)
    return pipe


def cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
