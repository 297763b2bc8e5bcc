"""Shared CLI helpers: rich console, progress bars, friendly errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import ErasekitError

console = Console(stderr=True)


def friendly_errors(fn: Callable) -> Callable:
    """Turn ErasekitError (and its ValueError/KeyError subclasses) into a one-line CLI error, exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ErasekitError as e:
            raise click.UsageError(str(e)) from None

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


def print_options(name: str, method) -> None:
    """A table of a registered method's config options (anything with `.paper` and `.options()`)."""
    from rich.table import Table

    table = Table(title=f"{name} options ({method.paper})", header_style="bold")
    for col in ("option", "default", "help"):
        table.add_column(col)
    for opt, default, help_ in method.options():
        table.add_row(opt, default, help_)
    console.print(table)
