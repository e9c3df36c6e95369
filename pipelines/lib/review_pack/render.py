"""Markdown and self-contained HTML from the document model.

The HTML needs no network: the CSS is inline and the charts are embedded as `data:` URIs (the
same SVG bytes as the chart files next to it); the page is a Jinja2 template
(templates/reconciliation.html.j2, autoescaped). Nothing time-dependent is rendered: the build
time lives in manifest.json only, so a rebuild from the same data gives the same bytes.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping

import jinja2
from markupsafe import Markup, escape

from pipelines.lib.review_pack.document import (
    Block, Bullets, Document, Image, Paragraph, Section, Table, shortened,
)

# --- Markdown ----------------------------------------------------------------------------------


def to_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}", *(_md_block(b) for b in doc.intro)]
    parts += [_md_section(s) for s in doc.sections]
    return "\n\n".join(parts) + "\n"


def _md_section(section: Section) -> str:
    heading = "#" * section.level + " " + section.title
    return "\n\n".join([heading, *(_md_block(b) for b in section.blocks)])


def _md_block(block: Block | Section) -> str:
    if isinstance(block, Section):
        return _md_section(block)
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Image):
        return f"![{block.alt}]({block.file})"
    if isinstance(block, Table):
        return _md_table(block)
    raise TypeError(f"unknown block {block!r}")


def _md_table(table: Table) -> str:
    if not table.rows:
        return f"_{table.empty}_"

    def line(cells) -> str:
        return "| " + " | ".join(_md_cell(c) for c in cells) + " |"

    def short(cells) -> tuple[str, ...]:
        where = f" (in full in `{table.full_text_in}`)" if table.full_text_in else ""
        return tuple(shortened(c) + where if i in table.long_text and shortened(c) != c else c
                     for i, c in enumerate(cells))

    align = ["---:" if i in table.numeric else "---" for i in range(len(table.columns))]
    lines = [line(table.columns), "| " + " | ".join(align) + " |", *(line(short(r)) for r in table.rows)]
    if table.total is not None:
        lines.append(line([f"**{c}**" if c else "" for c in table.total]))
    return "\n".join(lines)


def _md_cell(value: str) -> str:
    return re.sub(r"\s+", " ", value).replace("|", "\\|")


# --- HTML --------------------------------------------------------------------------------------
# The page is the Jinja2 template templates/reconciliation.html.j2, autoescaped: every text of the
# document is escaped there; the filters below are the only HTML the Python side makes.

_TESTS = {"section": Section, "paragraph": Paragraph, "bullets": Bullets, "image": Image, "table": Table}


def _is(kind: type, value: object) -> bool:
    return isinstance(value, kind)


def _unknown_block(block: object) -> str:
    raise TypeError(f"unknown block {block!r}")


@functools.cache
def _page() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipelines.lib.review_pack", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    for name, kind in _TESTS.items():
        env.tests[name] = functools.partial(_is, kind)
    env.filters.update(inline=_inline, anchor=_anchor, shortened=shortened,
                       base64=lambda data: base64.b64encode(data).decode("ascii"))
    env.globals["unknown_block"] = _unknown_block
    return env.get_template("reconciliation.html.j2")


def to_html(doc: Document, images: Mapping[str, bytes]) -> str:
    """The page; `images` maps each Image's file name to its SVG bytes (embedded, not linked)."""
    return _page().render(doc=doc, images=images)


def _inline(value: str) -> Markup:
    """Escaped text with `code` spans (the only Markdown the document's prose uses)."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(value))))


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
