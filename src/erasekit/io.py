"""Atomic file writes: write to a temporary file in the same folder, then rename. Nothing is ever half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the user's usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_safetensors(path: str | Path, tensors: dict, metadata: dict[str, str]) -> Path:
    """Write `tensors` ({name: torch tensor}, stored contiguous on the CPU) with string `metadata` as one safetensors
    file, atomically."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                         metadata=metadata))


def read_safetensors(path: str | Path) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors file, read once. Raises what reading and parsing raise (OSError,
    safetensors' SafetensorError, ValueError); callers turn that into their own one-line message."""
    import json
    import struct

    from safetensors.torch import load

    raw = Path(path).read_bytes()
    tensors = load(raw)  # validates the whole file, header included
    (n,) = struct.unpack("<Q", raw[:8])
    return tensors, json.loads(raw[8:8 + n]).get("__metadata__") or {}


def file_sha256(path: str | Path, what: str = "file", hint: str = "", who: str = "") -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks. An unreadable file is one ErasekitError line:
    "[who: ]cannot read {what} {path!r}: {reason}{hint}"."""
    import hashlib

    from .errors import ErasekitError

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise ErasekitError(f"{who + ': ' if who else ''}cannot read {what} {str(path)!r}: {e.strerror or e}{hint}") \
            from None
    return h.hexdigest()


def read_key_file(path: str | Path, what: str, make: str) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a safetensors key file; a missing or unreadable file is one InvalidValueError line
    naming it as `what` (e.g. "erasekit watermark key") and the command that makes one (`make`)."""
    from safetensors import SafetensorError

    from .errors import InvalidValueError

    path = Path(path)
    if not path.is_file():
        raise InvalidValueError(f"key file {path} does not exist; make one with `{make}`")
    try:
        return read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidValueError(f"{path} is not an {what} (not a safetensors file: "
                                f"{str(e).splitlines()[0][:120]}); make one with `{make}`") from None


def read_json_file(path: str | Path, fmt: str, what: str, make: str, parse):
    """`parse(d)` of the JSON file `path` whose "format" is `fmt`; every failure is one InvalidValueError line naming
    the file as `what` and the command that makes one (`make`). `parse` may raise ValueError/KeyError/TypeError."""
    import json

    from .errors import InvalidValueError

    path = Path(path)
    if not path.is_file():
        raise InvalidValueError(f"{what} {path} does not exist; make one with `{make}`")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != fmt:
            raise ValueError(f"format {d.get('format')!r}")
        return parse(d)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidValueError(f"{path} is not a valid {what} ({str(e)[:100]}); make one with `{make}`") from None


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint written by `torch.save`, loaded with `weights_only=True`: tensors, numbers, strings and
    containers only, so a crafted file cannot run code. Anything else (a pickle with code, a corrupt file) raises
    one line naming the file and the fix."""
    import pickle

    import torch

    from .errors import ErasekitError, first_line

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        raise ErasekitError(f"refusing checkpoint {path}: it is not a plain tensor checkpoint "
                            f"({first_line(e, 160)}); delete it to start that stage over") from e
    if not isinstance(state, dict):
        raise ErasekitError(f"refusing checkpoint {path}: expected a mapping, got {type(state).__name__}; delete it")
    return state


def slug(text: str) -> str:
    """A folder-safe lower-case name: every character that is not a letter or digit becomes '-'."""
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


class RunLock:
    """An exclusive lock on a run folder (eval, bench, demo, world train): `<folder>/.erasekit.lock` created with
    O_EXCL and holding "pid host". A second writer is refused with a message naming the holder; a lock whose process
    is gone (same host) is taken over with a warning. Use as a context manager."""

    NAME = ".erasekit.lock"

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self.held = False

    def __enter__(self) -> "RunLock":
        import socket
        import warnings

        from .errors import ErasekitError

        self.folder.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.path.read_text(errors="replace").strip() if self.path.exists() else ""
                pid, _, host = holder.partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    warnings.warn(f"taking over the stale lock of {self.folder} (process {pid} is gone)", stacklevel=2)
                    self.path.unlink(missing_ok=True)
                    continue
                raise ErasekitError(f"{self.folder} is in use by another erasekit process ({holder or 'unknown'}); "
                                    f"wait for it, or use another --out (delete {self.path} if that process is "
                                    "really gone)") from None
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held = True
            return self
        raise ErasekitError(f"could not lock {self.folder}")

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(path: str | Path, overwrite: bool = False, what: str = "output") -> Path:
    """Check, before any work, that a file can be written at `path`: its parent is (or can be) a folder we may
    write, and an existing file is only replaced with `overwrite`. Raises one line naming the path and the fix."""
    from .errors import ErasekitError

    path = Path(path)
    if path.is_dir():
        raise ErasekitError(f"{what} {path} is a folder; give a file path")
    if path.exists() and not overwrite:
        raise ErasekitError(f"{what} {path} exists; pass --overwrite to replace it, or choose another path")
    parent = path.parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise ErasekitError(f"cannot write {what} {path}: {p} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".erasekit-write-check.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ErasekitError(f"cannot write {what} {path}: {e.strerror or e} ({parent}); choose a writable place") \
            from None
    return path


def check_writable_dir(folder: str | Path, what: str = "output folder") -> Path:
    """Check that `folder` is (or can be made) a writable folder, before any work."""
    from .errors import ErasekitError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ErasekitError(f"{what} {folder} is a file; give a folder path")
    check_writable(folder / ".erasekit-probe", overwrite=True, what=what)
    return folder
