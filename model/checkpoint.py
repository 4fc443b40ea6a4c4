"""The training stage's output: weights, the test set and what produced them.

artifacts/checkpoints/<model>/
  weights.npz       neutral-layout weights (model/transfer.py), no pickles
  test_set.npz      the held-out test images and labels every parity check uses
  calibration.npz   a sample of training images for quantization calibration
  checkpoint.json   spec, labels, normalization, trainer, seed, accuracy, history
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UsageError
from model.spec import ModelSpec, get_spec

Weights = dict[str, dict[str, np.ndarray]]  # {layer name: {weight name: array}}, Keras layouts


def save_weights(weights: Weights, path: str) -> None:
    """Store the neutral dict as an .npz with keys 'layer/weight'."""
    flat = {f"{layer}/{name}": array for layer, entry in weights.items() for name, array in entry.items()}
    np.savez(path, **flat)


def load_weights(path: str) -> Weights:
    """Read an .npz written by save_weights (no pickles allowed)."""
    weights: Weights = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            layer, name = key.split("/", 1)
            weights.setdefault(layer, {})[name] = data[key]
    return weights



@dataclass
class Checkpoint:
    directory: Path
    meta: dict[str, Any]

    @property
    def spec(self) -> ModelSpec:
        base = get_spec(self.meta["profile"])
        return base.with_input(tuple(self.meta["input_shape"]), len(self.meta["labels"]))

    @property
    def trainer(self) -> str:
        return self.meta["trainer"]

    def weights(self) -> Weights:
        return load_weights(str(self.directory / "weights.npz"))

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.directory / "test_set.npz", allow_pickle=False) as data:
            return data["images"], data["labels"]

    def calibration_images(self) -> np.ndarray:
        with np.load(self.directory / "calibration.npz", allow_pickle=False) as data:
            return data["images"]


def load_checkpoint(directory: Path) -> Checkpoint:
    """Open a checkpoint directory, or raise UsageError saying how to make one."""
    meta_file = directory / "checkpoint.json"
    if not meta_file.is_file():
        raise UsageError(f"no checkpoint at {directory}; run 'make train' (python -m training train) first")
    return Checkpoint(directory, json.loads(meta_file.read_text(encoding="utf-8")))
