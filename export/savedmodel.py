"""Write a Keras model as a SavedModel in TF Serving's layout and run it back."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
SIGNATURE = "serving_default"


def export_savedmodel(model: keras.Model, version_dir: Path) -> Path:
    """SavedModel with one `serving_default` signature: float32 NHWC `images` in,
    softmax `probabilities` out. It needs nothing from this repository to load."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(images, training=False)}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    archive.write_out(str(version_dir), verbose=False)
    return version_dir


def run_savedmodel(version_dir: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Probabilities from the SavedModel's serving signature, as TF Serving would call it."""
    signature = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]
    parts = [signature(**{INPUT_NAME: tf.constant(images[i:i + batch])})[OUTPUT_NAME].numpy()
             for i in range(0, len(images), batch)]
    return np.concatenate(parts)
