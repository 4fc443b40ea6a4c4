"""Both framework builds of a checkpoint, and the reference model's predictions.

The reference is the model in the framework that trained it; the other
framework's build receives the same weights through model/transfer.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from model.checkpoint import Checkpoint
from model.keras_model import build_keras_model, predict_keras
from model.torch_model import SpecNet, build_torch_model, predict_torch
from model.transfer import weights_to_keras, weights_to_torch


@dataclass
class BuiltModels:
    keras_model: keras.Model
    torch_model: SpecNet
    trainer: str

    def reference_probabilities(self, images: np.ndarray) -> np.ndarray:
        if self.trainer == "torch":
            return predict_torch(self.torch_model, images)
        return predict_keras(self.keras_model, images)


def build_torch(checkpoint: Checkpoint) -> SpecNet:
    """The PyTorch build with the checkpoint's weights, in eval mode (what .pte and .onnx convert from)."""
    torch_model = build_torch_model(checkpoint.spec)
    weights_to_torch(checkpoint.weights(), torch_model)
    return torch_model.eval()


def build_both(checkpoint: Checkpoint) -> BuiltModels:
    """Build the spec in both frameworks and load the checkpoint's weights into each."""
    keras_model = build_keras_model(checkpoint.spec)
    weights_to_keras(checkpoint.weights(), keras_model, checkpoint.spec)
    return BuiltModels(keras_model, build_torch(checkpoint), checkpoint.trainer)
