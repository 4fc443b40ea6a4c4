"""ExecuTorch .pte export (float32 and PT2E int8, both lowered to XNNPACK) and running a .pte.

The programs have a static input of one image, [1, H, W, C]: that is how a device calls the model, and it
lets XNNPACK plan every buffer ahead of time.

Threads: the ExecuTorch Python runtime shares one process-wide XNNPACK threadpool, sized to the CPU count
when first used. The pybindings expose `_unsafe_reset_threadpool(n)` and `_threadpool_get_thread_count()`
(experimental, in executorch.extension.pybindings.portable_lib); "unsafe" because it must not run while a
method is executing. load_pte calls it before loading, so threads=1 gives single-core figures comparable with
LiteRT and ONNX Runtime at one thread. It is global: the last load_pte's setting applies to every program.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from export.calibration import check_calibration

CALIBRATION_BATCH = 64


def _example(input_shape: tuple[int, int, int]) -> tuple[torch.Tensor]:
    return (torch.zeros((1, *input_shape), dtype=torch.float32),)


def _lower_and_write(exported: torch.export.ExportedProgram, out: Path) -> Path:
    """Lower everything XNNPACK supports into its delegate, serialise the program and write it."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(program.buffer)
    return out


def export_pte_float32(model: torch.nn.Module, input_shape: tuple[int, int, int], out: Path) -> Path:
    """Write `model` (NHWC float32 in, probabilities out) as a float32 XNNPACK .pte for one image."""
    return _lower_and_write(torch.export.export(model.eval(), _example(input_shape)), out)


def _quantize(model: torch.nn.Module, input_shape: tuple[int, int, int], calibration: np.ndarray) -> torch.nn.Module:
    """PT2E static int8 for XNNPACK: symmetric per-channel weights, activation ranges from `calibration`."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # Prepared with a dynamic batch so calibration runs in batches: the min/max observers see the same
    # values as one image at a time (the produced .pte is byte-identical) at a fraction of the time.
    example = (torch.zeros((2, *input_shape), dtype=torch.float32),)  # batch 1 would be specialised
    graph = torch.export.export(model.eval(), example, dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for start in range(0, len(calibration), CALIBRATION_BATCH):
            batch = np.ascontiguousarray(calibration[start:start + CALIBRATION_BATCH], dtype=np.float32)
            prepared(torch.from_numpy(batch))
    return convert_pt2e(prepared)


def export_pte_int8(model: torch.nn.Module, input_shape: tuple[int, int, int], calibration: np.ndarray,
                    out: Path) -> Path:
    """Write `model` as an int8 XNNPACK .pte for one image, calibrated on every image in `calibration`."""
    check_calibration(calibration, input_shape)
    quantized = _quantize(model, input_shape, calibration)
    return _lower_and_write(torch.export.export(quantized, _example(input_shape)), out)


def _set_threads(threads: int) -> None:
    """Resize ExecuTorch's process-wide XNNPACK threadpool (see the module docstring)."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if _threadpool_get_thread_count() != threads:
        _unsafe_reset_threadpool(threads)


def load_pte(path: Path, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping one float32 image batch [1, H, W, C] to probabilities [1, classes]."""
    with warnings.catch_warnings():  # executorch.runtime warns on import that its API is experimental
        warnings.simplefilter("ignore")
        from executorch.runtime import Runtime

    _set_threads(threads)
    program = Runtime.get().load_program(Path(path))
    program.load_method("forward")  # load and plan memory once, here; Program caches the loaded method

    def predict(images: np.ndarray) -> np.ndarray:
        if images.shape[0] != 1:
            raise ValueError(f"the .pte takes one image at a time; got a batch of {images.shape[0]}")
        tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        # Through `program` (not a saved Method) so the program outlives every call into it.
        return program.load_method("forward").execute((tensor,))[0].numpy()

    return predict

