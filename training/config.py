"""Typed configuration of the training stage, with defaults that run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UsageError
from common.paths import ArtifactPaths, default_artifacts_root
from training.recipe import Recipe

TRAINERS = ("torch", "tf")

# Per-profile training defaults. mobilenet is trained briefly (one epoch on a
# subset): it exists for realistic serving cost, not accuracy, and the
# manifest marks it so.
PROFILE_DEFAULTS = {
    "tiny": {"epochs": 20, "max_train_images": None, "trained_briefly": False},
    "mobilenet": {"epochs": 1, "max_train_images": 256, "trained_briefly": True},
}


@dataclass
class TrainConfig:
    profile: str = "tiny"
    trainer: str = "torch"
    data: str = "digits"  # 'digits' or an image folder with one subfolder per class
    model_name: str | None = None  # defaults to the profile name
    epochs: int | None = None  # defaults per profile
    batch_size: int = 32
    learning_rate: float = 2e-3  # peak of the cosine schedule
    seed: int = 0
    max_shift: int = 2  # augmentation: a training batch moves up to this many pixels each way
    max_train_images: int | None = None
    artifacts: Path = field(default_factory=default_artifacts_root)

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise UsageError(f"unknown trainer {self.trainer!r}; choose one of: {', '.join(TRAINERS)}")
        defaults = PROFILE_DEFAULTS.get(self.profile, PROFILE_DEFAULTS["tiny"])
        self.epochs = defaults["epochs"] if self.epochs is None else self.epochs
        if self.max_train_images is None:
            self.max_train_images = defaults["max_train_images"]
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise UsageError("epochs and batch size must be at least 1 and the learning rate positive")
        if self.max_shift < 0:
            raise UsageError("max shift must be 0 (no augmentation) or a positive number of pixels")
        self.model_name = self.model_name or self.profile
        self.artifacts = Path(self.artifacts)

    @property
    def recipe(self) -> Recipe:
        return Recipe(self.epochs, self.batch_size, self.learning_rate, self.seed, self.max_shift)

    @property
    def trained_briefly(self) -> bool:
        return PROFILE_DEFAULTS.get(self.profile, {}).get("trained_briefly", False)

    @property
    def paths(self) -> ArtifactPaths:
        return ArtifactPaths(self.artifacts)
