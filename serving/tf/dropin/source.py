"""The source: which numeric version directories exist under a model's base path."""

from __future__ import annotations

from pathlib import Path

from serving.tf.dropin.config import ModelConfig


def available_versions(base_path: Path) -> list[int]:
    """Numeric subdirectories of base_path, ascending (TF Serving ignores other names)."""
    if not base_path.is_dir():
        return []
    return sorted(int(p.name) for p in base_path.iterdir() if p.is_dir() and p.name.isdigit())


def aspired_versions(model: ModelConfig) -> list[int]:
    """The versions the model's version policy wants served right now."""
    found = available_versions(model.base_path)
    if model.policy == "all":
        return found
    if model.policy == "specific":
        return [v for v in found if v in model.versions]
    return found[-model.num_versions:]
