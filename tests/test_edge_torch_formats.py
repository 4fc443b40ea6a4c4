"""ExecuTorch (.pte) and ONNX files from the PyTorch model, each checked in a fresh runtime-only process.

Every file is loaded by a small script run with `python -I` that imports numpy and the runtime but nothing
from this repository, as an app on a device would, and compared with the reference model's predictions.
Measured on the tiny model (270 test images): float32 .pte max |delta| 1.9e-6 and float32 .onnx 2.0e-6,
both 100% top-1 agreement; int8 .pte 100% and int8 .onnx 99.6% agreement, accuracy within 0.4 points.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.executorch_export import export_pte_float32, export_pte_int8, run_pte
from edge.onnx_export import export_onnx_float32, load_onnx, quantize_onnx_dynamic_int8, run_onnx
from training.checkpoint import load_checkpoint
from training.reference import build_both

FLOAT32_MAX_DELTA = 1e-5
INT8_MIN_AGREEMENT = 0.97
INT8_MAX_ACCURACY_DROP = 0.01

# Both runners take one image per call, as a device does, and use one thread.
PTE_RUNNER = """
import sys

import numpy as np
import torch
from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
from executorch.runtime import Runtime

model_file, images_file, out_file = sys.argv[1:4]
_unsafe_reset_threadpool(1)
program = Runtime.get().load_program(model_file)
method = program.load_method("forward")
images = np.load(images_file)
outputs = [method.execute((torch.from_numpy(images[i:i + 1]),))[0].numpy() for i in range(len(images))]
np.save(out_file, np.concatenate(outputs))
"""

ONNX_RUNNER = """
import sys

import numpy as np
import onnxruntime as ort

model_file, images_file, out_file = sys.argv[1:4]
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
images = np.load(images_file)
outputs = [session.run(["probabilities"], {"images": images[i:i + 1]})[0] for i in range(len(images))]
np.save(out_file, np.concatenate(outputs))
"""

FILES = {"float32_pte": "model.pte", "int8_pte": "model_int8.pte",
         "float32_onnx": "model.onnx", "int8_onnx": "model_int8.onnx"}


@dataclass
class Exported:
    directory: Path
    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray
    outputs: dict[str, np.ndarray]  # by FILES key, from the fresh processes

    def file(self, kind: str) -> Path:
        return self.directory / FILES[kind]


def _start_fresh_process(runner: Path, model_file: Path, images_file: Path) -> tuple[subprocess.Popen, Path]:
    """Start `python -I runner model images out`; -I keeps this repository (and PYTHONPATH) off sys.path."""
    out_file = model_file.with_suffix(model_file.suffix + ".out.npy")
    command = [sys.executable, "-I", str(runner), str(model_file), str(images_file), str(out_file)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out_file


def _finish(started: tuple[subprocess.Popen, Path]) -> np.ndarray:
    process, out_file = started
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return np.load(out_file)


@pytest.fixture(scope="module")
def models(artifacts):
    return build_both(load_checkpoint(artifacts.checkpoint_dir("tiny")))


@pytest.fixture(scope="module")
def exported(artifacts, models, tmp_path_factory) -> Exported:
    """All four files exported from the trained tiny model, and each one's output from a fresh process.

    Importing ExecuTorch's Python runtime takes ~10 s (it pulls in the exir compiler stack), so each runner
    starts as soon as its file exists and they run alongside the remaining exports.
    """
    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    images, labels = checkpoint.test_set()
    shape = tuple(checkpoint.spec.input_shape)
    directory = tmp_path_factory.mktemp("edge_torch")
    scripts = tmp_path_factory.mktemp("runners")
    runners = {".pte": scripts / "run_pte.py", ".onnx": scripts / "run_onnx.py"}
    runners[".pte"].write_text(PTE_RUNNER, encoding="utf-8")
    runners[".onnx"].write_text(ONNX_RUNNER, encoding="utf-8")
    images_file = scripts / "images.npy"
    np.save(images_file, images.astype(np.float32))

    def start(kind: str) -> tuple[subprocess.Popen, Path]:
        model_file = directory / FILES[kind]
        return _start_fresh_process(runners[model_file.suffix], model_file, images_file)

    started = {}
    export_pte_float32(models.torch_model, shape, directory / FILES["float32_pte"])
    started["float32_pte"] = start("float32_pte")
    export_pte_int8(models.torch_model, shape, checkpoint.calibration_images(), directory / FILES["int8_pte"])
    started["int8_pte"] = start("int8_pte")
    export_onnx_float32(models.torch_model, shape, directory / FILES["float32_onnx"])
    started["float32_onnx"] = start("float32_onnx")
    quantize_onnx_dynamic_int8(directory / FILES["float32_onnx"], directory / FILES["int8_onnx"])
    started["int8_onnx"] = start("int8_onnx")
    outputs = {kind: _finish(process) for kind, process in started.items()}
    return Exported(directory, images, labels, models.reference_probabilities(images), outputs)
def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def _accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def test_exports_are_single_files(exported):
    """One file per format: no external-data side-car next to the .onnx, nothing else written."""
    assert sorted(p.name for p in exported.directory.iterdir() if not p.name.endswith(".out.npy")) == sorted(
        FILES.values())
    for name in FILES.values():
        assert (exported.directory / name).stat().st_size > 0


def test_int8_files_are_smaller(exported):
    assert exported.file("int8_pte").stat().st_size < 0.75 * exported.file("float32_pte").stat().st_size
    assert exported.file("int8_onnx").stat().st_size < 0.75 * exported.file("float32_onnx").stat().st_size


@pytest.mark.parametrize("kind", ["float32_pte", "float32_onnx"])
def test_float32_matches_reference(exported, kind):
    output = exported.outputs[kind]
    assert output.shape == exported.reference.shape
    assert np.abs(output - exported.reference).max() <= FLOAT32_MAX_DELTA
    assert _agreement(output, exported.reference) == 1.0


@pytest.mark.parametrize("kind, float32_kind", [("int8_pte", "float32_pte"), ("int8_onnx", "float32_onnx")])
def test_int8_close_to_reference(exported, kind, float32_kind):
    output = exported.outputs[kind]
    assert output.shape == exported.reference.shape
    assert _agreement(output, exported.reference) >= INT8_MIN_AGREEMENT
    float32_accuracy = _accuracy(exported.outputs[float32_kind], exported.labels)
    assert abs(_accuracy(output, exported.labels) - float32_accuracy) <= INT8_MAX_ACCURACY_DROP


@pytest.mark.parametrize("kind", list(FILES))
def test_in_process_runners_match_fresh_process(exported, kind):
    """The repository's own runners give what a bare runtime gives."""
    run = run_pte if kind.endswith("pte") else run_onnx
    np.testing.assert_allclose(run(exported.file(kind), exported.images), exported.outputs[kind], rtol=0, atol=1e-6)


def test_onnx_batch_dimension_is_dynamic(exported):
    batch = load_onnx(exported.file("float32_onnx"))(exported.images[:16])
    np.testing.assert_allclose(batch, exported.outputs["float32_onnx"][:16], rtol=0, atol=1e-6)


@pytest.mark.parametrize("calibration_shape, message", [
    (lambda h, w, c: (0, h, w, c), "needs calibration images"),
    (lambda h, w, c: (4, h + 1, w, c), "calibration images are"),
])
def test_int8_pte_rejects_bad_calibration(models, tmp_path, calibration_shape, message):
    shape = tuple(models.torch_model.spec.input_shape)
    calibration = np.zeros(calibration_shape(*shape), np.float32)
    with pytest.raises(ValueError, match=message):
        export_pte_int8(models.torch_model, shape, calibration, tmp_path / "never.pte")
    assert not (tmp_path / "never.pte").exists()
