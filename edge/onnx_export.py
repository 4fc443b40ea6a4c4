"""ONNX export of the PyTorch model, ONNX Runtime dynamic int8 quantization, and running either file.

The float32 file comes from torch.onnx's dynamo exporter (torch.export + onnxscript, all offline), with a
dynamic batch dimension so the same file serves one image on a device or a batch on a server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"


def export_onnx_float32(model: torch.nn.Module, input_shape: tuple[int, int, int], out: Path) -> Path:
    """Write `model` (NHWC float32 in, probabilities out) as one self-contained float32 .onnx file."""
    model = model.eval()
    # torch.export specialises a dimension whose example size is 0 or 1, so the example batch is 2.
    example = (torch.zeros((2, *input_shape), dtype=torch.float32),)
    batch = torch.export.Dim("batch")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, example, str(out), dynamo=True, verbose=False,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes={"images": {0: batch}},
        # The weights stay inside the .onnx (no side-car .data file): one file to ship, far below 2 GB.
        external_data=False,
    )
    return out


def quantize_onnx_dynamic_int8(src: Path, out: Path) -> Path:
    """Dynamic int8 quantization of a float32 .onnx: int8 weights, activations quantized per call.

    quantize_dynamic's default op types cover Conv (-> ConvInteger), MatMul and Gemm (-> MatMulInteger).
    ONNX Runtime's CPU execution provider runs ConvInteger, depthwise (grouped) convolutions included, so
    every Conv and the classifier are quantized and the file shrinks to about half; nothing needs excluding.
    No calibration data is needed: activation ranges are computed on the fly for each input.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
    return out


def load_onnx(path: Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping a float32 NHWC batch to probabilities, through an ONNX Runtime CPU session.

    `threads` sets intra-op parallelism; inter-op stays at 1 (a sequential graph gains nothing from it), so
    threads=1 measures what one core does, as on a small device.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)})[0]

    return predict

