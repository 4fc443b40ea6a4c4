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


def build_both(checkpoint: Checkpoint) -> BuiltModels:
    """Build the spec in both frameworks and load the checkpoint's weights into each."""
    spec, weights = checkpoint.spec, checkpoint.weights()
    keras_model = build_keras_model(spec)
    weights_to_keras(weights, keras_model, spec)
    torch_model = build_torch_model(spec)
    weights_to_torch(weights, torch_model)
    return BuiltModels(keras_model, torch_model.eval(), checkpoint.trainer)
