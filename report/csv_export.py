"""Every table of the report as a CSV file, tables/<table id>.csv beside index.html and report.md.

The cells are written as the report shows them (thousands separators, '—' for a
missing value, INVALID in the status column), so a CSV row always reads as its row
in the page; the header row is the table's columns.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from report.doc import Document, Table


def csv_path(table: Table) -> str:
    """Where a table's CSV lies, relative to the report directory (the pages link to it)."""
    return f"tables/{table.id}.csv"


def table_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(row.cells for row in table.rows)
    return buffer.getvalue()


def all_tables(document: Document) -> list[Table]:
    """Every table in the order shown; two tables with one id would overwrite each other's file, so they fail."""
    tables = [block for section in document.sections for block in section.blocks if isinstance(block, Table)]
    ids = [table.id for table in tables]
    duplicates = sorted({table_id for table_id in ids if ids.count(table_id) > 1})
    if duplicates:
        raise ValueError(f"report tables share an id, so their CSV files would collide: {', '.join(duplicates)}")
    return tables


def write_tables(document: Document, report_dir: Path) -> list[Path]:
    """Write each table to <report_dir>/tables/<id>.csv (UTF-8); the paths written."""
    written = []
    for table in all_tables(document):
        path = report_dir / csv_path(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table_csv(table), encoding="utf-8")
        written.append(path)
    return written
