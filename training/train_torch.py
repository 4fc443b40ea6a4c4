"""Train a spec in PyTorch, deterministically, with per-epoch progress and TensorBoard logs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter

from model.parity import accuracy
from model.spec import ModelSpec
from model.torch_model import build_torch_model, predict_torch
from model.transfer import Weights, weights_from_torch
from training.data import Dataset
from training.recipe import Recipe, epoch_line, shifted_batches


def _accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return accuracy(predict_torch(model, images), labels)


def train_torch(spec: ModelSpec, data: Dataset, recipe: Recipe, log_dir: Path) -> tuple[Weights, list[dict]]:
    """Train and return the weights (neutral layout) and one history row per epoch."""
    torch.manual_seed(recipe.seed)
    torch.use_deterministic_algorithms(True)
    model = build_torch_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.total_steps(len(data.y_train)))
    batch_rng = np.random.default_rng(recipe.seed)
    history = []
    with SummaryWriter(str(log_dir)) as writer:
        for epoch in range(1, recipe.epochs + 1):
            started = time.perf_counter()
            model.train()
            losses = []
            for images, labels in shifted_batches(data.x_train, data.y_train, recipe, batch_rng):
                loss = F.cross_entropy(model.logits(torch.from_numpy(images)), torch.from_numpy(labels))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
            row = {"epoch": epoch, "loss": float(np.mean(losses)),
                   "val_accuracy": _accuracy(model, data.x_val, data.y_val),
                   "seconds": time.perf_counter() - started}
            history.append(row)
            writer.add_scalar("loss/train", row["loss"], epoch)
            writer.add_scalar("accuracy/validation", row["val_accuracy"], epoch)
            print(epoch_line("torch", row, recipe.epochs), flush=True)
    return weights_from_torch(model.eval()), history
