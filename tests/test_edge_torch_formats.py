"""ExecuTorch (.pte) and ONNX files from `python -m edge`, each checked in a fresh runtime-only process.

Every published file is loaded by a small script run with `python -I` that imports numpy and the runtime
but nothing from this repository, as an app on a device would, and compared with the reference model's
predictions and with the repository's own in-process runners.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.evaluate import predict_all
from edge.executorch_export import export_pte_int8, load_pte
from edge.onnx_export import load_onnx
from model.checkpoint import load_checkpoint
from model.parity import accuracy
from model.reference import build_both

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

FORMATS = ("executorch-float32", "executorch-int8", "onnx-float32", "onnx-dynamic-int8")


@dataclass
class Published:
    files: dict[str, Path]  # by format
    images: np.ndarray
    labels: np.ndarray
    reference: np.ndarray
    outputs: dict[str, np.ndarray]  # by format, from the fresh processes


def _start_fresh_process(runner: Path, model_file: Path, images_file: Path, out_file: Path) -> subprocess.Popen:
    """Start `python -I runner model images out`; -I keeps this repository (and PYTHONPATH) off sys.path."""
    command = [sys.executable, "-I", str(runner), str(model_file), str(images_file), str(out_file)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, out_file: Path) -> np.ndarray:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return np.load(out_file)


@pytest.fixture(scope="module")
def models(artifacts):
    return build_both(load_checkpoint(artifacts.checkpoint_dir("tiny")))


@pytest.fixture(scope="module")
def published(artifacts, edge, models, tmp_path_factory) -> Published:
    """The four files `python -m edge` published, and each one's output from a fresh runtime-only process."""
    images, labels = load_checkpoint(artifacts.checkpoint_dir("tiny")).test_set()
    scripts = tmp_path_factory.mktemp("runners")
    runners = {".pte": scripts / "run_pte.py", ".onnx": scripts / "run_onnx.py"}
    runners[".pte"].write_text(PTE_RUNNER, encoding="utf-8")
    runners[".onnx"].write_text(ONNX_RUNNER, encoding="utf-8")
    images_file = scripts / "images.npy"
    np.save(images_file, images.astype(np.float32))
    files = {r["format"]: artifacts.root / r["path"] for r in edge["results"] if r["format"] in FORMATS}
    started = {fmt: _start_fresh_process(runners[file.suffix], file, images_file, scripts / f"{fmt}.npy")
               for fmt, file in files.items()}  # all four at once: importing ExecuTorch alone takes ~10 s
    outputs = {fmt: _finish(process, scripts / f"{fmt}.npy") for fmt, process in started.items()}
    return Published(files, images, labels, models.reference_probabilities(images), outputs)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def test_each_format_is_one_file(published):
    """No external-data side-car next to the .onnx: one model file plus its .json sidecar per format."""
    directory = published.files["onnx-float32"].parent
    names = {p.name for p in directory.iterdir()}
    for file in published.files.values():
        assert {file.name, file.name + ".json"} <= names
    assert not [name for name in names if name.endswith(".data")]


def test_int8_files_are_smaller(published):
    size = {fmt: file.stat().st_size for fmt, file in published.files.items()}
    assert size["executorch-int8"] < 0.75 * size["executorch-float32"]
    assert size["onnx-dynamic-int8"] < 0.75 * size["onnx-float32"]


@pytest.mark.parametrize("fmt", ["executorch-float32", "onnx-float32"])
def test_float32_matches_reference(published, fmt):
    output = published.outputs[fmt]
    assert output.shape == published.reference.shape
    assert np.abs(output - published.reference).max() <= FLOAT32_MAX_DELTA
    assert _agreement(output, published.reference) == 1.0


@pytest.mark.parametrize("fmt, float32_fmt", [("executorch-int8", "executorch-float32"),
                                              ("onnx-dynamic-int8", "onnx-float32")])
def test_int8_close_to_reference(published, fmt, float32_fmt):
    output = published.outputs[fmt]
    assert output.shape == published.reference.shape
    assert _agreement(output, published.reference) >= INT8_MIN_AGREEMENT
    float32_accuracy = accuracy(published.outputs[float32_fmt], published.labels)
    assert abs(accuracy(output, published.labels) - float32_accuracy) <= INT8_MAX_ACCURACY_DROP


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_measured_runners_match_a_bare_runtime(published, fmt):
    """What `python -m edge` measures (predict_all over load_pte / load_onnx) is what a bare runtime gives."""
    load = load_pte if fmt.startswith("executorch") else load_onnx
    in_process = predict_all(load(published.files[fmt]), published.images)
    np.testing.assert_allclose(in_process, published.outputs[fmt], rtol=0, atol=1e-6)


def test_onnx_batch_dimension_is_dynamic(published):
    batch = load_onnx(published.files["onnx-float32"])(published.images[:16])
    np.testing.assert_allclose(batch, published.outputs["onnx-float32"][:16], rtol=0, atol=1e-6)


@pytest.mark.parametrize("calibration_shape, message", [
    (lambda h, w, c: (0, h, w, c), "needs calibration images"),
    (lambda h, w, c: (4, h + 1, w, c), "calibration images have shape"),
])
def test_int8_pte_rejects_bad_calibration(models, tmp_path, calibration_shape, message):
    shape = tuple(models.torch_model.spec.input_shape)
    calibration = np.zeros(calibration_shape(*shape), np.float32)
    with pytest.raises(ValueError, match=message):
        export_pte_int8(models.torch_model, shape, calibration, tmp_path / "never.pte")
    assert not (tmp_path / "never.pte").exists()
