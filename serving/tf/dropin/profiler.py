"""TensorFlow's profiler service (`tensorflow.ProfilerService`) on the drop-in's own gRPC port.

tensorflow_model_server registers TensorFlow's profiler service on its main gRPC port, so
`tf.profiler.experimental.client.trace("grpc://host:port", logdir, duration_ms)` captures a trace of the
serving process. This module does the same for the drop-in, in-process:

- Profile: runs TensorFlow's Python profiler (`tf.profiler.experimental.start/stop`) for the requested
  duration (capped at MAX_DURATION_MS), then writes the XSpace where TensorFlow's own server writes it:
  `<repository_root>/<session_id>/<host_name>.xplane.pb` (':' in the file name becomes '_', as TF does).
  The client passes `<logdir>/plugins/profile` as repository_root and a timestamp as session_id, which is
  where TensorBoard's profile plugin looks for runs. `empty_trace` is set when no line holds an event,
  as TF's `IsEmpty(XSpace)`; the client retries or fails on that.
- Terminate: ends a running Profile of that session_id early; it still writes its trace (as TF does).
- Monitor, StartContinuousProfiling, StopContinuousProfiling, GetSnapshot: UNIMPLEMENTED, as in
  TensorFlow's own ProfilerServiceImpl.

Nothing else listens: TensorFlow's C++ profiler server (`tf.profiler.experimental.server.start`) binds all
interfaces and is deliberately not used. Like TF Serving, a client of the gRPC port chooses the directory
the trace file is written to; the file's name and content are the server's.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import grpc
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.tsl.profiler.protobuf import profiler_options_pb2, xplane_pb2

from serving.tf.dropin import SERVER_NAME

log = logging.getLogger("tf-serving-dropin")

SERVICE = "tensorflow.ProfilerService"
MAX_DURATION_MS = 60_000  # one Profile call holds a gRPC worker thread this long at most (and as long again
# at most waiting for the client's requested start time)
PROTO_FILE = "tsl/profiler/protobuf/profiler_service.proto"


# -- messages ---------------------------------------------------------------------------------------
# No installed or PyPI package ships Python classes (or the .proto) for profiler_service.proto: tensorflow
# ships only its C++ headers, tensorboard-plugin-profile / xprof / cloud-tpu-profiler none of it. So the
# messages this service needs are declared here, with the field numbers and types of TensorFlow 2.21's
# tsl/profiler/protobuf/profiler_service.proto (read from the installed
# tensorflow/include/tsl/profiler/protobuf/profiler_service.pb.h). Fields this server never reads or sets
# (ProfileRequest.tool_options = 8, ProfileResponse.tool_data = 6 and xspace = 8) are left out: protobuf
# keeps them as unknown fields and TF's own server does not use them either. ProfileOptions is TensorFlow's
# own, shipped in tensorflow.tsl.profiler.protobuf.profiler_options_pb2. A private pool keeps these
# declarations from clashing with a generated profiler_service_pb2, should a package ever ship one.

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = "") -> _F:
    field = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    return field


def _message(name: str, *fields: _F) -> descriptor_pb2.DescriptorProto:
    return descriptor_pb2.DescriptorProto(name=name, field=list(fields))


def _build_messages() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    options_file = descriptor_pb2.FileDescriptorProto()
    profiler_options_pb2.DESCRIPTOR.CopyToProto(options_file)
    pool.Add(options_file)
    service_file = descriptor_pb2.FileDescriptorProto(
        name=PROTO_FILE, package="tensorflow", syntax="proto3", dependency=[options_file.name],
        message_type=[
            _message("ProfileRequest",
                     _field("duration_ms", 1, _F.TYPE_UINT64),
                     _field("max_events", 2, _F.TYPE_UINT64),
                     _field("tools", 3, _F.TYPE_STRING, repeated=True),
                     _field("opts", 4, _F.TYPE_MESSAGE, type_name=".tensorflow.ProfileOptions"),
                     _field("repository_root", 5, _F.TYPE_STRING),
                     _field("session_id", 6, _F.TYPE_STRING),
                     _field("host_name", 7, _F.TYPE_STRING),
                     _field("emit_xspace", 9, _F.TYPE_BOOL)),
            _message("ProfileResponse", _field("empty_trace", 7, _F.TYPE_BOOL)),
            _message("TerminateRequest", _field("session_id", 1, _F.TYPE_STRING)),
            _message("TerminateResponse"),
        ])
    pool.Add(service_file)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{m.name}"))
            for m in service_file.message_type}


_MESSAGES = _build_messages()
ProfileRequest = _MESSAGES["ProfileRequest"]
ProfileResponse = _MESSAGES["ProfileResponse"]
TerminateRequest = _MESSAGES["TerminateRequest"]
TerminateResponse = _MESSAGES["TerminateResponse"]


# -- the service ------------------------------------------------------------------------------------

class _Failure(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# TensorFlow's profiler allows one session per process, whichever server or caller starts it.
_SESSION_LOCK = threading.Lock()


def _busy() -> _Failure:
    # ALREADY_EXISTS: the code TensorFlow's own tf.profiler.experimental.start raises for this (AlreadyExistsError
    # 'Another profiler is running.'), and one TF's profiler client treats as "retry the trace later".
    return _Failure(grpc.StatusCode.ALREADY_EXISTS,
                    f"{SERVER_NAME}: a profiling session is already running in this server process "
                    "(one at a time); retry when it has finished")


def _path_part(value: str, what: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise _Failure(grpc.StatusCode.INVALID_ARGUMENT,
                       f"{SERVER_NAME}: {what} must be one non-empty path component, got {value!r}")
    return value


def _duration_ms(request) -> int:
    # TF's server times the session by opts.duration_ms; the client sets it and the older top-level
    # duration_ms alike, so fall back to the latter for clients that only set that.
    wanted = request.opts.duration_ms or request.duration_ms
    if wanted > MAX_DURATION_MS:
        log.warning("profile of %d ms requested; capped at %d ms", wanted, MAX_DURATION_MS)
    return min(wanted, MAX_DURATION_MS)


def _profiler_options(opts) -> tf.profiler.experimental.ProfilerOptions | None:
    """The request's tracer levels for tf.profiler.experimental.start; None for TensorFlow's defaults.

    As TF's ProfilerSession, version 0 means a client that predates the defaults, so it gets them. TF 2.21's
    Python API drops every option it is given (session_manager.cc warns "<option> expects an i value") and
    profiles at the defaults (host 2, device 1, python 0); they are still passed when they differ from the
    defaults, so a TensorFlow that honours them does, and the usual request (the defaults) logs nothing.
    """
    if not opts.version:
        return None
    levels = {"host_tracer_level": opts.host_tracer_level, "device_tracer_level": opts.device_tracer_level,
              "python_tracer_level": opts.python_tracer_level}
    options = tf.profiler.experimental.ProfilerOptions(**levels)
    return None if options == tf.profiler.experimental.ProfilerOptions() else options


def is_empty(space: xplane_pb2.XSpace) -> bool:
    """No line of any plane holds an event: TensorFlow's IsEmpty(XSpace), which sets empty_trace."""
    return not any(line.events for plane in space.planes for line in plane.lines)


class ProfilerService:
    """The methods of tensorflow.ProfilerService; register with add_profiler_service()."""

    def __init__(self) -> None:
        self._stops: dict[str, threading.Event] = {}  # session_id -> set to end that Profile early
        self._stops_lock = threading.Lock()

    def Profile(self, request, context: grpc.ServicerContext):
        try:
            return self._profile(request, context)
        except _Failure as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:  # never let a profiling problem take anything else down
            log.exception("profile request failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{SERVER_NAME}: profiling failed: {type(exc).__name__}: {exc}")

    def Terminate(self, request, context: grpc.ServicerContext):
        with self._stops_lock:
            stop = self._stops.get(request.session_id)
        if stop is not None:
            stop.set()
        return TerminateResponse()  # OK whether or not that session runs, as TF's server answers

    def _profile(self, request, context: grpc.ServicerContext):
        if not request.repository_root:
            raise _Failure(grpc.StatusCode.INVALID_ARGUMENT, f"{SERVER_NAME}: ProfileRequest.repository_root is empty")
        session_id = _path_part(request.session_id, "ProfileRequest.session_id")
        file_name = _path_part((request.host_name or socket.gethostname()).replace(":", "_"),
                               "ProfileRequest.host_name") + ".xplane.pb"
        duration_ms = _duration_ms(request)
        if not _SESSION_LOCK.acquire(blocking=False):
            raise _busy()
        stop = threading.Event()
        try:
            with self._stops_lock:
                self._stops[session_id] = stop
            context.add_callback(stop.set)  # the call ends: cancelled or past its deadline
            space = self._trace(request.opts, duration_ms, stop, context)
        finally:
            with self._stops_lock:
                if self._stops.get(session_id) is stop:
                    del self._stops[session_id]
            _SESSION_LOCK.release()
        run_dir = f"{request.repository_root.rstrip('/')}/{session_id}"
        out_path = f"{run_dir}/{file_name}"
        try:  # tf.io.gfile: the file systems TF's own server (tsl::Env) can write to
            tf.io.gfile.makedirs(run_dir)
            with tf.io.gfile.GFile(out_path, "wb") as out:
                out.write(space)
        except (tf.errors.OpError, OSError) as exc:
            message = f"{SERVER_NAME}: cannot write the trace to {out_path}: {exc}"
            raise _Failure(grpc.StatusCode.INTERNAL, message) from exc
        parsed = xplane_pb2.XSpace.FromString(space)
        log.info("profile of %d ms written to %s (%d planes)", duration_ms, out_path, len(parsed.planes))
        return ProfileResponse(empty_trace=is_empty(parsed))

    @staticmethod
    def _trace(opts, duration_ms: int, stop: threading.Event, context: grpc.ServicerContext) -> bytes:
        """Profile this process for duration_ms (less if stopped) and return the serialized XSpace."""
        if opts.start_timestamp_ns:  # the client asked for a start time (its delay_ms): wait for it
            delay_s = min(opts.start_timestamp_ns / 1e9 - time.time(), MAX_DURATION_MS / 1000)
            if delay_s > 0:
                stop.wait(delay_s)
        if not context.is_active():
            raise _Failure(grpc.StatusCode.CANCELLED, f"{SERVER_NAME}: the profile request was cancelled")
        scratch = Path(tempfile.mkdtemp(prefix="dropin-profile-"))
        try:
            try:
                tf.profiler.experimental.start(str(scratch), options=_profiler_options(opts))
            except tf.errors.AlreadyExistsError:  # profiling started in-process by something else
                raise _busy() from None
            try:
                stop.wait(duration_ms / 1000)
            finally:
                tf.profiler.experimental.stop(save=context.is_active())
            if not context.is_active():
                raise _Failure(grpc.StatusCode.CANCELLED, f"{SERVER_NAME}: the profile request was cancelled")
            # export_to_tb wrote <scratch>/plugins/profile/<timestamp>/<this host>.xplane.pb
            written = sorted(scratch.glob("plugins/profile/*/*.xplane.pb"))
            if len(written) != 1:
                raise _Failure(grpc.StatusCode.INTERNAL,
                               f"{SERVER_NAME}: TensorFlow's profiler wrote {len(written)} .xplane.pb files, not 1")
            return written[0].read_bytes()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _unimplemented(method: str):
    def handler(request: bytes, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      f"{SERVER_NAME}: {SERVICE}/{method} is not implemented (TensorFlow's own profiler server "
                      "does not implement it either); use Profile")
    return handler


def add_profiler_service(server: grpc.Server) -> None:
    """Register tensorflow.ProfilerService on `server` (the drop-in's own gRPC port)."""
    service = ProfilerService()
    handlers = {
        "Profile": grpc.unary_unary_rpc_method_handler(
            service.Profile, request_deserializer=ProfileRequest.FromString,
            response_serializer=ProfileResponse.SerializeToString),
        "Terminate": grpc.unary_unary_rpc_method_handler(
            service.Terminate, request_deserializer=TerminateRequest.FromString,
            response_serializer=TerminateResponse.SerializeToString),
    }
    # Never parsed: the request stays bytes and the answer is UNIMPLEMENTED.
    for method in ("Monitor", "StartContinuousProfiling", "StopContinuousProfiling", "GetSnapshot"):
        handlers[method] = grpc.unary_unary_rpc_method_handler(_unimplemented(method))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
