"""Render the report as one self-contained HTML page: inline CSS, figures as data URIs, no script, no network."""

from __future__ import annotations

import base64
from html import escape

from report.csv_export import csv_path
from report.doc import Bullets, Document, Figure, Paragraph, Section, Table

STYLE = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1a1a1a; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #333; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.86em; }
caption { caption-side: top; text-align: left; font-size: 0.95em; color: #333; padding-bottom: 0.4em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.invalid td { background: #fde8e8; color: #8a1111; }
p.note { background: #fff7d6; border-left: 4px solid #e0b000; padding: 0.5em 0.8em; }
p.invalid { background: #fde8e8; border-left: 4px solid #d62728; padding: 0.5em 0.8em; font-weight: bold; }
.sources, .provenance, p.csv { font-size: 0.85em; color: #444; }
figure { margin: 1.5em 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.8em; color: #444; }
nav ol { columns: 2; }
"""


def _paragraph(block: Paragraph) -> str:
    return f'<p class="{block.kind}">{escape(block.text)}</p>'


def _bullets(block: Bullets) -> str:
    return "<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>"


def _table(block: Table) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in block.columns)
    body = "".join(('<tr class="invalid">' if row.invalid else "<tr>")
                   + "".join(f"<td>{escape(c)}</td>" for c in row.cells) + "</tr>" for row in block.rows)
    csv = escape(csv_path(block))
    return (f'<table id="table-{escape(block.id)}"><caption>{escape(block.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f'<p class="csv">CSV: <a href="{csv}">{csv}</a></p>')


def _figure(block: Figure) -> str:
    data = base64.b64encode(block.png).decode("ascii")
    provenance = "<br>".join(escape(line) for line in block.provenance)
    return (f'<figure id="figure-{escape(block.id)}"><img class="plot" alt="{escape(block.title)}" '
            f'src="data:image/png;base64,{data}">'
            f"<figcaption><strong>{escape(block.title)}.</strong><br>{provenance}</figcaption></figure>")


RENDERERS = {Paragraph: _paragraph, Bullets: _bullets, Table: _table, Figure: _figure}


def _section(section: Section) -> str:
    parts = [f'<section id="{escape(section.id)}"><h2>{escape(section.title)}</h2>']
    if section.sources:
        parts.append('<p class="sources"><strong>Source:</strong> '
                     + "; ".join(escape(s) for s in section.sources) + "</p>")
    if section.provenance:
        parts.append('<details class="provenance" open><summary>Provenance</summary><ul>'
                     + "".join(f"<li>{escape(line)}</li>" for line in section.provenance) + "</ul></details>")
    parts += [RENDERERS[type(b)](b) for b in section.blocks]
    return "\n".join(parts) + "</section>"


def render_html(document: Document) -> str:
    """The whole page as a string."""
    toc = "".join(f'<li><a href="#{escape(s.id)}">{escape(s.title)}</a></li>' for s in document.sections)
    intro = "".join(f"<p>{escape(line)}</p>" for line in document.intro)
    sections = "\n".join(_section(s) for s in document.sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(document.title)}</title><style>{STYLE}</style></head>\n<body>"
            f"<h1>{escape(document.title)}</h1>{intro}<nav><ol>{toc}</ol></nav>\n{sections}\n</body></html>\n")
