"""MkDocs hook: the configuration reference is generated from the config models at build time.

`<!-- config-reference -->` becomes one table per section of the config file, and
`<!-- settings-reference -->` the table of environment variables (perennial.app.config_reference).
"""

from __future__ import annotations

from typing import Any

from mkdocs.exceptions import PluginError

from perennial.app.config_reference import render_config_reference, render_settings_reference

MARKERS = {"<!-- config-reference -->": render_config_reference,
           "<!-- settings-reference -->": render_settings_reference}
PAGE = "configuration.md"  # the page that holds both markers


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """The page's Markdown with each marker replaced by its table(s)."""
    missing = [marker for marker in MARKERS if marker not in markdown]
    if page is not None and page.file.src_uri == PAGE and missing:
        raise PluginError(f"{PAGE} lost its marker(s) {missing}: the configuration reference has no place")
    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
