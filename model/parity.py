"""The parity gate: an exported format must compute the reference model's function."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# max |delta| of probabilities a float32 export may differ from the reference by. float32 formats differ from
# the reference only in summation order and fused kernels: about one float32 epsilon (1.2e-7) per weighted layer,
# 1.7e-6 for tiny's 14. The gate allows six times that, so another CPU's kernels pass and a wrong weight fails.
FLOAT_TOLERANCE = 1e-5


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of predicted probabilities against integer labels."""
    return float((np.asarray(probabilities).argmax(1) == labels).mean())


class ParityError(RuntimeError):
    """An export drifted from the reference; the message names the format and the worst sample."""


@dataclass
class ParityReport:
    format: str
    samples: int
    max_abs_delta: float
    worst_sample: int
    top1_agreement: float
    tolerance: float | None  # None: compared and reported, not gated (quantized formats)

    def as_dict(self) -> dict:
        return asdict(self)


def compare(fmt: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float | None = None) -> ParityReport:
    """Max |delta| of probabilities and top-1 agreement over every sample."""
    if candidate.shape != reference.shape:
        raise ParityError(f"{fmt}: output shape {candidate.shape} differs from the reference {reference.shape}")
    per_sample = np.abs(candidate.astype(np.float64) - reference.astype(np.float64)).max(axis=1)
    worst = int(per_sample.argmax())
    agreement = float((candidate.argmax(1) == reference.argmax(1)).mean())
    return ParityReport(fmt, len(reference), float(per_sample[worst]), worst, agreement, tolerance)


def check(fmt: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> ParityReport:
    """compare(), raising ParityError unless max |delta| <= tolerance and top-1 agreement is 100%."""
    report = compare(fmt, reference, candidate, tolerance)
    if report.max_abs_delta > tolerance or report.top1_agreement < 1.0:
        worst = report.worst_sample
        raise ParityError(
            f"parity gate failed for {fmt}: max |delta| {report.max_abs_delta:.3g} (tolerance {tolerance:g}), "
            f"top-1 agreement {report.top1_agreement:.2%}; worst is test sample {worst} "
            f"(reference class {int(reference[worst].argmax())}, {fmt} class {int(candidate[worst].argmax())})")
    return report
