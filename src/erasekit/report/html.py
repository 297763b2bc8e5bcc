"""A tiny builder for self-contained HTML reports: headings, paragraphs, tables, image grids, preformatted blocks.

Everything is inlined (CSS, PNG data URIs), so the file opens offline in any browser. Text is escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import atomic_write_text
from .images import png_data_uri

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0} th,td{border:1px solid #ccc;padding:4px 8px;font-size:.9em;text-align:left}
th{background:#f3f3f3} td.best{background:#d9f2d9;font-weight:bold} td.bad{background:#f9dcdc}
.grid{display:flex;flex-wrap:wrap;gap:10px} .cell{width:140px;font-size:.72em;text-align:center}
.cell img{width:128px;height:128px;image-rendering:pixelated;border:1px solid #999}
.ok{color:#176317} .miss{color:#a31515} pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:.8em}
.caption{color:#555;font-size:.85em}
"""


class HtmlReport:
    """Append sections, then `write(path)`. Ids on sections and tables make them findable in browser tests."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2, id: str | None = None) -> "HtmlReport":
        attr = f' id="{html.escape(id)}"' if id else ""
        self.parts.append(f"<h{level}{attr}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str, cls: str = "") -> "HtmlReport":
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f"<p{c}>{html.escape(text)}</p>")
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]], id: str | None = None,
              classes: Sequence[Sequence[str]] | None = None) -> "HtmlReport":
        """A table; `classes[r][c]` (e.g. "best", "bad") styles cell (r, c)."""
        attr = f' id="{html.escape(id)}"' if id else ""
        out = [f"<table{attr}><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
        for r, row in enumerate(rows):
            cells = []
            for c, v in enumerate(row):
                cl = classes[r][c] if classes and classes[r][c] else ""
                attr = f' class="{cl}"' if cl else ""
                cells.append(f"<td{attr}>{html.escape(_fmt(v))}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        self.parts.append("".join(out))
        return self

    def heatmap(self, header: Sequence[str], labels: Sequence[str], values: Sequence[Sequence[float | None]],
                id: str | None = None, higher_is_worse: bool = True) -> "HtmlReport":
        """A matrix table whose cells (values in [0, 1]; None = not measured) are shaded white -> red as they get
        worse (`higher_is_worse`) — the protections x attacks grid."""
        attr = f' id="{html.escape(id)}"' if id else ""
        out = [f"<table{attr}><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
               + "</tr></thead><tbody>"]
        for label, row in zip(labels, values, strict=True):
            cells = [f"<th>{html.escape(str(label))}</th>"]
            for v in row:
                if v is None:
                    cells.append("<td></td>")
                    continue
                bad = min(max(float(v) if higher_is_worse else 1.0 - float(v), 0.0), 1.0)
                g = int(round(255 - 150 * bad))
                cells.append(f'<td style="background:rgb(255,{g},{g})">{float(v):.2f}</td>')
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
        self.parts.append("".join(out))
        return self

    def image_grid(self, images: np.ndarray, captions: Sequence[str], id: str | None = None,
                   caption_classes: Sequence[str] | None = None, notes: Sequence[str] | None = None) -> "HtmlReport":
        """One cell per image with its caption (escaped) and an optional coloured note line."""
        attr = f' id="{html.escape(id)}"' if id else ""
        cells = []
        for i, im in enumerate(images):
            note = ""
            if notes is not None:
                cl = caption_classes[i] if caption_classes else ""
                note = f'<div class="{cl}">{html.escape(notes[i])}</div>'
            cells.append(f'<div class="cell"><img alt="{html.escape(captions[i])}" src="{png_data_uri(im)}">'
                         f"<div>{html.escape(captions[i])}</div>{note}</div>")
        self.parts.append(f'<div class="grid"{attr}>' + "".join(cells) + "</div>")
        return self

    def image(self, png_uri: str, alt: str, width: int | None = None) -> "HtmlReport":
        w = f' width="{width}"' if width else ""
        self.parts.append(f'<img alt="{html.escape(alt)}" src="{png_uri}"{w}>')
        return self

    def pre(self, obj: object) -> "HtmlReport":
        text = obj if isinstance(obj, str) else json.dumps(obj, indent=1, sort_keys=True, default=str)
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def render(self) -> str:
        body = "\n".join(self.parts)
        return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}</title>"
                f"<style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n")

    def write(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.render())


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
