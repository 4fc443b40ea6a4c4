"""Train a spec in PyTorch, deterministically, with per-epoch progress and TensorBoard logs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.tensorboard import SummaryWriter

from training.data import Dataset
from training.parity import accuracy
from training.spec import ModelSpec
from training.torch_model import build_torch_model
from training.transfer import Weights, weights_from_torch


def _accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return accuracy(predict_torch(model, images), labels)


def predict_torch(model: torch.nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Softmax probabilities of an eval-mode model, in batches."""
    model.eval()
    with torch.inference_mode():
        parts = [model(torch.from_numpy(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def train_torch(spec: ModelSpec, data: Dataset, epochs: int, batch_size: int, learning_rate: float,
                seed: int, log_dir: Path) -> tuple[Weights, list[dict]]:
    """Train and return the weights (neutral layout) and one history row per epoch."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    model = build_torch_model(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    order_rng = np.random.default_rng(seed)
    history = []
    with SummaryWriter(str(log_dir)) as writer:
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            model.train()
            order = order_rng.permutation(len(data.y_train))
            losses = []
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                images = torch.from_numpy(data.x_train[index])
                labels = torch.from_numpy(data.y_train[index])
                loss = F.cross_entropy(model.logits(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            row = {"epoch": epoch, "loss": float(np.mean(losses)),
                   "val_accuracy": _accuracy(model, data.x_val, data.y_val),
                   "seconds": time.perf_counter() - started}
            history.append(row)
            writer.add_scalar("loss/train", row["loss"], epoch)
            writer.add_scalar("accuracy/validation", row["val_accuracy"], epoch)
            print(f"[torch] epoch {epoch}/{epochs}  loss {row['loss']:.4f}  "
                  f"val_accuracy {row['val_accuracy']:.4f}  {row['seconds']:.1f}s", flush=True)
    return weights_from_torch(model.eval()), history
