"""Self-contained HTML reports (inline PNGs, inline CSS, no external requests) and PNG grids."""

from .html import HtmlReport
from .images import png_bytes, png_data_uri, save_grid

__all__ = ["HtmlReport", "png_bytes", "png_data_uri", "save_grid"]
