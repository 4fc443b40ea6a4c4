"""The bad-input matrix: every input of the catalogue to every target it applies to, then one good request.

A row passes when the server refused the input as the protocol says a client error is refused (HTTP 4xx with a
message, gRPC INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED / FAILED_PRECONDITION / OUT_OF_RANGE with one),
the next good request got the reference answer, and no server process or TorchServe worker was replaced.
Where a server cannot answer so (KNOWN below: what its code does, with the evidence), the row records the real
answer with a note and passes on the rest: no 5xx, the next good request succeeds, nothing restarted.

REST requests go out over raw sockets, so that the matrix reads what the server really sent even when it
answered before the body was out, and so that it can truncate, trickle or announce a body.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.paths import ArtifactPaths, default_artifacts_root, default_model
from common.reference import load_reference
from loadtests.targets import Target
from reliability.inputs import (
    CATALOGUE,
    INPUT_NAME,
    MAX_REQUEST_BYTES,
    TRICKLE_PIECES,
    TRICKLE_S,
    BadInput,
    Call,
    Context,
    Post,
    Probe,
    Raw,
)
from serving.clients import error_text, rest_path

ANSWER_TIMEOUT_S = 30.0  # far beyond any answer here; only a hung server reaches it
EXPECT_WAIT_S = 5.0  # how long an Expect: 100-continue client waits for 100 before it sends the body anyway
GOOD_IMAGES = 2
MESSAGE_CHARS = 160
CLIENT_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                          "OUT_OF_RANGE"})
ERROR_BODY = 'OK with {"error"}'  # torch-grpc: status OK, the handler's refusal in the prediction


@dataclass(frozen=True)
class Answer:
    kind: str  # http | grpc | error-body | goaway | closed | reset | timeout
    status: int | str | None  # HTTP status or gRPC code name; None when nothing was answered
    text: str  # what the table shows: "HTTP 400", "INVALID_ARGUMENT", "connection reset"
    message: str = ""


@dataclass(frozen=True)
class Known:
    """A way a server answers that breaks the rule and cannot be changed from this project; `note` says why.

    `answers` are answer kinds, or kinds with a status ("reset", "error-body", "http 413", "grpc INTERNAL");
    `message_has`, if set, must be in the message too, so that only that answer is excused."""

    target: str
    inputs: frozenset[str]
    answers: frozenset[str]
    note: str
    message_has: str = ""

    def excuses(self, target: str, item: str, answer: Answer) -> bool:
        return (target == self.target and item in self.inputs and self.message_has in answer.message
                and bool({answer.kind, f"{answer.kind} {answer.status}"} & self.answers))


def _as_tf_serving(inputs: set[str], why: str, rest: str, grpc: str) -> tuple[Known, Known]:
    """The drop-in answers these inputs as tensorflow_model_server does, with a result instead of a refusal: TF
    Serving's behaviour is the drop-in's reference. `why` is what TF Serving does, `rest` and `grpc` how each
    transport shows it."""
    return (Known("tf-rest", frozenset(inputs), frozenset({"http 200"}), f"as tensorflow_model_server: {why}{rest}"),
            Known("tf-grpc", frozenset(inputs), frozenset({"grpc OK"}), f"as tensorflow_model_server: {why}{grpc}"))


_OVERSIZE = frozenset({"body-one-byte-over", "body-far-over", "body-far-over-expect"})
_ELSEWHERE = frozenset({"unknown-model", "unknown-version"})
_BODY_INPUTS = frozenset(item.name for item in CATALOGUE if "torch-grpc" in item.recipes and item.name not in
                         _ELSEWHERE | {"grpc-garbage", "grpc-over-limit"})
KNOWN: tuple[Known, ...] = (
    Known("torch-grpc", _BODY_INPUTS, frozenset({"error-body"}),
          "TorchServe 0.12's gRPC Predictions answers status OK whatever status the handler sets "
          "(GRPCJob.response ignores statusCode); the handler's 400 message is in the prediction as {\"error\"}"),
    Known("torch-grpc", _ELSEWHERE, frozenset({"grpc INTERNAL"}),
          "TorchServe 0.12's gRPC API answers an unknown model or version with INTERNAL, not NOT_FOUND "
          "(InferenceImpl.prediction: catch ModelNotFoundException | ModelVersionNotFoundException -> "
          "Status.INTERNAL); the message names the exception", message_has="NotFoundException"),
    Known("torch-rest", _OVERSIZE, frozenset({"http 413"}),
          "TorchServe's netty HttpObjectAggregator answers 413 with an empty body (its fixed TOO_LARGE "
          "response): the status is right, but no message states the limit; not configurable"),
    Known("torch-rest", frozenset({"body-far-over-close"}), frozenset({"reset", "http 413"}),
          "netty's HttpObjectAggregator.handleOversizedMessage answers 413 and closes at once when the request "
          "is not keep-alive (Connection: close, as urllib sends): a client still uploading gets a reset before "
          "it reads the 413; keep-alive and Expect: 100-continue clients read it (rows body-far-over, -expect)"),
    Known("torch-rest", frozenset({"truncated-body"}), frozenset({"closed", "reset"}),
          "netty closes the connection when the client shuts its side mid-body (TorchServe does not allow "
          "half-closure), so the truncated request gets no answer"),
    Known("torch-grpc", frozenset({"grpc-over-limit"}), frozenset({"grpc CANCELLED"}),
          "grpc-java 1.50.0 (in TorchServe 0.12's jar) refuses a message over maxInboundMessageSize "
          "(max_request_size) with a bare RST_STREAM CANCEL, so the client sees CANCELLED without the limit "
          "(grpc/grpc-java#3996, fixed in 1.64 by #11073)"),
    Known("tf-rest", frozenset({"truncated-body"}), frozenset({"closed", "reset"}),
          "aiohttp takes the client's half-close for a lost connection and closes it: the drop-in logs 400 "
          "'request body ended after N of M bytes' but cannot send it"),
    *_as_tf_serving({"wrong-height", "wrong-width"},
                    "TF Serving feeds the tensor to Session::Run without checking it against the signature's shape, "
                    "and this model (convolutions, global average pooling) computes an answer for any height and "
                    "width; a wrong rank or channel count fails in the graph ",
                    rest="(400)", grpc="(INVALID_ARGUMENT)"),
    *_as_tf_serving({"nan", "infinity"}, "",
                    rest="TF Serving's JSON reader takes NaN and Infinity in a float tensor (json_tensor: rapidjson's "
                         "kParseNanAndInfFlag; json_tensor_test MultipleNamedTensor) and the model runs on them; the "
                         "predictions come back with NaN, written as TF Serving writes it. 1e999 is refused (400)",
                    grpc="a float_val may hold NaN or infinity and TF Serving runs the model on it; the outputs hold "
                         "NaN"),
    Known("tf-grpc", frozenset({"empty-batch"}), frozenset({"grpc OK"}),
          "as tensorflow_model_server: a tensor of 0 images runs and answers 0 rows (its batching checks that "
          "inputs have a batch dimension, ComputeTensorBatchSize, not that it is above 0); over REST an empty "
          "\"instances\" is refused (400), as TF Serving does"),
)


# -- one REST request -------------------------------------------------------------------------------------------------

class _Reader:
    """Buffered reads from a socket, for one HTTP response."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _more(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.buffer += chunk
        return bool(chunk)

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._more():
                raise EOFError
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size and self._more():
            pass
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        while self._more():
            pass
        return self.buffer


def _read_response(reader: _Reader) -> tuple[int, bytes]:
    """Status and body of the next response (Content-Length, chunked, or to the end)."""
    status_line, *lines = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip() for name, value in
               (line.split(":", 1) for line in lines if ":" in line)}
    if status == 100:
        return 100, b""
    if "content-length" in headers:
        return status, reader.exactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int(reader.until(b"\r\n").split(b";")[0], 16):
            body += reader.exactly(size)
            reader.until(b"\r\n")
        return status, body
    return status, reader.rest()


def _http_answer(status: int, body: bytes) -> Answer:
    text, _ = error_text(body)
    return Answer("http", status, f"HTTP {status}" + ("" if text else " (empty body)"), text)


def _no_answer(error: BaseException) -> Answer:
    if isinstance(error, TimeoutError):
        return Answer("timeout", None, f"no answer in {ANSWER_TIMEOUT_S:g} s")
    if isinstance(error, EOFError):
        return Answer("closed", None, "connection closed without an answer")
    return Answer("reset", None, "connection reset", f"{type(error).__name__}: {error}")


def _send_expecting(sock: socket.socket, reader: _Reader, head: bytes, body: bytes) -> Answer | None:
    """Expect: 100-continue: the body goes out only after 100 Continue (or EXPECT_WAIT_S of silence, as curl)."""
    sock.sendall(head)
    sock.settimeout(EXPECT_WAIT_S)
    try:
        status, answer = _read_response(reader)
    except TimeoutError:
        status = 100
    sock.settimeout(ANSWER_TIMEOUT_S)
    if status != 100:
        return _http_answer(status, answer)  # refused from the headers: the body never travels
    sock.sendall(body)
    return None


def _send(sock: socket.socket, how: str, head: bytes, body: bytes) -> None:
    if how == "truncate":
        sock.sendall(head + body[: len(body) // 2])
        sock.shutdown(socket.SHUT_WR)
    elif how == "trickle":
        sock.sendall(head)
        step = -(-len(body) // TRICKLE_PIECES)
        for start in range(0, len(body), step):
            time.sleep(TRICKLE_S / TRICKLE_PIECES)
            sock.sendall(body[start:start + step])
    else:
        sock.sendall(head)
        sock.sendall(body)


def post(target: Target, probe: Post, model: str) -> Answer:
    """Send one REST probe and read what the server answers, even if it answered before the body was out."""
    headers = [f"POST {rest_path(target.name, probe.model or model, probe.version)} HTTP/1.1",
               f"Host: {target.host}:{target.port}", "Content-Type: application/json",
               f"Content-Length: {len(probe.body)}"]
    headers += [f"Authorization: Bearer {target.token}"] if target.token else []
    headers += {"close": ["Connection: close"], "expect": ["Expect: 100-continue"]}.get(probe.how, [])
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((target.host, target.port), timeout=ANSWER_TIMEOUT_S) as sock:
        reader, cut = _Reader(sock), None
        try:
            if probe.how == "expect":
                answered = _send_expecting(sock, reader, head, probe.body)
                if answered is not None:
                    return answered
            else:
                _send(sock, probe.how, head, probe.body)
        except (OSError, EOFError, ValueError) as error:  # closed or reset mid-upload, or after the headers
            cut = error
        try:
            answer = _http_answer(*_read_response(reader))
        except (OSError, EOFError, ValueError) as error:
            return _no_answer(cut or error)
    if cut is not None:  # an answer was there, but a plain client (urllib, requests) stops at the failed send
        return Answer("reset", answer.status, f"reset mid-upload ({answer.text} readable)", answer.message)
    return answer


# -- one gRPC request -------------------------------------------------------------------------------------------------

class _Grpc:
    """One channel and the request builders of a gRPC target (imported only when a gRPC target is in the run)."""

    def __init__(self, target: Target) -> None:
        import grpc

        self.grpc, self.target = grpc, target
        self.channel = grpc.insecure_channel(f"{target.host}:{target.port}")
        self.metadata = (("authorization", f"Bearer {target.token}"),) if target.token else ()
        if target.name == "tf-grpc":
            from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

            self.protos = (tensor_pb2, tensor_shape_pb2, types_pb2, predict_pb2)
            self.method = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict
        else:
            from serving.torch.protos import ensure_stubs

            stubs = ensure_stubs()
            self.request_type = stubs.inference_pb2.PredictionsRequest
            self.method = stubs.inference_pb2_grpc.InferenceAPIsServiceStub(self.channel).Predictions

    def request(self, probe: Call, model: str) -> Any:
        if self.target.name != "tf-grpc":
            version = "" if probe.version is None else str(probe.version)
            return self.request_type(model_name=probe.model or model, model_version=version,
                                     input={"body": probe.body or b""})
        tensor_pb2, shape_pb2, types_pb2, predict_pb2 = self.protos
        tensor = probe.tensor
        proto = tensor_pb2.TensorProto(
            dtype=types_pb2.DataType.Value(tensor.dtype), tensor_content=tensor.content,
            tensor_shape=shape_pb2.TensorShapeProto(dim=[shape_pb2.TensorShapeProto.Dim(size=n) for n in tensor.shape]))
        request = predict_pb2.PredictRequest(inputs={INPUT_NAME: proto})
        request.model_spec.name = probe.model or model
        request.model_spec.signature_name = probe.signature or "serving_default"
        if probe.version is not None:
            request.model_spec.version.value = probe.version
        return request

    def call(self, probe: Call, model: str) -> Answer:
        try:
            response = self.method(self.request(probe, model), timeout=ANSWER_TIMEOUT_S, metadata=self.metadata)
        except self.grpc.RpcError as error:
            return Answer("grpc", error.code().name, error.code().name, error.details() or "")
        if self.target.name == "torch-grpc":
            try:
                refused = json.loads(response.prediction).get("error")
            except (ValueError, AttributeError):
                refused = None
            if refused:
                return Answer("error-body", "OK", ERROR_BODY, str(refused))
        return Answer("grpc", "OK", "OK (answered)")

    def close(self) -> None:
        self.channel.close()


_FRAME_GOAWAY = 7
_HTTP2_ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 6: "FRAME_SIZE_ERROR",
                 7: "REFUSED_STREAM", 11: "ENHANCE_YOUR_CALM"}


def raw(target: Target, probe: Raw) -> Answer:
    """Write bytes to the gRPC port and read until the server closes: a GOAWAY frame, if any, says why."""
    with socket.create_connection((target.host, target.port), timeout=ANSWER_TIMEOUT_S) as sock:
        try:
            sock.sendall(probe.data)
            reader = _Reader(sock)
            data = reader.rest()
        except OSError as error:
            return _no_answer(error)
    goaway = _find_goaway(data)
    if goaway is not None:
        code, debug = goaway
        return Answer("goaway", None, f"GOAWAY {_HTTP2_ERRORS.get(code, code)}", debug)
    return Answer("closed", None, "connection closed" + (" without a GOAWAY" if data else ""))


def _find_goaway(data: bytes) -> tuple[int, str] | None:
    """(error code, debug text) of the first GOAWAY frame in a server's HTTP/2 bytes."""
    at = 0
    while at + 9 <= len(data):
        length, kind = int.from_bytes(data[at:at + 3], "big"), data[at + 3]
        payload = data[at + 9:at + 9 + length]
        if kind == _FRAME_GOAWAY and len(payload) >= 8:
            return int.from_bytes(payload[4:8], "big"), payload[8:].decode("utf-8", "replace")
        at += 9 + length
    return None


# -- the server's state and the good request --------------------------------------------------------------------------

def server_state(target: Target, model: str) -> tuple | None:
    """What a restart would change: the server process's start time and, for TorchServe, each worker's pid and
    start time (management API). None when the matrix cannot see them (a compose service, no answer)."""
    import psutil

    record = target.record
    if record is None or record.pgid is None:
        return None
    try:
        leader = psutil.Process(record.pgid).create_time()
    except psutil.Error:
        return ("server process gone",)
    if target.side != "torch":
        return (leader,)
    workers = _torch_workers(target, model)
    return None if workers is None else (leader, workers)


def _torch_workers(target: Target, model: str) -> tuple | None:
    from serving.torch.management import Management, ManagementError
    from serving.torch.server import read_keys

    record = target.record
    token = read_keys(Path(record.key_file))["management"] if record.key_file else None
    try:
        workers = Management(record.ports["management"], token, timeout_s=ANSWER_TIMEOUT_S).workers(model)
    except (OSError, ValueError, ManagementError):
        return None
    return tuple(sorted((w.get("pid"), w.get("startTime")) for w in workers))


@dataclass(frozen=True)
class Good:
    """The good request: reference images and the classes the reference model gives them."""

    images: np.ndarray
    expected: np.ndarray

    def succeeds(self, target: Target, model: str) -> tuple[bool, str]:
        from serving.clients import ClientError, make_client

        try:
            with make_client(target.name, host=target.host, port=target.port, model=model,
                             token=target.token or None, timeout=ANSWER_TIMEOUT_S) as client:
                predicted = client.predict(self.images).argmax(1)
        except ClientError as error:
            return False, str(error)[:MESSAGE_CHARS]
        if not np.array_equal(predicted, self.expected):
            return False, f"classes {predicted.tolist()}, the reference says {self.expected.tolist()}"
        return True, ""


# -- the matrix -------------------------------------------------------------------------------------------------------

def context_for(target: Target, paths: ArtifactPaths, model: str, image: np.ndarray) -> Context:
    """The inputs' context on one target: its batch limit is the one its server runs with."""
    if target.side == "tf":
        knobs = target.record.knobs if target.record else None
        limit = knobs.max_batch_size if knobs is not None and knobs.enable_batching else None
    else:
        with zipfile.ZipFile(paths.torch_model_store / f"{model}.mar") as archive:
            limit = int(json.loads(archive.read("model_meta.json"))["max_batch"])
    return Context(model, image, limit)


def judge(item: BadInput, target: str, answer: Answer) -> tuple[bool, str | None]:
    """Whether the answer keeps the rule, and the note of a KNOWN exception it falls under instead."""
    if item.ends_connection:
        return answer.kind in ("goaway", "closed", "reset"), None
    kept = bool(answer.message) and (
        (answer.kind == "http" and 400 <= answer.status < 500)
        or (answer.kind == "grpc" and answer.status in CLIENT_CODES))
    if kept and item.states_limit:
        kept = str(MAX_REQUEST_BYTES) in answer.message
    if kept:
        return True, None
    note = next((known.note for known in KNOWN if known.excuses(target, item.name, answer)), None)
    return note is not None, note


def _send_probe(target: Target, probe: Probe, model: str, grpc: _Grpc | None) -> Answer:
    if isinstance(probe, Post):
        return post(target, probe, model)
    if isinstance(probe, Raw):
        return raw(target, probe)
    return grpc.call(probe, model)


def _send_slow(target: Target, probe: Post, model: str, good: Good) -> tuple[Answer, str]:
    """The trickled body, with a good request on another connection while it trickles."""
    during: list[tuple[bool, str]] = []

    def meanwhile() -> None:
        time.sleep(TRICKLE_S / 2)
        during.append(good.succeeds(target, model))

    helper = threading.Thread(target=meanwhile, daemon=True)
    helper.start()
    answer = post(target, probe, model)
    helper.join(ANSWER_TIMEOUT_S)
    served, error = during[0] if during else (False, "the good request did not finish")
    return answer, "" if served else f"the good request during the upload failed: {error}"


def _row(target: Target, item: BadInput, probe: Probe, model: str, good: Good, grpc: _Grpc | None,
         before: tuple | None) -> tuple[dict, tuple | None]:
    extra = ""
    if isinstance(probe, Post) and probe.how == "trickle":
        answer, extra = _send_slow(target, probe, model, good)
    else:
        answer = _send_probe(target, probe, model, grpc)
    next_good, error = good.succeeds(target, model)
    after = server_state(target, model)
    restarted = None if before is None or after is None else after != before
    kept, note = judge(item, target.name, answer)
    notes = [text for text in (note, extra, error and f"next good request: {error}") if text]
    row = {"target": target.name, "input": item.name, "answer": answer.text,
           "message": answer.message[:MESSAGE_CHARS], "next_good": next_good and not extra,
           "restarted": restarted, "ok": kept and next_good and not extra and restarted is not True}
    if notes:
        row["note"] = "; ".join(notes)
    return row, after


def _good_requests(paths: ArtifactPaths, model: str) -> Good:
    reference = load_reference(paths, model)
    return Good(reference.images[:GOOD_IMAGES], reference.expected_classes[:GOOD_IMAGES])


def run_target(target: Target, paths: ArtifactPaths, good: Good) -> list[dict]:
    """Every applicable input to one target, each followed by the good request; rows in catalogue order."""
    model = target.record.model if target.record else default_model()
    ctx = context_for(target, paths, model, good.images[0])
    grpc = _Grpc(target) if target.transport == "grpc" else None
    rows, state = [], server_state(target, model)
    try:
        for item in CATALOGUE:
            probe = item.probe(target.name, ctx)
            if probe is not None:
                row, state = _row(target, item, probe, model, good, grpc, state)
                rows.append(row)
    finally:
        if grpc is not None:
            grpc.close()
    return rows


def run_matrix(targets: list[Target], paths: ArtifactPaths | None = None,
               say: Callable[[str], None] = print) -> dict:
    """The matrix section for reliability.json: every input to every target, one line of progress per target."""
    paths = paths or ArtifactPaths(default_artifacts_root())
    model = next((t.record.model for t in targets if t.record), default_model())
    good = _good_requests(paths, model)
    rows: list[dict] = []
    for target in targets:
        started = time.monotonic()
        target_rows = run_target(target, paths, good)
        failed = sum(not row["ok"] for row in target_rows)
        say(f"matrix {target.name:<10} {len(target_rows)} inputs, {failed} failed "
            f"({time.monotonic() - started:.0f} s)")
        rows += target_rows
    return {"targets": {target.name: target.server for target in targets}, "inputs": len(CATALOGUE),
            "catalogue": [{"name": item.name, "description": item.description, "targets": item.targets}
                          for item in CATALOGUE],
            "rows": rows, "passed": all(row["ok"] for row in rows)}


def matrix_table(section: dict) -> str:
    """Inputs down, targets across: each cell the answer and ok / ok* (a known exception, noted below) / FAIL."""
    targets = list(section["targets"])
    cells = {(row["input"], row["target"]): row for row in section["rows"]}
    inputs = list(dict.fromkeys(row["input"] for row in section["rows"]))
    notes: list[str] = []

    def cell(row: dict | None) -> str:
        if row is None:
            return "-"
        mark = "ok" if row["ok"] else "FAIL"
        if row.get("note") and row["ok"]:
            if row["note"] not in notes:
                notes.append(row["note"])
            mark = f"ok*{notes.index(row['note']) + 1}"
        return f"{row['answer']} {mark}"

    table = [["input", *targets]] + [[name, *(cell(cells.get((name, t))) for t in targets)] for name in inputs]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
             for line in table]
    failed = [row for row in section["rows"] if not row["ok"]]
    lines += [f"*{number} {note}" for number, note in enumerate(notes, 1)]
    lines += [f"FAIL {row['target']} {row['input']}: {row['answer']} {row['message']!r} next_good="
              f"{row['next_good']} restarted={row['restarted']} {row.get('note', '')}".rstrip() for row in failed]
    lines.append(f"matrix: {len(section['rows']) - len(failed)} of {len(section['rows'])} rows ok"
                 f"{'' if section['passed'] else ', FAILED'}")
    return "\n".join(lines)
