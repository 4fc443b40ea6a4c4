"""Measure every on-device format the same way: size, accuracy, agreement, single-image latency.

Latency is single-image, one thread, in the format's own runtime (LiteRT
interpreter, ExecuTorch runtime, onnxruntime), after a warm-up that is not
counted. Figures hold only for the machine they were measured on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path

import numpy as np

from common.timing import time_calls
from model.parity import FLOAT_TOLERANCE, ParityReport, accuracy, check, compare

ACCURACY_FLAG_POINTS = 1.0  # quantized formats losing more than this many points are flagged
LATENCY_WARMUP = 20  # uncounted calls before timing
LATENCY_RUNS = 200  # timed single-image calls per format


@dataclass
class EdgeResult:
    format: str
    runtime: str
    path: str
    bytes: int
    ratio_to_savedmodel: float
    accuracy: float
    accuracy_change_points: float
    samples: int
    top1_agreement: float
    max_abs_delta: float
    worst_sample: int
    tolerance: float | None  # float32 formats are gated on it; quantized ones are only compared
    latency_p50_ms: float
    latency_p99_ms: float
    flagged: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def parity(self) -> dict:
        """The manifest's parity record, the same fields export writes."""
        return {f.name: getattr(self, f.name) for f in fields(ParityReport)}


def latency_ms(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> tuple[float, float]:
    """Single-image latency p50 and p99 in ms over LATENCY_RUNS calls, after LATENCY_WARMUP uncounted ones."""
    singles = itertools.cycle([images[i:i + 1] for i in range(len(images))])  # sliced before timing
    seconds = time_calls(lambda: predict(next(singles)), LATENCY_WARMUP, LATENCY_RUNS)
    p50, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 99])
    return float(p50), float(p99)


def predict_all(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Run every image one at a time (on-device programs are exported for batch 1)."""
    return np.concatenate([np.asarray(predict(images[i:i + 1]), dtype=np.float32) for i in range(len(images))])


def measure(fmt: str, runtime: str, path: Path, predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
            labels: np.ndarray, reference: np.ndarray, savedmodel_bytes: int, quantized: bool) -> EdgeResult:
    """Everything the edge table reports for one file.

    A float32 format must compute the reference's function: it goes through export's parity gate
    (ParityError if it drifts). A quantized one is compared and flagged if it loses too much accuracy.
    """
    probabilities = predict_all(predict, images)
    report = compare(fmt, reference, probabilities) if quantized else check(fmt, reference, probabilities,
                                                                             FLOAT_TOLERANCE)
    change = (accuracy(probabilities, labels) - accuracy(reference, labels)) * 100
    p50, p99 = latency_ms(predict, images)
    size = path.stat().st_size
    return EdgeResult(
        format=fmt, runtime=runtime, path=str(path), bytes=size, ratio_to_savedmodel=size / savedmodel_bytes,
        accuracy=accuracy(probabilities, labels), accuracy_change_points=change, samples=report.samples,
        top1_agreement=report.top1_agreement, max_abs_delta=report.max_abs_delta, worst_sample=report.worst_sample,
        tolerance=report.tolerance, latency_p50_ms=p50, latency_p99_ms=p99,
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
