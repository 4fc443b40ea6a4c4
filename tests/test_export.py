"""Export tests: the manifest tells the truth, formats load on their own, the parity gate bites."""

import json
import subprocess
import sys
import zipfile
from importlib.metadata import version

import numpy as np
import pytest

from common.errors import UsageError
from common.fsutil import sha256_of
from export.savedmodel import export_savedmodel, run_savedmodel
from model.checkpoint import load_checkpoint
from model.parity import ParityError, check
from model.reference import build_both

EXPORT_FORMATS = {"tf-savedmodel", "tflite-float32", "torchserve-mar"}


def _manifest(artifacts):
    return json.loads(artifacts.manifest.read_text())


def test_manifest_sha256_and_sizes_match_the_files(artifacts):
    entries = _manifest(artifacts)["artifacts"]  # other stages (edge) may have added theirs: check them all
    assert {entry["format"] for entry in entries} >= EXPORT_FORMATS
    for entry in entries:
        path = artifacts.root / entry["path"]
        files = entry.get("files") or [entry]
        for item in files:
            file = artifacts.root / item["path"]
            assert file.stat().st_size == item["bytes"], item["path"]
            assert sha256_of(file) == item["sha256"], item["path"]
        if path.is_dir():
            assert sum(f["bytes"] for f in files) == entry["bytes"]
            assert {str(p.relative_to(artifacts.root)) for p in path.rglob("*") if p.is_file()} == \
                {f["path"] for f in files}


def test_manifest_records_parity_accuracy_and_tools(artifacts):
    manifest = _manifest(artifacts)
    model = manifest["models"]["tiny"]
    exported = [entry for entry in manifest["artifacts"] if entry["format"] in EXPORT_FORMATS]
    assert len(exported) == len(EXPORT_FORMATS)
    for entry in exported:
        parity = entry["parity"]
        assert parity["samples"] == 270 and parity["format"] == entry["format"]
        assert parity["tolerance"] == 1e-5 and parity["max_abs_delta"] <= parity["tolerance"]
        assert parity["top1_agreement"] == 1.0 and 0 <= parity["worst_sample"] < 270
        assert entry["test_accuracy"] == pytest.approx(model["test_accuracy"])
        assert entry["tools"]
    assert model["tools"]["torch"] == version("torch") and model["tools"]["tensorflow"] == version("tensorflow")


SAVEDMODEL_ALONE = """
import sys, numpy as np, tensorflow as tf
PROJECT = {'training', 'serving', 'common', 'edge', 'loadtests'}
signature = tf.saved_model.load(sys.argv[1]).signatures['serving_default']
images = np.load(sys.argv[2])
inputs = signature.structured_input_signature[1]
assert list(inputs) == ['images'] and inputs['images'].dtype == tf.float32, inputs
np.save(sys.argv[3], signature(images=tf.constant(images))['probabilities'].numpy())
assert not PROJECT & {m.split('.')[0] for m in sys.modules}, 'project code was imported'
"""


def test_savedmodel_loads_in_a_fresh_interpreter_without_this_repo(artifacts, tmp_path):
    images, _ = load_checkpoint(artifacts.checkpoint_dir("tiny")).test_set()
    np.save(tmp_path / "images.npy", images[:32])
    script = tmp_path / "alone.py"
    script.write_text(SAVEDMODEL_ALONE)
    version_dir = artifacts.tf_version_dir("tiny", 1)
    done = subprocess.run([sys.executable, "-I", str(script), str(version_dir), str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npy")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reference = build_both(load_checkpoint(artifacts.checkpoint_dir("tiny"))).reference_probabilities(images[:32])
    assert np.abs(np.load(tmp_path / "out.npy") - reference).max() <= 1e-5


def test_mar_holds_an_exported_program_and_no_pickles(artifacts):
    with zipfile.ZipFile(artifacts.torch_model_store / "tiny.mar") as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        meta = json.loads(archive.read("model_meta.json"))
    assert {"model.pt2", "handler.py", "rest_codec.py", "numeric_json.py", "model_meta.json"} <= names
    assert not [n for n in names if n.endswith((".pkl", ".pth", ".pickle"))]
    assert manifest["model"]["handler"] == "handler.py"
    assert meta["input_shape"] == [32, 32, 1] and meta["labels"] == [str(d) for d in range(10)]


def test_tflite_has_a_named_serving_signature(artifacts):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifacts.edge_dir / "tiny_float32.tflite"))
    signatures = interpreter.get_signature_list()
    assert signatures["serving_default"]["inputs"] == ["images"]
    assert signatures["serving_default"]["outputs"] == ["probabilities"]


def test_parity_gate_fails_when_one_weight_is_perturbed(artifacts, tmp_path):
    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    models = build_both(checkpoint)
    images, _ = checkpoint.test_set()
    reference = models.reference_probabilities(images)
    head = models.keras_model.get_layer("head")
    kernel, bias = head.get_weights()
    kernel[0, 0] += 0.5  # one weight of the whole model
    head.set_weights([kernel, bias])
    tampered = export_savedmodel(models.keras_model, tmp_path / "1")
    with pytest.raises(ParityError, match=r"tf-savedmodel.*worst is test sample \d+"):
        check("tf-savedmodel", reference, run_savedmodel(tampered, images), 1e-5)


def test_export_writes_the_reference_answers_later_stages_read(artifacts):
    from common.reference import load_reference

    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    images, labels = checkpoint.test_set()
    answers = load_reference(artifacts, "tiny")
    np.testing.assert_array_equal(answers.images, images)
    np.testing.assert_array_equal(answers.labels, labels)
    np.testing.assert_array_equal(answers.probabilities, build_both(checkpoint).reference_probabilities(images))
    assert answers.weights_sha256 == sha256_of(checkpoint.directory / "weights.npz")
    listed = [a for a in _manifest(artifacts)["artifacts"] if a["format"] == "reference-answers"]
    assert [a["path"] for a in listed] == ["models/reference/tiny.npz"]


def test_reference_answers_from_other_weights_are_refused(artifacts, tmp_path):
    import shutil

    from common.paths import ArtifactPaths
    from common.reference import Reference, load_reference, write_reference

    other = ArtifactPaths(tmp_path)
    shutil.copytree(artifacts.checkpoint_dir("tiny"), other.checkpoint_dir("tiny"))
    with pytest.raises(UsageError, match="run 'make export' first"):
        load_reference(other, "tiny")
    other.reference_file("tiny").parent.mkdir(parents=True)
    answers = load_reference(artifacts, "tiny")
    write_reference(other.reference_file("tiny"), Reference(answers.images, answers.labels, answers.probabilities,
                                                            "0" * 64))
    with pytest.raises(UsageError, match="other weights"):
        load_reference(other, "tiny")
