"""Stage 2 of an evaluation: generate what the cache does not hold yet.

Each unit's images go to `<out>/cache/<key>.npz` (atomic write), each attack unit's result to
`<out>/cache/attack-<key>/` (images first, result.json last: result.json marks it done). A corrupt or truncated cache
file is discarded with a warning and regenerated. Under a multi-process launch (`accelerate launch`, torchrun) each
process takes every world-th unit; rank 0 later reads them all.
"""

from __future__ import annotations

import copy
import io
import os
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write_bytes
from .plan import AttackUnit, Plan, PreparedVariant, attack_dir, cache_path, protected_concept

Progress = Callable[..., None]


def load_images(path: Path) -> np.ndarray | None:
    """Cached (N, H, W, 3) uint8 images, or None when absent; a corrupt file is deleted (with a warning)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            images = z["images"]
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"unexpected array {images.dtype} {images.shape}")
        return images
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"discarding corrupt cache file {path} ({e}); it will be regenerated", stacklevel=2)
        path.unlink(missing_ok=True)
        return None


def save_images(path: Path, images: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images)
    atomic_write_bytes(path, buf.getvalue())


def reuse_images(run_dir: str | Path, out: str | Path) -> int:
    """Make the plain units' cached images of a finished run (`run_dir/cache/*.npz`) available to a run in `out`
    (hard links, else copies; files `out` already has are kept). Cache files are named by their content key, so only
    units with identical model, sampling, edits, prompts and seeds are ever reused. Returns how many were added."""
    import shutil

    from ..errors import InvalidValueError

    src = Path(run_dir) / "cache"
    if not src.is_dir():
        raise InvalidValueError(f"{str(run_dir)!r} holds no cache/ folder; give the folder of a finished evaluation")
    dst = Path(out) / "cache"
    dst.mkdir(parents=True, exist_ok=True)
    added = 0
    for f in sorted(src.glob("*.npz")):
        target = dst / f.name
        if target.exists():
            continue
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
        added += 1
    return added


def attack_done(directory: Path) -> bool:
    """True if the attack unit's result.json and images are complete (a corrupt one is discarded)."""
    import json

    result = directory / "result.json"
    if not result.exists():
        return False
    try:
        json.loads(result.read_text())
        ok = load_images(directory / "images.npz") is not None
    except (OSError, ValueError) as e:
        warnings.warn(f"discarding corrupt attack result {result} ({e}); it will be rerun", stacklevel=2)
        ok = False
    if not ok:
        result.unlink(missing_ok=True)
    return ok


def shard() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) of a multi-process launch, or (0, 1, no-op)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, lambda: None
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes, state.wait_for_everyone


def generate_missing(plan: Plan, pipe: Any, out: Path, progress: Progress | None = None) -> dict[str, float]:
    """Generate every uncached unit and attack unit of this process's shard; returns {variant: seconds spent}."""
    from ..generation import generate

    (out / "cache").mkdir(parents=True, exist_ok=True)
    rank, world_size, barrier = shard()
    mine = [u for k, u in enumerate(plan.units) if k % world_size == rank]
    mine_attacks = [a for k, a in enumerate(plan.attack_units) if k % world_size == rank]
    seconds = {v.name: 0.0 for v in plan.variants}
    base_copy = None  # the unedited model, for attacks that compare against it (copied on first need)
    for pv in plan.variants:
        todo = [u for u in mine if u.variant == pv.name and load_images(cache_path(out, u)) is None]
        attacks = [a for a in mine_attacks if a.variant == pv.name and not attack_done(attack_dir(out, a))]
        if progress:
            done = sum(len(u.prompts) for u in mine if u.variant == pv.name) - sum(len(u.prompts) for u in todo)
            if done:
                progress(done, info=f"{pv.name} (cached)")
        if not todo and not attacks:
            continue
        if attacks and base_copy is None and _needs_base(pv):
            base_copy = copy.deepcopy(pipe)
        t0 = time.time()
        shields: dict[str, Any] = {}
        with _applied(pv, pipe):
            for u in todo:
                shield = _shield_for(plan, pv, u.target, pipe, shields)
                texts, seeds = [p.text for p in u.prompts], list(u.seeds)
                if shield is not None:
                    from ..shields import shielded_generate

                    images, _ = shielded_generate(pipe, texts, seeds, shields=shield, steps=plan.steps,
                                                  guidance=plan.guidance)
                else:
                    images = generate(pipe, texts, seeds, steps=plan.steps, guidance=plan.guidance)
                save_images(cache_path(out, u), images)
                if progress:
                    progress(len(texts), info=f"{pv.name} {u.target} {u.set}")
            for a in attacks:
                run_attack_unit(plan, pv, a, pipe, base_copy, _shield_for(plan, pv, a.target, pipe, shields),
                                attack_dir(out, a))
                if progress:
                    progress(0, info=f"{pv.name} {a.target} attack {pv.attack['spec']}")
        seconds[pv.name] += time.time() - t0
    barrier()
    return seconds


def _needs_base(pv: PreparedVariant) -> bool:
    from ..attacks import get_attack

    return bool(pv.attack) and get_attack(pv.attack["name"]).needs_base


class _applied:
    """Apply a variant's edits on entry, revert them (bit-exactly, in reverse order) on exit."""

    def __init__(self, pv: PreparedVariant, pipe: Any):
        self.pv, self.pipe = pv, pipe
        self.done: list = []

    def __enter__(self) -> None:
        try:
            for e in self.pv.edits:
                e.apply(self.pipe)
                self.done.append(e)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> None:
        for e in reversed(self.done):
            e.revert(self.pipe)


def _shield_for(plan: Plan, pv: PreparedVariant, target: str, pipe: Any, built: dict[str, Any]) -> Any:
    """The variant's shield protecting `target` (built once per target: detectors calibrate when built)."""
    if pv.shield is None:
        return None
    if target not in built:
        from ..shields import get_shield

        built[target] = get_shield(pv.shield["spec"], concepts=[protected_concept(plan.world, target)], pipe=pipe,
                                   world=plan.world)
    return built[target]


def run_attack_unit(plan: Plan, pv: PreparedVariant, unit: AttackUnit, pipe: Any, base_pipe: Any, shield: Any,
                    directory: Path) -> None:
    """Attack `pipe` (edits applied; `shield` protecting the target) on the unit's prompts with the evaluator as the
    success check; write the attacked images, then result.json."""
    from ..attacks import run_attack

    options = {"seed": plan.suite.seed, "sample_steps": plan.steps, "guidance": plan.guidance} | pv.attack["options"]
    res = run_attack(pv.attack["name"], pipe, unit.target, base_pipe=base_pipe, evaluator=plan.evaluator,
                     world=plan.world, prompts=list(unit.prompts), shield=shield, **options)
    save_images(directory / "images.npz", res.generate(pipe, shield=shield))
    res.save(directory)


__all__ = ["attack_done", "generate_missing", "load_images", "run_attack_unit", "save_images", "shard"]
