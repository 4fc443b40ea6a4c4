"""The REST router: TF Serving's REST API (tensorflow.org/tfx/serving/api_rest) as calls on the core.

  POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict|:classify|:regress
  GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
  GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature defs
  GET  <prometheus_path>                                        metrics, when monitoring enables them

RestApi turns (method, path, body) into a Response and knows nothing about
sockets (rest_server.py carries the bytes) or JSON tensors (json_tensor.py).
A request names a model as a gRPC ModelSpec does and reaches the same core
methods the gRPC front end calls, with one deadline: --rest_api_timeout_in_ms,
kept by the core. Errors are `{"error": "..."}` with the HTTP status that
HTTP_STATUS gives the core's error code, the table TF Serving uses.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from serving.tf.dropin import json_tensor
from serving.tf.dropin.config import MonitoringConfig
from serving.tf.dropin.core import DropInCore, ModelRef, RunBlocking
from serving.tf.dropin.errors import InvalidArgument, ServingError

log = logging.getLogger("tf-serving-dropin")

JSON_TYPE = "application/json"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# TF Serving's status code -> HTTP status (its ToHTTPStatusCode).
HTTP_STATUS = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
    "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}

# TF Serving's own path grammar (http_rest_api_handler), case-insensitive like its regex.
_MODEL_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<subresource>metadata))?"
    r"(?::(?P<verb>classify|regress|predict))?",
    re.IGNORECASE)
_MODELS_PREFIX = re.compile(r"/v1/models(?:/|$)", re.IGNORECASE)


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
    return Response(status, json_tensor.dumps(payload))


def error_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json_tensor.dumps({"error": message}), JSON_TYPE, headers, message)


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
        except Exception as exc:
            return _error(exc, method, path)

    async def dispatch_async(self, method: str, raw_path: str, body: bytes, run_blocking: RunBlocking) -> Response:
        """dispatch() for an event loop. A :predict is decoded on the loop and, when it batches, waits for its batch
        without a thread (core.predict_async) instead of being handed to a REST thread and back, which took tiny's
        REST throughput from 953 [878-1,012] to 1,214 [1,137-1,227] req/s (drop-in on one core of the 2-core
        development machine, locust on the other, 8 users, 3 interleaved runs each). Every other request runs
        dispatch() through run_blocking."""
        path = raw_path.split("?", 1)[0]
        ref = self._predict_ref(method, path)
        if ref is None:
            return await run_blocking(self.dispatch, method, raw_path, body)
        try:
            request = json_tensor.parse_request_body(body)
            ref.signature_name = json_tensor.signature_name(request)
            inputs, rows = self._predict_inputs(ref, request)
            _, outputs = await self.core.predict_async(ref, inputs, None, self._deadline(), run_blocking=run_blocking)
            return json_response(_predictions(outputs, rows))
        except Exception as exc:
            return _error(exc, method, path)

    def _predict_ref(self, method: str, path: str) -> ModelRef | None:
        """The model a POST .../<model>:predict names; None for any other request."""
        match = _MODEL_PATH.fullmatch(path)
        if (method != "POST" or match is None or (match["verb"] or "").lower() != "predict" or match["subresource"]
                or (self.monitoring.prometheus_enabled and path == self.monitoring.prometheus_path)):
            return None
        return _model_ref(match)

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
        ref = _model_ref(match)
        if match["verb"]:
            _require_method(method, "POST", path)
            request = json_tensor.parse_request_body(body)
            ref.signature_name = json_tensor.signature_name(request)
            run = {"predict": self._predict, "classify": self._classify, "regress": self._regress}
            return json_response(run[match["verb"].lower()](ref, request, self._deadline()))
        _require_method(method, "GET", path)
        if match["subresource"]:
            return json_response(self._metadata(ref))
        return json_response(self._status(ref))

    def _deadline(self) -> float | None:
        return time.monotonic() + self.timeout_s if self.timeout_s else None

    # -- verbs -------------------------------------------------------------------------------------------------------
    def _predict(self, ref: ModelRef, request: dict, deadline: float | None) -> dict:
        inputs, rows = self._predict_inputs(ref, request)
        _, outputs = self.core.predict(ref, inputs, deadline=deadline)
        return _predictions(outputs, rows)

    def _predict_inputs(self, ref: ModelRef, request: dict) -> tuple[dict[str, Any], bool]:
        _, signature = self.core.resolve(ref)  # the signature's TensorInfo says how to read the JSON
        return json_tensor.predict_inputs(request, signature.inputs)

    def _classify(self, ref: ModelRef, request: dict, deadline: float | None) -> dict:
        examples = json_tensor.examples_from_request(request, "classify")
        _, results = self.core.classify(ref, examples, deadline)
        return {"results": json_tensor.classification_json(results)}

    def _regress(self, ref: ModelRef, request: dict, deadline: float | None) -> dict:
        examples = json_tensor.examples_from_request(request, "regress")
        _, results = self.core.regress(ref, examples, deadline)
        return {"results": json_tensor.regression_json(results)}

    def _status(self, ref: ModelRef) -> dict:
        statuses = self.core.status(ref.name, ref.version, ref.label)
        return {"model_version_status": [
            {"version": str(s.version), "state": s.state,
             "status": {"error_code": s.error_code, "error_message": s.error_message}}
            for s in statuses]}

    def _metadata(self, ref: ModelRef) -> dict:
        servable, signature_defs = self.core.metadata(ref)
        return {"model_spec": {"name": ref.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": json_tensor.metadata_json(signature_defs)}}


def _model_ref(match: re.Match) -> ModelRef:
    return ModelRef(unquote(match["name"]), int(match["version"]) if match["version"] else None,
                    unquote(match["label"]) if match["label"] else None)


def _predictions(outputs: dict[str, Any], rows: bool) -> dict:
    """A predict answer in the request's format: row ("predictions") or columnar ("outputs")."""
    if rows:
        return {"predictions": json_tensor.encode_rows(outputs)}
    return {"outputs": json_tensor.encode_columns(outputs)}


def _error(exc: Exception, method: str, path: str) -> Response:
    """The answer to a request that raised: HttpError's own status, a core error's by HTTP_STATUS, else 500."""
    if isinstance(exc, HttpError):
        return error_response(exc.http_status, str(exc), exc.headers)
    if isinstance(exc, ServingError):
        return error_response(HTTP_STATUS.get(exc.code, 500), str(exc))
    log.error("tf-serving-dropin: internal error on %s %s", method, path, exc_info=exc)  # a bug costs one request
    return error_response(500, f"Internal error: {type(exc).__name__}: {exc}")


def _require_method(method: str, allowed: str, path: str) -> None:
    if method != allowed:
        raise HttpError(405, f"Method {method} is not allowed on {path}; use {allowed}", (("Allow", allowed),))
