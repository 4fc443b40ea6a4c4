"""TFLite conversion from the SavedModel (float32, float16, dynamic-range int8, full-integer
int8 with float or int8 input/output) and running a .tflite in the LiteRT interpreter.

Quantization here is the TFLite converter's post-training quantization. LiteRT's
documentation now marks it deprecated in favour of the LiteRT Quantizer
(ai-edge-quantizer); the converter path is kept because it is the one that
produces integer-only models (int8 input and output) for microcontrollers and
integer accelerators, which TF 2.21 still converts and ai-edge-litert loads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from export.calibration import check_calibration

SIGNATURE = "serving_default"

# Every variant is converted from the same SavedModel; the value says what it quantizes.
VARIANTS = {
    "float32": "no quantization",
    "float16": "float16 weights, float32 compute",
    "dynamic-int8": "int8 weights, float activations (dynamic range)",
    "int8": "full-integer int8 weights and activations, float32 input/output",
    "int8-io": "full-integer int8, int8 input and output (integer-only devices)",
}


def convert(saved_model_dir: Path, variant: str, out_file: Path, calibration: np.ndarray | None = None) -> Path:
    """Convert the SavedModel's serving signature to one TFLite variant."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[SIGNATURE])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if variant in ("int8", "int8-io"):
        check_calibration(calibration)

        def representative_images():
            for index in range(len(calibration)):
                yield [calibration[index:index + 1].astype(np.float32)]

        converter.representative_dataset = representative_images
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if variant == "int8-io":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    out_file.write_bytes(converter.convert())
    return out_file


def convert_float32(saved_model_dir: Path, out_file: Path) -> Path:
    """float32 TFLite of the SavedModel's serving signature (no quantization)."""
    return convert(saved_model_dir, "float32", out_file)


def io_details(model_file: Path) -> dict:
    """Input and output name, dtype, shape and quantization (scale, zero point) of the signature."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model_file)).get_signature_runner(SIGNATURE)

    def describe(details: dict) -> dict:
        name, info = next(iter(details.items()))
        scale, zero_point = info["quantization"]
        return {"name": name, "dtype": np.dtype(info["dtype"]).name, "shape": [int(d) for d in info["shape_signature"]],
                "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None}

    return {"input": describe(runner.get_input_details()), "output": describe(runner.get_output_details())}


def quantization_parameter_bytes(model_file: Path) -> int:
    """Bytes the file spends on quantization parameters: a float32 scale and an int64 zero point per
    quantized channel (or per tensor), as the flatbuffer stores them; read back through the interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    total = 0
    for tensor in Interpreter(model_path=str(model_file)).get_tensor_details():
        parameters = tensor["quantization_parameters"]
        total += parameters["scales"].size * 4 + parameters["zero_points"].size * 8
    return total


def load_tflite(model_file: Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function: float32 images in [0, 1] -> float32 probabilities, through the LiteRT interpreter.

    For int8 input/output models it quantizes the input and dequantizes the
    output with the file's own scale and zero point, as an app would.
    """
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(model_file), num_threads=threads).get_signature_runner(SIGNATURE)
    (input_name, input_info), = runner.get_input_details().items()
    (output_name, output_info), = runner.get_output_details().items()
    in_scale, in_zero = input_info["quantization"]
    out_scale, out_zero = output_info["quantization"]
    integer_input = np.dtype(input_info["dtype"]).kind == "i"
    integer_output = np.dtype(output_info["dtype"]).kind == "i"

    def predict(images: np.ndarray) -> np.ndarray:
        feed = images.astype(np.float32)
        if integer_input:
            feed = np.clip(np.round(feed / in_scale + in_zero), -128, 127).astype(np.int8)
        result = runner(**{input_name: feed})[output_name]
        if integer_output:
            return (result.astype(np.float32) - out_zero) * out_scale
        return result

    return predict


def run_tflite(model_file: Path, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """Probabilities from the LiteRT interpreter through the file's serving signature."""
    return load_tflite(model_file, threads)(images)

