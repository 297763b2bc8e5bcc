"""Marks on a composed pipeline: an erasure `Edit` applied and / or an inference-time shield (issue 15, item 5).

A provider that erases a concept (an `Edit` on its weights) or runs a shield (`erasekit.shields`) still marks its
images; an erasure or a shield must not silently strip the mark. What changes for each kind of mark:

- latent methods (Tree-Ring, Gaussian Shading) put the mark in the initial latent and detect it by DDIM inversion
  through a model. The edited model samples the marked latent along another trajectory (a shield changes the
  trajectory too, by its guidance terms and conditioning hooks), and the detector inverts with *some* model: the
  deployed (edited) one, or the base one (a detector that keeps the public base weights). `erasekit mark bench
  --edit` measures both detectors ("edited", "base");
- pixel methods (DWT-DCT, Safe-SD's decoder mark) are written into the finished images: the edit changes the images
  they are written into, the detector needs no model.

`composed_generate` generates through the shield's hooks (prompt `prepare`, per-batch `condition`, image `flag`)
from given initial latents, so a latent mark survives the shielded loop exactly as `mark.generate` does without a
shield (same latents, same loop: bit-exact with a shield that changes nothing, tested). The bench compares every
composed "none"-attack row with a reference measured on the plain base pipeline (same prompts, seeds, keys) and
records a warning when detection (TPR@1%FPR, AUC, or the TPR under the method's own threshold rule, which is what a
deployed detector decides with) drops by more than STRIP_TOLERANCE: the mark is then stripped by the composition, and
the results say so, with the drop in standard errors, instead of hiding it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError

# A composed "none"-attack row whose TPR@1%FPR, AUC or own-rule TPR falls more than this below the plain base
# pipeline's (same prompts, seeds and keys) is flagged as stripped. 0.1 = 1.6 of 16 marked images at TPR, so with
# n >= 16 one image more or less never triggers it alone; whether a flagged drop exceeds sampling noise is STRIP_Z.
STRIP_TOLERANCE = 0.1
STRIP_Z = 2.0  # a flagged drop is called significant when it is at least this many standard errors
DETECTORS = ("edited", "base")  # the models a latent detector can invert with when an edit is applied


@dataclass
class Composition:
    """What the bench generates with beyond the base pipeline: an applied `edit`, a `shield` (erasekit.shields), the
    concept whose prompts make up half the bench's prompts (`focus`: the edit's first erased concept, else the
    shield's first protected one) and the detector models latent methods are measured with."""

    edit: Any = None  # erasekit.edits.Edit
    shield: Any = None  # erasekit.shields.Shield
    info: dict[str, Any] = field(default_factory=dict)
    focus: str | None = None
    detectors: tuple[str, ...] = ("base",)

    @property
    def active(self) -> bool:
        return self.edit is not None or self.shield is not None


def prepare_composition(pipe: Any, edit: Any = None, shield: Any = None, protect: Sequence[str] = (),
                        world: Any = None, detectors: Sequence[str] | None = None,
                        verify_key: str | Path | None = None) -> Composition:
    """Load and check everything before any work: `edit` (an Edit or an edit file; refused if made for other base
    weights), `shield` (a Shield or a spec such as "sld:strong", protecting `protect`), `detectors` (subset of
    DETECTORS; default both with an edit, else "base")."""
    from ..edits import Edit

    info: dict[str, Any] = {"edit": None, "shield": None}
    ed = None
    if edit is not None:
        from ..evaluation.plan import edit_sha256
        from ..io import file_sha256

        if isinstance(edit, Edit):
            ed, path = edit, None
        elif isinstance(edit, (str, Path)):
            ed, path = Edit.load(edit, verify_key=verify_key), Path(edit)
        else:
            raise InvalidValueError(f"edit must be an Edit or an edit file path, got {type(edit).__name__}")
        ed.check_base(pipe)  # one line if the edit was made for other weights
        info["edit"] = {"file": None if path is None else str(path),
                        "file_sha256": None if path is None else file_sha256(path, "edit file"),
                        "sha256": edit_sha256(ed), "method": ed.manifest.get("method"),
                        "erase": list(ed.manifest.get("erase") or []), "tensors": len(ed.names)}
    sh = None
    if shield is not None:
        from ..shields import Shield, get_shield

        if isinstance(shield, Shield):
            sh, spec = shield, None
        else:
            if not isinstance(shield, str) or not shield.strip():
                raise InvalidValueError(f"shield must be a Shield or a spec such as 'sld:strong', got {shield!r}")
            if not protect:
                raise InvalidValueError(f"shield {shield!r} needs the concept(s) it protects (--protect CONCEPT); "
                                        "without them it would protect nothing")
            sh, spec = get_shield(shield, concepts=list(protect), pipe=pipe, world=world), shield
        info["shield"] = {"spec": spec, **sh.identity()}
    if detectors is None:
        detectors = DETECTORS if ed is not None else ("base",)
    detectors = tuple(detectors)
    bad = [d for d in detectors if d not in DETECTORS]
    if not detectors or bad or len(set(detectors)) != len(detectors):
        raise InvalidValueError(f"detectors must be distinct names among {list(DETECTORS)}, got {list(detectors)}")
    if ed is None and "edited" in detectors:
        raise InvalidValueError("detector 'edited' needs an edit (--edit FILE)")
    focus = None
    names = (info["edit"] or {}).get("erase") or [getattr(c, "name", str(c)) for c in getattr(sh, "concepts", ())]
    if names and world is not None and world.knows(names[0]):
        focus = world.concept(names[0]).name
    info["detectors"] = list(detectors)
    info["focus"] = focus
    return Composition(ed, sh, info, focus, detectors)


@contextlib.contextmanager
def weights(pipe: Any, edit: Any, edited: bool) -> Iterator[Any]:
    """`pipe` with `edit` applied while inside (edited=True and an edit given), else as it is (the base weights);
    the edit is reverted bit for bit on exit."""
    if edit is None or not edited:
        yield pipe
        return
    with edit.applied(pipe):
        yield pipe


@torch.no_grad()
def composed_generate(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], shield: Any = None,
                      latents_fn: Callable[[Sequence[int]], torch.Tensor] | None = None,
                      guidance: float | None = None, batch_size: int = 64) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, H, W, 3) uint8 images of `prompts` / `seeds` through `shield` (None: plain generation) from the initial
    latents `latents_fn(seeds)` ((N, C, h, w) unit variance; None: the seeds' noise), and {"refused", "blocked",
    "regenerated"} counts: `erasekit.shields.shielded_generate` with the mark's latents. A filter's regeneration draws
    `regenerated_seed` seeds and their `latents_fn` latents (a regenerated image is marked too); refused prompts and
    blocked images come back black (the mark is then visibly, not silently, gone)."""
    from ..generation import generate
    from ..shields import shielded_generate
    from ._latent import generate_from_latents

    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if shield is None:
        if latents_fn is None:
            return generate(pipe, prompts, seeds, guidance=guidance), {"refused": 0, "blocked": 0, "regenerated": 0}
        return (generate_from_latents(pipe, prompts, seeds, latents_fn(seeds), guidance=guidance),
                {"refused": 0, "blocked": 0, "regenerated": 0})
    images, info = shielded_generate(pipe, prompts, seeds, shield, guidance=guidance, batch_size=batch_size,
                                     latents_fn=latents_fn)
    refused = np.asarray(info["refused"], dtype=bool)
    return images, {"refused": int(refused.sum()), "blocked": int(np.sum(info["blocked"])),
                    "regenerated": int(np.asarray(info["attempts"])[~refused].sum() - (~refused).sum())}


def auc_se(a: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC `a` from n_pos marked and n_neg clean scores (Hanley & McNeil, Radiology 1982)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return float(np.sqrt(max(a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a), 0.0)
                         / (n_pos * n_neg)))


STRIP_METRICS = ("tpr@1%fpr", "auc", "tpr_rule")  # what a composition must not lose (calibrated and own-rule)


def _z(metric: str, ref: float, val: float, n: int) -> float | None:
    """The drop ref - val in standard errors: AUCs by Hanley-McNeil, the own-rule TPR (a fixed threshold) by the
    pooled two-proportion test (n marked images on each side, taken as independent); None where the error is 0 (both
    at 0 or 1) and for TPR@FPR, whose threshold is itself estimated from the n clean scores (no simple error)."""
    if metric.startswith("tpr@"):
        return None
    if metric == "auc":
        se = float(np.hypot(auc_se(ref, n, n), auc_se(val, n, n)))
    else:
        p = (ref + val) / 2
        se = float(np.sqrt(p * (1 - p) * 2 / n))
    return round((ref - val) / se, 2) if se > 0 else None


def strip_warnings(rows: Sequence[dict[str, Any]], reference: dict[str, dict[str, Any]], what: str,
                   tolerance: float = STRIP_TOLERANCE) -> list[str]:
    """Mark each "none"-attack row (`stripped`: True / False, in place) where a STRIP_METRICS value (TPR@1%FPR, AUC,
    or the TPR under the method's own no-calibration rule) falls more than `tolerance` below its method's reference
    (plain base pipeline), with `strip_z` {metric: drop in standard errors} (see `_z`); one warning line per stripped
    row, saying whether a drop is significant (z >= STRIP_Z) or within this n's sampling noise. `what` names the
    composition ("the uce edit + shield sld")."""
    out = []
    for r in rows:
        ref = reference.get(r["method"])
        if ref is None or r["attack"] not in ("none", "identity", ""):
            continue
        drops = {k: ref[k] - r[k] for k in STRIP_METRICS if ref.get(k) is not None and r.get(k) is not None}
        lost = {k: d for k, d in drops.items() if d > tolerance}
        r["stripped"] = bool(lost)
        z = {k: _z(k, ref[k], r[k], r["n"]) for k in drops} if r.get("n") else {}
        r["strip_z"] = z or None
        if lost:
            det = r.get("detector_model")
            by = f" (detected with the {det} model)" if det else ""
            parts = [f"{k} {ref[k]} -> {r[k]}" + (f" ({z[k]:.1f} standard errors)" if z.get(k) is not None else "")
                     for k in lost]
            sig = any(z.get(k) is not None and z[k] >= STRIP_Z for k in lost)
            out.append(f"{r['method']}{by}: {what} strips the mark: " + ", ".join(parts) +
                       f" vs the plain base pipeline (same prompts, seeds, keys; tolerance {tolerance}, n={r.get('n')}"
                       "): " + ("significant" if sig else "within sampling noise at this n, rerun with more images"))
    return out


def describe(info: dict[str, Any]) -> str:
    """Short name of a composition for messages: "the uce edit (erase Zorbo) + shield sld:strong"."""
    parts = []
    if info.get("edit"):
        e = info["edit"]
        parts.append(f"the {e['method']} edit" + (f" (erase {', '.join(e['erase'])})" if e["erase"] else ""))
    if info.get("shield"):
        s = info["shield"]
        parts.append(f"shield {s.get('spec') or s.get('name')}")
    return " + ".join(parts) or "nothing"


__all__ = ["DETECTORS", "STRIP_METRICS", "STRIP_TOLERANCE", "STRIP_Z", "Composition", "auc_se", "composed_generate", "describe",
           "prepare_composition", "strip_warnings", "weights"]
