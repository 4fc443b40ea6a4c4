"""Edge: every TFLite file loads in LiteRT in a fresh process and agrees with the reference; bad input exits 2."""

import json
import subprocess
import sys

import numpy as np
import pytest

from common.fsutil import sha256_of
from model.checkpoint import load_checkpoint
from model.parity import FLOAT_TOLERANCE
from model.reference import build_both
from model.spec import get_spec
from tests.conftest import run_module

FORMATS = {"tflite-float32", "tflite-float16", "tflite-dynamic-int8", "tflite-int8", "tflite-int8-io",
           "executorch-float32", "executorch-int8", "onnx-float32", "onnx-dynamic-int8"}


@pytest.fixture(scope="module")
def reference(artifacts):
    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    images, labels = checkpoint.test_set()
    return images, labels, build_both(checkpoint).reference_probabilities(images)


def test_every_format_is_measured_and_recorded(edge, artifacts):
    assert {r["format"] for r in edge["results"]} == FORMATS
    manifest = {a["path"]: a for a in json.loads(artifacts.manifest.read_text())["artifacts"]}
    for result in edge["results"]:
        file = artifacts.root / result["path"]
        entry = manifest[result["path"]]
        assert entry["sha256"] == sha256_of(file) and entry["bytes"] == result["bytes"] == file.stat().st_size
        assert entry["parity"] == {key: result[key] for key in entry["parity"]}
        assert entry["parity"]["samples"] == 270 and 0 <= entry["parity"]["worst_sample"] < 270
        gated = result["format"].endswith("float32")
        assert entry["parity"]["tolerance"] == (1e-5 if gated else None), result["format"]
        assert result["latency_p50_ms"] > 0
    assert json.loads((artifacts.results_dir / "edge.json").read_text())["results"] == edge["results"]


def test_quantization_parameter_bytes_are_counted_only_where_there_are_any(edge):
    counted = edge["tflite_quantization_parameter_bytes"]
    assert counted["tflite-float32"] == counted["tflite-float16"] == 0
    assert 0 < counted["tflite-dynamic-int8"] < counted["tflite-int8"] == counted["tflite-int8-io"]
    int8_io = next(r for r in edge["results"] if r["format"] == "tflite-int8-io")
    assert counted["tflite-int8-io"] < int8_io["bytes"]


def test_a_drifting_float32_format_fails_the_gate_and_a_lossy_quantized_one_is_flagged(edge, reference, tmp_path):
    from edge.evaluate import measure
    from model.parity import ParityError

    images, labels, expected = reference
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"0" * 100)
    lookup = {image.tobytes(): index for index, image in enumerate(images)}
    answers = expected.copy()
    answers[:20] = np.roll(answers[:20], 1, axis=1)  # 20 of 270 answers now name another class

    def drifted(batch):
        return answers[[lookup[image.tobytes()] for image in batch]]

    with pytest.raises(ParityError, match="parity gate failed for onnx-float32"):
        measure("onnx-float32", "onnxruntime", model_file, drifted, images, labels, expected, 1000, quantized=False)
    lossy = measure("onnx-dynamic-int8", "onnxruntime", model_file, drifted, images, labels, expected, 1000,
                    quantized=True)
    assert lossy.flagged and lossy.accuracy_change_points < -1 and lossy.tolerance is None
    assert lossy.top1_agreement == pytest.approx(250 / 270)


LITERT_ALONE = """
import json, sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter(model_path=sys.argv[1], num_threads=1).get_signature_runner('serving_default')
(input_name, info_in), = runner.get_input_details().items()
(output_name, info_out), = runner.get_output_details().items()
images = np.load(sys.argv[2])
scale, zero = info_in['quantization']
if info_in['dtype'] == np.int8:
    images = np.clip(np.round(images / scale + zero), -128, 127).astype(np.int8)
rows = [runner(**{input_name: images[i:i + 1]})[output_name] for i in range(len(images))]
out = np.concatenate(rows).astype(np.float32)
scale, zero = info_out['quantization']
if info_out['dtype'] == np.int8:
    out = (out - zero) * scale
np.save(sys.argv[3], out)
print(json.dumps({'input': np.dtype(info_in['dtype']).name, 'output': np.dtype(info_out['dtype']).name}))
"""


def float16_bound() -> float:
    """max |delta| float16 weights may cause, from the format's precision and the model's depth.

    Storing a weight in float16 rounds it to within half a float16 epsilon, relative; that error
    enters once per weighted layer and, to first order, the layers' errors add. The outputs are
    probabilities (scale 1), so the bound is depth x epsilon x 1. It does not depend on which
    kernels one CPU picks, as a measured bound would (0.005 held on one machine, not another).
    """
    weighted = [layer for layer in get_spec("tiny").layers() if layer.kind in ("conv", "depthwise", "dense")]
    return len(weighted) * float(np.finfo(np.float16).eps) * 1.0


# Tolerances: float32 formats pass export's 1e-5 parity gate; quantized ones are checked on what matters on a device.
TOLERANCE = {"float32": FLOAT_TOLERANCE, "float16": float16_bound()}


@pytest.mark.parametrize("variant", ["float32", "float16", "dynamic-int8", "int8", "int8-io"])
def test_tflite_loads_in_litert_in_a_fresh_process_and_agrees(edge, artifacts, reference, tmp_path, variant):
    images, labels, expected = reference
    model_file = artifacts.root / next(r["path"] for r in edge["results"] if r["format"] == f"tflite-{variant}")
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "litert_alone.py"
    script.write_text(LITERT_ALONE)
    done = subprocess.run([sys.executable, "-I", str(script), str(model_file), str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npy")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    io = json.loads(done.stdout.strip().splitlines()[-1])
    probabilities = np.load(tmp_path / "out.npy")
    agreement = (probabilities.argmax(1) == expected.argmax(1)).mean()
    if variant in TOLERANCE:
        bound = TOLERANCE[variant]
        assert np.abs(probabilities - expected).max() <= bound
        # within the bound only a sample whose top two answers are closer than 2 x bound may change its argmax
        top_two = np.sort(expected, axis=1)[:, -2:]
        clear = top_two[:, 1] - top_two[:, 0] > 2 * bound
        assert (probabilities.argmax(1) == expected.argmax(1))[clear].all()
    else:  # quantized: at least 97% top-1 agreement, at most 1 point of accuracy lost
        assert agreement >= 0.97
        assert (probabilities.argmax(1) == labels).mean() >= (expected.argmax(1) == labels).mean() - 0.01
    assert io == ({"input": "int8", "output": "int8"} if variant == "int8-io"
                  else {"input": "float32", "output": "float32"})
    sidecar = json.loads(model_file.with_name(model_file.name + ".json").read_text())
    assert {"input": sidecar["input"]["dtype"], "output": sidecar["output"]["dtype"]} == io


def _sidecar(artifacts, edge, fmt):
    path = next(r["path"] for r in edge["results"] if r["format"] == fmt)
    return json.loads((artifacts.root / (path + ".json")).read_text())


def test_sidecars_carry_labels_normalization_and_int8_quantization(edge, artifacts):
    sidecar = _sidecar(artifacts, edge, "tflite-int8-io")
    assert sidecar["labels"] == [str(d) for d in range(10)]
    assert sidecar["normalization"].startswith("digits intensity")
    assert sidecar["input"]["dtype"] == "int8" and sidecar["input"]["quantization"]["scale"] > 0
    assert sidecar["input"]["shape"][1:] == [32, 32, 1] and sidecar["output"]["shape"][1:] == [10]


def test_sidecar_shapes_say_what_each_runtime_accepts(edge, artifacts, reference):
    """.onnx takes any batch (-1), .pte exactly one image (1): an app sizes its buffers from this."""
    from edge.executorch_export import load_pte
    from edge.onnx_export import load_onnx

    images = reference[0][:3]
    for fmt, load in (("onnx-float32", load_onnx), ("executorch-float32", load_pte)):
        sidecar = _sidecar(artifacts, edge, fmt)
        predict = load(artifacts.root / next(r["path"] for r in edge["results"] if r["format"] == fmt))
        if sidecar["input"]["shape"][0] == -1:
            assert predict(images).shape == (3, 10), fmt
        else:
            assert sidecar["input"]["shape"][0] == 1
            with pytest.raises(ValueError, match="one image at a time"):
                predict(images)
    assert _sidecar(artifacts, edge, "onnx-float32")["input"]["shape"] == [-1, 32, 32, 1]
    assert _sidecar(artifacts, edge, "executorch-int8")["input"]["shape"] == [1, 32, 32, 1]


@pytest.mark.parametrize(("setup", "fragment"), [
    ("no-savedmodel", "no SavedModel under"),
    ("no-reference", "no reference answers for model 'tiny'"),
    ("empty-calibration", "needs calibration images; got none"),
    ("wrong-shape-calibration", "have shape [8, 8, 1]; the model takes [32, 32, 1]"),
    ("npy-calibration", "is a single array; expected an .npz"),
    ("text-calibration", "must be numbers; got dtype <U"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(artifacts, tmp_path, setup, fragment):
    import shutil

    root = tmp_path / "a"
    shutil.copytree(artifacts.checkpoint_dir("tiny"), root / "checkpoints" / "tiny")
    if setup != "no-savedmodel":
        shutil.copytree(artifacts.tf_model_base("tiny"), root / "models" / "tf" / "tiny")
    if setup not in ("no-savedmodel", "no-reference"):
        shutil.copytree(artifacts.reference_file("tiny").parent, root / "models" / "reference")
    args = ["edge", "--artifacts", str(root)]
    if setup.endswith("calibration"):
        args += ["--calibration", str(_bad_calibration_file(tmp_path, setup))]
    done = run_module(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and fragment in lines[0], done.stderr[-2000:]
    assert not (root / "models" / "edge").exists() or not list((root / "models" / "edge").iterdir())


def _bad_calibration_file(directory, setup: str):
    if setup == "npy-calibration":
        np.save(directory / "cal.npy", np.zeros((4, 32, 32, 1), np.float32))
        return directory / "cal.npy"
    images = {"empty-calibration": np.zeros((0, 32, 32, 1), np.float32),
              "wrong-shape-calibration": np.zeros((4, 8, 8, 1), np.float32),
              "text-calibration": np.full((4, 32, 32, 1), "x")}[setup]
    np.savez(directory / "cal.npz", images=images)
    return directory / "cal.npz"
