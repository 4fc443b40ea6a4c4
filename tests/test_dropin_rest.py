"""The drop-in's REST front end over a real SavedModel: TF Serving's wire format, errors and HTTP behaviour."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time

import numpy as np
import pytest

from model.spec import get_spec
from serving.tf.dropin import SERVER_IDENTITY, SERVER_NAME
from serving.tf.dropin.config import BatchingParameters, ModelConfig, MonitoringConfig
from serving.tf.dropin.core import DropInCore, classifications
from serving.tf.dropin.errors import InvalidArgument
from serving.tf.dropin.json_tensor import (
    classification_json,
    decode_columnar,
    decode_instances,
    dumps,
    encode_columns,
    encode_rows,
    json_to_example,
    to_array,
)
from serving.tf.dropin.rest_api import RestApi
from serving.tf.dropin.rest_server import serve_rest
from serving.tf.dropin.servable import TensorInfo

SPEC = get_spec("tiny")
IMAGES = np.random.default_rng(0).random((3, *SPEC.input_shape), dtype=np.float32)


def _serve(core, *, timeout_ms: int = 0, monitoring: MonitoringConfig | None = None, version: str = "", **options):
    """The REST front end on 127.0.0.1 and a free port, as the drop-in wires it."""
    api = RestApi(core, timeout_ms=timeout_ms, monitoring=monitoring, version=version)
    return serve_rest(api, "127.0.0.1", 0, **options)


@pytest.fixture(scope="module")
def exported(savedmodel_versions, tmp_path_factory):
    """models/tiny/1 and models/tiny/2 with different random weights, and each one's reference output."""
    base = savedmodel_versions.copy_to(tmp_path_factory.mktemp("rest") / "models" / "tiny", 1, 2)
    return base, {v: savedmodel_versions.reference(v, IMAGES) for v in (1, 2)}


@pytest.fixture(scope="module")
def core(exported):
    base, _ = exported
    core = DropInCore([ModelConfig("tiny", base, policy="all", labels={"stable": 1})])
    core.start_polling(0)
    yield core
    core.stop()


@pytest.fixture(scope="module")
def server(core):
    server = _serve(core, monitoring=MonitoringConfig(True), version="test")
    yield server
    server.shutdown()


@pytest.fixture
def references(exported):
    return exported[1]


def _call(port: int, method: str, path: str, body: bytes | dict | None = None,
          headers: dict | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


def _json(port: int, method: str, path: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    status, _, data = _call(port, method, path, body)
    return status, json.loads(data)


def _max_delta(values, expected: np.ndarray) -> float:
    return float(np.abs(np.asarray(values, dtype=np.float64) - expected).max())


def _assert_still_serving(port: int, references: dict) -> None:
    status, answer = _json(port, "POST", "/v1/models/tiny:predict", {"instances": IMAGES[:1].tolist()})
    assert status == 200, answer
    assert _max_delta(answer["predictions"], references[2][:1]) <= 1e-5


# -- predict ----------------------------------------------------------------------------------------------------------

def test_row_format_predict_equals_the_keras_reference(server, references):
    status, answer = _json(server.port, "POST", "/v1/models/tiny:predict", {"instances": IMAGES.tolist()})
    assert status == 200, answer
    assert list(answer) == ["predictions"] and len(answer["predictions"]) == len(IMAGES)
    assert _max_delta(answer["predictions"], references[2]) <= 1e-5


def test_columnar_predict_equals_the_keras_reference(server, references):
    status, answer = _json(server.port, "POST", "/v1/models/tiny:predict",
                           {"signature_name": "serving_default", "inputs": IMAGES.tolist()})
    assert status == 200, answer
    assert _max_delta(answer["outputs"], references[2]) <= 1e-5


def test_named_instances_and_named_columnar_inputs(server, references):
    named_rows = {"instances": [{"images": image} for image in IMAGES.tolist()]}
    status, answer = _json(server.port, "POST", "/v1/models/tiny:predict", named_rows)
    assert status == 200, answer
    assert _max_delta(answer["predictions"], references[2]) <= 1e-5
    status, answer = _json(server.port, "POST", "/v1/models/tiny:predict", {"inputs": {"images": IMAGES.tolist()}})
    assert status == 200, answer
    assert _max_delta(answer["outputs"], references[2]) <= 1e-5


@pytest.mark.parametrize(("path", "version"), [
    ("/v1/models/tiny/versions/1:predict", 1),
    ("/v1/models/tiny/versions/2:predict", 2),
    ("/v1/models/tiny/labels/stable:predict", 1),
    ("/V1/Models/tiny/Versions/1:PREDICT", 1),  # TF Serving's path regex is case-insensitive
])
def test_versions_and_labels_choose_the_model_version(server, references, path, version):
    status, answer = _json(server.port, "POST", path, {"instances": IMAGES.tolist()})
    assert status == 200, answer
    assert _max_delta(answer["predictions"], references[version]) <= 1e-5


# -- status and metadata ----------------------------------------------------------------------------------------------

def test_model_status_like_tf_serving(server):
    ok = {"error_code": "OK", "error_message": ""}
    status, answer = _json(server.port, "GET", "/v1/models/tiny")
    assert status == 200
    assert answer == {"model_version_status": [{"version": "2", "state": "AVAILABLE", "status": ok},
                                               {"version": "1", "state": "AVAILABLE", "status": ok}]}
    for path in ("/v1/models/tiny/versions/1", "/v1/models/tiny/labels/stable"):
        status, answer = _json(server.port, "GET", path)
        assert status == 200
        assert answer == {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}


def test_metadata_like_tf_serving(server):
    status, answer = _json(server.port, "GET", "/v1/models/tiny/metadata")
    assert status == 200, answer
    assert answer["model_spec"] == {"name": "tiny", "signature_name": "", "version": "2"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert images["tensor_shape"] == {"dim": [{"size": size, "name": ""} for size in ("-1", "32", "32", "1")],
                                      "unknown_rank": False}
    assert isinstance(images["name"], str)
    probabilities = signature["outputs"]["probabilities"]
    assert probabilities["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in probabilities["tensor_shape"]["dim"]] == ["-1", "10"]
    status, answer = _json(server.port, "GET", "/v1/models/tiny/versions/1/metadata")
    assert status == 200 and answer["model_spec"]["version"] == "1"


# -- classify / regress on an image signature -------------------------------------------------------------------------

@pytest.mark.parametrize(("verb", "kind"), [("classify", "classification"), ("regress", "regression")])
def test_classify_and_regress_on_an_image_signature_fail_like_tf_serving(server, references, verb, kind):
    """FAILED_PRECONDITION, which TF Serving's REST API answers with 400: the signature takes no examples."""
    body = {"context": {"country": "fr"}, "examples": [{"pixels": [0.5, 1.0], "id": 7, "tag": {"b64": "AAE="}}]}
    status, answer = _json(server.port, "POST", f"/v1/models/tiny:{verb}", body)
    assert status == 400
    assert answer == {"error": f"No {kind} inputs found in SignatureDef: the input is ['images'], not 'inputs'"}
    _assert_still_serving(server.port, references)


# -- bad requests: the right status, an {"error"} body, and the server keeps serving -------------------------------

NAN_BODY = json.dumps({"instances": IMAGES[:1].tolist()}).replace(json.dumps(float(IMAGES[0, 0, 0, 0])), "NaN", 1)

BAD_REQUESTS = [
    # (method, path, body, expected status, expected words in the error)
    ("POST", "/v1/models/tiny:predict", b'{"instances": [', 400, "JSON Parse error"),
    ("POST", "/v1/models/tiny:predict", b"", 400, "document is empty"),
    ("POST", "/v1/models/tiny:predict", b"[1, 2]", 400, "not an object"),
    ("POST", "/v1/models/tiny:predict", b'{"instances": "\xff\xfe"}', 400, "JSON Parse error"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[1.0, 2.0, 3.0]]}, 400, "shape"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[[["a"]] * 32] * 32]}, 400, "expects DT_FLOAT"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[[[True]] * 32] * 32]}, 400, "booleans"),
    ("POST", "/v1/models/tiny:predict", NAN_BODY.replace("NaN", "1e999").encode(), 400, "Number too big"),
    ("POST", "/v1/models/tiny:predict", {"instances": []}, 400, "No values in 'instances'"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[[[0.0]] * 32] * 32, [[[0.0]] * 31]]}, 400, "rectangular"),
    ("POST", "/v1/models/tiny:predict", {"instances": [[1]], "inputs": [[1]]}, 400, "only one of"),
    ("POST", "/v1/models/tiny:predict", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances'"),
    ("POST", "/v1/models/tiny:predict", {"instances": [{"pixels": [1.0]}]}, 400, "must only have keys: images"),
    ("POST", "/v1/models/tiny:predict", {"inputs": {"pixels": [1.0]}}, 400, "Unknown named input"),
    ("POST", "/v1/models/tiny:predict", {"signature_name": "nope", "instances": [[1]]}, 400, '"nope" not found'),
    ("POST", "/v1/models/tiny:predict", {"signature_name": 3, "instances": [[1]]}, 400, "signature_name"),
    ("POST", "/v1/models/tiny:classify", {"examples": {"a": 1}}, 400, "list/array"),
    ("POST", "/v1/models/tiny:classify", {"examples": [{"a": [1, "x"]}]}, 400, "mixes"),
    ("POST", "/v1/models/tiny:regress", {"examples": [{"a": None}]}, 400, "unexpected JSON type: Null"),
    ("POST", "/v1/models/tiny:regress", {"instances": [[1]]}, 400, "'examples' is expected"),
    ("POST", "/v1/models/nope:predict", {"instances": [[1]]}, 404, "Servable not found"),
    ("POST", "/v1/models/tiny/versions/7:predict", {"instances": [[1]]}, 404, "Specific(tiny, 7)"),
    ("POST", "/v1/models/tiny/labels/canary:predict", {"instances": [[1]]}, 404, "label: canary"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/tiny/versions/7", None, 404, "Could not find version 7"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found"),
    ("GET", "/v2/models/tiny", None, 404, "Not found"),
    ("GET", "/", None, 404, "Not found"),
    ("GET", "/v1/models/tiny/bogus", None, 400, "Malformed request: GET /v1/models/tiny/bogus"),
    ("GET", "/v1/models/tiny:explain", None, 400, "Malformed request"),
    ("GET", "/v1/models", None, 400, "Missing model name"),
    ("GET", "/v1/models/tiny:predict", None, 405, "use POST"),
    ("POST", "/v1/models/tiny", {"instances": [[1]]}, 405, "use GET"),
    ("DELETE", "/v1/models/tiny/metadata", None, 405, "use GET"),
]


def test_nan_and_infinity_run_and_come_back_as_tf_serving_writes_them(server, references):
    """TF Serving's JSON reader takes NaN and Infinity and the model runs on them; its writer answers NaN, Infinity
    and -Infinity, where orjson alone would write null."""
    status, _, data = _call(server.port, "POST", "/v1/models/tiny:predict", NAN_BODY.encode())
    assert status == 200, data
    assert b"NaN" in data and b"null" not in data
    predictions = np.array(json.loads(data)["predictions"])  # Python's json reads the NaN token
    assert predictions.shape == (1, *references[2].shape[1:]) and np.isnan(predictions).all()
    body = json.dumps({"instances": IMAGES[:1].tolist()}).replace(json.dumps(float(IMAGES[0, 0, 1, 0])),
                                                                  "-Infinity", 1)
    status, _, data = _call(server.port, "POST", "/v1/models/tiny:predict", body.encode())
    assert status == 200 and b"null" not in data, data
    _assert_still_serving(server.port, references)


@pytest.mark.parametrize(("method", "path", "body", "expected", "words"), BAD_REQUESTS,
                         ids=[f"{m} {p} {i}" for i, (m, p, *_) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_tf_serving_errors_and_the_server_keeps_serving(server, references, method, path, body,
                                                                          expected, words):
    status, response, data = _call(server.port, method, path, body)
    assert status == expected, data
    answer = json.loads(data)
    assert list(answer) == ["error"] and words in answer["error"], answer
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("X-Served-By") == SERVER_NAME
    if expected == 405:
        assert response.getheader("Allow") in ("GET", "POST")
    _assert_still_serving(server.port, references)


def _read_until_closed(raw: socket.socket) -> bytes:
    chunks = []
    while chunk := raw.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_protocol_errors_are_json_too(server, references):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 101 + b"\r\n")
        reply = _read_until_closed(raw).decode("latin-1")
    assert reply.startswith("HTTP/1.1 431") and f"X-Served-By: {SERVER_NAME}" in reply
    assert json.loads(reply.split("\r\n\r\n", 1)[1]) == {"error": "Too many headers"}
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        reply = _read_until_closed(raw).decode("latin-1")
    assert " 400 " in reply.split("\r\n", 1)[0] and f"X-Served-By: {SERVER_NAME}" in reply
    assert json.loads(reply.split("\r\n\r\n", 1)[1])["error"].startswith("Bad request")
    status, _, _ = _call(server.port, "PROPFIND", "/v1/models/tiny")
    assert status == 405
    _assert_still_serving(server.port, references)


# -- body size limit --------------------------------------------------------------------------------------------------

@pytest.fixture
def small_server(core):
    """A second front end on the same core: 64 KiB body limit, no monitoring."""
    server = _serve(core, max_body_bytes=64 << 10)
    yield server
    server.shutdown()


def test_oversize_body_is_refused_with_413_and_the_server_keeps_serving(small_server, references):
    big = json.dumps({"instances": IMAGES.tolist() * 2}).encode()
    assert len(big) > 64 << 10
    status, response, data = _call(small_server.port, "POST", "/v1/models/tiny:predict", big)
    assert status == 413 and "over the limit" in json.loads(data)["error"]
    assert response.getheader("Connection") == "close"
    _assert_still_serving(small_server.port, references)


def test_metrics_are_404_when_monitoring_is_off(small_server):
    status, answer = _json(small_server.port, "GET", "/monitoring/prometheus/metrics")
    assert status == 404 and "error" in answer


# -- metrics, headers, connections ------------------------------------------------------------------------------------

def test_prometheus_metrics_count_requests_per_model(server):
    assert _json(server.port, "POST", "/v1/models/tiny:predict", {"instances": IMAGES.tolist()})[0] == 200
    status, response, data = _call(server.port, "GET", "/monitoring/prometheus/metrics")
    assert status == 200 and response.getheader("Content-Type").startswith("text/plain")
    text = data.decode()
    assert ':tensorflow:serving:request_count{model_name="tiny",API="predict",' in text
    assert 'version="test"' in text
    assert _call(server.port, "POST", "/monitoring/prometheus/metrics")[0] == 405


def test_every_response_names_the_drop_in(server):
    for method, path, body in [("GET", "/v1/models/tiny", None), ("GET", "/nowhere", None),
                               ("POST", "/v1/models/tiny:predict", {"instances": IMAGES[:1].tolist()})]:
        _, response, _ = _call(server.port, method, path, body)
        assert response.getheader("X-Served-By") == SERVER_NAME
        assert response.getheader("Server") == SERVER_IDENTITY
        assert response.getheader("Content-Length") is not None
    status, response, data = _call(server.port, "HEAD", "/v1/models/tiny")
    assert status == 200 and data == b"" and int(response.getheader("Content-Length")) > 0


def test_one_keep_alive_connection_serves_many_requests_good_and_bad(server, references):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        bodies = [{"instances": IMAGES[:1].tolist()}, {"instances": "nope"}, None, {"instances": IMAGES[:1].tolist()}]
        paths = ["/v1/models/tiny:predict", "/v1/models/tiny:predict", "/v1/models/tiny/metadata",
                 "/v1/models/tiny:predict"]
        seen_sockets = set()
        for body, path in zip(bodies, paths, strict=True):
            connection.request("POST" if body else "GET", path, body=json.dumps(body) if body else None)
            response = connection.getresponse()
            response.read()
            assert response.status in (200, 400) and not response.will_close
            seen_sockets.add(id(connection.sock))
        assert len(seen_sockets) == 1
    finally:
        connection.close()


def test_concurrent_predicts_all_answer(server, references):
    results = []

    def client() -> None:
        for _ in range(5):
            results.append(_json(server.port, "POST", "/v1/models/tiny:predict", {"instances": IMAGES.tolist()}))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40
    assert all(status == 200 and _max_delta(a["predictions"], references[2]) <= 1e-5 for status, a in results)


def _batching_core(savedmodel_versions, tmp_path, batching: BatchingParameters) -> DropInCore:
    """A core serving version 2 of tiny with server-side batching."""
    core = DropInCore([ModelConfig("tiny", savedmodel_versions.copy_to(tmp_path / "tiny", 2))], batching=batching)
    core.poll()
    return core


def test_request_timeout_answers_504_deadline_exceeded(savedmodel_versions, tmp_path, references):
    """One deadline, the core's: a request left waiting for its batch past --rest_api_timeout_in_ms gets 504."""
    patient = _batching_core(savedmodel_versions, tmp_path, BatchingParameters(batch_timeout_micros=3_000_000))
    server = _serve(patient, timeout_ms=100)
    try:
        status, answer = _json(server.port, "POST", "/v1/models/tiny:predict", {"instances": IMAGES[:1].tolist()})
        assert status == 504 and "Deadline exceeded" in answer["error"]
        status, answer = _json(server.port, "GET", "/v1/models/tiny")  # status is not a timed call
        assert status == 200
    finally:
        server.shutdown()
    fast = _serve(patient, timeout_ms=30_000)
    try:
        _assert_still_serving(fast.port, references)
    finally:
        fast.shutdown()


def test_predicts_wait_for_their_batch_without_holding_a_rest_thread(savedmodel_versions, tmp_path, references):
    """With one REST thread, four concurrent predicts still form one batch: they wait on the event loop, not on the
    pool (where each would wait out the batch timeout alone)."""
    batching = BatchingParameters(max_batch_size=32, batch_timeout_micros=1_000_000)
    core = _batching_core(savedmodel_versions, tmp_path, batching)
    server = _serve(core, num_threads=1)
    results, barrier = [None] * 4, threading.Barrier(4)

    def client(index: int) -> None:
        barrier.wait()
        results[index] = _json(server.port, "POST", "/v1/models/tiny:predict", {"instances": IMAGES[:1].tolist()})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.shutdown()
    assert all(status == 200 and _max_delta(a["predictions"], references[2][:1]) <= 1e-5 for status, a in results)
    assert (core.batcher.stats.batches, core.batcher.stats.largest_batch_requests) == (1, 4)


def test_a_rest_request_past_its_deadline_is_left_out_of_its_batch(savedmodel_versions, tmp_path):
    core = _batching_core(savedmodel_versions, tmp_path, BatchingParameters(batch_timeout_micros=300_000))
    server = _serve(core, timeout_ms=50)
    try:
        status, answer = _json(server.port, "POST", "/v1/models/tiny:predict", {"instances": IMAGES[:1].tolist()})
        time.sleep(0.6)  # past the batch's timeout: it has closed
    finally:
        server.shutdown()
    assert status == 504 and "Deadline exceeded" in answer["error"]
    assert (core.batcher.stats.requests, core.batcher.stats.batches) == (0, 0)
    assert "DEADLINE_EXCEEDED" in core.metrics_text()  # counted under its outcome


# -- the translation functions on what the tiny model cannot exercise -------------------------------------------------

def test_b64_and_utf8_strings_decode_to_bytes_for_string_inputs():
    info = TensorInfo("text", np.dtype(object), (-1,))
    array = decode_instances([{"b64": base64.b64encode(b"\x00\xff").decode()}, "héllo"], {"text": info})["text"]
    assert array.dtype == object and array.tolist() == [b"\x00\xff", "héllo".encode()]
    with pytest.raises(InvalidArgument, match="base64"):
        to_array([{"b64": "!!!"}], info, "text")
    with pytest.raises(InvalidArgument, match="ragged"):
        to_array([["a"], ["b", "c"]], info, "text")
    with pytest.raises(InvalidArgument, match="DT_STRING"):
        to_array([1], info, "text")


def test_several_inputs_need_names_and_integer_inputs_refuse_fractions():
    infos = {"a": TensorInfo("a", np.dtype(np.int32), (-1,)), "b": TensorInfo("b", np.dtype(np.float32), (-1,))}
    decoded = decode_instances([{"a": 1, "b": 0.5}, {"a": 2, "b": 1}], infos)
    assert decoded["a"].dtype == np.int32 and decoded["a"].tolist() == [1, 2]
    assert decoded["b"].dtype == np.float32 and decoded["b"].tolist() == [0.5, 1.0]
    assert decode_columnar({"a": [3], "b": [4]}, infos)["a"].tolist() == [3]
    with pytest.raises(InvalidArgument, match="plain list"):
        decode_instances([1, 2], infos)
    with pytest.raises(InvalidArgument, match="Missing named input: b"):
        decode_columnar({"a": [3]}, infos)
    with pytest.raises(InvalidArgument, match="DT_INT32"):
        to_array([1.5], infos["a"], "a")
    with pytest.raises(InvalidArgument, match="out of range"):
        to_array([2**40], infos["a"], "a")


def test_several_outputs_are_objects_per_row_and_bytes_outputs_are_b64():
    outputs = {"scores": np.array([[0.5], [0.25]], np.float32), "label_bytes": np.array([b"\x01", b"b"], object),
               "name": np.array([b"x", b"y"], object)}
    assert json.loads(dumps(encode_rows(outputs))) == [{"label_bytes": {"b64": "AQ=="}, "name": "x", "scores": [0.5]},
                                                        {"label_bytes": {"b64": "Yg=="}, "name": "y", "scores": [0.25]}]
    assert json.loads(dumps(encode_columns(outputs)))["scores"] == [[0.5], [0.25]]
    assert json.loads(dumps(encode_columns({"only": np.array([1, 2], np.int64)}))) == [1, 2]
    with pytest.raises(InvalidArgument, match="inconsistent batch size"):
        encode_rows({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})


def test_examples_and_classification_results():
    example = json_to_example({"age": 3, "height": [1.5, 2], "tags": ["a", {"b64": "AQ=="}], "flag": True})
    features = example.features.feature
    assert list(features["age"].int64_list.value) == [3]
    assert list(features["height"].float_list.value) == [1.5, 2.0]
    assert list(features["tags"].bytes_list.value) == [b"a", b"\x01"]
    assert list(features["flag"].int64_list.value) == [1]
    results = classifications({"classes": np.array([[b"cat", b"dog"]], object),
                               "scores": np.array([[0.75, 0.25]], np.float32)}, 1)
    assert classification_json(results) == [[["cat", 0.75], ["dog", 0.25]]]
    assert classification_json(classifications({"scores": np.array([[0.5, 0.5]], np.float32)}, 1)) == \
        [[["", 0.5], ["", 0.5]]]
    with pytest.raises(InvalidArgument, match="Expected scores output batch size of 2. Got: 1"):
        classifications({"scores": np.array([[0.5, 0.5]], np.float32)}, 2)


def test_classify_and_regress_write_nan_results_as_tf_serving_does(tmp_path):
    """An example whose feature is NaN runs, and its score / value comes back as the NaN token."""
    from tests.tf_serving_models import half_plus_n_tf1

    core = DropInCore([ModelConfig("hp2", half_plus_n_tf1(tmp_path / "hp2"))])
    core.poll()
    api = RestApi(core)
    for verb, signature, expected in (("regress", "regress_x_to_y", b'"results":[NaN,3.0]'),
                                      ("classify", "classify_x_to_y", b'"results":[[["",NaN]],[["",3.0]]]')):
        body = f'{{"signature_name": "{signature}", "examples": [{{"x": NaN}}, {{"x": 2.0}}]}}'.encode()
        response = api.dispatch("POST", f"/v1/models/hp2:{verb}", body)
        assert response.status == 200 and expected in response.body, response.body


def test_non_finite_outputs_keep_the_other_values_in_their_own_precision():
    """A row holding NaN is written by hand; its other float32 values must still read as float32 writes them
    (0.2, not 0.20000000298023224), in row and columnar format alike."""
    outputs = {"y": np.array([[0.2, np.nan, -np.inf], [1.5, np.inf, 0.1]], np.float32)}
    assert dumps(encode_rows(outputs)) == b"[[0.2,NaN,-Infinity],[1.5,Infinity,0.1]]"
    assert dumps(encode_columns({"y": np.float32(np.nan)})) == b"NaN"
    assert dumps(classification_json([[("a", float("nan")), ("b", 0.5)]])) == b'[[["a",NaN],["b",0.5]]]'
