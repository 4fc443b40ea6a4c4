"""`python -m training train`: load data, train in one framework, write a checkpoint."""

from __future__ import annotations

import json
import time

import numpy as np

from common.environment import host_record, package_versions
from common.fsutil import publish, staging_dir
from model.checkpoint import Checkpoint, load_checkpoint, save_weights
from model.parity import accuracy
from model.spec import get_spec
from training.config import TrainConfig
from training.data import Dataset, load_dataset

CALIBRATION_IMAGES = 256


def _limit_training_images(data: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or limit >= len(data.y_train):
        return data
    keep = np.random.default_rng(seed).permutation(len(data.y_train))[:limit]
    data.x_train, data.y_train = data.x_train[keep], data.y_train[keep]
    return data


def _train(cfg: TrainConfig, data: Dataset):
    spec = get_spec(cfg.profile).with_input(data.x_train.shape[1:], len(data.labels))
    log_dir = cfg.paths.tensorboard_dir(cfg.model_name, cfg.trainer)
    if cfg.trainer == "torch":
        from training.train_torch import train_torch
        return spec, *train_torch(spec, data, cfg.recipe, log_dir)
    from training.train_tf import train_tf
    return spec, *train_tf(spec, data, cfg.recipe, log_dir)


def run_training(cfg: TrainConfig) -> Checkpoint:
    """Train per `cfg` and publish artifacts/checkpoints/<model>/ atomically."""
    spec = get_spec(cfg.profile)
    final = cfg.paths.checkpoint_dir(cfg.model_name)
    with staging_dir(final.parent) as scratch:  # checks the output is writable before any work
        data = _limit_training_images(load_dataset(cfg.data, spec.input_shape, cfg.seed),
                                      cfg.max_train_images, cfg.seed)
        print(f"data  {data.describe()}", flush=True)
        print(f"train profile {cfg.profile}, trainer {cfg.trainer}, {cfg.epochs} epochs, seed {cfg.seed}", flush=True)
        started = time.perf_counter()
        spec, weights, history = _train(cfg, data)
        train_seconds = time.perf_counter() - started

        save_weights(weights, str(scratch / "weights.npz"))
        np.savez(scratch / "test_set.npz", images=data.x_test, labels=data.y_test)
        np.savez(scratch / "calibration.npz", images=data.x_train[:CALIBRATION_IMAGES])
        meta = {
            "model_name": cfg.model_name, "profile": cfg.profile, "trainer": cfg.trainer,
            "dataset": data.name, "data_source": cfg.data, "labels": data.labels,
            "normalization": data.normalization, "input_shape": list(spec.input_shape),
            "multiply_accumulates": spec.multiply_accumulates(),
            "seed": cfg.seed, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate, "learning_rate_schedule": "cosine decay to 0",
            "max_shift": cfg.max_shift, "train_images": int(len(data.y_train)),
            "trained_briefly": cfg.trained_briefly, "train_seconds": round(train_seconds, 2),
            "history": history, "tools": package_versions(), "host": host_record(),
        }
        from model.reference import build_both  # imports both frameworks: only once input is valid

        checkpoint = Checkpoint(scratch, meta)
        x_test, y_test = data.x_test, data.y_test
        probabilities = build_both(checkpoint).reference_probabilities(x_test)
        meta["test_accuracy"] = accuracy(probabilities, y_test)
        (scratch / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        publish(scratch, final)
    print(f"done  test accuracy {meta['test_accuracy']:.4f} in {train_seconds:.1f}s -> {final}", flush=True)
    return load_checkpoint(final)
