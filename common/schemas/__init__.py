"""The results files' schemas (common/schemas/<name>.schema.json) and their validation.

The stages that write results validate against these before writing (a file that
breaks its schema is a bug in the writer, not a result); the report reads every
file through them and imports no writer. Schemas may refer to each other by file
name ("summary.schema.json#/$defs/...").
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent
NAMES = ("summary", "sweep", "tune", "edge", "gpu-bench", "reliability")


def schema(name: str) -> dict[str, Any]:
    """The parsed common/schemas/<name>.schema.json."""
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


@functools.cache
def validator(name: str):
    """A jsonschema validator for schema `name`, with every other schema resolvable by its $id."""
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in map(schema, NAMES))
    return jsonschema.Draft202012Validator(schema(name), registry=registry)


def schema_errors(data: Any, name: str) -> list[str]:
    """Every way `data` breaks schema `name`, as 'at <json path>: <message>' lines (empty when valid)."""
    errors = sorted(validator(name).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    return [f"at {e.json_path}: {e.message}" for e in errors]


def validate(document: dict[str, Any], name: str) -> None:
    """Raise jsonschema.ValidationError if `document` breaks schema `name`."""
    validator(name).validate(document)


def row_fields(name: str, definition: str) -> list[str]:
    """The fields of one row kind ($defs/<definition>) of schema `name`, in the schema's order."""
    return list(schema(name)["$defs"][definition]["properties"])
