"""Render the report as Markdown, figures as PNG files beside it (figures/<id>.png)."""

from __future__ import annotations

from report.csv_export import csv_path
from report.doc import Bullets, Document, Figure, Paragraph, Section, Table


def figure_path(figure: Figure) -> str:
    return f"figures/{figure.id}.png"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _paragraph(block: Paragraph) -> str:
    prefix = {"note": "> **Note:** ", "invalid": "> **INVALID:** ", "text": ""}[block.kind]
    return prefix + block.text


def _bullets(block: Bullets) -> str:
    return "\n".join(f"- {item}" for item in block.items)


def _table(block: Table) -> str:
    lines = [f"*{block.caption}*", "", "| " + " | ".join(_cell(c) for c in block.columns) + " |",
             "|" + "|".join(" --- " for _ in block.columns) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row.cells) + " |" for row in block.rows]
    lines += ["", f"CSV: [{csv_path(block)}]({csv_path(block)})"]
    return "\n".join(lines)


def _figure(block: Figure) -> str:
    provenance = "  \n".join(block.provenance)
    return f"![{block.title}]({figure_path(block)})\n\n{provenance}"


RENDERERS = {Paragraph: _paragraph, Bullets: _bullets, Table: _table, Figure: _figure}


def _section(section: Section) -> str:
    parts = [f"## {section.title}"]
    if section.sources:
        parts.append("Source: " + "; ".join(section.sources))
    if section.provenance:
        parts.append("Provenance:\n\n" + "\n".join(f"- {line}" for line in section.provenance))
    parts += [RENDERERS[type(b)](b) for b in section.blocks]
    return "\n\n".join(parts)


def render_markdown(document: Document) -> str:
    """The whole report as Markdown text."""
    parts = [f"# {document.title}", *document.intro, *(_section(s) for s in document.sections)]
    return "\n\n".join(parts) + "\n"
