"""Train a spec in Keras/TensorFlow, deterministically, with per-epoch progress and TensorBoard logs."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.data import Dataset
from training.keras_model import build_keras_model, keras_logits_model
from training.spec import ModelSpec
from training.transfer import Weights, weights_from_keras


class _EpochPrinter(keras.callbacks.Callback):
    """One line per epoch, in the same shape as the PyTorch trainer's."""

    def __init__(self, epochs: int, history: list[dict]) -> None:
        super().__init__()
        self.epochs, self.history, self.started = epochs, history, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]),
               "val_accuracy": float(logs["val_accuracy"]), "seconds": time.perf_counter() - self.started}
        self.history.append(row)
        print(f"[tf] epoch {row['epoch']}/{self.epochs}  loss {row['loss']:.4f}  "
              f"val_accuracy {row['val_accuracy']:.4f}  {row['seconds']:.1f}s", flush=True)


def predict_keras(model: keras.Model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Softmax probabilities in inference mode, in batches."""
    return np.concatenate([model(images[i:i + batch], training=False).numpy()
                           for i in range(0, len(images), batch)])


def train_tf(spec: ModelSpec, data: Dataset, epochs: int, batch_size: int, learning_rate: float,
             seed: int, log_dir: Path) -> tuple[Weights, list[dict]]:
    """Train and return the weights (neutral layout) and one history row per epoch."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build_keras_model(spec)
    trainable = keras_logits_model(model)
    trainable.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    history: list[dict] = []
    trainable.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                  validation_data=(data.x_val, data.y_val), verbose=0,
                  callbacks=[keras.callbacks.TensorBoard(str(log_dir)), _EpochPrinter(epochs, history)])
    return weights_from_keras(model, spec), history
