"""Typed configuration of the export stage, with defaults that run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UsageError
from common.paths import ArtifactPaths, default_artifacts_root
from model.parity import FLOAT_TOLERANCE


@dataclass
class ExportConfig:
    model_name: str = "tiny"
    version: int = 1  # TF Serving version directory and .mar version
    max_batch: int = 256  # largest batch a server accepts and the exported program allows
    max_request_bytes: int = 64 * 1024 * 1024
    tolerance: float = FLOAT_TOLERANCE  # max |delta| of probabilities for float32 formats
    artifacts: Path = field(default_factory=default_artifacts_root)

    def __post_init__(self) -> None:
        if self.version < 1:
            raise UsageError("version must be a positive integer (TF Serving version directory)")
        if self.max_batch < 1:
            raise UsageError("max batch must be at least 1")
        self.artifacts = Path(self.artifacts)

    @property
    def paths(self) -> ArtifactPaths:
        return ArtifactPaths(self.artifacts)
