"""MkDocs hook: `<!-- report-screenshot -->` becomes the screenshot of the report page, once
`docs/images/report.png` exists (`uv run python docs/screenshots.py` makes it); without it, nothing,
so a checkout without the image still builds in strict mode."""

from __future__ import annotations

from typing import Any

MARKER = "<!-- report-screenshot -->"
IMAGE = "images/report.png"
SCREENSHOT = f"![The report page of the demo's model]({IMAGE})"


def on_page_markdown(markdown: str, page: Any = None, files: Any = None, **kwargs: Any) -> str:
    """The page with the marker replaced by the screenshot (pages sit at the top of docs/)."""
    if MARKER not in markdown:
        return markdown
    present = files is not None and files.get_file_from_path(IMAGE) is not None
    return markdown.replace(MARKER, SCREENSHOT if present else "")
