"""Model tests: the shared training stage reaches its accuracy, is deterministic, logs progress."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from training.config import ExportConfig, TrainConfig
from training.export import run_export
from training.train import run_training


def test_tiny_reaches_97_percent_on_digits(artifacts):
    meta = json.loads((artifacts.checkpoint_dir("tiny") / "checkpoint.json").read_text())
    assert meta["test_accuracy"] >= 0.97
    assert meta["trainer"] == "torch" and meta["trained_briefly"] is False
    assert len(meta["history"]) == meta["epochs"]


def test_tensorboard_logs_hold_one_point_per_epoch(artifacts):
    meta = json.loads((artifacts.checkpoint_dir("tiny") / "checkpoint.json").read_text())
    events = EventAccumulator(str(artifacts.tensorboard_dir("tiny", "torch")))
    events.Reload()
    assert len(events.Scalars("accuracy/validation")) == meta["epochs"]


@pytest.mark.parametrize("trainer", ["torch", "tf"])
def test_same_seed_gives_same_weights_and_accuracy(tmp_path, trainer):
    results = []
    for run in ("a", "b"):
        cfg = TrainConfig(trainer=trainer, epochs=2, artifacts=tmp_path / run)
        checkpoint = run_training(cfg)
        results.append((checkpoint.meta["test_accuracy"], checkpoint.weights()))
    assert results[0][0] == results[1][0]
    for layer, entry in results[0][1].items():
        for name, array in entry.items():
            np.testing.assert_array_equal(array, results[1][1][layer][name], err_msg=f"{layer}/{name}")


def test_tf_trainer_exports_pass_the_parity_gate(tmp_path):
    run_training(TrainConfig(trainer="tf", epochs=2, artifacts=tmp_path))
    entries = run_export(ExportConfig(model_name="tiny", artifacts=tmp_path))
    assert {entry["format"] for entry in entries} == {"tf-savedmodel", "tflite-float32", "torchserve-mar"}
    assert all(entry["parity"]["max_abs_delta"] <= 1e-5 for entry in entries)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["models"]["tiny"]["trainer"] == "tf"
