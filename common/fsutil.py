"""File helpers: atomic publishing of outputs and content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common import schemas
from common.errors import UsageError


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large models do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and prove we can write into it, or raise UsageError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"output directory {path} is not writable ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def staging_dir(final_parent: Path) -> Iterator[Path]:
    """A scratch directory beside the final location, removed whatever happens.

    Outputs are written here first and moved into place with publish(), so a
    failed or interrupted run never leaves a half-written artifact behind.
    """
    ensure_writable_dir(final_parent)
    scratch = Path(tempfile.mkdtemp(prefix=".staging-", dir=final_parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def publish(staged: Path, final: Path) -> Path:
    """Move a staged file or directory to `final`, replacing what was there."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_dir() and staged.is_dir():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)
    return final


def write_results_file(results_dir: Path, name: str, record: dict, schema: str | None = None) -> Path:
    """Write one results file (indented JSON) into artifacts/results/, creating it if needed.

    With `schema`, the record is validated against common/schemas/<schema>.schema.json first: a record
    that breaks it is a bug in the writer (jsonschema.ValidationError), and nothing is written.
    """
    if schema:
        schemas.validate(record, schema)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / name
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out
