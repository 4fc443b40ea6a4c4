"""One predict client interface over four transports: TF Serving and TorchServe, each by REST and gRPC.

    with make_client("torch-grpc", model="tiny", token=key) as client:
        probabilities = client.predict(images)  # float32 NHWC batch in, [batch, classes] out

Every failure is one of a small hierarchy, whatever the transport:
ClientError > BadRequest, NotFound, Unauthorized, Unavailable. Transport
modules (grpc, the generated stubs, tensorflow_serving) are imported only by
the client that needs them: tensorflow_serving's protos live in the
tensorflow package, so the TF gRPC client costs a full TensorFlow import.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from common.targets import NAMES, target_named
from common.tensors import NotFloatTensor, decode_float_tensor
from serving import rest_codec


class ClientError(Exception):
    """A predict call failed. `status` is what the server answered (HTTP code or gRPC code name), if anything."""

    def __init__(self, message: str, status: int | str | None = None) -> None:
        super().__init__(message)
        self.status = status


class BadRequest(ClientError):
    """The server rejected the input (HTTP 4xx, gRPC INVALID_ARGUMENT); the message has the server's reason."""


class NotFound(ClientError):
    """No such model or version (HTTP 404, gRPC NOT_FOUND)."""


class Unauthorized(ClientError):
    """The token is missing or wrong (HTTP 401/403, gRPC PERMISSION_DENIED/UNAUTHENTICATED)."""


class Unavailable(ClientError):
    """Nothing answered in time: connection refused, UNAVAILABLE, HTTP 503 or timeout."""


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Client(ABC):
    """A connection to one model on one server. Use as a context manager, or call close()."""

    target: ClassVar[str]

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, *, model: str, version: int | None = None,
                 token: str | None = None, timeout: float = 30.0) -> None:
        self.address = _hostport(host, target_named(self.target).default_port if port is None else port)
        self.model, self.version, self.token, self.timeout = model, version, token, timeout
        self.where = f"{self.target} {self.address}"

    @abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities [batch, classes] (float32) for a float32 NHWC image batch."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; the client is unusable afterwards."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _predictions(self, body: bytes | str) -> np.ndarray:
        """Probabilities from a {"predictions": ...} answer; a handler's {"error": ...} is a BadRequest."""
        try:
            answer = json.loads(body)
        except ValueError:
            raise ClientError(f"{self.where}: the answer is not JSON: {body[:200]!r}") from None
        if isinstance(answer, dict) and "error" in answer:
            raise BadRequest(f"{self.where}: {answer['error']}", status="OK")
        if not isinstance(answer, dict) or "predictions" not in answer:
            raise ClientError(f'{self.where}: the answer has no "predictions": {str(answer)[:200]}')
        return np.asarray(answer["predictions"], dtype=np.float32)  # a non-finite value (null) becomes NaN


class _RestClient(Client):
    """POSTs TF Serving's REST predict body; the two servers differ only in the URL path."""

    # Measurements and loopback tests must reach the server itself, never an http_proxy from the environment.
    _opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = f"http://{self.address}{self._path()}"
        # TorchServe reads any other content type as form fields, and the body would not reach the handler.
        self.headers = {"Content-Type": "application/json"}
        if self.token:
            self.headers["Authorization"] = f"Bearer {self.token}"

    @abstractmethod
    def _path(self) -> str:
        """The predict path for self.model and self.version."""

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_body(rest_codec.encode_instances(images))

    def predict_body(self, body: bytes) -> np.ndarray:
        """Predict with a body serialised in advance (a load generator sends the same bytes every time)."""
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return self._predictions(response.read())
        except urllib.error.HTTPError as error:
            raise self._http_error(error.code, error.read()) from None
        except (urllib.error.URLError, OSError) as error:  # refused, reset, timed out
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                reason = f"timed out after {self.timeout} s"
            raise Unavailable(f"{self.where}: no answer from {self.url}: {reason}") from error

    def close(self) -> None:
        """Nothing held: urllib opens one connection per request."""

    def _http_error(self, status: int, body: bytes) -> ClientError:
        text, kind = error_text(body)
        message = f"{self.where}: HTTP {status}{f' {kind}' if kind else ''}: {text}"
        # TorchServe answers a missing or wrong token with 400 InvalidKeyException.
        if status in (401, 403) or kind == "InvalidKeyException":
            return Unauthorized(message, status)
        if status == 404:
            return NotFound(message, status)
        if status == 503:
            return Unavailable(message, status)
        return (BadRequest if 400 <= status < 500 else ClientError)(message, status)


def error_text(body: bytes) -> tuple[str, str | None]:
    """The message of an error answer and its type where the server names one; the raw text otherwise.

    TF Serving, the drop-in and the handler answer {"error"}, TorchServe's frontend {"code", "type", "message"}.
    """
    text = body.decode("utf-8", "replace").strip()
    try:
        answer = json.loads(text)
        return str(answer.get("error") or answer.get("message") or text), answer.get("type")
    except (ValueError, AttributeError):
        return text, None


def rest_path(target: str, model: str, version: int | str | None = None) -> str:
    """The predict path of a REST target: TF Serving's /v1/models/...:predict or TorchServe's /predictions/..."""
    name = urllib.parse.quote(model, safe="")
    if target == "tf-rest":
        return f"/v1/models/{name}{'' if version is None else f'/versions/{version}'}:predict"
    return f"/predictions/{name}{'' if version is None else f'/{version}'}"


class TFRestClient(_RestClient):
    """TF Serving's REST API: POST /v1/models/<name>[/versions/<v>]:predict."""

    target = "tf-rest"

    def _path(self) -> str:
        return rest_path(self.target, self.model, self.version)


class TorchRestClient(_RestClient):
    """TorchServe's inference API: POST /predictions/<name>[/<version>], token as a Bearer header."""

    target = "torch-rest"

    def _path(self) -> str:
        return rest_path(self.target, self.model, self.version)


class _GrpcClient(Client):
    """One insecure channel (loopback or a trusted network); the token travels as `authorization` metadata."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import grpc

        super().__init__(*args, **kwargs)
        self._grpc = grpc
        self.channel = grpc.insecure_channel(self.address)
        self.metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self.metadata)
        except self._grpc.RpcError as error:
            raise self._rpc_error(error.code(), error.details() or "") from error

    def _rpc_error(self, code: Any, details: str) -> ClientError:
        codes = self._grpc.StatusCode
        if code == codes.DEADLINE_EXCEEDED:
            details = f"{details} (timeout {self.timeout} s)"
        message = f"{self.where}: {code.name}: {details}"
        kind = {codes.INVALID_ARGUMENT: BadRequest, codes.NOT_FOUND: NotFound,
                codes.PERMISSION_DENIED: Unauthorized, codes.UNAUTHENTICATED: Unauthorized,
                codes.UNAVAILABLE: Unavailable, codes.DEADLINE_EXCEEDED: Unavailable}.get(code, ClientError)
        return kind(message, code.name)

    def close(self) -> None:
        self.channel.close()


class TFGrpcClient(_GrpcClient):
    """TF Serving's PredictionService.Predict, tensors encoded with numpy (no tf.make_tensor_proto)."""

    target = "tf-grpc"

    def __init__(self, *args: Any, signature: str = rest_codec.DEFAULT_SIGNATURE, input_name: str = "images",
                 output_name: str = "probabilities", **kwargs: Any) -> None:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        super().__init__(*args, **kwargs)
        self.signature, self.input_name, self.output_name = signature, input_name, output_name
        self._predict_pb2 = predict_pb2
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def predict(self, images: np.ndarray) -> np.ndarray:
        request = self._predict_pb2.PredictRequest(inputs={self.input_name: encode_tensor(images)},
                                                   output_filter=[self.output_name])
        request.model_spec.name = self.model
        request.model_spec.signature_name = self.signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        response = self._call(self.stub.Predict, request)
        if self.output_name not in response.outputs:
            raise ClientError(f"{self.where}: no output {self.output_name!r} in {sorted(response.outputs)}")
        return decode_tensor(response.outputs[self.output_name])


def encode_tensor(array: np.ndarray) -> Any:
    """A DT_FLOAT TensorProto with the array's shape and little-endian float32 bytes."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    values = np.ascontiguousarray(array, dtype="<f4")
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n)
                                                   for n in values.shape])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=values.tobytes())


def decode_tensor(proto: Any) -> np.ndarray:
    """A float32 array from a DT_FLOAT TensorProto, packed (tensor_content) or repeated (float_val)."""
    try:
        return decode_float_tensor(proto)
    except NotFloatTensor as error:
        raise ClientError(str(error)) from None


class TorchGrpcClient(_GrpcClient):
    """TorchServe's InferenceAPIsService.Predictions with the REST JSON body as input["body"].

    TorchServe passes each entry of the `input` map to the handler as a field
    of that name; the handler reads "body" as REST delivers it. Stubs come from
    the installed TorchServe jar (serving.torch.protos).
    """

    target = "torch-grpc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from serving.torch.protos import ensure_stubs

        super().__init__(*args, **kwargs)
        stubs = ensure_stubs()
        self._request = stubs.inference_pb2.PredictionsRequest
        self.stub = stubs.inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_body(rest_codec.encode_instances(images))

    def predict_body(self, body: bytes) -> np.ndarray:
        """Predict with a JSON body serialised in advance.

        TorchServe 0.12 answers gRPC with status OK even when the handler set
        400, so a handler's rejection shows only as {"error": ...} in the
        prediction, which _predictions turns into BadRequest.
        """
        version = "" if self.version is None else str(self.version)
        request = self._request(model_name=self.model, model_version=version, input={"body": body})
        return self._predictions(self._call(self.stub.Predictions, request).prediction)

    def _rpc_error(self, code: Any, details: str) -> ClientError:
        # TorchServe reports an unknown model or version as INTERNAL, naming the Java exception in the details.
        if code == self._grpc.StatusCode.INTERNAL and "NotFoundException" in details:
            return NotFound(f"{self.where}: {details.splitlines()[0]}", code.name)
        return super()._rpc_error(code, details)


CLIENTS: dict[str, type[Client]] = {cls.target: cls for cls in (TFRestClient, TFGrpcClient, TorchRestClient,
                                                                 TorchGrpcClient)}


def make_client(target: str, *, host: str = "127.0.0.1", port: int | None = None, model: str,
                version: int | None = None, token: str | None = None, timeout: float = 30.0) -> Client:
    """A client for `target` (one of common.targets.NAMES); port defaults to the server's usual one."""
    if target not in CLIENTS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(NAMES)}")
    return CLIENTS[target](host, port, model=model, version=version, token=token, timeout=timeout)
