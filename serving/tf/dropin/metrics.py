"""Prometheus metrics in TF Serving's names, plus the drop-in's batching counters."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from serving.tf.dropin import SERVER_NAME

# Latency buckets in microseconds, like TF Serving's request_latency histogram.
_BUCKETS_US = (1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6)
# TF Serving's BatchingSession histograms (tensorflow_serving/batching/batching_util.h, batching_session.cc):
# batch sizes in Buckets::Exponential(1, 2, 14), queuing latency in microseconds in Exponential(100, 1.2, 52).
BATCH_SIZE_BUCKETS = tuple(2.0 ** i for i in range(14))
QUEUING_LATENCY_BUCKETS_US = tuple(100 * 1.2 ** i for i in range(52))
# TF Serving names the batch threads' pool so (BatchingParameters.thread_pool_name's default).
BATCH_THREAD_POOL = "batch_threads"
_PREFIX = SERVER_NAME.replace("-", "_")


@dataclass
class Histogram:
    """A Prometheus histogram: counts per bucket (value <= bound; the last is +Inf), their sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)

    def lines(self, name: str, labels: str = "") -> list[str]:
        """The _bucket (cumulative), _sum and _count lines; `labels` is 'a="x",b="y"' or ''."""
        prefix = f"{labels}," if labels else ""
        lines, cumulative = [], 0
        for bound, count in zip((*self.bounds, None), self.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound is None else f"{bound:g}"
            lines.append(f'{name}_bucket{{{prefix}le="{le}"}} {cumulative}')
        return [*lines, f"{name}_sum{{{labels}}} {_number(self.total)}", f"{name}_count{{{labels}}} {self.count}"]


def _number(value: float) -> str:
    """Every digit of a sum (`:g` keeps six, and a delta of two rounded sums is off by their rounding)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)  # (model, api, status)
        self._latency: dict[tuple[str, str], Histogram] = {}  # (model, api) -> microseconds

    def observe(self, model: str, api: str, status: str, seconds: float) -> None:
        with self._lock:
            self._requests[(model, api, status)] += 1
            if status == "OK":
                self._latency.setdefault((model, api), Histogram(_BUCKETS_US)).observe(seconds * 1e6)

    def render(self, batch_stats=None, version: str = "") -> str:
        """Prometheus text exposition format."""
        lines = [f"# TYPE {_PREFIX}_info gauge",
                 f'{_PREFIX}_info{{server="{SERVER_NAME}",version="{version}"}} 1',
                 "# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (model, api, status), count in sorted(self._requests.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="{model}",API="{api}",'
                             f'entrypoint="REST_OR_GRPC",status="{status}"}} {count}')
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api), histogram in sorted(self._latency.items()):
                lines += histogram.lines(":tensorflow:serving:request_latency",
                                         f'model_name="{model}",API="{api}",entrypoint="REST_OR_GRPC"')
        if batch_stats is not None:
            lines += render_batching(batch_stats.snapshot())
        return "\n".join(lines) + "\n"


def render_batching(stats) -> list[str]:
    """The batching queue's figures: TF Serving's BatchingSession histograms under its names, then the drop-in's
    own counters (not in TF Serving), among them every batch size exactly, which TF's buckets only bound."""
    session = ":tensorflow:serving:batching_session"
    lines = [f"# TYPE {session}:input_batch_size histogram",
             *stats.input_batch_size.lines(f"{session}:input_batch_size"),
             f"# TYPE {session}:processed_batch_size histogram",
             *stats.processed_batch_size.lines(f"{session}:processed_batch_size"),
             f"# TYPE {session}:queuing_latency histogram",
             *stats.queuing_latency_us.lines(f"{session}:queuing_latency", f'thread_pool_name="{BATCH_THREAD_POOL}"'),
             f"# TYPE {_PREFIX}_batched_requests_total counter",
             f"{_PREFIX}_batched_requests_total {stats.requests}",
             f"# TYPE {_PREFIX}_batches_total counter",
             f"{_PREFIX}_batches_total {stats.batches}",
             f"# TYPE {_PREFIX}_largest_batch_requests gauge",
             f"{_PREFIX}_largest_batch_requests {stats.largest_batch_requests}",
             f"# TYPE {_PREFIX}_processed_batches_total counter"]
    lines += [f'{_PREFIX}_processed_batches_total{{batch_size="{size}"}} {count}'
              for size, count in sorted(stats.batches_by_size.items())]
    return lines
