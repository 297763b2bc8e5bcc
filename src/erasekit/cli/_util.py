"""Shared CLI helpers: rich console, progress bars, friendly errors."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import contextmanager

import click
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import ErasekitError, first_line

console = Console(stderr=True)


def debug_enabled() -> bool:
    """True under `erasekit --debug ...` (or ERASEKIT_DEBUG=1): errors then show their traceback."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(os.environ.get("ERASEKIT_DEBUG")) or bool(root is not None and (root.obj or {}).get("debug"))


def one_line(e: BaseException) -> str:
    """The first meaningful line of an exception's message (a bare KeyError reads "missing key ...")."""
    if isinstance(e, KeyError) and not isinstance(e, ErasekitError) and len(e.args) == 1:
        return f"missing key {e.args[0]!r}"
    return first_line(e)


# Failures a user can cause with a bad path, file or option value (besides ErasekitError): reported in one line.
EXPECTED = (OSError, ValueError, TypeError, KeyError, AssertionError, RuntimeError, EOFError, UnicodeDecodeError)


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` on stderr and exit with `code` (2: bad input; 1: the work itself failed)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise click.exceptions.Exit(code)


def friendly_errors(fn: Callable) -> Callable:
    """The CLI's error boundary: an ErasekitError (bad input, named and with its fix) -> `error: ...`, exit 2; any
    other expected failure (a path, a file that is not what it claims, a library refusing a value or a device) ->
    `error: <kind>: ...` plus a hint, exit 1. `erasekit --debug ...` shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.UsageError as e:  # raised by a command body (option parsing errors never reach here)
            if debug_enabled():
                raise
            fail(e.format_message(), 2)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except ErasekitError as e:
            if debug_enabled():
                raise
            fail(one_line(e), 2)
        except KeyboardInterrupt:
            fail("interrupted; finished work is kept (rerun the same command to resume where it can)", 130)
        except yaml.YAMLError as e:
            if debug_enabled():
                raise
            fail(f"not valid YAML: {one_line(e)}", 2)
        except EXPECTED as e:
            if debug_enabled():
                raise
            fail(f"{type(e).__name__}: {one_line(e)} (rerun with erasekit --debug ... for the traceback)", 1)

    return wrapper


@contextmanager
def progress_bar(description: str, total: int | None):
    """Yields advance(n=1, **fields) for a rich progress bar on stderr."""
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=console, transient=False) as prog:
        task = prog.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "", description: str | None = None, total: int | None = None) -> None:
            """Advance by n; a new `total` starts a new phase (the count restarts from 0)."""
            if total is not None:
                prog.reset(task, total=total, description=description or prog.tasks[0].description)
            elif description is not None:
                prog.update(task, description=description)
            prog.update(task, advance=n, info=info)

        yield advance


def check_device(device: str) -> str:
    """`device` if torch can use it here; else one line naming it and what this machine has."""
    import torch

    from ..errors import InvalidValueError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidValueError(f"--device {device!r} is not a torch device ({one_line(e)}); use cpu, cuda, "
                                "cuda:N or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()}
    if not available.get(dev.type, False):
        have = ", ".join(k for k, v in available.items() if v)
        raise InvalidValueError(f"--device {device!r}: no {dev.type} device on this machine (available: {have})")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidValueError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def print_options(name: str, method) -> None:
    """A table of a registered method's config options (anything with `.paper` and `.options()`)."""
    from rich.table import Table

    table = Table(title=f"{name} options ({method.paper})", header_style="bold")
    for col in ("option", "default", "help"):
        table.add_column(col)
    for opt, default, help_ in method.options():
        table.add_row(opt, default, help_)
    console.print(table)
