"""Prometheus metrics in TF Serving's names, plus the drop-in's batching counters."""

from __future__ import annotations

import threading
from collections import defaultdict

from serving.tf.dropin import SERVER_NAME

# Latency buckets in microseconds, like TF Serving's request_latency histogram.
_BUCKETS_US = (1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)  # (model, api, status)
        self._latency: dict[tuple[str, str], list[float]] = {}  # (model, api) -> bucket counts + sum + count

    def observe(self, model: str, api: str, status: str, seconds: float) -> None:
        with self._lock:
            self._requests[(model, api, status)] += 1
            if status == "OK":
                counts = self._latency.setdefault((model, api), [0.0] * (len(_BUCKETS_US) + 2))
                micros = seconds * 1e6
                for index, bound in enumerate(_BUCKETS_US):
                    if micros <= bound:
                        counts[index] += 1
                counts[-2] += micros
                counts[-1] += 1

    def render(self, batch_stats=None, version: str = "") -> str:
        """Prometheus text exposition format."""
        lines = [f'# TYPE {SERVER_NAME.replace("-", "_")}_info gauge',
                 f'{SERVER_NAME.replace("-", "_")}_info{{server="{SERVER_NAME}",version="{version}"}} 1',
                 "# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (model, api, status), count in sorted(self._requests.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="{model}",API="{api}",'
                             f'entrypoint="REST_OR_GRPC",status="{status}"}} {count}')
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api), counts in sorted(self._latency.items()):
                labels = f'model_name="{model}",API="{api}",entrypoint="REST_OR_GRPC"'
                for bound, count in zip(_BUCKETS_US, counts, strict=False):
                    lines.append(f':tensorflow:serving:request_latency_bucket{{{labels},le="{bound:g}"}} {count:g}')
                lines.append(f':tensorflow:serving:request_latency_bucket{{{labels},le="+Inf"}} {counts[-1]:g}')
                lines.append(f":tensorflow:serving:request_latency_sum{{{labels}}} {counts[-2]:g}")
                lines.append(f":tensorflow:serving:request_latency_count{{{labels}}} {counts[-1]:g}")
        if batch_stats is not None:
            prefix = SERVER_NAME.replace("-", "_")
            lines += [f"# TYPE {prefix}_batched_requests_total counter",
                      f"{prefix}_batched_requests_total {batch_stats.requests}",
                      f"# TYPE {prefix}_batches_total counter",
                      f"{prefix}_batches_total {batch_stats.batches}",
                      f"# TYPE {prefix}_largest_batch_requests gauge",
                      f"{prefix}_largest_batch_requests {batch_stats.largest_batch_requests}"]
        return "\n".join(lines) + "\n"
