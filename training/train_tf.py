"""Train a spec in Keras/TensorFlow, deterministically, with per-epoch progress and TensorBoard logs."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from model.keras_model import build_keras_model, keras_logits_model, predict_keras
from model.parity import accuracy
from model.spec import ModelSpec
from model.transfer import Weights, weights_from_keras
from training.data import Dataset
from training.recipe import Recipe, epoch_line, shifted_batches


def train_tf(spec: ModelSpec, data: Dataset, recipe: Recipe, log_dir: Path) -> tuple[Weights, list[dict]]:
    """Train and return the weights (neutral layout) and one history row per epoch."""
    keras.utils.set_random_seed(recipe.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_keras_model(spec)
    trainable = keras_logits_model(model)
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, recipe.total_steps(len(data.y_train)))
    trainable.compile(optimizer=keras.optimizers.Adam(schedule),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batch_rng = np.random.default_rng(recipe.seed)
    history: list[dict] = []
    writer = tf.summary.create_file_writer(str(log_dir))
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        losses = [trainable.train_on_batch(images, labels, return_dict=True)["loss"]
                  for images, labels in shifted_batches(data.x_train, data.y_train, recipe, batch_rng)]
        row = {"epoch": epoch, "loss": float(np.mean(losses)),
               "val_accuracy": accuracy(predict_keras(model, data.x_val), data.y_val),
               "seconds": time.perf_counter() - started}
        history.append(row)
        with writer.as_default():
            tf.summary.scalar("loss/train", row["loss"], step=epoch)
            tf.summary.scalar("accuracy/validation", row["val_accuracy"], step=epoch)
        print(epoch_line("tf", row, recipe.epochs), flush=True)
    writer.close()
    return weights_from_keras(model, spec), history
