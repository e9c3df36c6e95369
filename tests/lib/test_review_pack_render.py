"""The pack's HTML page (render.to_html, a Jinja2 template): every text of the document is escaped,
the `code` spans of prose become <code>, and each kind of block renders as the page shows it."""

import base64

import pytest

from pipelines.lib.review_pack.document import Bullets, Document, Image, Paragraph, Section, Table
from pipelines.lib.review_pack.render import to_html

HOSTILE = '<script>alert("x")</script> & it\'s'


def test_every_text_is_escaped_and_code_spans_become_code():
    doc = Document(title=f"Pack {HOSTILE}", intro=(Paragraph(f"run `comet-ledger <run>` then {HOSTILE}"),),
                   sections=(Section("Keys & teams", (Bullets((HOSTILE,)), Table(("key", "USD"), ((HOSTILE, "1.5"),),
                                                                                     numeric=frozenset({1})))),))
    page = to_html(doc, {})
    assert "<script>" not in page and page.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; it&#39;s") == 5
    assert "<p>run <code>comet-ledger &lt;run&gt;</code> then &lt;script&gt;" in page
    assert '<h2 id="keys-teams">Keys &amp; teams</h2>' in page
    assert '<li><a href="#keys-teams">Keys &amp; teams</a></li>' in page
    assert "<tr><td>&lt;script&gt;" in page and '<td class="num">1.5</td></tr>' in page
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body>\n</html>\n")


def test_long_cells_collapse_images_embed_and_empty_tables_say_so():
    ids = ", ".join(f"req_{i:04d}" for i in range(20))
    doc = Document(title="t", intro=(), sections=(Section("Evidence", (
        Table(("ids",), ((ids,),), long_text=frozenset({0}), full_text_in="anomalies.csv"),
        Table(("x",), (), empty="No restatements."),
        Image("spend.svg", 'daily "spend"'),
    )),))
    page = to_html(doc, {"spend.svg": b"<svg/>"})
    assert (f'<td class="long"><details><summary>req_0000, req_0001, req_0002, req_0003…</summary>'
            f"<div>{ids} (in full in <code>anomalies.csv</code>)</div></details></td>") in page
    assert '<p class="empty">No restatements.</p>' in page
    assert (f'<img src="data:image/svg+xml;base64,{base64.b64encode(b"<svg/>").decode()}" alt="daily &#34;spend&#34;">'
            in page)


def test_an_unknown_block_is_refused():
    with pytest.raises(TypeError, match="unknown block"):
        to_html(Document(title="t", intro=("not a block",)), {})
