"""Measure every on-device format the same way: size, accuracy, agreement, single-image latency.

Latency is single-image, one thread, in the format's own runtime (LiteRT
interpreter, ExecuTorch runtime, onnxruntime), after a warm-up that is not
counted. Figures hold only for the machine they were measured on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

ACCURACY_FLAG_POINTS = 1.0  # quantized formats losing more than this many points are flagged


@dataclass
class EdgeResult:
    format: str
    runtime: str
    path: str
    bytes: int
    ratio_to_savedmodel: float
    accuracy: float
    accuracy_change_points: float
    top1_agreement: float
    max_abs_delta: float
    latency_p50_ms: float
    latency_p99_ms: float
    flagged: bool

    def as_dict(self) -> dict:
        return asdict(self)


def latency_ms(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, warmup: int = 20,
               runs: int = 200) -> tuple[float, float]:
    """Single-image latency p50 and p99 in ms, after `warmup` uncounted calls."""
    for index in range(warmup):
        predict(images[index % len(images)][None])
    times = []
    for index in range(runs):
        image = images[index % len(images)][None]
        started = time.perf_counter()
        predict(image)
        times.append((time.perf_counter() - started) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def predict_all(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Run every image one at a time (on-device programs are exported for batch 1)."""
    return np.concatenate([np.asarray(predict(images[i:i + 1]), dtype=np.float32) for i in range(len(images))])


def measure(fmt: str, runtime: str, path: Path, predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
            labels: np.ndarray, reference: np.ndarray, savedmodel_bytes: int, float_accuracy: float,
            quantized: bool) -> EdgeResult:
    """Everything the edge table reports for one file."""
    probabilities = predict_all(predict, images)
    accuracy = float((probabilities.argmax(1) == labels).mean())
    change = (accuracy - float_accuracy) * 100
    p50, p99 = latency_ms(predict, images)
    size = path.stat().st_size
    return EdgeResult(
        format=fmt, runtime=runtime, path=str(path), bytes=size, ratio_to_savedmodel=size / savedmodel_bytes,
        accuracy=accuracy, accuracy_change_points=change,
        top1_agreement=float((probabilities.argmax(1) == reference.argmax(1)).mean()),
        max_abs_delta=float(np.abs(probabilities - reference).max()), latency_p50_ms=p50, latency_p99_ms=p99,
        flagged=quantized and change < -ACCURACY_FLAG_POINTS)


def installed_bytes(distribution: str) -> int | None:
    """Bytes on disk of an installed package's files (its runtime's cost in an app's environment)."""
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for file in files:
        path = Path(file.locate())
        if path.is_file():
            total += path.stat().st_size
    return total


def format_table(results: list[EdgeResult]) -> str:
    header = (f"{'format':<22} {'runtime':<11} {'bytes':>11} {'x SavedModel':>12} {'accuracy':>9} {'change':>7} "
              f"{'top-1 agree':>11} {'p50 ms':>7} {'p99 ms':>7}")
    lines = [header]
    for r in results:
        flag = "  FLAG: loses > 1 point" if r.flagged else ""
        lines.append(f"{r.format:<22} {r.runtime:<11} {r.bytes:>11,} {r.ratio_to_savedmodel:>12.3f} {r.accuracy:>9.4f} "
                     f"{r.accuracy_change_points:>+7.2f} {r.top1_agreement:>11.2%} {r.latency_p50_ms:>7.3f} "
                     f"{r.latency_p99_ms:>7.3f}{flag}")
    return "\n".join(lines)
