"""What the server did during a run's steady window, as TorchServe's benchmark report and perf_analyzer give it.

    watch = ServerWatch(record)   # serving.record.DeployRecord of the server under load
    watch.start()                 # window start: first metrics snapshot, psutil sampling begins
    ...                           # the load
    figures = watch.stop()        # window end: last snapshot; the dict summary.json keeps as `server_side`

Three kinds of figure, each from where the server itself keeps it:
- CPU % (100 = one core) and RSS of every process in the server's process group, sampled with psutil;
- queue time and inference time per request, from the server's own metrics: TorchServe's metrics API
  (ts_queue_latency_microseconds, ts_inference_latency_microseconds, ts_inference_requests_total) and TF
  Serving's Prometheus endpoint (request_latency, batching_session:queuing_latency), as the difference between
  the snapshot at the window's start and the one at its end;
- the batch sizes the server really ran: the drop-in's exact per-size counter (or TF Serving's bucketed
  processed_batch_size), and TorchServe's ProcessedBatches, which the project's handler reports.
A figure that cannot be had is null, and `unavailable` says why.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

from serving.record import DeployRecord

SAMPLE_EVERY_S = 0.5
TF_METRICS_PATH = "/monitoring/prometheus/metrics"  # serving/tf/monitoring.config, TF Serving's default path
SCRAPE_TIMEOUT_S = 5.0
SETTLE_POLL_S = 0.1

# TorchServe 0.12's frontend counters (RestJob, InferenceRequestHandler) and the handler's batch counter.
TS_REQUESTS = "ts_inference_requests_total"
TS_QUEUE_US = "ts_queue_latency_microseconds"
TS_INFERENCE_US = "ts_inference_latency_microseconds"
TS_BATCHES = "ProcessedBatches"  # serving/torch/handler.py, declared in serving/torch/metrics.yaml
# TF Serving's names (tensorflow_serving/model_servers, batching/batching_session.cc) and the drop-in's counter.
TF_REQUESTS = ":tensorflow:serving:request_count"
TF_LATENCY = ":tensorflow:serving:request_latency"
TF_QUEUING = ":tensorflow:serving:batching_session:queuing_latency"
TF_BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
DROPIN_BATCHES = "tf_serving_dropin_processed_batches_total"  # serving/tf/dropin/metrics.py: exact sizes

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


# -- Prometheus text -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One read of a metrics page: its samples, and the type every `# TYPE` line declares."""

    samples: tuple[Sample, ...] = ()
    types: dict[str, str] = field(default_factory=dict)

    def declares(self, name: str) -> bool:
        """Whether the page knows the metric, even with no sample yet (counters appear on first use)."""
        if name in self.types:
            return True
        return any(name.endswith(part) and name[:-len(part)] in self.types for part in _HISTOGRAM_PARTS)


def parse_prometheus(text: str) -> Scrape:
    """Prometheus text exposition -> Scrape. Lines that are not samples are skipped, not fatal."""
    samples, types = [], {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        match = _SAMPLE.match(line)
        if not match or line.startswith("#"):
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        labels = {key: _unescape(raw) for key, raw in _LABEL.findall(match.group(2) or "")}
        samples.append(Sample(match.group(1), labels, value))
    return Scrape(tuple(samples), types)


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def total(scrape: Scrape, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`; 0 for a declared metric with no such sample,
    None for one the page does not have at all."""
    values = [s.value for s in scrape.samples if s.name == name and labels.items() <= s.labels.items()]
    if values:
        return sum(values)
    return 0.0 if scrape.declares(name) else None


def by_label(scrape: Scrape, name: str, label: str, **labels: str) -> dict[str, float]:
    """`name`'s values summed per value of `label` (e.g. batches per batch size)."""
    sums: dict[str, float] = {}
    for sample in scrape.samples:
        if sample.name == name and label in sample.labels and labels.items() <= sample.labels.items():
            sums[sample.labels[label]] = sums.get(sample.labels[label], 0.0) + sample.value
    return sums


class CounterReset(ValueError):
    """A counter went down between the two snapshots: the server restarted during the window."""


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float | None:
    """How much a counter grew from `before` to `after`; None when the later page does not have it.

    A counter missing from the earlier page counts from 0 (TorchServe creates a series on first use)."""
    end = total(after, name, **labels)
    if end is None:
        return None
    start = total(before, name, **labels) or 0.0
    if end < start:
        raise CounterReset(f"{name} went down from {start:g} to {end:g}: the server restarted during the window")
    return end - start


def deltas_by_label(before: Scrape, after: Scrape, name: str, label: str, **labels: str) -> dict[str, float]:
    """Per value of `label`, how much the counter grew; values that did not grow are left out."""
    start, end = by_label(before, name, label, **labels), by_label(after, name, label, **labels)
    grown = {}
    for key, value in end.items():
        if value < start.get(key, 0.0):
            raise CounterReset(f"{name}{{{label}={key}}} went down: the server restarted during the window")
        if value > start.get(key, 0.0):
            grown[key] = value - start.get(key, 0.0)
    return grown


def batch_summary(batches_by_size: dict[str, float]) -> dict[str, Any] | None:
    """{"mean": images per batch, "histogram": {"size": batches}} (sizes in ascending order); None if no batch."""
    histogram = {str(int(float(size))): int(count) for size, count in
                 sorted(batches_by_size.items(), key=lambda item: float(item[0])) if count > 0}
    batches = sum(histogram.values())
    if not batches:
        return None
    images = sum(int(size) * count for size, count in histogram.items())
    return {"mean": round(images / batches, 3), "histogram": histogram}


def _ms(microseconds: float, count: float) -> float:
    return round(microseconds / count / 1000.0, 3)


# -- each server's figures from two snapshots ----------------------------------------------------------------------

@dataclass
class MetricFigures:
    """What the metrics say about the window; `unavailable` says why a figure is None."""

    requests_seen: int | None = None
    queue_ms_mean: float | None = None
    inference_ms_mean: float | None = None
    batch_size: dict[str, Any] | None = None
    queue_inference_source: str | None = None
    batch_size_source: str | None = None
    unavailable: list[str] = field(default_factory=list)


def torchserve_figures(before: Scrape, after: Scrape, model: str) -> MetricFigures:
    """TorchServe 0.12: the frontend's per-model counters, and the handler's ProcessedBatches."""
    figures = MetricFigures()
    requests = delta(before, after, TS_REQUESTS, model_name=model)
    queue_us = delta(before, after, TS_QUEUE_US, model_name=model)
    answered_us = delta(before, after, TS_INFERENCE_US, model_name=model)
    if requests is None:
        figures.unavailable.append(f"requests, queue and inference time: TorchServe's metrics API has no {TS_REQUESTS} "
                                   "(metrics_mode is not prometheus?)")
    else:
        figures.requests_seen = int(requests)
        if requests == 0:
            figures.unavailable.append(f"queue and inference time: no request for model {model} reached TorchServe "
                                       "in the window")
        elif not answered_us or queue_us is None:
            # RestJob adds to both latency counters; TorchServe 0.12's GRPCJob adds to neither (checked by
            # tests/test_server_stats.py against the real server), while every request counts in TS_REQUESTS.
            figures.unavailable.append(f"queue and inference time: {int(requests)} requests reached TorchServe but "
                                       f"{TS_QUEUE_US} and {TS_INFERENCE_US} did not move: TorchServe 0.12 adds to "
                                       "them for REST requests only, not gRPC")
        else:
            figures.queue_ms_mean = _ms(queue_us, requests)
            figures.inference_ms_mean = _ms(answered_us - queue_us, requests)
            figures.queue_inference_source = (
                f"TorchServe metrics API: {TS_QUEUE_US} (arrival until a worker takes the job) and "
                f"{TS_INFERENCE_US} minus it (worker: backend, handler, answer), each per {TS_REQUESTS}; "
                "REST requests only")
    if not after.declares(TS_BATCHES):
        figures.unavailable.append(f"batch sizes: no {TS_BATCHES} on TorchServe's metrics port: its metrics_config "
                                   "is not serving/torch/metrics.yaml (a compose service?), or the .mar's handler "
                                   "predates the metric (make export)")
        return figures
    figures.batch_size = batch_summary(deltas_by_label(before, after, TS_BATCHES, "BatchSize", ModelName=model))
    if figures.batch_size is None:
        figures.unavailable.append(f"batch sizes: the handler ran no batch for model {model} in the window")
    else:
        figures.batch_size_source = (f"TorchServe metrics API: {TS_BATCHES}{{BatchSize}}, batches by images, "
                                     "counted by the handler (serving/torch/handler.py)")
    return figures


def tf_figures(before: Scrape, after: Scrape, model: str, batching: bool | None = None) -> MetricFigures:
    """TF Serving (or the drop-in): request_latency of predict, minus the batching queue's queuing_latency."""
    figures = MetricFigures()
    requests = delta(before, after, TF_REQUESTS, model_name=model, API="predict")
    answered = delta(before, after, f"{TF_LATENCY}_count", model_name=model, API="predict")
    latency_us = delta(before, after, f"{TF_LATENCY}_sum", model_name=model, API="predict")
    queued = delta(before, after, f"{TF_QUEUING}_count")
    queued_us = delta(before, after, f"{TF_QUEUING}_sum")
    if requests is None:
        figures.unavailable.append(f"requests, queue and inference time: no {TF_REQUESTS} on the metrics page "
                                   "(monitoring off?)")
        return figures
    figures.requests_seen = int(requests)
    if not answered or latency_us is None:
        figures.unavailable.append(f"queue and inference time: no predict for model {model} succeeded in the window")
    elif not queued or queued_us is None:
        knob = "" if batching is None else f" (enable_batching={str(batching).lower()})"
        figures.unavailable.append(f"queue time: no request went through a batching queue{knob}; requests run on "
                                   "the serving threads as they arrive, so inference_ms_mean is all of "
                                   "request_latency")
        figures.inference_ms_mean = _ms(latency_us, answered)
        figures.queue_inference_source = f"TF Serving metrics: {TF_LATENCY} of predict (no batching queue)"
    else:
        figures.queue_ms_mean = _ms(queued_us, queued)
        figures.inference_ms_mean = round(_ms(latency_us, answered) - figures.queue_ms_mean, 3)
        figures.queue_inference_source = (f"TF Serving metrics: {TF_QUEUING} (enqueue until the batch runs), and "
                                          f"{TF_LATENCY} of predict minus it")
    _tf_batch_sizes(before, after, figures)
    return figures


def _tf_batch_sizes(before: Scrape, after: Scrape, figures: MetricFigures) -> None:
    """The drop-in counts every batch size exactly; TF Serving's own histogram has power-of-2 buckets only."""
    if after.declares(DROPIN_BATCHES):
        figures.batch_size = batch_summary(deltas_by_label(before, after, DROPIN_BATCHES, "batch_size"))
        figures.batch_size_source = f"{DROPIN_BATCHES}{{batch_size}} (the drop-in's batching queue; exact sizes)"
    else:
        batches = delta(before, after, f"{TF_BATCH_SIZE}_count")
        images = delta(before, after, f"{TF_BATCH_SIZE}_sum")
        if batches and images is not None:
            figures.batch_size = {"mean": round(images / batches, 3), "histogram": None}
            figures.batch_size_source = f"{TF_BATCH_SIZE}_sum / _count"
            figures.unavailable.append(f"batch-size histogram: TF Serving's {TF_BATCH_SIZE} has power-of-2 "
                                       "buckets only; the mean is exact")
    if figures.batch_size is None:
        figures.batch_size_source = None
        figures.unavailable.append("batch sizes: no batch went through a batching queue in the window (batching off, "
                                   "or nothing was sent)")


# -- the server's processes -------------------------------------------------------------------------------------

@dataclass
class _GroupState:
    started: float  # time.time() of the first sample: processes born later count all their CPU
    last_wall: float
    last_cpu: dict[int, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    intervals: list[float] = field(default_factory=list)  # CPU % over each sampling interval
    rss: list[int] = field(default_factory=list)  # bytes, all processes together, per sample
    times: list[float] = field(default_factory=list)  # time.time() of each rss sample
    pids: set[int] = field(default_factory=set)


def group_members(pgid: int) -> list[psutil.Process]:
    """Every live process whose process group is `pgid` (children a server forks stay in its group)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


class GroupSampler:
    """CPU and RSS of a process group, sampled every `every_s` seconds on a thread, and at start and stop."""

    def __init__(self, pgid: int, every_s: float = SAMPLE_EVERY_S) -> None:
        self.pgid, self.every_s = pgid, every_s
        self._state: _GroupState | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"server-stats-{pgid}")
        self._lock = threading.Lock()

    def start(self) -> None:
        now = time.time()
        self._state = _GroupState(started=now, last_wall=now)
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """{"cpu_percent": {"mean", "max"} | None, "rss_mib": {"start", "end", "max"} | None, "processes": n}."""
        self._halt.set()
        self._thread.join()
        self._sample()
        state = self._state
        span = state.last_wall - state.started
        cpu = None
        if state.intervals and span > 0:
            cpu = {"mean": round(100.0 * state.cpu_seconds / span, 1), "max": round(max(state.intervals), 1)}
        rss = None
        if state.rss:
            rss = {key: round(value / 2 ** 20, 1) for key, value in
                   (("start", state.rss[0]), ("end", state.rss[-1]), ("max", max(state.rss)))}
        return {"cpu_percent": cpu, "rss_mib": rss, "processes": len(state.pids) if state.pids else None}

    def rss_series(self) -> list[tuple[float, float]]:
        """(seconds since the first sample, MiB) for every sample so far: memory growth over a long run."""
        with self._lock:
            times, rss = self._state.times, self._state.rss
            return [(round(t - times[0], 1), round(b / 2 ** 20, 1)) for t, b in zip(times, rss, strict=True)]

    def _loop(self) -> None:
        while not self._halt.wait(self.every_s):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        with self._lock:  # stop()'s last sample may meet the thread's
            state, now = self._state, time.time()
            rss, used, seen = 0, 0.0, {}
            for process in group_members(self.pgid):
                try:
                    with process.oneshot():
                        times, memory, born = process.cpu_times(), process.memory_info(), process.create_time()
                except psutil.Error:
                    continue  # it ended between listing and reading
                seconds = times.user + times.system
                # A process first seen now: all of its CPU is in the window if it was born after the last sample.
                previous = state.last_cpu.get(process.pid, 0.0 if born > state.last_wall else seconds)
                used += max(0.0, seconds - previous)
                seen[process.pid], rss = seconds, rss + memory.rss
            if not seen:
                return  # nothing of the group is left: no sample rather than a zero
            if not first and now > state.last_wall:
                state.cpu_seconds += used
                state.intervals.append(100.0 * used / (now - state.last_wall))
            state.last_wall, state.last_cpu = now, seen
            state.rss.append(rss)
            state.times.append(now)
            state.pids.update(seen)


# -- the watch ---------------------------------------------------------------------------------------------

def empty_figures() -> dict[str, Any]:
    """The `server_side` object with every figure null (reasons go in `unavailable`)."""
    return {"cpu_percent": None, "rss_mib": None, "processes": None, "queue_ms_mean": None,
            "inference_ms_mean": None, "requests_seen": None, "batch_size": None,
            "sources": {"cpu_rss": None, "queue_inference": None, "batch_size": None}, "unavailable": []}


def metrics_url(record: DeployRecord, host: str = "127.0.0.1") -> str:
    """Where the server's own metrics are: TorchServe's metrics API (always on 127.0.0.1, see
    serving/torch/server.py) or TF Serving's Prometheus page on its REST port."""
    if record.server == "torch":
        return f"http://127.0.0.1:{record.ports['metrics']}/metrics"
    return f"http://{host}:{record.ports['rest']}{TF_METRICS_PATH}"


def read_metrics(url: str) -> Scrape:
    """One read of a metrics page; OSError (URLError among them) when it does not answer."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        return parse_prometheus(response.read().decode("utf-8", "replace"))


class ServerWatch:
    """A deployed server's side of one run's steady window: start() at its beginning, stop() at its end.

    `record` None (an endpoint deploy did not start) gives every figure null, with the reason."""

    def __init__(self, record: DeployRecord | None, host: str = "127.0.0.1", every_s: float = SAMPLE_EVERY_S) -> None:
        self.record, self.host = record, host
        self.url = metrics_url(record, host) if record else None
        pgid = record.pgid if record else None
        self._sampler = GroupSampler(pgid, every_s) if pgid else None
        self._before: Scrape | None = None
        self._notes: list[str] = []
        self._started = False
        self._result: dict[str, Any] | None = None

    def start(self) -> None:
        """The window begins: first metrics snapshot, and CPU/RSS sampling starts. A second call does nothing."""
        if self._started or self.record is None:
            return
        self._started = True
        self._before = self._read("at the window's start")
        if self._sampler:
            self._sampler.start()

    def stop(self, settle_s: float = 0.0) -> dict[str, Any]:
        """The window ends: sampling stops, last snapshot; the figures (the same on every later call).

        settle_s: when the load has already ended, read the metrics again until two reads agree, for at most
        this long: TorchServe adds to its latency counters just after answering, and the handler's batch counter
        reaches the metrics API through the worker's log."""
        if self._result is None:
            self._result = self._figures(settle_s)
        return self._result

    def _figures(self, settle_s: float) -> dict[str, Any]:
        figures = empty_figures()
        if self.record is None:
            figures["unavailable"].append("no deploy record for this target (an endpoint deploy did not start): "
                                          "its processes and metrics are unknown here")
            return figures
        if not self._started:
            figures["unavailable"].append("the run never reached its steady window: nothing was measured")
            return figures
        self._group_figures(figures)
        self._metric_figures(figures, settle_s)
        figures["unavailable"] = self._notes + figures["unavailable"]
        return figures

    def _group_figures(self, figures: dict[str, Any]) -> None:
        if self._sampler is None:
            figures["unavailable"].append(f"CPU and RSS: the {self.record.server} server runs as a {self.record.mode} "
                                          "service (no process group here to sample)")
            return
        group = self._sampler.stop()
        figures.update(group)
        if group["rss_mib"] is None:
            figures["unavailable"].append(f"CPU and RSS: process group {self.record.pgid} had no process to sample "
                                          "(the server is not running)")
        else:
            figures["sources"]["cpu_rss"] = (f"psutil over process group {self.record.pgid}, every "
                                             f"{self._sampler.every_s:g} s (CPU 100% = one core; RSS summed over "
                                             "the processes)")
            if group["cpu_percent"] is None:
                figures["unavailable"].append("CPU: the window was too short for two samples")

    def _metric_figures(self, figures: dict[str, Any], settle_s: float) -> None:
        if self._before is None:
            return  # _read noted why
        after = self._read("at the window's end")
        if after is None:
            return
        try:
            found = self._compare(after)
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline:
                time.sleep(SETTLE_POLL_S)
                again = self._read("while settling")
                if again is None:
                    break
                settled, found = found, self._compare(again)
                if settled == found:
                    break
        except CounterReset as exc:
            figures["unavailable"].append(f"requests, queue, inference and batch sizes: {exc}")
            return
        figures.update(requests_seen=found.requests_seen, queue_ms_mean=found.queue_ms_mean,
                       inference_ms_mean=found.inference_ms_mean, batch_size=found.batch_size)
        figures["sources"].update(queue_inference=found.queue_inference_source, batch_size=found.batch_size_source)
        figures["unavailable"] += found.unavailable

    def _compare(self, after: Scrape) -> MetricFigures:
        if self.record.server == "torch":
            return torchserve_figures(self._before, after, self.record.model)
        return tf_figures(self._before, after, self.record.model, getattr(self.record.knobs, "enable_batching", None))

    def _read(self, when: str) -> Scrape | None:
        try:
            return read_metrics(self.url)
        except OSError as exc:
            self._notes.append(f"requests, queue, inference and batch sizes: could not read {self.url} {when} "
                               f"({exc})")
            return None
