"""The REST front end: TF Serving's REST API (tensorflow.org/tfx/serving/api_rest), translated to core calls.

  POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict|:classify|:regress
  GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
  GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature defs
  GET  <prometheus_path>                                        metrics, when monitoring enables them

RestApi turns (method, path, body) into a response and knows nothing about
sockets; the handler below only moves bytes. Errors are `{"error": "..."}`
with the HTTP status of the ServingError (errors.py). Request bodies are only
ever parsed as JSON: nothing is evaluated or unpickled.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import unquote

import numpy as np

from serving.tf.dropin import SERVER_IDENTITY, SERVER_NAME
from serving.tf.dropin.config import MonitoringConfig
from serving.tf.dropin.core import DropInCore, ModelRef
from serving.tf.dropin.errors import DeadlineExceeded, InvalidArgument, ServingError
from serving.tf.dropin.servable import Signature, TensorInfo

log = logging.getLogger("tf-serving-dropin")

JSON_TYPE = "application/json"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_MAX_BODY_BYTES = 64 << 20

# TF Serving's own path grammar (http_rest_api_handler), case-insensitive like its regex.
_MODEL_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<subresource>metadata))?"
    r"(?::(?P<verb>classify|regress|predict))?",
    re.IGNORECASE)
_MODELS_PREFIX = re.compile(r"/v1/models(?:/|$)", re.IGNORECASE)

_INT64 = np.iinfo(np.int64)
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_DT_NAMES = {
    np.dtype(np.float32): "DT_FLOAT", np.dtype(np.float64): "DT_DOUBLE", np.dtype(np.float16): "DT_HALF",
    np.dtype(np.int8): "DT_INT8", np.dtype(np.int16): "DT_INT16", np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int64): "DT_INT64", np.dtype(np.uint8): "DT_UINT8", np.dtype(np.uint16): "DT_UINT16",
    np.dtype(np.uint32): "DT_UINT32", np.dtype(np.uint64): "DT_UINT64", np.dtype(np.bool_): "DT_BOOL",
    np.dtype(object): "DT_STRING", np.dtype(np.complex64): "DT_COMPLEX64", np.dtype(np.complex128): "DT_COMPLEX128",
}

T = TypeVar("T")


class HttpError(ServingError):
    """Failures of the HTTP layer itself, which have no TF Serving status code (404 path, 405, 411, 413)."""

    def __init__(self, http_status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.headers = headers


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    error: str = ""  # the message of an error response, for the log line


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode("utf-8"))


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps({"error": message}).encode("utf-8"), JSON_TYPE, headers, message)


# -- the API: (method, path, body) -> Response ------------------------------------------------------------------------

class RestApi:
    """TF Serving's REST API over a DropInCore, independent of the HTTP server that carries it."""

    def __init__(self, core: DropInCore, *, timeout_ms: int = 0, monitoring: MonitoringConfig | None = None,
                 version: str = "") -> None:
        self.core = core
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else 0.0
        self.monitoring = monitoring or MonitoringConfig()
        self.version = version

    def dispatch(self, method: str, raw_path: str, body: bytes) -> Response:
        """Answer one request; never raises, so a bad request cannot take the server down."""
        path = raw_path.split("?", 1)[0]
        try:
            return self._route(method, path, body)
        except HttpError as exc:
            return error_response(exc.http_status, str(exc), exc.headers)
        except ServingError as exc:
            return error_response(exc.http_status, str(exc))
        except Exception as exc:  # a bug must cost one request, not the server
            log.debug("tf-serving-dropin: internal error on %s %s", method, path, exc_info=True)
            return error_response(500, f"Internal error: {type(exc).__name__}: {exc}")

    def _route(self, method: str, path: str, body: bytes) -> Response:
        if self.monitoring.prometheus_enabled and path == self.monitoring.prometheus_path:
            _require_method(method, "GET", path)
            return Response(200, self.core.metrics_text(self.version).encode("utf-8"), PROMETHEUS_TYPE)
        match = _MODEL_PATH.fullmatch(path)
        if match is None or (match["verb"] and match["subresource"]):
            if _MODELS_PREFIX.match(path):  # TF Serving answers paths it cannot parse with InvalidArgument
                if path.rstrip("/").lower() == "/v1/models":
                    raise InvalidArgument("Missing model name in request.")
                raise InvalidArgument(f"Malformed request: {method} {path}")
            raise HttpError(404, f"Not found: {path} (this server answers /v1/models/...)")
        ref = ModelRef(unquote(match["name"]), int(match["version"]) if match["version"] else None,
                       unquote(match["label"]) if match["label"] else None)
        if match["verb"]:
            _require_method(method, "POST", path)
            request = parse_request_body(body)
            ref.signature_name = _signature_name(request)
            run = {"predict": self._predict, "classify": self._classify, "regress": self._regress}
            return json_response(run[match["verb"].lower()](ref, request))
        _require_method(method, "GET", path)
        if match["subresource"]:
            return json_response(self._metadata(ref))
        return json_response(self._status(ref))

    # -- verbs -------------------------------------------------------------------------------------------------------
    def _predict(self, ref: ModelRef, request: dict) -> dict:
        if "instances" in request and "inputs" in request:
            raise InvalidArgument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
        _, signature = self.core.resolve(ref)  # the signature's TensorInfo says how to read the JSON
        if "instances" in request:
            inputs = decode_instances(request["instances"], signature.inputs)
        elif "inputs" in request:
            inputs = decode_columnar(request["inputs"], signature.inputs)
        else:
            raise InvalidArgument("Missing 'inputs' or 'instances' key")
        _, outputs = self._within_deadline(lambda: self.core.predict(ref, inputs))
        if "instances" in request:
            return {"predictions": encode_rows(outputs)}
        return {"outputs": encode_columns(outputs)}

    def _classify(self, ref: ModelRef, request: dict) -> dict:
        examples = examples_from_request(request, "classify")
        _, outputs = self._within_deadline(lambda: self.core.classify(ref, examples))
        return {"results": classification_results(outputs)}

    def _regress(self, ref: ModelRef, request: dict) -> dict:
        examples = examples_from_request(request, "regress")
        _, outputs = self._within_deadline(lambda: self.core.regress(ref, examples))
        return {"results": regression_results(outputs)}

    def _status(self, ref: ModelRef) -> dict:
        statuses = self.core.status(ref.name, ref.version, ref.label)
        return {"model_version_status": [
            {"version": str(s.version), "state": s.state,
             "status": {"error_code": s.error_code, "error_message": s.error_message}}
            for s in statuses]}

    def _metadata(self, ref: ModelRef) -> dict:
        servable, signatures = self.core.metadata(ref)
        return {"model_spec": {"name": ref.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": {"signature_def": {
                    key: signature_json(signature) for key, signature in sorted(signatures.items())}}}}

    def _within_deadline(self, call: Callable[[], T]) -> T:
        """Bound a core call by --rest_api_timeout_in_ms. The call cannot be cancelled: on timeout it finishes in
        its own daemon thread and its result is dropped, as a timed-out client would drop it."""
        if not self.timeout_s:
            return call()
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the waiting request thread, which re-raises it
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True, name="rest-deadline").start()
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise DeadlineExceeded(f"Deadline Exceeded: the request took longer than "
                                   f"{self.timeout_s * 1000:g} ms (--rest_api_timeout_in_ms)") from None


def _require_method(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise HttpError(405, f"Method {method} is not allowed on {path}; use {allowed}", (("Allow", allowed),))


# -- request bodies ---------------------------------------------------------------------------------------------------

def parse_request_body(body: bytes) -> dict:
    """The body as a JSON object. NaN/Infinity parse (as in TF Serving); the core rejects them as inputs."""
    if not body.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        request = json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"JSON Parse error: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InvalidArgument(f"JSON Parse error: {type(exc).__name__}: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidArgument("JSON Value: the request body is not an object")
    return request


def _signature_name(request: dict) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument("'signature_name' key must be a string")
    return name


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _is_named(value: Any) -> bool:
    """A row-format instance keyed by input name (a {"b64": ...} object is a value, not a name)."""
    return isinstance(value, dict) and not _is_b64(value)


def decode_instances(instances: Any, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    """Row format: one list entry per example, either a value (one input) or an object keyed by input name."""
    if not isinstance(instances, list):
        raise InvalidArgument("Excepting 'instances' to be an list/array")
    if not instances:
        raise InvalidArgument("No values in 'instances' array")
    if not infos:
        raise InvalidArgument("Failed to get input map for signature")
    if not _is_named(instances[0]):
        if len(infos) > 1:
            raise InvalidArgument("instances is a plain list, but expecting list of objects as multiple input tensors "
                                  f"required as per tensorinfo_map: {sorted(infos)}")
        for index, item in enumerate(instances):
            if _is_named(item):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
        ((key, info),) = infos.items()
        return {key: to_array(instances, info, key)}
    columns: dict[str, list] = {key: [] for key in infos}
    for index, item in enumerate(instances):
        if not _is_named(item):
            raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
        if set(item) != set(infos):
            raise InvalidArgument(f"Failed to process element: {index} of 'instances' list. JSON object has keys "
                                  f"{sorted(item)} but must only have keys: {','.join(sorted(infos))}")
        for key in infos:
            columns[key].append(item[key])
    return {key: to_array(values, infos[key], key) for key, values in columns.items()}


def decode_columnar(inputs: Any, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    """Columnar format: one value (one input) or an object of whole tensors keyed by input name."""
    if not infos:
        raise InvalidArgument("Failed to get input map for signature")
    if not _is_named(inputs):
        if len(infos) > 1:
            raise InvalidArgument("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                  f"required as per tensorinfo_map: {sorted(infos)}")
        ((key, info),) = infos.items()
        return {key: to_array(inputs, info, key)}
    unknown = sorted(set(inputs) - set(infos))
    if unknown:
        raise InvalidArgument(f"Unknown named input(s) {unknown} in 'inputs' object; the signature has {sorted(infos)}")
    for key in infos:
        if key not in inputs:
            raise InvalidArgument(f"Missing named input: {key} in 'inputs' object.")
    return {key: to_array(inputs[key], info, key) for key, info in infos.items()}


def to_array(value: Any, info: TensorInfo, name: str) -> np.ndarray:
    """A JSON value as an array of the input's dtype; wrong JSON types and ragged lists are InvalidArgument.

    numpy infers the JSON's own type first (fast, in C), then the inferred kind is checked against the signature,
    so "1.5" never becomes a float and 1.5 never silently becomes an int."""
    kind = info.dtype.kind
    if kind in "OSU":
        return _string_array(value, name)
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"input '{name}' is not a rectangular array of numbers (ragged lists, or lists mixed "
                              f"with scalars): {exc}") from None
    got = array.dtype.kind
    if kind == "b":
        ok = got == "b"
    elif kind in "iu":
        ok = got in "iu" and _fits(array, info.dtype)
    elif kind in "fc" or info.dtype.name == "bfloat16":
        ok = got in "iuf"
    else:
        raise InvalidArgument(f"input '{name}' has dtype {info.dtype}, which the REST API cannot fill from JSON")
    if not ok:
        raise InvalidArgument(f"input '{name}' expects {_dt_name(info.dtype)} values but the JSON holds "
                              f"{_json_kind(array)}")
    return array.astype(info.dtype, copy=False)


def _fits(array: np.ndarray, dtype: np.dtype) -> bool:
    if array.size == 0:
        return True
    bounds = np.iinfo(dtype)
    return bool(array.min() >= bounds.min and array.max() <= bounds.max)


def _json_kind(array: np.ndarray) -> str:
    names = {"b": "booleans", "U": "strings", "O": "mixed, null or object values", "f": "non-integer numbers",
             "i": "integers out of range", "u": "integers out of range"}
    return names.get(array.dtype.kind, str(array.dtype))


def _string_array(value: Any, name: str) -> np.ndarray:
    """DT_STRING: JSON strings (UTF-8) or {"b64": ...} objects, as an object array of bytes."""
    flat: list[bytes] = []
    shape = _walk_strings(value, name, flat, depth=0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _walk_strings(value: Any, name: str, flat: list[bytes], depth: int) -> tuple[int, ...]:
    """Append the leaves of a nested list to `flat`; return its shape, refusing ragged lists."""
    if isinstance(value, list):
        if depth >= 32:
            raise InvalidArgument(f"input '{name}' is nested too deeply")
        shapes = {_walk_strings(item, name, flat, depth + 1) for item in value}
        if len(shapes) > 1:
            raise InvalidArgument(f"input '{name}' is ragged: its lists have shapes {sorted(shapes)}")
        return (len(value), *(shapes.pop() if shapes else ()))
    flat.append(_string_value(value, name))
    return ()


def _string_value(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"input '{name}': unable to base64 decode {value['b64'][:32]!r}") from None
    raise InvalidArgument(f"input '{name}' expects DT_STRING values (strings or {{\"b64\": ...}}), "
                          f"got {type(value).__name__}")


# -- tf.Example for classify / regress --------------------------------------------------------------------------------

def examples_from_request(request: dict, verb: str) -> list[bytes]:
    """Serialized tf.Examples; a "context" Example is prepended to each, so that parsing merges it with the example's
    own features (the example wins on a shared name), which is what TF Serving feeds an ExampleListWithContext."""
    context = b""
    if "context" in request:
        context = json_to_example(request["context"]).SerializeToString()
    examples = request.get("examples")
    if examples is None:
        raise InvalidArgument(f"When method is {verb}, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise InvalidArgument("Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgument("'examples' value is an empty array")
    return [context + json_to_example(example).SerializeToString() for example in examples]


def json_to_example(value: Any):
    """A JSON object of features as a tf.train.Example: ints (and booleans) -> int64_list, numbers with a fraction
    -> float_list (ints among them are promoted), strings and {"b64": ...} -> bytes_list; scalars or flat lists."""
    from tensorflow.core.example import example_pb2

    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        items = content if isinstance(content, list) else [content]
        kinds = {_feature_kind(item, name) for item in items}
        if kinds == {"bytes"}:
            feature.bytes_list.value.extend(_string_value(item, name) for item in items)
        elif kinds == {"int64"}:
            feature.int64_list.value.extend(int(item) for item in items)
        elif kinds <= {"int64", "float"} and kinds:
            feature.float_list.value.extend(float(item) for item in items)
        elif kinds:
            raise InvalidArgument(f"Unexpected element type in feature: {name}: it mixes {sorted(kinds)} values")
    return example


def _feature_kind(item: Any, name: str) -> str:
    if isinstance(item, bool):
        return "int64"
    if isinstance(item, int):
        if not _INT64.min <= item <= _INT64.max:
            raise InvalidArgument(f"Feature: {name} has an integer outside int64. Only int64 is supported.")
        return "int64"
    if isinstance(item, float):
        if abs(item) > _FLOAT32_MAX and np.isfinite(item):
            raise InvalidArgument(f"Feature: {name} has a value that does not fit a float: {item}")
        return "float"
    if isinstance(item, str) or _is_b64(item):
        return "bytes"
    raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")


def _json_type(value: Any) -> str:
    names = {dict: "Object", list: "Array", str: "String", bool: "Boolean", int: "Number", float: "Number"}
    return "Null" if value is None else names.get(type(value), type(value).__name__)


# -- responses --------------------------------------------------------------------------------------------------------

def encode_rows(outputs: dict[str, np.ndarray]) -> list:
    """Row format: one entry per example; a bare value for one output, an object keyed by output name for several."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    batch = None
    for key, array in outputs.items():
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {key} has no shape information ")
        if array.shape[0] < 1:
            raise InvalidArgument(f"Tensor name: {key} has invalid batch size: {array.shape[0]}")
        if batch is not None and array.shape[0] != batch:
            raise InvalidArgument(f"Tensor name: {key} has inconsistent batch size: {array.shape[0]} "
                                  f"expecting: {batch}")
        batch = array.shape[0]
    columns = {key: json_values(outputs[key], key) for key in sorted(outputs)}
    if len(columns) == 1:
        return next(iter(columns.values()))
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def encode_columns(outputs: dict[str, np.ndarray]) -> Any:
    """Columnar format: the whole tensor for one output, an object of tensors keyed by output name for several."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    if len(outputs) == 1:
        ((key, array),) = outputs.items()
        return json_values(array, key)
    return {key: json_values(outputs[key], key) for key in sorted(outputs)}


def json_values(array: np.ndarray, name: str) -> Any:
    """An output tensor as nested lists of JSON values. DT_STRING outputs whose name ends in "_bytes" are written as
    {"b64": ...}, as TF Serving does; so are other strings that are not valid UTF-8 (TF Serving would emit invalid
    JSON for them)."""
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind in "OSU":
        return _strings_to_json(array.tolist(), name.endswith("_bytes"))
    if kind == "c":
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {_dt_name(array.dtype)}")
    if kind not in "biuf":  # e.g. bfloat16, which json cannot write
        array = array.astype(np.float32)
    return array.tolist()


def _strings_to_json(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_strings_to_json(item, as_b64) for item in value]
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not as_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def _label(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def classification_results(outputs: dict[str, np.ndarray]) -> list:
    """[[[label, score], ...] per example]; a missing 'classes' gives empty labels, missing 'scores' gives 0."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise ServingError("classify signature returned neither 'classes' nor 'scores'")
    examples = len(classes if classes is not None else scores)
    if scores is not None:
        scores = np.reshape(scores, (examples, -1))
    classes = np.full(scores.shape, b"", dtype=object) if classes is None else np.reshape(classes, (examples, -1))
    if scores is None:
        scores = np.zeros(classes.shape, np.float32)
    return [[[_label(label), float(score)] for label, score in zip(labels, row, strict=False)]
            for labels, row in zip(classes, scores, strict=True)]


def regression_results(outputs: dict[str, np.ndarray]) -> list[float]:
    if "outputs" not in outputs:
        raise ServingError("regress signature returned no 'outputs' tensor")
    return [float(value) for value in np.reshape(outputs["outputs"], -1)]


def signature_json(signature: Signature) -> dict:
    """One SignatureDef as GetModelMetadataResponse's JSON writes it."""
    return {"inputs": {key: tensor_info_json(info) for key, info in sorted(signature.inputs.items())},
            "outputs": {key: tensor_info_json(info) for key, info in sorted(signature.outputs.items())},
            "method_name": signature.method_name}


def tensor_info_json(info: TensorInfo) -> dict:
    if info.shape is None:
        shape = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(size), "name": ""} for size in info.shape], "unknown_rank": False}
    return {"dtype": _dt_name(info.dtype), "tensor_shape": shape, "name": info.name}


def _dt_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype in _DT_NAMES:
        return _DT_NAMES[dtype]
    if dtype.name == "bfloat16":
        return "DT_BFLOAT16"
    return "DT_STRING" if dtype.kind in "SU" else "DT_INVALID"


# -- HTTP plumbing ----------------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """Moves bytes between a keep-alive connection and RestApi.dispatch; every response has a Content-Length."""

    protocol_version = "HTTP/1.1"  # keep-alive: load generators reuse connections
    disable_nagle_algorithm = True  # headers and body are two writes; Nagle would hold the body back ~40 ms
    server: _HttpServer

    def version_string(self) -> str:
        return SERVER_IDENTITY

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        """Silent per request: errors are logged once each by _respond."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except HttpError as exc:
            self.close_connection = True  # the unread body would be taken for the next request
            self._respond(error_response(exc.http_status, str(exc)))
            return
        method = "GET" if self.command == "HEAD" else self.command  # HEAD: GET's headers, no body (_respond)
        self._respond(self.server.api.dispatch(method, self.path, body))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _serve

    def _declared_length(self) -> int:
        """Content-Length, checked before a byte of the body is read."""
        if "Transfer-Encoding" in self.headers:
            raise HttpError(411, "chunked request bodies are not supported; send a Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        if not raw.strip().isdigit():
            raise HttpError(400, f"invalid Content-Length {raw!r}")
        length = int(raw)
        if length > self.server.max_body_bytes:
            raise HttpError(413, f"request body of {length} bytes is over the limit of "
                                 f"{self.server.max_body_bytes} bytes")
        return length

    def _read_body(self) -> bytes:
        length = self._declared_length()
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise HttpError(400, f"request body ended after {len(body)} of {length} bytes")
        return body

    def handle_expect_100(self) -> bool:
        """Refuse an oversize body before the client sends it, rather than after."""
        try:
            self._declared_length()
        except HttpError as exc:
            self.close_connection = True
            self._respond(error_response(exc.http_status, str(exc)))
            return False
        return super().handle_expect_100()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors found by the base class (bad request line, headers too long...) as JSON too."""
        self.close_connection = True
        try:
            text = message or HTTPStatus(code).phrase
        except ValueError:
            text = f"HTTP error {code}"
        self._respond(error_response(code, text))

    def _respond(self, response: Response) -> None:
        self.send_response(response.status)  # also writes Server: SERVER_IDENTITY and Date
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Served-By", SERVER_NAME)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        if response.status >= 400:
            level = logging.ERROR if response.status >= 500 else logging.WARNING
            log.log(level, "tf-serving-dropin: %s %s -> %d %s", self.command or "-", getattr(self, "path", "-"),
                    response.status, response.error)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up shutdown
    request_queue_size = 128  # listen backlog: a load generator opens many connections at once

    def __init__(self, address: tuple[str, int], api: RestApi, max_body_bytes: int) -> None:
        self.api = api
        self.max_body_bytes = max_body_bytes
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """End keep-alive connections, so no request is answered after shutdown."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that fails (client gone mid-response) ends with one log line, not a traceback on stderr."""
        log.debug("tf-serving-dropin: connection from %s ended with an error", client_address, exc_info=True)


class _HttpServerV6(_HttpServer):
    address_family = socket.AF_INET6


class RestServer:
    """A running REST front end: .port is the bound port, .shutdown() stops it."""

    def __init__(self, httpd: _HttpServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def api(self) -> RestApi:
        return self._httpd.api

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_rest(core: DropInCore, host: str, port: int, *, timeout_ms: int = 0,
               monitoring: MonitoringConfig | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               version: str = "") -> RestServer:
    """Serve TF Serving's REST API for `core` on host:port (0 picks a free port) from a background thread."""
    api = RestApi(core, timeout_ms=timeout_ms, monitoring=monitoring, version=version)
    server_class = _HttpServerV6 if ":" in host else _HttpServer
    httpd = server_class((host, port), api, max_body_bytes)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                              name=f"rest-api-{httpd.server_address[1]}")
    thread.start()
    log.debug("tf-serving-dropin: REST API listening on %s:%d", host, httpd.server_address[1])
    return RestServer(httpd, thread)
