"""Markdown and self-contained HTML from the document model.

The HTML needs no network: the CSS is inline and the charts are embedded as `data:` URIs (the
same SVG bytes as the chart files next to it). Nothing time-dependent is rendered: the build
time lives in manifest.json only, so a rebuild from the same data gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from string import Template

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

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1b1b1b; margin: 2rem auto;
       max-width: 1180px; padding: 0 1rem; line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.7rem; border-bottom: 2px solid #1f4e79; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; color: #1f4e79; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
nav ol { columns: 2; font-size: .95rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .85rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; vertical-align: top; overflow-wrap: break-word; }
th { background: #f3f6f9; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.prose { min-width: 14rem; }
td.long { min-width: 9rem; max-width: 16rem; overflow-wrap: anywhere; font-size: .8rem; }
td.long summary { cursor: pointer; color: #1f4e79; }
td.long details div { margin-top: .2rem; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9pt; }
  table { display: table; width: 100%; font-size: 7pt; }
  th, td { padding: .1rem .25rem; }
  td.prose { min-width: 9rem; }
  td.long { min-width: 6rem; max-width: none; }
  details::details-content { content-visibility: visible; display: block; }
  nav, figure { break-inside: avoid; }
  tr { break-inside: avoid; }
}
tr.total td { font-weight: 600; background: #f8f8f8; }
code { background: #f3f6f9; padding: 0 .25rem; border-radius: 3px; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e5e5; }
figcaption { font-size: .85rem; color: #555; }
p.empty { font-style: italic; color: #555; }
</style>
</head>
<body>
<h1>$title</h1>
$intro
<nav><ol>
$toc
</ol></nav>
$body
</body>
</html>
""")


def to_html(doc: Document, images: Mapping[str, bytes]) -> str:
    """The page; `images` maps each Image's file name to its SVG bytes (embedded, not linked)."""
    return PAGE.substitute(
        title=_esc(doc.title),
        intro="\n".join(_html_block(b, images) for b in doc.intro),
        toc="\n".join(f'<li><a href="#{_anchor(s.title)}">{_esc(s.title)}</a></li>' for s in doc.sections),
        body="\n".join(_html_section(s, images) for s in doc.sections),
    )


def _html_section(section: Section, images: Mapping[str, bytes]) -> str:
    tag = f"h{section.level}"
    head = f'<{tag} id="{_anchor(section.title)}">{_esc(section.title)}</{tag}>'
    return "\n".join([head, *(_html_block(b, images) for b in section.blocks)])


def _html_block(block: Block | Section, images: Mapping[str, bytes]) -> str:
    if isinstance(block, Section):
        return _html_section(block, images)
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_inline(i)}</li>" for i in block.items) + "\n</ul>"
    if isinstance(block, Image):
        data = base64.b64encode(images[block.file]).decode("ascii")
        return (f'<figure><img src="data:image/svg+xml;base64,{data}" alt="{_esc(block.alt)}">'
                f"<figcaption>{_esc(block.alt)} (<code>{_esc(block.file)}</code>)</figcaption></figure>")
    if isinstance(block, Table):
        return _html_table(block)
    raise TypeError(f"unknown block {block!r}")


def _html_table(table: Table) -> str:
    if not table.rows:
        return f'<p class="empty">{_esc(table.empty)}</p>'

    def cell(i: int, value: str) -> str:
        if i in table.numeric:
            return f'<td class="num">{_esc(value)}</td>'
        if i in table.long_text and shortened(value) != value:
            where = f" (in full in <code>{_esc(table.full_text_in)}</code>)" if table.full_text_in else ""
            return (f'<td class="long"><details><summary>{_esc(shortened(value))}</summary>'
                    f"<div>{_esc(value)}{where}</div></details></td>")
        if i in table.long_text:
            return f'<td class="long">{_esc(value)}</td>'
        return f'<td class="prose">{_esc(value)}</td>' if i in table.prose else f"<td>{_esc(value)}</td>"

    def row(cells, css: str = "") -> str:
        tds = "".join(cell(i, c) for i, c in enumerate(cells))
        return f'<tr class="{css}">{tds}</tr>' if css else f"<tr>{tds}</tr>"

    head = "<tr>" + "".join(f"<th>{_esc(c)}</th>" for c in table.columns) + "</tr>"
    rows = [row(r) for r in table.rows]
    if table.total is not None:
        rows.append(row(table.total, "total"))
    return "<table>\n<thead>" + head + "</thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _inline(value: str) -> str:
    """Escaped text with `code` spans (the only Markdown the document's prose uses)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(value))


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
