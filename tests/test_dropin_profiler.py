"""The drop-in's tensorflow.ProfilerService, driven by TensorFlow's own profiler client as TF Serving's tests do."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import tensorflow as tf
from tensorflow.python.profiler import profiler_client
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from common.procs import free_port
from serving.tf.dropin import SERVER_NAME, profiler

TIMEOUT = 30


@pytest.fixture
def port():
    """A grpc.server on 127.0.0.1 with only the profiler service registered; stopped after the test."""
    server = grpc.server(ThreadPoolExecutor(max_workers=8, thread_name_prefix="grpc"))
    try:
        profiler.add_profiler_service(server)
        bound = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        server.start()
        yield bound
    finally:
        server.stop(None).wait(TIMEOUT)


@pytest.fixture
def tf_work():
    """TensorFlow work in the background for the profiler to see: 256x256 matmuls until the test ends."""
    done = threading.Event()

    def work():
        x = tf.random.normal((256, 256))
        while not done.is_set():
            tf.matmul(x, x)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(TIMEOUT)


@pytest.fixture
def channel(port):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan


def _method(channel, name, request_type, response_type):
    return channel.unary_unary(f"/{profiler.SERVICE}/{name}", request_serializer=request_type.SerializeToString,
                               response_deserializer=response_type.FromString)


def _profile(channel):
    return _method(channel, "Profile", profiler.ProfileRequest, profiler.ProfileResponse)


def _request(logdir, duration_ms, session_id="run1", host_name="127.0.0.1:1"):
    return profiler.ProfileRequest(duration_ms=duration_ms, repository_root=str(logdir / "plugins" / "profile"),
                                   session_id=session_id, host_name=host_name)


def _wait_until_profiling():
    deadline = time.monotonic() + TIMEOUT
    while not profiler._SESSION_LOCK.locked():
        assert time.monotonic() < deadline, "no profiling session started"
        time.sleep(0.01)


def _xplanes(logdir):
    return sorted((logdir / "plugins" / "profile").glob("*/*.xplane.pb"))


def _assert_trace(path):
    data = path.read_bytes()
    assert data
    space = xplane_pb2.XSpace.FromString(data)
    assert any(line.events for plane in space.planes for line in plane.lines), [p.name for p in space.planes]


def test_tensorflow_profiler_client_traces_the_server(port, tf_work, tmp_path):
    # TF Serving's test_profiler_service_with_valid_trace_request: profiler_client.trace against the gRPC port
    profiler_client.trace(f"127.0.0.1:{port}", str(tmp_path), 1000, "", 3)

    # where TensorFlow's own profiler server writes it, and TensorBoard's profile plugin looks:
    # <logdir>/plugins/profile/<run>/<host>.xplane.pb, the client's host:port with ':' as '_'
    (xplane,) = _xplanes(tmp_path)
    assert xplane.name == f"127.0.0.1_{port}.xplane.pb"
    _assert_trace(xplane)


def test_one_profile_at_a_time_and_the_server_answers_after(port, channel, tf_work, tmp_path):
    first = ThreadPoolExecutor(1).submit(profiler_client.trace, f"127.0.0.1:{port}", str(tmp_path / "first"),
                                         1500, "", 1)
    _wait_until_profiling()
    with pytest.raises(grpc.RpcError) as refused:
        _profile(channel)(_request(tmp_path / "second", 500), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already running" in refused.value.details() and SERVER_NAME in refused.value.details()
    assert not (tmp_path / "second").exists()

    first.result(timeout=TIMEOUT)  # the first trace is unharmed
    (xplane,) = _xplanes(tmp_path / "first")
    _assert_trace(xplane)

    # the service still answers, and profiles again once the first session is over
    response = _profile(channel)(_request(tmp_path / "third", 200), timeout=TIMEOUT)
    assert not response.empty_trace
    assert [p.name for p in _xplanes(tmp_path / "third")] == ["127.0.0.1_1.xplane.pb"]


def test_terminate_ends_a_profile_early_and_keeps_its_trace(port, channel, tf_work, tmp_path):
    # a 60 s profile asked for; the call's own deadline (TIMEOUT) is shorter, so only Terminate lets it answer
    running = ThreadPoolExecutor(1).submit(_profile(channel), _request(tmp_path, 60_000, session_id="long"),
                                           timeout=TIMEOUT)
    _wait_until_profiling()
    terminate = _method(channel, "Terminate", profiler.TerminateRequest, profiler.TerminateResponse)
    terminate(profiler.TerminateRequest(session_id="long"), timeout=TIMEOUT)
    response = running.result(timeout=TIMEOUT)
    assert not response.empty_trace
    (xplane,) = _xplanes(tmp_path)
    assert xplane.parent.name == "long"
    _assert_trace(xplane)


def test_duration_is_capped(port, channel, monkeypatch, tmp_path):
    monkeypatch.setattr(profiler, "MAX_DURATION_MS", 200)
    # 600 s asked for; answering within the call's deadline (TIMEOUT) shows the cap applied
    _profile(channel)(_request(tmp_path, 600_000), timeout=TIMEOUT)
    assert len(_xplanes(tmp_path)) == 1


@pytest.mark.parametrize("change, wanted", [
    ({"session_id": "../escape"}, "session_id"),
    ({"session_id": ""}, "session_id"),
    ({"host_name": "a/b"}, "host_name"),
    ({"repository_root": ""}, "repository_root"),
])
def test_bad_requests_are_invalid_arguments(channel, tmp_path, change, wanted):
    request = _request(tmp_path, 100)
    for field, value in change.items():
        setattr(request, field, value)
    with pytest.raises(grpc.RpcError) as error:
        _profile(channel)(request, timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert wanted in error.value.details()
    assert not profiler._SESSION_LOCK.locked()
    assert not list(tmp_path.rglob("*.xplane.pb"))


@pytest.mark.parametrize("method", ["Monitor", "StartContinuousProfiling", "StopContinuousProfiling", "GetSnapshot"])
def test_other_methods_are_unimplemented_and_say_so(channel, method):
    call = channel.unary_unary(f"/{profiler.SERVICE}/{method}")  # raw bytes: an empty message
    with pytest.raises(grpc.RpcError) as error:
        call(b"", timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert SERVER_NAME in error.value.details() and method in error.value.details()
