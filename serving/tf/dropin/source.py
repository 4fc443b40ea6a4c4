"""The source: which numeric version directories exist under a model's base path."""

from __future__ import annotations

from pathlib import Path

from serving.tf.dropin.config import ModelConfig


def available_versions(base_path: Path) -> dict[int, Path]:
    """Numeric subdirectories of base_path by version, ascending (TF Serving ignores other names).

    Each version keeps the directory it was found in: TF Serving's own test models name theirs
    '00000123', which is version 123 served from <base>/00000123, not from <base>/123.
    """
    if not base_path.is_dir():
        return {}
    found = sorted((int(p.name), p) for p in base_path.iterdir() if p.is_dir() and p.name.isdigit())
    return dict(found)


def aspired_versions(model: ModelConfig) -> dict[int, Path]:
    """The versions the model's version policy wants served right now, with their directories."""
    found = available_versions(model.base_path)
    if model.policy == "all":
        return found
    if model.policy == "specific":
        return {v: path for v, path in found.items() if v in model.versions}
    return dict(list(found.items())[-model.num_versions:])
