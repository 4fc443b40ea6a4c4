"""The report as data: sections of paragraphs, tables and figures, rendered to HTML and Markdown alike."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = "text"  # "text", "note" (missing data: what to run) or "invalid"


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Row:
    cells: list[str]
    invalid: bool = False


@dataclass(frozen=True)
class Table:
    id: str
    caption: str
    columns: list[str]
    rows: list[Row]


@dataclass(frozen=True)
class Figure:
    id: str
    title: str
    png: bytes
    provenance: list[str]


Block = Paragraph | Bullets | Table | Figure


@dataclass
class Section:
    id: str
    title: str
    sources: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Document:
    title: str
    intro: list[str]
    sections: list[Section]

    def tables(self) -> dict[str, Table]:
        return {b.id: b for s in self.sections for b in s.blocks if isinstance(b, Table)}

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]
