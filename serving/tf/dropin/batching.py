"""Server-side batching: concurrent requests to one servable signature run as one batch.

A request waits at most batch_timeout_micros for others to join it; a batch
closes when adding the next request would pass max_batch_size. At most
max_enqueued_batches batches wait; beyond that a request is refused
(UNAVAILABLE), as TF Serving does. num_batch_threads threads run batches. A
request whose deadline passes before its batch runs is answered DEADLINE_EXCEEDED
and left out of the batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from serving.tf.dropin.config import BatchingParameters
from serving.tf.dropin.errors import DeadlineExceeded, InvalidArgument, Unavailable
from serving.tf.dropin.metrics import BATCH_SIZE_BUCKETS, QUEUING_LATENCY_BUCKETS_US, Histogram
from serving.tf.dropin.servable import Servable


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """What the queue did: requests and batches run, and TF Serving's BatchingSession distributions.

    Batch threads and request threads update it at once, so every change and every snapshot holds the lock.
    """

    requests: int = 0
    batches: int = 0
    largest_batch_requests: int = 0
    input_batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))  # rows per request
    processed_batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZE_BUCKETS))  # rows per batch
    queuing_latency_us: Histogram = field(default_factory=lambda: Histogram(QUEUING_LATENCY_BUCKETS_US))
    batches_by_size: dict[int, int] = field(default_factory=dict)  # rows per batch -> batches: exact
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_input(self, rows: int) -> None:
        """A request entered the queue (TF Serving records its size when it is scheduled)."""
        with self.lock:
            self.input_batch_size.observe(rows)

    def record_batch(self, batch: list[_Task], dequeued: float) -> None:
        """A batch leaves the queue to run: its size in rows, and how long each of its requests waited."""
        rows = sum(task.rows for task in batch)
        with self.lock:
            self.requests += len(batch)
            self.batches += 1
            self.largest_batch_requests = max(self.largest_batch_requests, len(batch))
            self.processed_batch_size.observe(rows)
            self.batches_by_size[rows] = self.batches_by_size.get(rows, 0) + 1
            for task in batch:
                self.queuing_latency_us.observe((dequeued - task.enqueued) * 1e6)

    def snapshot(self) -> BatchStats:
        """A consistent copy to render while the batch threads go on."""
        with self.lock:
            return BatchStats(self.requests, self.batches, self.largest_batch_requests, self.input_batch_size.copy(),
                              self.processed_batch_size.copy(), self.queuing_latency_us.copy(),
                              dict(self.batches_by_size))


class BatchScheduler:
    """One queue per (servable, signature); created by Batcher on first use."""

    def __init__(self, servable: Servable, signature: str, params: BatchingParameters, stats: BatchStats) -> None:
        self.servable, self.signature, self.params, self.stats = servable, signature, params, stats
        # Queue capacity in requests: each waiting batch can hold up to max_batch_size rows.
        self._capacity = params.max_enqueued_batches * params.max_batch_size
        self._timeout_s = params.batch_timeout_micros / 1e6
        self._pending: deque[_Task] = deque()
        self._pending_rows = 0
        self._stopped = False
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._loop, daemon=True, name=f"batch-{servable.name}-{i}")
                         for i in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: dict[str, np.ndarray]) -> Future:
        rows = len(next(iter(inputs.values())))
        if rows > self.params.max_batch_size:
            raise InvalidArgument(f"Task size {rows} is larger than maximum batch size {self.params.max_batch_size}")
        task = _Task(inputs, rows)
        self.stats.record_input(rows)
        with self._changed:
            if len(self._pending) >= self._capacity:
                raise Unavailable("The batch scheduling queue to which this task was submitted is full")
            self._pending.append(task)
            self._pending_rows += rows
            # A batch thread is woken for the batch's first request and when the batch is full, not for each request
            # between: on one core each wake-up is a thread switch the requests pay for.
            if len(self._pending) == 1 or self._pending_rows >= self.params.max_batch_size:
                self._changed.notify()
        return task.future

    def stop(self) -> None:
        """The batch threads run what is queued, then end."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[_Task] | None:
        """The next batch, once it is full or its first request has waited batch_timeout_micros; None to stop."""
        with self._changed:
            while not (self._pending and (self._pending_rows >= self.params.max_batch_size or self._stopped)):
                if not self._pending:
                    if self._stopped:
                        return None
                    self._changed.wait()
                    continue
                left = self._pending[0].enqueued + self._timeout_s - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            batch, rows = [], 0
            while self._pending and rows + self._pending[0].rows <= self.params.max_batch_size:
                task = self._pending.popleft()
                batch.append(task)
                rows += task.rows
            self._pending_rows -= rows
            if self._pending:  # the rest opens the next batch, which another batch thread may take
                self._changed.notify()
            return batch

    def _run(self, batch: list[_Task]) -> None:
        batch = [task for task in batch if task.future.set_running_or_notify_cancel()]  # not those given up on
        if not batch:
            return
        self.stats.record_batch(batch, time.monotonic())
        try:
            merged = {key: np.concatenate([t.inputs[key] for t in batch]) for key in batch[0].inputs}
            outputs = self.servable.run(self.signature, merged)
        except Exception as exc:  # the error belongs to every request in the batch
            for task in batch:
                task.future.set_exception(exc)
            return
        start = 0
        for task in batch:
            task.future.set_result({k: v[start:start + task.rows] for k, v in outputs.items()})
            start += task.rows


_LATE = "Deadline exceeded waiting for the request's batch to run"


def _seconds_left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Batcher:
    """Routes runs through a BatchScheduler per servable and signature."""

    def __init__(self, params: BatchingParameters) -> None:
        self.params = params
        self.stats = BatchStats()
        self._schedulers: dict[tuple[int, str], BatchScheduler] = {}
        self._lock = threading.Lock()

    def submit(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray]) -> Future:
        """Queue a request; the future is its rows of its batch's outputs. Cancelling it before its batch runs takes
        it out of the batch."""
        key = (id(servable), signature)
        with self._lock:
            scheduler = self._schedulers.get(key)
            if scheduler is None or scheduler.servable is not servable:
                scheduler = self._schedulers[key] = BatchScheduler(servable, signature, self.params, self.stats)
        return scheduler.submit(inputs)

    def run(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
            deadline: float | None) -> dict[str, np.ndarray]:
        """The request's rows of its batch's outputs; DeadlineExceeded if the batch has not run by `deadline`."""
        future = self.submit(servable, signature, inputs)
        try:
            return future.result(timeout=_seconds_left(deadline))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceeded(_LATE) from None

    async def run_async(self, servable: Servable, signature: str, inputs: dict[str, np.ndarray],
                        deadline: float | None) -> dict[str, np.ndarray]:
        """run() for a caller on an event loop: it waits for the batch without holding a thread."""
        future = self.submit(servable, signature, inputs)
        try:  # on time-out wait_for cancels the wrapper, and the wrapper the request's future
            return await asyncio.wait_for(asyncio.wrap_future(future), _seconds_left(deadline))
        except TimeoutError:
            raise DeadlineExceeded(_LATE) from None

    def forget(self, servable: Servable) -> None:
        """Stop the schedulers of an unloaded servable."""
        with self._lock:
            for key in [k for k, s in self._schedulers.items() if s.servable is servable]:
                self._schedulers.pop(key).stop()
