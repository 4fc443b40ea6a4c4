"""TF Serving's own integration suite (tensorflow_model_server_test.py), case by case, against the drop-in.

The drop-in is started as that suite starts tensorflow_model_server: a process with
--port, --rest_api_port, --rest_api_timeout_in_ms=5000, --grpc_socket_path and a
--model_config_file (or --use_tflite_model=true), serving TF Serving's test models
in the shapes of its testdata (tests/tf_serving_models.py: zero-padded version
directories, a TF1 half_plus_two with classify/regress signatures, its TF2 form,
half_plus_three, tf.saved_model.save models, a Keras export, TFLite with and without
a SignatureDef). Each test asserts what the suite asserts.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from tensorflow.core.framework import types_pb2
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

from common.paths import REPO_ROOT
from common.procs import free_port, log_tail, start_group, stop_group, wait_http_ok
from serving.tf.dropin.config import ModelConfig
from serving.tf.dropin.core import DropInCore
from serving.tf.dropin.flags import parse_flags
from serving.tf.dropin.grpc_api import parse_channel_arguments, serve_grpc
from serving.tf.dropin.server import build_core
from tests import tf_serving_models as models
from tests.conftest import run_module

RPC_TIMEOUT = 20.0
VERSION = 123
# the example batching parameters file of TF Serving's serving_config docs
BATCHING_CONFIG = ("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
                   "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n")
# TF Serving's testdata/monitoring_config.txt, as written there
MONITORING_CONFIG = 'prometheus_config: {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n'


class Server:
    """A drop-in process started with tensorflow_model_server's flags; stopped by the fixture."""

    def __init__(self, root: Path, name: str, flags: list[str]) -> None:
        self.grpc = f"127.0.0.1:{free_port()}"
        self.rest = f"127.0.0.1:{free_port()}"
        self.socket = root / f"{name}.sock"
        self.log = root / f"{name}.log"
        command = [sys.executable, "-m", "serving.tf.dropin", f"--port={self.grpc.split(':')[1]}",
                   f"--rest_api_port={self.rest.split(':')[1]}", "--rest_api_timeout_in_ms=5000",
                   f"--grpc_socket_path={self.socket}", *flags]
        self.process = start_group(command, self.log, cwd=REPO_ROOT, env=dict(os.environ))

    def wait_ready(self, model: str) -> None:
        if not wait_http_ok(f"http://{self.rest}/v1/models/{model}", 180, lambda: self.process.poll() is None):
            raise AssertionError(f"the drop-in did not start:\n{log_tail(self.log)}")

    def stop(self) -> None:
        stop_group(self.process.pid)


def _config(entries: dict[str, Path], labels: dict[str, dict[str, int]] | None = None) -> str:
    """A ModelServerConfig as TF Serving's good_model_config.txt writes it (with version_labels, if given)."""
    blocks = []
    for name, path in entries.items():
        label_lines = "".join(f'\n    version_labels {{ key: "{label}" value: {version} }}'
                              for label, version in (labels or {}).get(name, {}).items())
        blocks.append(f'  config: {{\n    name: "{name}",\n    base_path: "{path}",\n    model_platform: "tensorflow"'
                      f'{label_lines}\n  }}')
    return "model_config_list: {\n" + ",\n".join(blocks) + "\n}\n"


def _config_list(entries: dict[str, Path], labels: dict[str, dict[str, int]] | None = None):
    """The same list as a ModelServerConfig proto, for HandleReloadConfigRequest."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(_config(entries, labels), model_server_config_pb2.ModelServerConfig())


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """One drop-in serving every SavedModel of the suite, from a model config file, with monitoring on."""
    root = tmp_path_factory.mktemp("tf-serving-suite")
    entries = {"default": models.half_plus_n_tf1(root / "saved_model_half_plus_two_cpu"),
               "half_plus_two": root / "saved_model_half_plus_two_cpu",
               "half_plus_three": models.half_plus_n_tf1(root / "saved_model_half_plus_three", add=3.0),
               "tf2": models.half_plus_two_tf2(root / "saved_model_half_plus_two_tf2_cpu"),
               "unknown_rank": models.unknown_rank(root / "tf_saved_model_save"),
               "two_signatures": models.two_signatures(root / "tf_saved_model_save_multiple_signatures"),
               "keras": models.keras_sequential(root / "keras_sequential_saved_model_save")}
    (root / "good_model_config.conf").write_text(_config(entries))
    (root / "monitoring_config.txt").write_text(MONITORING_CONFIG)
    server = Server(root, "saved", [f"--model_config_file={root / 'good_model_config.conf'}",
                                    f"--monitoring_config_file={root / 'monitoring_config.txt'}"])
    try:
        server.wait_ready("keras")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tflite_models(tmp_path_factory):
    """A drop-in serving half_plus_two as TFLite with and without a SignatureDef, as the suite runs it."""
    root = tmp_path_factory.mktemp("tf-serving-suite-tflite")
    entries = {"with_sigdef": models.half_plus_two_tflite(root / "saved_model_half_plus_two_tflite_with_sigdef", True),
               "without_sigdef": models.half_plus_two_tflite(root / "saved_model_half_plus_two_tflite", False)}
    (root / "tflite.conf").write_text(_config(entries))
    server = Server(root, "tflite", [f"--model_config_file={root / 'tflite.conf'}", "--use_tflite_model=true"])
    try:
        server.wait_ready("without_sigdef")
        yield server
    finally:
        server.stop()


def _stub(address: str):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


def _predict(address: str, model: str = "default", signature: str = "serving_default", specify_output: bool = True,
             batch_input: bool = False, input_key: str = "x", output_key: str = "y") -> float:
    """The suite's VerifyPredictRequest: x = [2.0] of shape [1] (or [1, 1]); checks y's dtype, size and model_spec."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    request.inputs[input_key].dtype = types_pb2.DT_FLOAT
    request.inputs[input_key].float_val.append(2.0)
    request.inputs[input_key].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs[input_key].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append(output_key)
    result = _stub(address).Predict(request, RPC_TIMEOUT)
    assert output_key in result.outputs and result.outputs[output_key].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs[output_key].float_val) == 1
    assert _spec(result.model_spec) == (model, signature, VERSION)
    return result.outputs[output_key].float_val[0]


def _spec(model_spec) -> tuple[str, str, int]:
    """The suite's _VerifyModelSpec: name, signature and version of the servable that answered."""
    return model_spec.name, model_spec.signature_name, model_spec.version.value


def _rest(address: str, path: str, body: dict | None = None):
    """The suite's CallREST: POST when there is a body, else GET; the decoded JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(f"http://{address}{path}", data=data), timeout=30) as answer:
        return json.loads(answer.read())


def _example_input(target) -> None:
    example = target.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])


# -- gRPC ---------------------------------------------------------------------------------------------------------

def test_get_model_status(saved_models):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(saved_models.grpc)).GetModelStatus(
        request, RPC_TIMEOUT)
    assert [(s.version, s.status.error_code) for s in result.model_version_status] == [(VERSION, 0)]


def test_get_model_metadata(saved_models):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = _stub(saved_models.grpc).GetModelMetadata(request, RPC_TIMEOUT)
    assert (result.model_spec.name, result.model_spec.version.value) == ("default", VERSION)
    assert list(result.metadata) == ["signature_def"]


@pytest.mark.parametrize("model", ["default", "tf2"])
@pytest.mark.parametrize("call", ["Classify", "Regress"])  # testClassify, testClassifyTf2, testRegress, testRegressTf2
def test_classify_and_regress(saved_models, model, call):
    kind = classification_pb2.ClassificationRequest if call == "Classify" else regression_pb2.RegressionRequest
    request = kind()
    request.model_spec.name, request.model_spec.signature_name = model, f"{call.lower()}_x_to_y"
    _example_input(request.input)
    response = getattr(_stub(saved_models.grpc), call)(request, RPC_TIMEOUT)
    if call == "Classify":
        assert [[c.score for c in row.classes] for row in response.result.classifications] == [[3.0]]
    else:
        assert [r.value for r in response.result.regressions] == [3.0]
    assert _spec(response.model_spec) == (model, f"{call.lower()}_x_to_y", VERSION)


@pytest.mark.parametrize("model", ["default", "tf2"])  # testMultiInference, testMultiInferenceTf2
def test_multi_inference(saved_models, model):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name, task.model_spec.signature_name = model, signature
    _example_input(request.input)
    result = _stub(saved_models.grpc).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for answer, task in zip(result.results, request.tasks, strict=True):
        assert _spec(answer.model_spec) == (model, task.model_spec.signature_name, VERSION)


@pytest.mark.parametrize("specify_output", [True, False])
def test_predict_saved_model(saved_models, specify_output):
    """x of shape [1] where the signature declares [-1, 1]: TF Serving hands it to TensorFlow, which answers."""
    assert _predict(saved_models.grpc, specify_output=specify_output) == 3.0


def test_predict_batching(tmp_path):
    """testPredictBatching: the same predictions through --enable_batching and TF Serving's example parameters."""
    batching = tmp_path / "batching_config.txt"
    batching.write_text(BATCHING_CONFIG)
    base = models.half_plus_n_tf1(tmp_path / "half_plus_two")
    server = Server(tmp_path, "batching", ["--model_name=default", f"--model_base_path={base}",
                                           "--enable_batching", f"--batching_parameters_file={batching}"])
    try:
        server.wait_ready("default")
        assert [_predict(server.grpc, specify_output=s) for s in (True, False)] == [3.0, 3.0]
    finally:
        server.stop()


def test_good_model_config(saved_models):
    for model, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
        for specify_output in (True, False):
            assert _predict(saved_models.grpc, model, specify_output=specify_output) == expected


def test_predict_over_the_unix_socket(saved_models):
    assert _predict(f"unix:{saved_models.socket}", specify_output=False) == 3.0


def test_tf_saved_model_save(saved_models):
    assert _predict(saved_models.grpc, "unknown_rank", specify_output=False) == 12.0


def test_tf_saved_model_save_multiple_signatures(saved_models):
    assert _predict(saved_models.grpc, "two_signatures", "custom_signature_key") == 2.0
    assert _predict(saved_models.grpc, "two_signatures") == 1.0


def test_keras_export(saved_models):
    """The request names the input as the model's SignatureDef does (the Input layer's name)."""
    assert _predict(saved_models.grpc, "keras", batch_input=True, specify_output=False, output_key="output_0") == 2.0


def test_profiler_service_with_valid_trace_request(saved_models, tmp_path):
    """The suite's profiler test: predicts in the background while a trace is taken on the gRPC port."""
    from tensorflow.python.profiler import profiler_client

    stop = threading.Event()

    def predicts() -> None:
        while not stop.is_set():
            _rest(saved_models.rest, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
            stop.wait(0.05)

    thread = threading.Thread(target=predicts)
    thread.start()
    try:
        profiler_client.trace(saved_models.grpc, str(tmp_path / "logs"), 1000, "", 10)
    finally:
        stop.set()
        thread.join()
    traces = list((tmp_path / "logs" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


# -- REST ---------------------------------------------------------------------------------------------------------

def test_classify_rest(saved_models):
    answer = _rest(saved_models.rest, "/v1/models/default:classify",
                   {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert answer == {"results": [[["", 3.0]]]}


def test_regress_rest(saved_models):
    answer = _rest(saved_models.rest, "/v1/models/default:regress",
                   {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert answer == {"results": [3.0]}


def test_predict_rest(saved_models):
    assert _rest(saved_models.rest, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]}) == \
        {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(saved_models):
    assert _rest(saved_models.rest, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]}) == \
        {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(saved_models):
    assert _rest(saved_models.rest, "/v1/models/default") == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def _tensor_json(name: str, dtype: str, dims: list[str] | None) -> dict:
    shape = {"dim": [], "unknown_rank": True} if dims is None else \
        {"dim": [{"size": size, "name": ""} for size in dims], "unknown_rank": False}
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def test_get_model_metadata_rest(saved_models):
    """TF Serving's testdata/half_plus_two_model_metadata.json, for the signatures this half_plus_two has, with
    every field TF Serving writes (SignatureDef's `defaults` among them)."""
    examples = {"inputs": _tensor_json("tf_example:0", "DT_STRING", None)}
    y = _tensor_json("y:0", "DT_FLOAT", ["-1", "1"])
    expected = {
        "model_spec": {"name": "default", "signature_name": "", "version": "123"},
        "metadata": {"signature_def": {"signature_def": {
            "serving_default": {"inputs": {"x": _tensor_json("x:0", "DT_FLOAT", ["-1", "1"])}, "outputs": {"y": y},
                                "method_name": "tensorflow/serving/predict", "defaults": {}},
            "classify_x_to_y": {"inputs": examples, "outputs": {"scores": y},
                                "method_name": "tensorflow/serving/classify", "defaults": {}},
            "regress_x_to_y": {"inputs": examples, "outputs": {"outputs": y},
                               "method_name": "tensorflow/serving/regress", "defaults": {}},
        }}}}
    assert _rest(saved_models.rest, "/v1/models/default/metadata") == expected


def test_prometheus_endpoint(saved_models):
    url = f"http://{saved_models.rest}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert "# TYPE" in answer.read().decode()


# -- TFLite -------------------------------------------------------------------------------------------------------

def test_predict_on_tflite_with_signature_def(tflite_models):
    assert _predict(tflite_models.grpc, "with_sigdef", specify_output=False, batch_input=True) == 3.0


def test_predict_on_tflite_without_signature_def(tflite_models):
    """Without a SignatureDef, TF Serving keys the tensors by their names in the flatbuffer."""
    signature = _rest(tflite_models.rest, "/v1/models/without_sigdef/metadata")["metadata"]["signature_def"][
        "signature_def"]["serving_default"]
    (input_key,), (output_key,) = signature["inputs"], signature["outputs"]
    assert _predict(tflite_models.grpc, "without_sigdef", specify_output=False, batch_input=True,
                    input_key=input_key, output_key=output_key) == 3.0


# -- model config reload: testModelConfigReload, testModelConfigReloadWithZeroPollPeriod, HandleReloadConfigRequest -

def _serves(address: str, model: str, expected: float, within_s: float = 30.0) -> bool:
    """Whether `model` answers `expected` within the time (a config poll, then a load, come first)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            return _predict(address, model, specify_output=False) == expected
        except grpc.RpcError:
            time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def reload_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tf-serving-reload-models")
    return {"half_plus_two": models.half_plus_n_tf1(root / "saved_model_half_plus_two_cpu"),
            "half_plus_three": models.half_plus_n_tf1(root / "saved_model_half_plus_three", add=3.0)}


def _config_server(root: Path, paths: dict[str, Path], *flags: str) -> tuple[Server, Path]:
    config = root / "model_config.txt"
    config.write_text(_config({"half_plus_two": paths["half_plus_two"]}))
    server = Server(root, "reload", [f"--model_config_file={config}", *flags])
    server.wait_ready("half_plus_two")
    return server, config


@pytest.fixture
def reloading(tmp_path, reload_models):
    """A drop-in re-reading its model config file every second, as testModelConfigReload starts it."""
    server, config = _config_server(tmp_path, reload_models, "--model_config_file_poll_wait_seconds=1")
    yield server, config, reload_models
    server.stop()


@pytest.fixture
def reloadable(tmp_path, reload_models):
    """A drop-in whose config changes only by HandleReloadConfigRequest (no file poll to undo it)."""
    server, _ = _config_server(tmp_path, reload_models)
    yield server, reload_models
    server.stop()


def test_model_config_reload(reloading):
    """The file rewritten to serve half_plus_three is served after a poll; a file that no longer parses is logged
    and the current models keep serving."""
    server, config, paths = reloading
    assert _predict(server.grpc, "half_plus_two", specify_output=False) == 3.0
    config.write_text(_config({"half_plus_three": paths["half_plus_three"]}))
    assert _serves(server.grpc, "half_plus_three", 4.0)
    config.write_text("model_config_list: { config: { name: ")
    time.sleep(2.5)
    assert _predict(server.grpc, "half_plus_three", specify_output=False) == 4.0
    assert "failed to reload the model config" in server.log.read_text()
    config.write_text(_config({"half_plus_two": paths["half_plus_two"]}))
    assert _serves(server.grpc, "half_plus_two", 3.0)


def _reload(address: str, config, metric_names: tuple[str, ...] = ()):
    request = model_management_pb2.ReloadConfigRequest(metric_names=list(metric_names))
    request.config.CopyFrom(config)
    return model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(address)).HandleReloadConfigRequest(
        request, RPC_TIMEOUT)


def _reload_error(address: str, config) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        _reload(address, config)
    return caught.value.code(), caught.value.details()


def test_handle_reload_config_request(reloadable, tmp_path):
    """TF Serving's ModelService.HandleReloadConfigRequest: the answer comes once new models serve; models left out
    are unloaded; a label may only name a serving version; what ServerCore refuses is refused, and nothing changes."""
    server, paths = reloadable
    both = {"half_plus_two": paths["half_plus_two"], "half_plus_three": paths["half_plus_three"]}
    response = _reload(server.grpc, _config_list(both), metric_names=("/tensorflow/serving/load_count",))
    assert response.status.error_code == 0 and [m.name for m in response.metric] == ["/tensorflow/serving/load_count"]
    assert _predict(server.grpc, "half_plus_three", specify_output=False) == 4.0  # at once: no wait needed

    labelled = _config_list(both, {"half_plus_three": {"stable": VERSION}})
    assert _reload(server.grpc, labelled).status.error_code == 0
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.version_label = "half_plus_three", "stable"
    request.inputs["x"].CopyFrom(_float_input(2.0))
    assert _stub(server.grpc).Predict(request, RPC_TIMEOUT).outputs["y"].float_val == [4.0]

    (tmp_path / "empty").mkdir(exist_ok=True)
    refusals = [
        (_config_list(both, {"half_plus_three": {"canary": 7}}), grpc.StatusCode.FAILED_PRECONDITION,
         "Request to assign label to version 7 of model half_plus_three, which is not currently available"),
        (_config_list({"half_plus_two": Path("relative/path")}), grpc.StatusCode.INVALID_ARGUMENT,
         "to have an absolute path or URI; got base_path()=relative/path"),
        (type(labelled)(), grpc.StatusCode.INVALID_ARGUMENT, "Only ModelConfigList is currently supported"),
    ]
    duplicate = _config_list(both)
    duplicate.model_config_list.config.append(duplicate.model_config_list.config[0])
    refusals.append((duplicate, grpc.StatusCode.INVALID_ARGUMENT,
                     "Illegal to list model half_plus_two multiple times in config list"))
    no_platform = _config_list(both)
    no_platform.model_config_list.config[0].model_platform = ""
    refusals.append((no_platform, grpc.StatusCode.INVALID_ARGUMENT, "Illegal setting neither"))
    for config_proto, expected_code, words in refusals:
        code, details = _reload_error(server.grpc, config_proto)
        assert code == expected_code and words in details, details
    assert _predict(server.grpc, "half_plus_three", specify_output=False) == 4.0  # still as before

    code, details = _reload_error(server.grpc, _config_list({**both, "nothing": tmp_path / "empty"}))
    assert code == grpc.StatusCode.UNKNOWN and "1 model(s) did not become available" in details, details
    assert _reload(server.grpc, _config_list({"half_plus_two": paths["half_plus_two"]})).status.error_code == 0
    with pytest.raises(grpc.RpcError) as caught:
        _predict(server.grpc, "half_plus_three", specify_output=False)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # unloaded: no longer in the list
    assert _predict(server.grpc, "half_plus_two", specify_output=False) == 3.0


def _float_input(value: float):
    tensor = predict_pb2.PredictRequest().inputs.get_or_create("x")
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.float_val.append(value)
    tensor.tensor_shape.dim.add().size = 1
    return tensor


def test_model_config_reload_with_zero_poll_period(tmp_path):
    """--model_config_file_poll_wait_seconds=0 (the default): the file is read once; a rewrite changes nothing."""
    half_plus_two = models.half_plus_n_tf1(tmp_path / "saved_model_half_plus_two_cpu")
    half_plus_three = models.half_plus_n_tf1(tmp_path / "saved_model_half_plus_three", add=3.0)
    config = tmp_path / "model_config.txt"
    config.write_text(_config({"half_plus_two": half_plus_two}))
    core = build_core(parse_flags([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0"]))
    try:
        config.write_text(_config({"half_plus_three": half_plus_three}))
        time.sleep(2.5)  # two version polls (--file_system_poll_wait_seconds=1)
        assert core.manager.model_names() == ["half_plus_two"]
    finally:
        core.stop()


def test_version_labels_at_start_up(tmp_path):
    """As TF Serving: labels are checked before anything loads, so a config with labels stops the server at start-up
    with TF Serving's message, unless --allow_version_labels_for_unavailable_models."""
    base = models.half_plus_n_tf1(tmp_path / "saved_model_half_plus_two_cpu")
    config = tmp_path / "labels.config"
    config.write_text(_config({"default": base}, {"default": {"stable": VERSION}}))
    done = run_module("serving.tf.dropin", f"--port={free_port()}", f"--model_config_file={config}")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert "FAILED_PRECONDITION: Request to assign label to version 123 of model default" in errors[0]
    core = build_core(parse_flags([f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models",
                                   "--file_system_poll_wait_seconds=0"]))
    try:
        servable = core.manager.servable("default", label="stable")
        assert servable.version == VERSION
    finally:
        core.stop()


def test_good_grpc_channel_args(tmp_path):
    """testGoodGrpcChannelArgs: the server starts with these channel arguments and answers."""
    core = DropInCore([ModelConfig("default", models.half_plus_n_tf1(tmp_path / "half_plus_two"))])
    core.start_polling(0)
    server = serve_grpc(core, "127.0.0.1", 0, channel_args=parse_channel_arguments(
        "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb"))
    try:
        assert _predict(f"127.0.0.1:{server.port}", specify_output=False) == 3.0
    finally:
        server.stop(grace=None)
        core.stop()
