"""The locust side of a run: one user class per transport, closed or open loop, answers checked.

Run by `python -m loadtests run` (which passes every option below), or by
hand / in the compose `loadtest` profile:

    locust -f loadtests/locustfile.py --headless --host http://127.0.0.1:8501 \
        --loadtest-target tf-rest --loadtest-payloads artifacts/results/<run>/payloads.npz -u 8 -r 8 -t 35s

Every option has an environment variable (LOADTEST_TARGET, LOADTEST_PAYLOADS,
LOADTEST_TOKEN, ...). Bodies are pre-serialised (loadtests/payloads.py); the
same bytes go out every time. Every `--loadtest-check-every`-th answer per
user is decoded and its argmax compared with the reference: a wrong one is a
failure ("wrong_prediction"), not a success.

Latency percentiles are computed from each request's own perf_counter timing
(locust's histogram rounds to whole milliseconds), collected only after the
warm-up; workers send theirs to the master, which writes
`--loadtest-record` (JSON) when the test stops.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator

import gevent
import grpc
from locust import FastHttpUser, User, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from common.targets import NAMES, bearer_token, target_named
from loadtests import payloads as payload_file
from loadtests.arrivals import RateSteps, arrival_gaps

# gRPC calls block in native threads from gevent's pool, not through grpc's gevent integration: with it,
# the calls of one locust process were serialised (seen during development; two processes did not share that limit).
GRPC_THREADS = 256



@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("loadtests")
    group.add_argument("--loadtest-target", env_var="LOADTEST_TARGET", default="tf-rest",
                       choices=NAMES)
    group.add_argument("--loadtest-payloads", env_var="LOADTEST_PAYLOADS", default="", help="from loadtests prepare")
    group.add_argument("--loadtest-model", env_var="LOADTEST_MODEL", default="")
    group.add_argument("--loadtest-token", env_var="LOADTEST_TOKEN", default="",
                       help="bearer token sent with every request (TorchServe's inference token, a gateway's)")
    group.add_argument("--loadtest-host-header", env_var="LOADTEST_HOST_HEADER", default="",
                       help="Host header (REST) / authority (gRPC) to send, e.g. a KServe InferenceService's host")
    group.add_argument("--loadtest-warmup", env_var="LOADTEST_WARMUP", type=float, default=5.0)
    group.add_argument("--loadtest-rate", env_var="LOADTEST_RATE", type=float, default=0.0,
                       help="open loop: arrivals per second for all users together; 0 = closed loop")
    group.add_argument("--loadtest-users", env_var="LOADTEST_USERS", type=int, default=0,
                       help="open loop: users of all processes together (-u); 0 = this process's own users, "
                            "right only without workers")
    group.add_argument("--loadtest-arrivals", env_var="LOADTEST_ARRIVALS", default="poisson",
                       choices=("poisson", "fixed"),
                       help="open loop: Poisson arrivals (exponential gaps, as MLPerf's Server scenario) or fixed gaps")
    group.add_argument("--loadtest-seed", env_var="LOADTEST_SEED", type=int, default=0,
                       help="open loop: seed of the Poisson arrivals (each user draws from its own stream)")
    group.add_argument("--loadtest-processes", env_var="LOADTEST_PROCESSES", type=int, default=1,
                       help="open loop: locust processes sending load (the workers, or 1), to interleave their users")
    group.add_argument("--loadtest-check-every", env_var="LOADTEST_CHECK_EVERY", type=int, default=10)
    group.add_argument("--loadtest-max-inflight", env_var="LOADTEST_MAX_INFLIGHT", type=int, default=64,
                       help="open loop: requests one user may have outstanding before arrivals are dropped")
    group.add_argument("--loadtest-timeout", env_var="LOADTEST_TIMEOUT", type=float, default=10.0)
    group.add_argument("--loadtest-record", env_var="LOADTEST_RECORD", default="",
                       help="where the master writes every steady-state request's latency and the failure kinds")
    group.add_argument("--loadtest-rate-steps", env_var="LOADTEST_RATE_STEPS", default="",
                       help="open loop: 'SECONDS:RATE,...' phases from the test's start (the last rate holds after "
                            "them), e.g. 10:100,30:400,20:100 for an overload between two normal phases")
    group.add_argument("--loadtest-timeline", env_var="LOADTEST_TIMELINE", default="",
                       help="where a local run writes every request, warm-up included: [sent at (Unix s), "
                            "latency ms, outcome] (the reliability suite times faults against it)")
    group.add_argument("--loadtest-token-file", env_var="LOADTEST_TOKEN_FILE", default="",
                       help="read the bearer token from this file (the token, or TorchServe's key_file.json) and "
                            "read it again after a refused answer: TorchServe issues new keys at each start")


class Recorder:
    """This process's steady-state record: latencies, failure kinds, checks, open-loop send lag."""

    def __init__(self) -> None:
        self.recording = False
        self.latencies_ms: list[float] = []
        self.lags_ms: list[float] = []
        self.failures: Counter[str] = Counter()
        self.dropped = 0  # open-loop arrivals never sent: not requests, so not failures either
        self.arrivals = 0  # open-loop arrivals due in the window, sent or dropped: the load really offered
        self.checked = 0
        self.started = self.stopped = time.monotonic()

    def start(self) -> None:
        self.__init__()
        self.recording = True

    # A request counts only if it was sent inside the window (counted) and answered before it closed:
    # a warm-up request answered after the warm-up would otherwise inflate the window's throughput.
    def success(self, latency_ms: float, counted: bool) -> None:
        if counted and self.recording:
            self.latencies_ms.append(latency_ms)

    def failure(self, kind: str, counted: bool = True) -> None:
        if counted and self.recording:
            self.failures[kind] += 1

    def drop(self) -> None:
        if self.recording:
            self.dropped += 1

    def arrival(self) -> None:
        if self.recording:
            self.arrivals += 1

    def stop(self) -> None:
        if self.recording:
            self.recording, self.stopped = False, time.monotonic()

    def as_message(self) -> dict:
        """What this process saw; window_s is how long it really recorded (throughput divides by it)."""
        return {"latencies_ms": self.latencies_ms, "lags_ms": self.lags_ms, "failures": dict(self.failures),
                "dropped": self.dropped, "arrivals": self.arrivals, "checked": self.checked,
                "window_s": self.stopped - self.started}


RECORD = Recorder()
TEST_STARTED = [time.perf_counter()]  # reset when the test starts: rate steps count from there


class Timeline:
    """Every request this process sent, warm-up included, when `--loadtest-timeline` asks for it."""

    def __init__(self) -> None:
        self.enabled = False  # set at test start: a plain load test keeps no per-request rows
        self.rows: list[tuple[float, float, str]] = []

    def add(self, sent_at: float, latency_ms: float, outcome: str) -> None:
        if self.enabled:
            self.rows.append((round(sent_at, 4), round(latency_ms, 3), outcome))

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(sorted(self.rows), handle)


TIMELINE = Timeline()
REFUSED_TOKEN = "refused_token"  # the failure kind of an answer that says the token is not (or no longer) valid


class TokenSource:
    """The bearer token: `--loadtest-token`, or `--loadtest-token-file`, read again after a refusal.

    TorchServe writes new keys each time it starts; a client that kept the old one would be refused for good.
    Re-reading at most once a second keeps a burst of refusals from becoming a burst of file reads.
    """

    def __init__(self) -> None:
        self.token: str | None = None
        self.read_at = 0.0

    def current(self, options) -> str:
        if self.token is None:
            self.token = self._read(options)
        return self.token

    def refresh(self, options) -> str:
        if options.loadtest_token_file and time.monotonic() - self.read_at >= 1.0:
            self.token = self._read(options)
        return self.current(options)

    def _read(self, options) -> str:
        if not options.loadtest_token_file:
            return options.loadtest_token
        self.read_at = time.monotonic()
        try:
            with open(options.loadtest_token_file, encoding="utf-8") as file:
                return bearer_token(file.read())
        except (OSError, ValueError, KeyError, TypeError):
            return self.token or ""  # mid-rewrite or gone (the server is restarting): keep the last one


TOKEN_SOURCE = TokenSource()
_user_numbers = itertools.count()
_collected: list[dict] = []  # on the master (or a local runner): every process's record


def _start_recording(environment) -> None:
    """End of warm-up: locust's own statistics restart too, so its CSVs cover the same window."""
    RECORD.start()
    if not isinstance(environment.runner, WorkerRunner):
        environment.runner.stats.reset_all()


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    TIMELINE.enabled = bool(environment.parsed_options.loadtest_timeline)
    TEST_STARTED[0] = time.perf_counter()
    if not isinstance(environment.runner, MasterRunner):
        gevent.spawn_later(environment.parsed_options.loadtest_warmup, _start_recording, environment)
    else:
        gevent.spawn_later(environment.parsed_options.loadtest_warmup, environment.runner.stats.reset_all)


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_kwargs) -> None:
    RECORD.stop()
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.send_message("loadtest_record", RECORD.as_message())


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("loadtest_record", lambda msg, **_: _collected.append(msg.data))


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs) -> None:
    """The master (or a local runner) writes the merged record for the orchestrator."""
    if isinstance(environment.runner, WorkerRunner):
        return
    records = _collected if isinstance(environment.runner, MasterRunner) else [RECORD.as_message()]
    if environment.parsed_options.loadtest_timeline:
        TIMELINE.write(environment.parsed_options.loadtest_timeline)
    path = environment.parsed_options.loadtest_record
    if path:
        merged = {"latencies_ms": [], "lags_ms": [], "failures": Counter(), "dropped": 0, "arrivals": 0, "checked": 0,
                  "processes": len(records), "window_s": max((record["window_s"] for record in records), default=0.0)}
        for record in records:
            merged["latencies_ms"] += record["latencies_ms"]
            merged["lags_ms"] += record["lags_ms"]
            merged["failures"].update(record["failures"])
            merged["dropped"] += record["dropped"]
            merged["arrivals"] += record["arrivals"]
            merged["checked"] += record["checked"]
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(merged, handle)


@functools.cache
def _payloads(path: str) -> payload_file.Payloads:
    """Read once per process: every user of this process sends from the same payloads."""
    return payload_file.load(path)


class _LoadUser(User):
    """Shared by both transports: which payload to send next, answer checks, and the two load models."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.target = options.loadtest_target
        self.payloads = _payloads(options.loadtest_payloads)
        self.model = options.loadtest_model or self.payloads.meta["model"]
        self.check_every = options.loadtest_check_every  # 0: never (calibration against a trivial endpoint)
        self.token = TOKEN_SOURCE.current(options)
        self.sent = 0
        self.inflight = 0
        self.interval, self.next_arrival, self.gaps = self._arrivals(options)
        self.base_rate = options.loadtest_rate
        self.rates = RateSteps.parse(options.loadtest_rate_steps, TEST_STARTED[0]) if self.interval else None

    def _arrivals(self, options) -> tuple[float, float, Iterator[float] | None]:
        """Open loop: (this user's mean gap between arrivals, its first arrival, its Poisson stream or None).

        Closed loop: (0, now, None). Every user of every process owns an equal share of the total
        rate; users' Poisson processes add up to one Poisson process at the total rate. A worker's
        own target_user_count is only its share of the users, hence the total from --loadtest-users.
        Locust hands users to workers in turn, so user j of worker w is user j * processes + w
        overall: that slot seeds its stream (Poisson) or sets its phase (fixed gaps interleave).
        """
        runner = self.environment.runner
        if options.loadtest_rate <= 0:
            return 0.0, time.perf_counter(), None
        users = max(1, options.loadtest_users or runner.target_user_count or 1)
        interval = users / options.loadtest_rate
        slot = next(_user_numbers) * max(1, options.loadtest_processes) + max(0, getattr(runner, "worker_index", 0))
        gaps = arrival_gaps(options.loadtest_arrivals, interval, options.loadtest_seed, slot)
        phase = interval * (slot % users) / users if options.loadtest_arrivals == "fixed" else next(gaps)
        return interval, time.perf_counter() + phase, gaps

    def _next_gap(self) -> float:
        if not self.gaps:
            return 0.0
        gap = next(self.gaps)  # drawn at the base rate, stretched or shrunk to the rate of this phase
        return gap * self.base_rate / self.rates.at(time.perf_counter()) if self.rates else gap

    @task
    def send(self) -> None:
        if not self.interval:  # closed loop: the next request leaves when the answer is back
            self.request(self.sent, time.perf_counter())
            self.sent += 1
            return
        now = time.perf_counter()
        if self.next_arrival > now:
            gevent.sleep(self.next_arrival - now)
        scheduled, self.next_arrival = self.next_arrival, self.next_arrival + self._next_gap()
        RECORD.arrival()
        if self.inflight >= self.environment.parsed_options.loadtest_max_inflight:
            RECORD.drop()  # the generator could not offer this arrival: the run says so
            return
        gevent.spawn(self.request, self.sent, scheduled)
        self.sent += 1

    def request(self, index: int, scheduled: float) -> None:
        self.inflight += 1
        sent_at, started, counted = time.time(), time.perf_counter(), RECORD.recording
        if counted and self.interval:
            RECORD.lags_ms.append((started - scheduled) * 1000.0)
        try:
            latency_ms, problem = self.call(index, started, counted)
        finally:
            self.inflight -= 1
        if problem:
            RECORD.failure(problem.split(":")[0], counted)
            if problem.startswith(REFUSED_TOKEN):
                self.token = TOKEN_SOURCE.refresh(self.environment.parsed_options)
        else:
            RECORD.success(latency_ms, counted)
        TIMELINE.add(sent_at, latency_ms, problem.split(":")[0] if problem else "ok")

    def check(self, index: int, answer: bytes, counted: bool) -> str | None:
        """None if the answer is right (or not sampled), else the failure kind."""
        if not self.check_every or index % self.check_every:
            return None
        if counted and RECORD.recording:
            RECORD.checked += 1
        try:
            predicted = self.payloads.predicted_classes(self.target, answer)
        except (ValueError, KeyError) as error:
            return f"bad_answer: {str(error)[:80]}"
        expected = self.payloads.expected[index % self.payloads.count]
        if predicted.shape != expected.shape or (predicted != expected).any():
            return "wrong_prediction"
        return None

    def call(self, index: int, started: float, counted: bool) -> tuple[float, str | None]:
        """Send request `index`; (latency ms, None) for a right answer, else (latency ms, the failure)."""
        raise NotImplementedError


class RestUser(FastHttpUser, _LoadUser):
    """TF Serving's REST predict and TorchServe's inference API, over keep-alive HTTP/1.1."""

    abstract = True
    concurrency = 64  # connections per user: open loop may have several requests outstanding

    def on_start(self) -> None:
        _LoadUser.on_start(self)
        self.client.client.network_timeout = self.environment.parsed_options.loadtest_timeout
        self.path = target_named(self.target).endpoint.format(model=self.model)
        self.headers = {"Content-Type": "application/json"}
        options = self.environment.parsed_options
        if options.loadtest_host_header:
            self.headers["Host"] = options.loadtest_host_header

    def call(self, index: int, started: float, counted: bool) -> tuple[float, str | None]:
        headers = {**self.headers, "Authorization": f"Bearer {self.token}"} if self.token else self.headers
        with self.client.post(self.path, data=self.payloads.body(self.target, index), headers=headers,
                              name=self.target, catch_response=True) as response:
            latency_ms = (time.perf_counter() - started) * 1000.0
            if response.status_code != 200:
                text = response.text or str(response.error)
                kind = f"HTTP {response.status_code}" if response.status_code else "connection_error"
                problem = f"{REFUSED_TOKEN}: {kind}" if "InvalidKeyException" in text else f"{kind}: {text[:200]}"
            else:
                problem = self.check(index, response.content, counted)
            if problem:
                response.failure(problem)
            else:
                response.success()
            return latency_ms, problem


class GrpcUser(_LoadUser):
    """TF Serving's PredictionService and TorchServe's InferenceAPIsService, bytes in and bytes out.

    The request bytes were serialised by `prepare`; the method is called
    without a serializer, so the generator's per-request work is the transport.
    """

    abstract = True

    def on_start(self) -> None:
        _LoadUser.on_start(self)
        gevent.get_hub().threadpool.maxsize = GRPC_THREADS
        address = self.host.split("://", 1)[-1].rstrip("/")
        options = self.environment.parsed_options
        authority = (("grpc.default_authority", options.loadtest_host_header),) if options.loadtest_host_header else ()
        self.channel = grpc.insecure_channel(address, options=authority)
        self.method = self.channel.unary_unary(target_named(self.target).endpoint)

    def on_stop(self) -> None:
        self.channel.close()

    def call(self, index: int, started: float, counted: bool) -> tuple[float, str | None]:
        body = self.payloads.body(self.target, index)
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        try:
            answer, problem = gevent.get_hub().threadpool.apply(
                self.method, (body,), {"timeout": self.environment.parsed_options.loadtest_timeout,
                                       "metadata": metadata}), None
        except grpc.RpcError as error:
            details = error.details() or ""
            answer, problem = b"", f"{error.code().name}: {details[:200]}"
            if "InvalidKeyException" in details:
                problem = f"{REFUSED_TOKEN}: {problem}"
        latency_ms = (time.perf_counter() - started) * 1000.0  # the call only, as for REST: checking comes after
        problem = problem or self.check(index, answer, counted)
        events.request.fire(request_type="grpc", name=self.target, response_time=latency_ms,
                            response_length=len(answer), exception=RuntimeError(problem) if problem else None,
                            context={})
        return latency_ms, problem


class LoadRestUser(RestUser):
    """Picked when --loadtest-target is a REST target (see _pick_user_class)."""


class LoadGrpcUser(GrpcUser):
    """Picked when --loadtest-target is a gRPC target."""


@events.init.add_listener
def _pick_user_class(environment, **_kwargs) -> None:
    """One user class per run, chosen by the target (locust would otherwise run both)."""
    target = environment.parsed_options.loadtest_target if environment.parsed_options else "tf-rest"
    environment.user_classes = [LoadGrpcUser if target_named(target).is_grpc else LoadRestUser]
