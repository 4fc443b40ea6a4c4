"""Where every stage reads and writes. All paths hang off one artifacts root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_model(fallback: str = "tiny") -> str:
    """The model every stage works on unless told otherwise: MODEL, else PROFILE, else `fallback`."""
    return os.environ.get("MODEL", os.environ.get("PROFILE", fallback))


def default_artifacts_root() -> Path:
    """ARTIFACTS in the environment wins; otherwise artifacts/ in the repository."""
    return Path(os.environ.get("ARTIFACTS", REPO_ROOT / "artifacts")).resolve()


@dataclass(frozen=True)
class ArtifactPaths:
    """The artifact layout from DESIGN.md, for one artifacts root."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def checkpoint_dir(self, model: str) -> Path:
        return self.root / "checkpoints" / model

    def tensorboard_dir(self, model: str, trainer: str) -> Path:
        return self.root / "tensorboard" / model / trainer

    def tf_model_base(self, model: str) -> Path:
        """TF Serving's --model_base_path: it holds numeric version directories."""
        return self.root / "models" / "tf" / model

    def tf_version_dir(self, model: str, version: int) -> Path:
        return self.tf_model_base(model) / str(version)

    def latest_tf_version_dir(self, model: str) -> Path | None:
        """The highest numeric version directory export wrote (TF Serving serves the latest), or None."""
        base = self.tf_model_base(model)
        versions = [p for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
        return max(versions, key=lambda p: int(p.name), default=None)

    @property
    def torch_model_store(self) -> Path:
        return self.root / "models" / "torch"

    def reference_file(self, model: str) -> Path:
        """Export's reference answers: test set, reference probabilities, weights hash (common/reference.py)."""
        return self.root / "models" / "reference" / f"{model}.npz"

    @property
    def edge_dir(self) -> Path:
        return self.root / "models" / "edge"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"
