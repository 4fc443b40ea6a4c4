"""TFLite conversion from the SavedModel, and running a .tflite in the LiteRT interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

SIGNATURE = "serving_default"


def convert_float32(saved_model_dir: Path, out_file: Path) -> Path:
    """float32 TFLite of the SavedModel's serving signature (no quantization)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    out_file.write_bytes(converter.convert())
    return out_file


def run_tflite(model_file: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Probabilities from the LiteRT interpreter through the file's serving signature."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_file), num_threads=threads)
    runner = interpreter.get_signature_runner(SIGNATURE)
    input_name = next(iter(runner.get_input_details()))
    output_name = next(iter(runner.get_output_details()))
    return runner(**{input_name: images.astype(np.float32)})[output_name]
