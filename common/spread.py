"""A figure measured in repeats: its median and its spread (min to max), and what may be claimed from two.

The load tests write every figure that can enter a verdict (throughput, SLO
maximum, p50/p99 at a load) as a Spread over >= 3 independent repeats; the
report and `report --baseline` read them back. A difference is claimed only
where two spreads do not overlap: with three repeats each, min-max intervals
that do not touch are what "beyond the run-to-run spread" means here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

MIN_REPEATS = 3  # fewer repeats give a spread, but no claim rests on it


@dataclass(frozen=True)
class Spread:
    """Median and min-max of one figure's repeats (values in the order measured)."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float | None]) -> Spread | None:
        """The spread of the values measured; None when no repeat gave one (a missing value is left out)."""
        present = [float(v) for v in values if v is not None]
        if not present:
            return None
        return cls(statistics.median(present), min(present), max(present), tuple(present))

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Spread | None:
        if not data:
            return None
        return cls(data["median"], data["low"], data["high"], tuple(data.get("values", ())))

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "low": self.low, "high": self.high, "values": list(self.values)}

    @property
    def n(self) -> int:
        return len(self.values)

    def overlaps(self, other: Spread) -> bool:
        return self.low <= other.high and other.low <= self.high

    def ratio_to(self, other: Spread) -> Spread:
        """self / other, with the widest ratio the two intervals allow (other's values are positive)."""
        return Spread(self.median / other.median, self.low / other.high, self.high / other.low, ())

    def text(self, digits: int = 1) -> str:
        """'582.9 [525.0-629.0]': median, then min-max."""
        return f"{self.median:,.{digits}f} [{self.low:,.{digits}f}-{self.high:,.{digits}f}]"


def differ(a: Spread | None, b: Spread | None) -> bool:
    """Whether a difference between two figures may be claimed: both from >= MIN_REPEATS, intervals apart."""
    return (a is not None and b is not None and min(a.n, b.n) >= MIN_REPEATS and not a.overlaps(b))


def spread_text(data: dict[str, Any] | None, digits: int = 1) -> str:
    """'median [min-max]' of a spread as a results file holds it; '-' when there is none."""
    figure = Spread.from_json(data)
    return figure.text(digits) if figure else "-"
