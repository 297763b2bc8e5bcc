"""Reversible weight edits: the changed tensors of a model plus a JSON manifest, in one `.safetensors` file.

    edit = erasekit.erase(pipe, "uce", erase=["Cora Voss"])   # -> Edit (the pipeline is not modified)
    edit.apply(pipe)      # checks the sha256 of every base tensor it replaces, keeps the originals
    edit.revert(pipe)     # restores them bit for bit
    edit.save("edits/cora.safetensors"); Edit.load("edits/cora.safetensors")
    compose([e1, e2])     # one edit equal to applying e1 then e2 (e2 must have been made on top of e1)

Low-rank edits. A tensor may instead be held as factors, `LowRank(up (out, r), down (r, in[, kh, kw]), scale)`:
W_edit = W_base + scale * up @ down (SPM's one-dimensional adapters, LoRA-style deltas). The file stores only the
factors ("<name>::up", "<name>::down"), so its size is r (out + in) numbers instead of out x in; `apply` adds the
delta (in float32, cast to the parameter's dtype) and `revert` restores the original bit for bit, as for dense
tensors. `edit.to_dense(pipe)` turns the factors into full tensors.

Tensors are keyed by "<pipeline component>.<parameter name>", e.g.
"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight". A tensor hash is the sha256 of
"<dtype>|<shape>|" followed by the tensor's raw bytes (C order), so dtype and shape changes are refused too.
Non-finite values (NaN/inf) are refused when an edit is made and when a file is loaded.

Integrity vs authenticity: the sha256s protect against accidents (a corrupt download, an edit applied to the wrong
weights), not against a forger, who can rewrite the tensors and their hashes together. For that, sign the manifest
with a key you keep: `edit.save(path, sign_key="key.bin")` adds an HMAC-SHA256 of the manifest (which lists every
tensor's sha256) and `Edit.load(path, verify_key="key.bin")` refuses unsigned or mismatching files
(`erasekit erase --sign-key FILE`, `--verify-key FILE` on the commands that load edits).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import hmac
import json
import math
import struct
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ErasekitError, IntegrityError, InvalidValueError
from .io import atomic_write_bytes

FORMAT = "erasekit.edit/1"
METADATA_KEY = "erasekit_manifest"
SIGNATURE_KEY = "hmac_sha256"


def _read_key(path: str | Path) -> bytes:
    """The secret bytes of a key file (at least 16)."""
    try:
        key = Path(path).read_bytes()
    except OSError as e:
        raise ErasekitError(f"cannot read key file {str(path)!r}: {e.strerror or e}") from None
    if len(key) < 16:
        raise InvalidValueError(f"key file {str(path)!r} holds {len(key)} bytes; use at least 16 random bytes "
                                "(e.g. head -c 32 /dev/urandom > key.bin)")
    return key


def _signature(manifest: dict, key: bytes) -> str:
    return hmac.new(key, json.dumps(manifest, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and raw bytes (hex)."""
    t = t.detach()
    h = hashlib.sha256(f"{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
    if t.numel():
        flat = t.to("cpu").contiguous().reshape(-1)
        h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.hexdigest()


def _hash_all(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """tensor_sha256 of each tensor, hashed in parallel threads (hashlib releases the GIL on large buffers)."""
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(len(tensors), torch.get_num_threads()))
    if workers == 1:
        return {n: tensor_sha256(t) for n, t in tensors.items()}
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(tensors, pool.map(tensor_sha256, tensors.values()), strict=True))


def _check_finite(name: str, t: torch.Tensor, where: str) -> None:
    """Refuse NaN/inf values: an edit that holds them would silently produce black images."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise IntegrityError(f"{where}: tensor {name!r} holds {bad} non-finite value(s) (NaN/inf); refusing it")


def resolve_parameter(target: Any, name: str) -> torch.nn.Parameter:
    """The parameter `name` ("<component>.<parameter path>") of a pipeline-like object (or a module itself)."""
    comp, _, pname = name.partition(".")
    module = getattr(target, comp, None)
    if isinstance(module, torch.nn.Module):
        try:
            return module.get_parameter(pname)
        except AttributeError:
            pass
    if isinstance(target, torch.nn.Module):
        try:
            return target.get_parameter(name)
        except AttributeError:
            pass
    raise IntegrityError(f"the model has no parameter {name!r}; this edit was made for a different architecture")


def _model_id(pipe: Any) -> str:
    cfg = getattr(pipe, "config", None)
    name = getattr(cfg, "_name_or_path", None) if cfg is not None else None
    return str(name or type(pipe).__name__)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)


FACTOR_PARTS = ("up", "down")


@dataclass(frozen=True)
class LowRank:
    """A low-rank delta `scale * up @ down` of one weight: up (out, r), down (r, in) or (r, in, kh, kw) for convs."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.up.dim() != 2 or self.down.dim() < 2 or self.up.shape[1] != self.down.shape[0]:
            raise InvalidValueError(f"low-rank factors need up (out, r) and down (r, in, ...); got up "
                                    f"{tuple(self.up.shape)} and down {tuple(self.down.shape)}")
        if not math.isfinite(float(self.scale)):
            raise InvalidValueError(f"low-rank scale must be finite, got {self.scale!r}")

    @property
    def rank(self) -> int:
        return int(self.up.shape[1])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the weight this delta is added to."""
        return (int(self.up.shape[0]), *self.down.shape[1:])

    def delta(self) -> torch.Tensor:
        """scale * up @ down in float32, in the weight's shape."""
        return (self.up.float() @ self.down.float().flatten(1)).reshape(self.shape) * float(self.scale)

    def added_to(self, weight: torch.Tensor) -> torch.Tensor:
        """(weight + delta) computed in float32 on weight's device, in weight's dtype."""
        return (weight.detach().float() + self.delta().to(weight.device)).to(weight.dtype)

    def num_parameters(self) -> int:
        return self.up.numel() + self.down.numel()

    def num_bytes(self) -> int:
        return self.up.numel() * self.up.element_size() + self.down.numel() * self.down.element_size()


@dataclass
class Edit:
    """Changed tensors {name: new value} and a manifest (method, config, concepts, version, base/edited sha256).

    Build one with `erasekit.erase(...)` or `Edit.from_tensors(pipe, tensors, ...)`; never construct a manifest by hand.
    `factors` holds the low-rank tensors ({name: LowRank}); `tensors` the dense ones.
    """

    tensors: dict[str, torch.Tensor]
    manifest: dict[str, Any]
    factors: dict[str, LowRank] = field(default_factory=dict)
    # per application: (pipeline, original tensors, sha256 of what was written)
    _applied: list[tuple[weakref.ref, dict[str, torch.Tensor], dict[str, str]]] = field(
        default_factory=list, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_tensors(cls, pipe: Any, tensors: dict[str, torch.Tensor], method: str,
                     config: dict[str, Any] | None = None,
                     erase: Sequence[str] = (), preserve: Sequence[str] = (), guide: Sequence[str] | None = None,
                     extra: dict[str, Any] | None = None) -> Edit:
        """An edit replacing each `tensors[name]` of `pipe`; the base hashes are taken from `pipe`'s current weights.
        A value may be a `LowRank` (kept as factors; the edited weight is the base plus its delta)."""
        from . import __version__

        if not tensors:
            raise InvalidValueError("an edit needs at least one changed tensor; got none")
        clean: dict[str, torch.Tensor] = {}
        factors: dict[str, LowRank] = {}
        params = {}
        for name, new in tensors.items():
            param = resolve_parameter(pipe, name)
            if tuple(new.shape) != tuple(param.shape):
                raise InvalidValueError(f"edited tensor {name!r} has shape {tuple(new.shape)}, the model's has "
                                        f"{tuple(param.shape)}")
            if isinstance(new, LowRank):
                f = LowRank(new.up.detach().to("cpu", torch.float32).contiguous(),
                            new.down.detach().to("cpu", torch.float32).contiguous(), float(new.scale))
                _check_finite(f"{name}::up", f.up, f"the {method} edit")
                _check_finite(f"{name}::down", f.down, f"the {method} edit")
                factors[name] = f
            else:
                clean[name] = new.detach().to("cpu", param.dtype).contiguous()
                _check_finite(name, clean[name], f"the {method} edit")
            params[name] = param
        base = _hash_all(params)
        edited = _hash_all({**clean, **{n: f.added_to(params[n].detach().cpu()) for n, f in factors.items()}})
        for n in factors:  # a delta that overflows the parameter's dtype
            _check_finite(n, factors[n].added_to(params[n].detach().cpu()), f"the {method} edit")
        manifest = {
            "format": FORMAT,
            "erasekit_version": __version__,
            "method": method,
            "config": _json_safe(config or {}),
            "erase": list(erase),
            "preserve": list(preserve),
            "guide": None if guide is None else list(guide),
            "base_model": _model_id(pipe),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "base_sha256": base,
            "edited_sha256": edited,
        }
        if factors:
            manifest["factors"] = {n: {"rank": f.rank, "scale": f.scale, "shape": list(f.shape)}
                                   for n, f in factors.items()}
            manifest["factor_sha256"] = {f"{n}::{part}": tensor_sha256(getattr(f, part))
                                         for n, f in factors.items() for part in FACTOR_PARTS}
        if extra:
            manifest.update(_json_safe(extra))
        return cls(clean, manifest, factors)

    # ------------------------------------------------------------------------------------------ info
    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def names(self) -> list[str]:
        """Every tensor this edit changes (dense and low-rank)."""
        return list(self.tensors) + list(self.factors)

    def num_bytes(self) -> int:
        """Bytes of what the edit stores (for low-rank tensors: their factors)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values()) + \
            sum(f.num_bytes() for f in self.factors.values())

    def num_parameters(self) -> int:
        """Model parameters the edit changes (every element of each tensor it writes, dense or low-rank); what it
        stores is `num_bytes()`."""
        return sum(t.numel() for t in self.tensors.values()) + sum(math.prod(f.shape) for f in self.factors.values())

    def __repr__(self) -> str:
        low = f", {len(self.factors)} low-rank" if self.factors else ""
        return (f"Edit(method={self.method!r}, erase={self.manifest.get('erase')}, tensors={len(self.tensors)}{low}, "
                f"{self.num_bytes() / 2**20:.2f} MiB)")

    def edited_value(self, name: str, base: torch.Tensor) -> torch.Tensor:
        """The value this edit writes for tensor `name` over `base` (its current value in the model)."""
        if name in self.factors:
            return self.factors[name].added_to(base)
        return self.tensors[name].to(base.device)

    def to_dense(self, pipe: Any) -> Edit:
        """The same edit with every low-rank tensor expanded over `pipe`'s base weights (checked first)."""
        if not self.factors:
            return self
        self.check_base(pipe)
        dense = dict(self.tensors)
        for name, f in self.factors.items():
            dense[name] = f.added_to(resolve_parameter(pipe, name).detach().cpu())
        manifest = {k: v for k, v in self.manifest.items() if k not in ("factors", "factor_sha256", SIGNATURE_KEY)}
        manifest["edited_sha256"] = {**manifest["edited_sha256"], **_hash_all({n: dense[n] for n in self.factors})}
        return Edit(dense, manifest)

    # ------------------------------------------------------------------------------------------ checks
    def mismatches(self, pipe: Any) -> list[str]:
        """Names of the tensors whose current value in `pipe` is not the base this edit was made on."""
        bad, params = [], {}
        for name in self.names:
            try:
                params[name] = resolve_parameter(pipe, name)
            except IntegrityError:
                bad.append(name)
        hashes = _hash_all(params)
        bad += [n for n in params if hashes[n] != self.manifest["base_sha256"][n]]
        return bad

    def check_base(self, pipe: Any) -> None:
        """Raise IntegrityError unless every tensor this edit replaces has its recorded base value in `pipe`."""
        bad = self.mismatches(pipe)
        if not bad:
            return
        applied = [n for n in bad if self._is_current(pipe, n)]
        if len(applied) == len(self.names):
            raise IntegrityError(f"this {self.method} edit is already applied to the model; revert it first")
        shown = ", ".join(repr(n) for n in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise IntegrityError(
            f"refusing to apply this {self.method} edit (made on {self.manifest.get('base_model')!r}, erase="
            f"{self.manifest.get('erase')}): {len(bad)} of its {len(self.names)} base tensors differ from the "
            f"model's "
            f"({shown}). The edit was made for other weights: load the model it was made on, apply the edits it was "
            "made on top of first, or compose them")

    def _is_current(self, pipe: Any, name: str, written: dict[str, str] | None = None) -> bool:
        """Is `name` in `pipe` exactly what this edit wrote (`written`: hashes of one application) or records?"""
        try:
            param = resolve_parameter(pipe, name)
        except IntegrityError:
            return False
        want = (written or {}).get(name, self.manifest["edited_sha256"][name])
        # byte comparison (not torch.equal, which is never true for NaN): "is this exactly the edited tensor?"
        return tuple(param.shape) == tuple(self.factors[name].shape if name in self.factors else
                                           self.tensors[name].shape) and \
            tensor_sha256(param.detach().cpu()) == want

    # ------------------------------------------------------------------------------------------ apply / revert
    @torch.no_grad()
    def apply(self, pipe: Any) -> Any:
        """Write the edited tensors into `pipe` in place (after checking the base hashes); returns `pipe`."""
        self.check_base(pipe)
        originals: dict[str, torch.Tensor] = {}
        written: dict[str, str] = {}
        try:
            for name in self.names:
                param = resolve_parameter(pipe, name)
                originals[name] = param.detach().clone()
                param.copy_(self.edited_value(name, originals[name]))
                if name in self.factors:  # a delta added on another device may round differently: remember it
                    written[name] = tensor_sha256(param.detach().cpu())
        except BaseException:
            for name, old in originals.items():  # a half-applied edit is undone before the error propagates
                resolve_parameter(pipe, name).copy_(old)
            raise
        self._applied.append((weakref.ref(pipe), originals, written))
        return pipe

    @torch.no_grad()
    def revert(self, pipe: Any) -> Any:
        """Restore the tensors this edit replaced in `pipe`, bit-exact; refuses if they changed since `apply`."""
        for i in range(len(self._applied) - 1, -1, -1):
            ref, originals, written = self._applied[i]
            if ref() is pipe:
                break
        else:
            raise ErasekitError(f"this {self.method} edit is not applied to this model (nothing to revert)")
        changed = [n for n in self.names if not self._is_current(pipe, n, written)]
        if changed:
            raise IntegrityError(f"cannot revert: {len(changed)} edited tensors changed since this edit was applied "
                                 f"(e.g. {changed[0]!r}); revert the edits applied after it first")
        for name, old in originals.items():
            resolve_parameter(pipe, name).copy_(old)
        del self._applied[i]
        return pipe

    @contextlib.contextmanager
    def applied(self, pipe: Any) -> Iterator[Any]:
        """`with edit.applied(pipe): ...` applies the edit and reverts it on exit."""
        self.apply(pipe)
        try:
            yield pipe
        finally:
            self.revert(pipe)

    # ------------------------------------------------------------------------------------------ files
    def save(self, path: str | Path, sign_key: str | Path | None = None) -> Path:
        """Write one .safetensors file (manifest JSON in its metadata), atomically; with `sign_key` (a file of
        secret bytes) the manifest carries an HMAC-SHA256 signature."""
        from safetensors.torch import save

        manifest = {k: v for k, v in self.manifest.items() if k not in (SIGNATURE_KEY, "factors", "factor_sha256")}
        stored = {n: t.contiguous() for n, t in self.tensors.items()}
        for n, f in self.factors.items():
            stored[f"{n}::up"], stored[f"{n}::down"] = f.up.contiguous(), f.down.contiguous()
        if self.factors:  # the factors' shapes, scales and hashes are part of the (signed) manifest
            manifest["factors"] = {n: {"rank": f.rank, "scale": f.scale, "shape": list(f.shape)}
                                   for n, f in self.factors.items()}
            manifest["factor_sha256"] = {n: tensor_sha256(t) for n, t in stored.items() if "::" in n}
        if sign_key is not None:
            manifest[SIGNATURE_KEY] = _signature(manifest, _read_key(sign_key))
        data = save(stored, metadata={METADATA_KEY: json.dumps(manifest, sort_keys=True)})
        return atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: str | Path, pipe: Any = None, verify_key: str | Path | None = None) -> Edit:
        """Read an edit file; verifies its tensors against the manifest, the manifest's HMAC signature with
        `verify_key` if given (unsigned files are then refused), and the base tensors of `pipe` if given."""
        from safetensors.torch import load

        path = Path(path)
        if not path.is_file():
            raise ErasekitError(f"no edit file at {str(path)!r}")
        data = path.read_bytes()
        try:
            (n,) = struct.unpack("<Q", data[:8])
            header = json.loads(data[8:8 + n])
            manifest = json.loads(header["__metadata__"][METADATA_KEY])
            tensors = load(data)
        except Exception as e:  # noqa: BLE001 - any parse failure means "not an edit file"
            raise IntegrityError(f"{str(path)!r} is not an erasekit edit file ({type(e).__name__}: {e})") from None
        if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), dict)
                                                     for k in ("base_sha256", "edited_sha256")):
            raise IntegrityError(f"{str(path)!r}: the edit manifest is not a JSON object with base_sha256 and "
                                 f"edited_sha256 mappings (got {type(manifest).__name__}); not an erasekit edit file")
        if manifest.get("format") != FORMAT:
            raise IntegrityError(f"{str(path)!r} has edit format {manifest.get('format')!r}; this erasekit reads "
                                 f"{FORMAT!r}")
        meta = manifest.get("factors") or {}
        fhash = manifest.get("factor_sha256") or {}
        if not isinstance(meta, dict) or not isinstance(fhash, dict):
            raise IntegrityError(f"{str(path)!r}: the manifest's factors are not JSON objects; not an erasekit edit "
                                 "file")
        dense = {n: t for n, t in tensors.items() if "::" not in n}
        parts = {n: t for n, t in tensors.items() if "::" in n}
        names = set(dense) | set(meta)
        if not names == set(manifest.get("base_sha256", {})) == set(manifest.get("edited_sha256", {})) or \
                set(parts) != {f"{n}::{p}" for n in meta for p in FACTOR_PARTS} or set(fhash) != set(parts):
            raise IntegrityError(f"{str(path)!r}: the manifest does not list exactly the tensors stored in the file")
        for name, t in dense.items():
            if tensor_sha256(t) != manifest["edited_sha256"][name]:
                raise IntegrityError(f"{str(path)!r}: tensor {name!r} does not match its recorded sha256 "
                                     "(corrupt file)")
            _check_finite(name, t, str(path))
        for name, t in parts.items():
            if tensor_sha256(t) != fhash[name]:
                raise IntegrityError(f"{str(path)!r}: low-rank factor {name!r} does not match its recorded sha256 "
                                     "(corrupt file)")
            _check_finite(name, t, str(path))
        factors = {}
        for n, m in meta.items():
            try:
                factors[n] = LowRank(parts[f"{n}::up"], parts[f"{n}::down"], float(m["scale"]))
            except (InvalidValueError, KeyError, TypeError, ValueError) as e:
                raise IntegrityError(f"{str(path)!r}: low-rank tensor {n!r} is malformed ({e})") from None
        if verify_key is not None:
            sig = manifest.get(SIGNATURE_KEY)
            unsigned = {k: v for k, v in manifest.items() if k != SIGNATURE_KEY}
            if not isinstance(sig, str):
                raise IntegrityError(f"{str(path)!r} is not signed; refusing it (a verify key was given)")
            if not hmac.compare_digest(sig, _signature(unsigned, _read_key(verify_key))):
                raise IntegrityError(f"{str(path)!r}: its signature does not match the verify key (tampered, or "
                                     "signed with another key)")
        edit = cls(dense, manifest, factors)
        if pipe is not None:
            edit.check_base(pipe)
        return edit


def compose(edits: Sequence[Edit]) -> Edit:
    """One edit equivalent to applying `edits` in order. Each edit must have been made on the weights the previous
    ones produce for the tensors they share (e.g. erase -> apply -> erase again); otherwise IntegrityError."""
    from . import __version__

    edits = list(edits)
    if not edits:
        raise InvalidValueError("compose() needs at least one edit; got an empty list")
    tensors: dict[str, torch.Tensor] = {}
    factors: dict[str, LowRank] = {}
    base: dict[str, str] = {}
    edited: dict[str, str] = {}
    for k, e in enumerate(edits):
        for name in e.names:
            want = e.manifest["base_sha256"][name]
            if name in edited and edited[name] != want:
                raise IntegrityError(
                    f"edit {k} ({e.method}, erase={e.manifest.get('erase')}) was not made on top of the earlier edits: "
                    f"its base for {name!r} differs from what they produce. Make it on a model with them applied")
            base.setdefault(name, want)
            if name in e.tensors:  # a dense tensor replaces whatever came before
                tensors[name] = e.tensors[name]
                factors.pop(name, None)
            elif name in tensors:  # a low-rank delta over an earlier dense tensor: expand it
                tensors[name] = e.factors[name].added_to(tensors[name])
            elif name in factors:
                raise IntegrityError(
                    f"edit {k} ({e.method}) adds a low-rank delta to {name!r} on top of another low-rank edit: "
                    "their composition depends on the base weights; compose `edit.to_dense(pipe)` instead")
            else:
                factors[name] = e.factors[name]
            edited[name] = e.manifest["edited_sha256"][name]
    parts = [{k: v for k, v in e.manifest.items() if k not in ("base_sha256", "edited_sha256")} for e in edits]
    manifest = {
        "format": FORMAT,
        "erasekit_version": __version__,
        "method": "compose",
        "config": {},
        "erase": [c for e in edits for c in e.manifest.get("erase", [])],
        "preserve": [c for e in edits for c in e.manifest.get("preserve", [])],
        "guide": None,
        "base_model": edits[0].manifest.get("base_model"),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "parts": parts,
        "base_sha256": base,
        "edited_sha256": edited,
    }
    if factors:
        manifest["factors"] = {n: {"rank": f.rank, "scale": f.scale, "shape": list(f.shape)}
                               for n, f in factors.items()}
        manifest["factor_sha256"] = {f"{n}::{part}": tensor_sha256(getattr(f, part))
                                     for n, f in factors.items() for part in FACTOR_PARTS}
    for name in tensors:  # an expanded low-rank delta is checked against what its edit recorded
        if tensor_sha256(tensors[name]) != edited[name]:
            raise IntegrityError(f"composing {name!r}: the low-rank delta over the earlier edit's tensor does not "
                                 "give the weights its edit recorded; compose `edit.to_dense(pipe)` instead")
    return Edit(dict(tensors), manifest, factors)
