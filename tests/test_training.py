"""Model tests: the shared training stage reaches its accuracy, is deterministic, logs progress."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from export.config import ExportConfig
from export.run import run_export
from training.config import TrainConfig
from training.recipe import Recipe, shifted_batches
from training.train import run_training


def test_tiny_reaches_97_percent_on_digits(artifacts):
    """The bar is 97%; the recipe reaches about 99% (98.5% to 99.6% over seeds 0-4), so another CPU's rounding,
    which moves the weights slightly, does not take it below the bar."""
    meta = json.loads((artifacts.checkpoint_dir("tiny") / "checkpoint.json").read_text())
    assert meta["test_accuracy"] >= 0.97
    assert meta["trainer"] == "torch" and meta["trained_briefly"] is False
    assert len(meta["history"]) == meta["epochs"]


def test_shifted_batches_cover_the_epoch_once_each_moved_within_max_shift():
    images = np.random.default_rng(0).random((70, 8, 8, 1), dtype=np.float32)
    labels = np.arange(70)
    recipe = Recipe(epochs=1, batch_size=32, learning_rate=1e-3, seed=0, max_shift=2)
    batches = list(shifted_batches(images, labels, recipe, np.random.default_rng(5)))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    assert sorted(np.concatenate([y for _, y in batches])) == list(labels)
    offsets = set()
    for batch, index in batches:
        matches = [(down, right) for down in range(-2, 3) for right in range(-2, 3)
                   if np.array_equal(batch, np.roll(images[index], (down, right), axis=(1, 2)))]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert offsets != {(0, 0)}  # the augmentation really moves images
    again = list(shifted_batches(images, labels, recipe, np.random.default_rng(5)))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))  # seeded: same batches
    unshifted = Recipe(epochs=1, batch_size=32, learning_rate=1e-3, seed=0, max_shift=0)
    assert all(np.array_equal(x, images[y]) for x, y in shifted_batches(images, labels, unshifted,
                                                                        np.random.default_rng(5)))


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
