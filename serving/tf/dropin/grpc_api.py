"""gRPC front end: TF Serving's PredictionService and ModelService over the drop-in core.

A thin translator: protos from tensorflow-serving-api in, numpy arrays to
DropInCore, protos out. Errors from the core (errors.py) become the status code
they are named after; anything unexpected becomes INTERNAL and is logged, so a
bad request never takes the server down. Every call carries
`x-served-by: tf-serving-dropin` in its trailing metadata.

Implemented: Predict, GetModelMetadata (signature_def), Classify, Regress,
MultiInference, GetModelStatus, HandleReloadConfigRequest, and TensorFlow's
ProfilerService on the same port (profiler.py), as TF Serving registers it.
A call's gRPC deadline is the core's deadline.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.tf.dropin import SERVER_NAME
from serving.tf.dropin.config import ModelConfigError, SslConfig, models_from_list
from serving.tf.dropin.core import Classification, DropInCore, InferenceTask, ModelRef
from serving.tf.dropin.errors import InvalidArgument, ServingError
from serving.tf.dropin.servable import CLASSIFY_METHOD, Servable, Signature, TensorInfo

log = logging.getLogger("tf-serving-dropin")

SERVED_BY = (("x-served-by", SERVER_NAME),)
SIGNATURE_DEF_FIELD = "signature_def"
# TF Serving's own limit: model_servers/server.cc calls builder.SetMaxMessageSize(tensorflow::kint32max), and
# --grpc_channel_arguments=grpc.max_receive_message_length=N lowers it (deploy sets TorchServe's 64 MiB).
DEFAULT_MAX_RECEIVE_BYTES = 2**31 - 1
# A TensorProto repeats its last value to fill its declared shape, so a tiny message can
# ask for a huge tensor; 2**28 elements is 1 GiB of float32, far beyond any sane batch.
MAX_DECODED_ELEMENTS = 2**28
_INT32 = range(-(2**31), 2**31)
# The core's error code -> gRPC status: the same names, as in TF Serving.
GRPC_STATUS = {code.name: code for code in grpc.StatusCode}
_ERROR_CODES = get_model_status_pb2.ModelVersionStatus.DESCRIPTOR.fields_by_name["status"].message_type \
    .fields_by_name["error_code"].enum_type
_STATE = get_model_status_pb2.ModelVersionStatus.State


def _error_code(name: str) -> int:
    """tensorflow.error.Code number for a code name such as 'NOT_FOUND' (UNKNOWN if unrecognised)."""
    value = _ERROR_CODES.values_by_name.get(name) or _ERROR_CODES.values_by_name["UNKNOWN"]
    return value.number


# -- call wrapper ----------------------------------------------------------------------------

def _rpc(method: Callable) -> Callable:
    """Turn `method(self, request, deadline) -> response` into a gRPC handler that tags and translates errors.

    `deadline` is the call's gRPC deadline as a time.monotonic() value (None: the client set none)."""

    @functools.wraps(method)
    def handler(self, request, context: grpc.ServicerContext):
        # The tag rides in the trailing metadata, which goes out with the status: sending initial metadata of our own
        # would be an operation more per call (5% of the GIL time of a loaded server, sampled with py-spy).
        context.set_trailing_metadata(SERVED_BY)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            return method(self, request, deadline)
        except ServingError as exc:
            code, message = GRPC_STATUS.get(exc.code, grpc.StatusCode.INTERNAL), str(exc)
        except Exception as exc:
            log.exception("tf-serving-dropin: unexpected error in %s", method.__name__)
            code = grpc.StatusCode.INTERNAL
            message = f"{SERVER_NAME}: internal error in {method.__name__}: {type(exc).__name__}: {exc}"
        # abort() raises, so it is called outside the try above, which would otherwise catch it.
        context.abort(code, message)

    return handler


# -- ModelSpec -------------------------------------------------------------------------------

def model_ref(spec) -> ModelRef:
    """TF Serving's ModelSpec as the core's ModelRef (version and version_label are a oneof)."""
    if not spec.name:
        raise InvalidArgument("Missing model name in ModelSpec")
    version = spec.version.value if spec.HasField("version") else None
    return ModelRef(spec.name, version, spec.version_label or None, spec.signature_name)


def _fill_model_spec(target, servable: Servable, signature_name: str | None) -> None:
    """The response's model_spec: the version that answered, and the signature that ran (if any)."""
    target.name = servable.name
    target.version.value = servable.version
    if signature_name is not None:
        target.signature_name = signature_name


# -- tensors ---------------------------------------------------------------------------------

def _dtype_enum(dtype: np.dtype) -> int:
    return tf.as_dtype(dtype).as_datatype_enum  # numpy object (bytes) maps to DT_STRING


def _dtype_name(enum: int) -> str:
    return types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else f"unknown dtype {enum}"


def decode_tensor(key: str, proto, expected: TensorInfo | None) -> np.ndarray:
    """One request TensorProto as a numpy array; InvalidArgument for anything malformed."""
    # TF Serving never casts: a DT_DOUBLE sent to a float input fails there, so it fails here too.
    if expected is not None and proto.dtype != _dtype_enum(expected.dtype):
        raise InvalidArgument(f"input '{key}' has dtype {_dtype_name(proto.dtype)}; "
                              f"the signature expects {_dtype_name(_dtype_enum(expected.dtype))}")
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise InvalidArgument(f"input '{key}' has a negative dimension in its shape {dims}")
    if math.prod(dims) > MAX_DECODED_ELEMENTS:
        raise InvalidArgument(f"input '{key}' declares {math.prod(dims)} elements; "
                              f"the drop-in accepts at most {MAX_DECODED_ELEMENTS}")
    fast = _from_tensor_content(proto, dims)
    if fast is not None:
        return fast
    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # make_ndarray raises ValueError, TypeError or KeyError on bad protos
        raise InvalidArgument(f"input '{key}' is not a valid TensorProto: {exc}") from None


# The numeric dtypes read and written without TensorFlow's generic converters: TensorFlow's enum, numpy's type, and
# the repeated field TF Serving writes values of it into. Requests: tensor_content holds the array's bytes as they
# are (what clients' tf.make_tensor_proto sends). Responses: TF Serving writes outputs with Tensor::AsProtoField (its
# default PredictResponseTensorSerializationOption), every value in that field and never tensor_content, so clients
# reading float_val see them all.
_NUMERIC = ((types_pb2.DT_FLOAT, np.float32, "float_val"), (types_pb2.DT_DOUBLE, np.float64, "double_val"),
            (types_pb2.DT_INT32, np.int32, "int_val"), (types_pb2.DT_INT16, np.int16, "int_val"),
            (types_pb2.DT_INT8, np.int8, "int_val"), (types_pb2.DT_UINT8, np.uint8, "int_val"),
            (types_pb2.DT_UINT16, np.uint16, "int_val"), (types_pb2.DT_INT64, np.int64, "int64_val"),
            (types_pb2.DT_UINT32, np.uint32, "uint32_val"), (types_pb2.DT_UINT64, np.uint64, "uint64_val"),
            (types_pb2.DT_BOOL, np.bool_, "bool_val"))
_NUMPY_BY_ENUM = {enum: np.dtype(numpy) for enum, numpy, _ in _NUMERIC}
_ENUM_AND_FIELD = {np.dtype(numpy): (enum, field) for enum, numpy, field in _NUMERIC}


def _from_tensor_content(proto, dims: list[int]) -> np.ndarray | None:
    """The array of a numeric tensor sent as tensor_content without tf.make_ndarray's generic path (8 us against
    2 us for one image); None for anything else (values in repeated fields, strings, scalars), which goes there."""
    dtype = _NUMPY_BY_ENUM.get(proto.dtype)
    if dtype is None or not dims or len(proto.tensor_content) != math.prod(dims) * dtype.itemsize:
        return None
    return np.frombuffer(proto.tensor_content, dtype).reshape(dims).copy()


def tensor_proto(array: np.ndarray):
    """An output as TF Serving writes it (AsProtoField): numeric values straight into their repeated field (3 us for
    one row of probabilities, where tf.make_tensor_proto took 13 us and would pack several values into
    tensor_content); strings and other dtypes through tf.make_tensor_proto."""
    if array.dtype not in _ENUM_AND_FIELD:
        return tf.make_tensor_proto(array)
    enum, field = _ENUM_AND_FIELD[array.dtype]
    proto = tensor_pb2.TensorProto(dtype=enum)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape)
    getattr(proto, field).extend(array.ravel().tolist())
    return proto


def decode_inputs(tensors, signature: Signature | None) -> dict[str, np.ndarray]:
    expected = signature.inputs if signature else {}
    return {key: decode_tensor(key, proto, expected.get(key)) for key, proto in tensors.items()}


def signature_def_map(signature_defs: dict) -> get_model_metadata_pb2.SignatureDefMap:
    """The servable's SignatureDef protos, as GetModelMetadata packs them."""
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in signature_defs.items():
        result.signature_def[key].CopyFrom(definition)
    return result


# -- Classify / Regress / MultiInference -----------------------------------------------------

def serialized_examples(input_proto) -> list[bytes]:
    """An Input proto as serialized tf.Examples, the way TF Serving feeds them to the signature."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        return [example.SerializeToString() for example in input_proto.example_list.examples]
    if kind == "example_list_with_context":
        # Concatenated serialized protos parse as a merge, so each example's own features win over
        # the context's; TF Serving builds its input tensor the same way.
        with_context = input_proto.example_list_with_context
        context = with_context.context.SerializeToString()
        return [context + example.SerializeToString() for example in with_context.examples]
    return []


def fill_classifications(result: classification_pb2.ClassificationResult,
                         classifications: list[Classification]) -> None:
    for classes in classifications:
        target = result.classifications.add()
        for label, score in classes:
            target.classes.add(label=label, score=score)


def fill_regressions(result: regression_pb2.RegressionResult, values: list[float]) -> None:
    for value in values:
        result.regressions.add(value=value)


# -- services --------------------------------------------------------------------------------

class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: DropInCore) -> None:
        self.core = core

    def _signature(self, ref: ModelRef) -> Signature | None:
        """The signature a request will run, to check dtypes before running it."""
        try:
            return self.core.resolve(ref)[1]
        except ServingError:
            return None  # core.predict raises the same error below and counts it in the metrics

    @_rpc
    def Predict(self, request: predict_pb2.PredictRequest, deadline) -> predict_pb2.PredictResponse:
        ref = model_ref(request.model_spec)
        inputs = decode_inputs(request.inputs, self._signature(ref))
        servable, outputs = self.core.predict(ref, inputs, list(request.output_filter), deadline)
        response = predict_pb2.PredictResponse()
        _fill_model_spec(response.model_spec, servable, ref.signature)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tensor_proto(value))
        return response

    @_rpc
    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, deadline):
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        unsupported = sorted(set(fields) - {SIGNATURE_DEF_FIELD})
        if unsupported:
            raise InvalidArgument(f"Metadata field {unsupported[0]} is not supported "
                                  f"(only '{SIGNATURE_DEF_FIELD}' is)")
        servable, signature_defs = self.core.metadata(model_ref(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _fill_model_spec(response.model_spec, servable, None)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(signature_defs))
        return response

    @_rpc
    def Classify(self, request: classification_pb2.ClassificationRequest, deadline):
        return self._on_examples(request, deadline, self.core.classify, classification_pb2.ClassificationResponse(),
                                 fill_classifications)

    @_rpc
    def Regress(self, request: regression_pb2.RegressionRequest, deadline):
        return self._on_examples(request, deadline, self.core.regress, regression_pb2.RegressionResponse(),
                                 fill_regressions)

    def _on_examples(self, request, deadline, run, response, fill_result):
        """Classify and Regress: tf.Examples in, the core's results written into response.result."""
        ref = model_ref(request.model_spec)
        servable, results = run(ref, serialized_examples(request.input), deadline)
        _fill_model_spec(response.model_spec, servable, ref.signature)
        fill_result(response.result, results)
        return response

    @_rpc
    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, deadline):
        tasks = [InferenceTask(model_ref(task.model_spec), task.method_name) for task in request.tasks]
        servable, results = self.core.multi_inference(tasks, serialized_examples(request.input), deadline)
        response = inference_pb2.MultiInferenceResponse()
        for result in results:
            target = response.results.add()
            _fill_model_spec(target.model_spec, servable, result.task.ref.signature)
            if result.task.method_name == CLASSIFY_METHOD:
                fill_classifications(target.classification_result, result.classifications)
            else:
                fill_regressions(target.regression_result, result.regressions)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: DropInCore) -> None:
        self.core = core

    @_rpc
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, deadline):
        spec = request.model_spec
        if not spec.name:
            raise InvalidArgument("Missing model name in request.")
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.core.status(spec.name, version, spec.version_label or None):
            entry = response.model_version_status.add(version=status.version, state=_STATE.Value(status.state))
            entry.status.error_code = _error_code(status.error_code)
            entry.status.error_message = status.error_message
        return response

    @_rpc
    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, deadline):
        """TF Serving's ModelServiceImpl: only a ModelConfigList is accepted; the answer comes once every new model
        serves. A failure is the call's status, as TF Serving answers it (ToGRPCStatus)."""
        if request.config.WhichOneof("config") != "model_config_list":
            raise InvalidArgument("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                  "Only ModelConfigList is currently supported")
        try:
            models = models_from_list(request.config.model_config_list)
        except ModelConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        for model in models:
            log.info("tf-serving-dropin: config reload: %s at %s", model.name, model.base_path)
        self.core.reload_config(models)
        response = model_management_pb2.ReloadConfigResponse()
        # The drop-in keeps no TensorFlow metric registry: a named metric is answered as TF Serving answers a name
        # it does not know, with an increase of 0.
        for name in request.metric_names:
            response.metric.add(name=name, int64_value_increase=0)
        return response


# -- server ----------------------------------------------------------------------------------

def parse_channel_arguments(text: str) -> list[tuple[str, object]]:
    """TF Serving's --grpc_channel_arguments: 'key=value,key=value'; integer values become ints."""
    if not text.strip():
        return []
    arguments: list[tuple[str, object]] = []
    for item in text.split(","):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key or not value:
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {item.strip()!r}")
        arguments.append((key, _channel_value(key, value)))
    return arguments


def _channel_value(key: str, value: str) -> object:
    try:
        number = int(value)
    except ValueError:
        return value
    if number not in _INT32:  # gRPC channel arguments are C ints
        raise ValueError(f"--grpc_channel_arguments: {key}={value} does not fit in a 32-bit integer")
    return number


def server_options(channel_args: Iterable[tuple[str, object]] | None) -> list[tuple[str, object]]:
    """gRPC server options: the drop-in's defaults, overridden by --grpc_channel_arguments."""
    options: dict[str, object] = {
        "grpc.max_receive_message_length": DEFAULT_MAX_RECEIVE_BYTES,
        # gRPC turns SO_REUSEPORT on by default, which lets a second server share a busy port
        # silently; a port conflict should fail at startup instead.
        "grpc.so_reuseport": 0,
    }
    options.update(dict(channel_args or ()))
    return list(options.items())


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a server that died blocks bind(); remove it unless a server still answers."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # not ours to delete: bind fails and says so
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    finally:
        probe.close()


def server_credentials(ssl: SslConfig) -> grpc.ServerCredentials:
    """TF Serving's BuildServerCredentialsFromSSLConfigFile: the server's key pair, the custom CA (if any) as the
    roots, and with client_verify a client certificate required and verified."""
    return grpc.ssl_server_credentials([(ssl.server_key.encode(), ssl.server_cert.encode())],
                                       root_certificates=ssl.custom_ca.encode() if ssl.custom_ca else None,
                                       require_client_auth=ssl.client_verify)


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise OSError(f"{SERVER_NAME}: cannot bind gRPC to {address} (in use, not permitted or not a valid address)")
    return port


class GrpcServer:
    """A started gRPC server: `.port` is the bound TCP port, `.socket_path` the unix socket or None."""

    def __init__(self, server: grpc.Server, port: int, socket_path: str | None) -> None:
        self._server, self.port, self.socket_path = server, port, socket_path

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight ones finish for `grace` seconds, remove the socket file."""
        self._server.stop(grace).wait()
        if self.socket_path:
            _remove_stale_socket(self.socket_path)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or timeout); True if it stopped."""
        return self._server.wait_for_termination(timeout)


def serve_grpc(core: DropInCore, host: str, port: int, *, socket_path: str | None = None,
               channel_args: list[tuple[str, object]] | None = None, max_workers: int = 16,
               profiler: bool = True, ssl: SslConfig | None = None) -> GrpcServer:
    """Start PredictionService and ModelService (and TensorFlow's ProfilerService, as TF Serving's
    --enable_profiler does) on host:port (0 picks a free port) and optionally a unix socket; with `ssl`
    (--ssl_config_file) both listen with TLS, as TF Serving's do."""
    server = grpc.server(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         options=server_options(channel_args))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    if profiler:
        from serving.tf.dropin.profiler import add_profiler_service

        add_profiler_service(server)
    credentials = server_credentials(ssl) if ssl else None
    bound = _bind(server, f"[{host}]:{port}" if ":" in host else f"{host}:{port}", credentials)
    if socket_path:
        _remove_stale_socket(socket_path)
        _bind(server, f"unix:{socket_path}", credentials)
    server.start()
    log.info("tf-serving-dropin: gRPC listening on %s:%d%s%s", host, bound,
             f" and unix:{socket_path}" if socket_path else "",
             f" with TLS{' (client certificates required)' if ssl.client_verify else ''}" if ssl else "")
    return GrpcServer(server, bound, socket_path)
