"""The drop-in's gRPC front end through TF Serving's official stubs, over TCP and a unix socket."""

import math
import socket
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from model.spec import get_spec
from serving.tf.dropin import SERVER_NAME
from serving.tf.dropin.config import ModelConfig
from serving.tf.dropin.core import DropInCore
from serving.tf.dropin.grpc_api import parse_channel_arguments, serve_grpc
from serving.tf.dropin.servable import CLASSIFY_METHOD, REGRESS_METHOD

SPEC = get_spec("tiny")
IMAGES = np.random.default_rng(0).random((4, *SPEC.input_shape), dtype=np.float32)
TIMEOUT = 30


# -- models and server -----------------------------------------------------------------------

class _ExampleModel(tf.Module):
    """Classify and regress signatures over serialized tf.Examples with one feature x: [2] floats."""

    @staticmethod
    def _x(serialized):
        return tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32)})["x"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        x = self._x(inputs)
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(x)[0], 1])
        return {"classes": classes, "scores": tf.nn.softmax(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": tf.reduce_sum(self._x(inputs), axis=1)}


def _export_example_model(version_dir):
    module = _ExampleModel()
    tf.saved_model.save(module, str(version_dir), signatures={"classify": module.classify,
                                                              "regress": module.regress})
    # TF2's saver marks every signature as predict; TF Serving routes Classify/Regress on method_name.
    path = version_dir / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    proto.meta_graphs[0].signature_def["classify"].method_name = CLASSIFY_METHOD
    proto.meta_graphs[0].signature_def["regress"].method_name = REGRESS_METHOD
    path.write_bytes(proto.SerializeToString())


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("grpc")


@pytest.fixture(scope="module")
def expected(root, savedmodel_versions):
    """The tiny model, randomly initialised, served as version 1; its Keras output is the reference."""
    savedmodel_versions.copy_to(root / "models/tiny", 1)
    _export_example_model(root / "models/examples/1")
    return savedmodel_versions.reference(1, IMAGES)


@pytest.fixture(scope="module")
def core(root, expected):
    core = DropInCore([ModelConfig("tiny", root / "models/tiny", labels={"stable": 1}),
                       ModelConfig("examples", root / "models/examples")])
    core.start_polling(0)
    yield core
    core.stop()


@pytest.fixture(scope="module")
def server(core, root):
    server = serve_grpc(core, "127.0.0.1", 0, socket_path=str(root / "grpc.sock"))
    yield server
    server.stop(grace=None)


def _channel_target(server, transport):
    return f"127.0.0.1:{server.port}" if transport == "tcp" else f"unix:{server.socket_path}"


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(_channel_target(server, "tcp")) as channel:
        yield channel


@pytest.fixture(scope="module")
def predictions(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


# -- helpers ---------------------------------------------------------------------------------

def _predict_request(images=IMAGES, name="tiny", version=None, label=None, key="images", **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for field, value in spec.items():
        setattr(request.model_spec, field, value)
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[key].CopyFrom(tf.make_tensor_proto(images))
    return request


def _probabilities(response):
    tensor = response.outputs["probabilities"]
    assert len(tensor.float_val) == np.prod([d.size for d in tensor.tensor_shape.dim])  # AsProtoField, as TF Serving
    return tf.make_ndarray(tensor)


def _assert_matches(response, expected):
    assert np.abs(_probabilities(response) - expected).max() <= 1e-5


def _assert_still_serving(predictions, expected):
    _assert_matches(predictions.Predict(_predict_request(), timeout=TIMEOUT), expected)


def _code(call, request):
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    return caught.value.code(), caught.value.details()


def _tensor(dtype, dims, **values):
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **values)


def _examples_input(rows, context=None):
    """An Input proto with one example per row of x; with context, the examples go in a list with context."""
    def example(values):
        proto = tf.train.Example()
        if values is not None:
            proto.features.feature["x"].float_list.value.extend(values)
        return proto

    proto = input_pb2.Input()
    if context is None:
        proto.example_list.examples.extend(example(row) for row in rows)
    else:
        proto.example_list_with_context.context.CopyFrom(example(context))
        proto.example_list_with_context.examples.extend(example(row) for row in rows)
    return proto


# -- Predict ---------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_predict_matches_keras_over_tcp_and_unix_socket(server, expected, transport):
    with grpc.insecure_channel(_channel_target(server, transport)) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_predict_request(), timeout=TIMEOUT)
    _assert_matches(response, expected)
    assert response.model_spec.name == "tiny"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize("choice", [{"version": 1}, {"label": "stable"}, {"signature_name": "serving_default"}])
def test_predict_with_explicit_version_label_or_signature(predictions, expected, choice):
    response = predictions.Predict(_predict_request(**choice), timeout=TIMEOUT)
    _assert_matches(response, expected)
    assert response.model_spec.version.value == 1


def test_output_filter_selects_outputs_and_rejects_unknown_ones(predictions, expected):
    request = _predict_request()
    request.output_filter.append("probabilities")
    assert list(predictions.Predict(request, timeout=TIMEOUT).outputs) == ["probabilities"]
    request.output_filter[:] = ["logits"]
    code, details = _code(predictions.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "logits" in details
    _assert_still_serving(predictions, expected)


def test_every_answer_says_it_is_the_drop_in(predictions):
    _, call = predictions.Predict.with_call(_predict_request(), timeout=TIMEOUT)
    assert ("x-served-by", SERVER_NAME) in call.trailing_metadata()
    with pytest.raises(grpc.RpcError) as caught:
        predictions.Predict(_predict_request(name="nope"), timeout=TIMEOUT)
    assert ("x-served-by", SERVER_NAME) in caught.value.trailing_metadata()


def _malformed(request):
    request.inputs["images"].CopyFrom(_tensor(types_pb2.DT_FLOAT, [4, 32, 32, 1], tensor_content=b"abc"))


def _huge(request):  # a few bytes that declare a 2**40-element tensor
    request.inputs["images"].CopyFrom(_tensor(types_pb2.DT_FLOAT, [2**20, 2**20], float_val=[0.0]))


def _as_string(request):
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.array([b"cat"] * 4, dtype=object)))


def _as_double(request):
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(IMAGES.astype(np.float64)))


def _with_nan(request):
    images = IMAGES.copy()
    images[0, 0, 0, 0] = np.nan
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images))


def test_nan_inputs_run_as_on_tf_serving(predictions, expected):
    request = _predict_request()
    _with_nan(request)
    outputs = tf.make_ndarray(predictions.Predict(request, timeout=TIMEOUT).outputs["probabilities"])
    assert np.isnan(outputs[0]).all() and np.isfinite(outputs[1:]).all()  # only the image holding NaN
    _assert_still_serving(predictions, expected)


def _wrong_shape(request):  # three channels where the first convolution has one: TensorFlow refuses it
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((4, 32, 32, 3), np.float32)))


def _wrong_key(request):
    request.inputs["pixels"].CopyFrom(request.inputs["images"])
    del request.inputs["images"]


def _no_name(request):
    request.model_spec.name = ""


def _unknown_signature(request):
    request.model_spec.signature_name = "nope"


@pytest.mark.parametrize("spoil", [_wrong_shape, _wrong_key, _as_string, _as_double, _malformed, _huge,
                                   _no_name, _unknown_signature])
def test_bad_predict_is_invalid_argument_and_the_server_keeps_serving(predictions, expected, spoil):
    request = _predict_request()
    spoil(request)
    code, details = _code(predictions.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details
    _assert_still_serving(predictions, expected)


@pytest.mark.parametrize("spec", [{"name": "nope"}, {"version": 7}, {"label": "canary"}])
def test_unknown_model_version_or_label_is_not_found(predictions, models, expected, spec):
    code, _ = _code(predictions.Predict, _predict_request(**spec))
    assert code == grpc.StatusCode.NOT_FOUND
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.CopyFrom(_predict_request(**spec).model_spec)
    assert _code(predictions.GetModelMetadata, metadata)[0] == grpc.StatusCode.NOT_FOUND
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.CopyFrom(metadata.model_spec)
    assert _code(models.GetModelStatus, status)[0] == grpc.StatusCode.NOT_FOUND
    _assert_still_serving(predictions, expected)


def test_concurrent_predicts_all_match(predictions, expected):
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: predictions.Predict(_predict_request(), timeout=TIMEOUT), range(32)))
    for response in responses:
        _assert_matches(response, expected)


# -- metadata and status ---------------------------------------------------------------------

def test_get_model_metadata_returns_the_serving_signature(predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    response = predictions.GetModelMetadata(request, timeout=TIMEOUT)
    assert response.model_spec.name == "tiny" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    serving = signatures.signature_def["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    images = serving.inputs["images"]
    assert images.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in images.tensor_shape.dim] == [-1, 32, 32, 1]
    probabilities = serving.outputs["probabilities"]
    assert probabilities.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in probabilities.tensor_shape.dim] == [-1, SPEC.num_classes]


@pytest.mark.parametrize("fields", [[], ["signature_def", "graph"]])
def test_get_model_metadata_needs_the_signature_def_field(predictions, expected, fields):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
    request.model_spec.name = "tiny"
    assert _code(predictions.GetModelMetadata, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    _assert_still_serving(predictions, expected)


@pytest.mark.parametrize("spec", [{}, {"version": 1}, {"label": "stable"}])
def test_get_model_status_is_available(models, spec):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.CopyFrom(_predict_request(**spec).model_spec)
    (status,) = models.GetModelStatus(request, timeout=TIMEOUT).model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""


# -- Classify and Regress --------------------------------------------------------------------

@pytest.mark.parametrize(("call", "kind"), [("Classify", "classification"), ("Regress", "regression")])
def test_classify_and_regress_on_an_image_signature_fail_the_precondition(predictions, expected, call, kind):
    """TF Serving's check: a classify/regress signature takes serialized examples under the key 'inputs'."""
    request_type = classification_pb2.ClassificationRequest if call == "Classify" else \
        regression_pb2.RegressionRequest
    request = request_type(input=_examples_input([[1.0, 2.0]]))
    request.model_spec.name = "tiny"
    code, details = _code(getattr(predictions, call), request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and f"No {kind} inputs found in SignatureDef" in details
    _assert_still_serving(predictions, expected)


def test_classify_returns_labels_and_scores(predictions):
    request = classification_pb2.ClassificationRequest(input=_examples_input([[0.0, 0.0], [0.0, math.log(3.0)]]))
    request.model_spec.name, request.model_spec.signature_name = "examples", "classify"
    response = predictions.Classify(request, timeout=TIMEOUT)
    assert response.model_spec.signature_name == "classify" and response.model_spec.version.value == 1
    rows = [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]
    assert [[label for label, _ in row] for row in rows] == [["neg", "pos"], ["neg", "pos"]]
    assert np.allclose([[score for _, score in row] for row in rows], [[0.5, 0.5], [0.25, 0.75]])


def test_regress_merges_the_context_into_each_example(predictions):
    # the first example has no x and takes the context's; the second's own x wins
    request = regression_pb2.RegressionRequest(input=_examples_input([None, [5.0, 6.0]], context=[1.0, 2.0]))
    request.model_spec.name, request.model_spec.signature_name = "examples", "regress"
    response = predictions.Regress(request, timeout=TIMEOUT)
    assert [r.value for r in response.result.regressions] == [3.0, 11.0]


def test_a_tensorflow_error_keeps_its_code(predictions):
    # an example without x and no context: parse_example fails inside the model with INVALID_ARGUMENT
    request = classification_pb2.ClassificationRequest(input=_examples_input([None]))
    request.model_spec.name, request.model_spec.signature_name = "examples", "classify"
    code, details = _code(predictions.Classify, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Feature: x" in details, details


def test_classify_with_no_examples_is_invalid_argument(predictions):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "examples", "classify"
    assert _code(predictions.Classify, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


# -- MultiInference --------------------------------------------------------------------------

def _multi(*tasks, model="examples"):
    request = inference_pb2.MultiInferenceRequest(input=_examples_input([[0.0, math.log(3.0)]]))
    for signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = model, signature
    return request


def test_multi_inference_runs_classify_and_regress_on_the_same_examples(predictions):
    response = predictions.MultiInference(_multi(("regress", REGRESS_METHOD), ("classify", CLASSIFY_METHOD)),
                                          timeout=TIMEOUT)
    regression, classification = response.results
    assert regression.regression_result.regressions[0].value == pytest.approx(math.log(3.0))
    assert [c.label for c in classification.classification_result.classifications[0].classes] == ["neg", "pos"]
    assert [c.score for c in classification.classification_result.classifications[0].classes] == \
        pytest.approx([0.25, 0.75])
    assert [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value) for r in response.results] \
        == [("examples", "regress", 1), ("examples", "classify", 1)]


@pytest.mark.parametrize(("request_", "status", "words"), [
    (inference_pb2.MultiInferenceRequest(), grpc.StatusCode.INVALID_ARGUMENT, "no tasks"),
    (_multi(("classify", CLASSIFY_METHOD), ("classify", CLASSIFY_METHOD)), grpc.StatusCode.INVALID_ARGUMENT,
     "Duplicate evaluation of signature: classify"),
    (_multi(("classify", "tensorflow/serving/predict")), grpc.StatusCode.UNIMPLEMENTED,
     "Unsupported signature method_name"),
    (_multi(("serving_default", CLASSIFY_METHOD), model="tiny"), grpc.StatusCode.FAILED_PRECONDITION,
     "No classification inputs"),
])
def test_multi_inference_refuses_what_tf_serving_refuses(predictions, expected, request_, status, words):
    code, details = _code(predictions.MultiInference, request_)
    assert code == status and words in details, details
    _assert_still_serving(predictions, expected)


# -- server plumbing -------------------------------------------------------------------------

class _BrokenCore:
    def resolve(self, ref):
        raise RuntimeError("boom")


def test_an_unexpected_error_is_internal_and_not_fatal():
    server = serve_grpc(_BrokenCore(), "127.0.0.1", 0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for _ in range(2):
                code, details = _code(stub.Predict, _predict_request())
                assert code == grpc.StatusCode.INTERNAL and "boom" in details
    finally:
        server.stop(grace=None)


def test_channel_arguments_reach_the_server(core, expected):
    server = serve_grpc(core, "127.0.0.1", 0, channel_args=parse_channel_arguments(
        "grpc.max_receive_message_length=1024"))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert _code(stub.Predict, _predict_request())[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop(grace=None)


def test_a_busy_port_fails_at_startup(core, server):
    with pytest.raises(OSError, match="cannot bind"):
        serve_grpc(core, "127.0.0.1", server.port)


def test_a_stale_socket_file_is_replaced_and_removed_on_stop(core, expected, tmp_path):
    path = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(path))  # as a server that died would leave it: a socket file nobody listens on
    leftover.close()
    server = serve_grpc(core, "127.0.0.1", 0, socket_path=str(path))
    try:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            _assert_still_serving(prediction_service_pb2_grpc.PredictionServiceStub(channel), expected)
    finally:
        server.stop(grace=None)
    assert not path.exists()


def test_parse_channel_arguments():
    text = "grpc.max_receive_message_length=104857600, grpc.keepalive_time_ms=10000,grpc.primary_user_agent=x/1"
    assert parse_channel_arguments(text) == [("grpc.max_receive_message_length", 104857600),
                                             ("grpc.keepalive_time_ms", 10000),
                                             ("grpc.primary_user_agent", "x/1")]
    assert parse_channel_arguments("") == []


@pytest.mark.parametrize("text", ["grpc.keepalive_time_ms", "=5", "grpc.a=", "a=1,,b=2", "a=99999999999"])
def test_parse_channel_arguments_rejects_malformed_text(text):
    with pytest.raises(ValueError, match="--grpc_channel_arguments") as caught:
        parse_channel_arguments(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_])
def test_tensors_take_the_short_path_both_ways_and_read_as_tensorflow_reads_them(dtype):
    """Numeric tensors skip tf.make_tensor_proto / tf.make_ndarray; what goes out is written as TF Serving writes it
    (every value in the dtype's repeated field, as Tensor::AsProtoField) and reads back exactly with TensorFlow's own
    reader; what comes in equals TensorFlow's reading of the same proto."""
    from serving.tf.dropin.grpc_api import decode_tensor, tensor_proto

    array = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    sent = tensor_proto(array)
    field = {np.float32: "float_val", np.float64: "double_val", np.int64: "int64_val", np.bool_: "bool_val"}.get(
        dtype, "int_val")
    assert not sent.tensor_content and len(getattr(sent, field)) == 24 and tf.make_ndarray(sent).dtype == dtype
    assert np.array_equal(tf.make_ndarray(sent), array)
    received = decode_tensor("x", tf.make_tensor_proto(array), None)
    assert received.dtype == dtype and np.array_equal(received, array) and received.flags.writeable
    as_values = tf.make_tensor_proto(array.tolist(), dtype=dtype, shape=array.shape)  # float_val etc., no content
    assert np.array_equal(decode_tensor("x", as_values, None), array)
    strings = tensor_proto(np.array([b"a", b"bc"], dtype=object))
    assert tf.make_ndarray(strings).tolist() == [b"a", b"bc"]
