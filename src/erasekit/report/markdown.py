"""Markdown helpers for benchmark write-ups: tables, and replacing one `## Section` of a file atomically."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import ErasekitError
from ..io import atomic_write_text


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def replace_section(path: str | Path, heading: str, body: str) -> None:
    """Replace the text under `## heading` (up to the next `## `) with `body`; other sections stay byte-identical."""
    path = Path(path)
    text = path.read_text()
    pat = re.compile(rf"(^## {re.escape(heading)}[ \t]*\n)(.*?)(?=^## |\Z)", re.S | re.M)
    if not pat.search(text):
        raise ErasekitError(f"no section '## {heading}' in {path}")
    new = pat.sub(lambda m: m.group(1) + "\n" + body.strip() + "\n\n", text, count=1)
    atomic_write_text(path, new)
