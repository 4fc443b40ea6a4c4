"""The reference answers export writes: the test set, the reference model's probabilities for it, and
which weights produced them.

Smoke checks, load-test payloads and the edge stage compare against these
instead of rebuilding the model in both frameworks: `python -m export` computed
them once, in the trainer's framework, when it gated every format on them.
The file is plain arrays (no pickles), at models/reference/<model>.npz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UsageError
from common.fsutil import sha256_of
from common.paths import ArtifactPaths


@dataclass(frozen=True)
class Reference:
    images: np.ndarray  # the checkpoint's test set, NHWC float32 in [0, 1]
    labels: np.ndarray  # integer labels
    probabilities: np.ndarray  # the reference model's answers, one row per image
    weights_sha256: str  # sha256 of the checkpoint's weights.npz they were computed from

    @property
    def expected_classes(self) -> np.ndarray:
        return self.probabilities.argmax(1)


def write_reference(path: Path, reference: Reference) -> Path:
    np.savez(path, images=reference.images, labels=reference.labels, probabilities=reference.probabilities,
             weights_sha256=np.array(reference.weights_sha256))
    return path


def load_reference(paths: ArtifactPaths, model: str) -> Reference:
    """The reference answers of `model`, checked against the checkpoint they claim to come from."""
    file = paths.reference_file(model)
    if not file.is_file():
        raise UsageError(f"no reference answers for model {model!r} at {file}; run 'make export' first")
    with np.load(file, allow_pickle=False) as data:
        reference = Reference(data["images"], data["labels"], data["probabilities"], str(data["weights_sha256"]))
    weights = paths.checkpoint_dir(model) / "weights.npz"
    if weights.is_file() and sha256_of(weights) != reference.weights_sha256:
        raise UsageError(f"{file} was computed from other weights than {weights} (trained again since?); "
                         "run 'make export' again")
    return reference
