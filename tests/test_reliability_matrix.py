"""The bad-input matrix (issue 16): the catalogue, how answers are judged, and both real servers under it."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from common.schemas import schema_errors
from common.targets import NAMES
from reliability import inputs, matrix
from reliability.inputs import CATALOGUE, MAX_REQUEST_BYTES, Call, Context, Post, Raw
from reliability.matrix import Answer, judge, matrix_table
from serving import rest_codec

IMAGE = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32, 1)
CTX = Context("tiny", IMAGE, max_batch=32)
BY_NAME = {item.name: item for item in CATALOGUE}


# -- the catalogue --------------------------------------------------------------------------------------------------

def test_the_catalogue_covers_every_input_of_the_issue_once_with_a_description():
    assert len(set(inputs.NAMES)) == len(CATALOGUE)
    wanted = {"malformed-json", "not-an-object", "wrong-rank", "wrong-height", "wrong-width", "wrong-channels",
              "wrong-dtype", "string-in-tensor", "boolean-in-tensor", "null-in-tensor", "nan", "infinity",
              "overflow-1e999", "empty-batch", "ragged", "batch-over-limit", "deep-nesting", "huge-number",
              "invalid-utf8", "body-one-byte-over", "body-far-over", "truncated-body", "slow-body", "unknown-model",
              "unknown-version", "unknown-signature", "non-ascii-signature", "crlf-signature", "grpc-garbage",
              "grpc-over-limit"}
    assert wanted <= set(inputs.NAMES)
    for item in CATALOGUE:
        assert item.description and item.targets and set(item.targets) <= set(NAMES), item.name


def test_both_rest_targets_get_the_same_bytes_and_torch_grpc_carries_them():
    for item in CATALOGUE:
        rest = [item.probe(name, CTX) for name in ("tf-rest", "torch-rest")]
        if None in rest:
            continue
        assert rest[0] == rest[1], item.name
        grpc = item.probe("torch-grpc", CTX)
        if isinstance(grpc, Call) and grpc.model is None and rest[0].how == "plain":
            assert grpc.body == rest[0].body, item.name


def test_each_body_is_wrong_in_the_way_its_name_says():
    def body(name: str) -> bytes:
        return BY_NAME[name].probe("tf-rest", CTX).body

    assert np.shape(json.loads(body("wrong-height"))["instances"]) == (1, 31, 32, 1)
    assert np.shape(json.loads(body("wrong-channels"))["instances"]) == (1, 32, 32, 3)
    assert np.shape(json.loads(body("batch-over-limit"))["instances"]) == (33, 32, 32, 1)
    assert json.loads(body("empty-batch")) == {"instances": []}
    assert body("deep-nesting").count(b"[") == 100_000
    assert b"9" * 5000 in body("huge-number") and b"1e999" in body("overflow-1e999")
    assert b"NaN" in body("nan") and b"Infinity" in body("infinity") and b"true" in body("boolean-in-tensor")
    with pytest.raises(UnicodeDecodeError):
        body("invalid-utf8").decode("utf-8")
    over = body("body-one-byte-over")
    assert len(over) == MAX_REQUEST_BYTES + 1 and json.loads(over) == {"instances": []}  # only its size is wrong
    assert len(body("body-far-over")) == 70_000_000
    assert BY_NAME["body-far-over-expect"].probe("torch-rest", CTX).how == "expect"
    assert BY_NAME["unknown-version"].probe("torch-rest", CTX) == Post(inputs.good_body(CTX), version=99)


def test_grpc_probes_mean_the_same_mistakes():
    tensor = BY_NAME["wrong-height"].probe("tf-grpc", CTX).tensor
    assert tensor.dtype == "DT_FLOAT" and tensor.shape == (1, 31, 32, 1) and len(tensor.content) == 31 * 32 * 4
    assert BY_NAME["wrong-dtype"].probe("tf-grpc", CTX).tensor.dtype == "DT_DOUBLE"
    half = BY_NAME["truncated-body"].probe("tf-grpc", CTX).tensor
    assert len(half.content) * 2 == np.prod(half.shape) * 4
    over = BY_NAME["grpc-over-limit"].probe("tf-grpc", CTX).tensor
    assert MAX_REQUEST_BYTES < len(over.content) <= MAX_REQUEST_BYTES + IMAGE.nbytes
    assert len(BY_NAME["grpc-over-limit"].probe("torch-grpc", CTX).body) == MAX_REQUEST_BYTES + 1
    assert isinstance(BY_NAME["grpc-garbage"].probe("tf-grpc", CTX), Raw)
    assert BY_NAME["grpc-garbage"].probe("tf-rest", CTX) is None  # a REST target has no gRPC port


def test_a_target_without_a_batch_limit_gets_no_batch_over_the_limit():
    assert BY_NAME["batch-over-limit"].probe("tf-rest", Context("tiny", IMAGE, max_batch=None)) is None


def test_the_limit_is_the_one_both_servers_are_deployed_with():
    from serving.tf.dropin.flags import ServerFlags
    from serving.torch.server import TorchServeConfig

    assert MAX_REQUEST_BYTES == ServerFlags.max_body_bytes == TorchServeConfig.max_request_bytes


# -- judging answers --------------------------------------------------------------------------------------------------

def _judge(target: str, name: str, kind: str, status, message: str = "why") -> tuple[bool, str | None]:
    return judge(BY_NAME[name], target, Answer(kind, status, str(status), message))


def test_a_client_error_with_a_message_keeps_the_rule_and_anything_else_breaks_it():
    assert _judge("tf-rest", "malformed-json", "http", 400) == (True, None)
    assert _judge("tf-grpc", "wrong-rank", "grpc", "INVALID_ARGUMENT") == (True, None)
    assert _judge("tf-grpc", "unknown-model", "grpc", "NOT_FOUND") == (True, None)
    assert not _judge("tf-rest", "malformed-json", "http", 400, message="")[0]  # no message
    assert not _judge("tf-rest", "malformed-json", "http", 200)[0]  # accepted
    assert not _judge("torch-rest", "deep-nesting", "http", 503)[0]  # the bug of issue 16
    assert not _judge("torch-grpc", "huge-number", "grpc", "UNAVAILABLE")[0]
    assert not _judge("tf-rest", "malformed-json", "reset", None)[0]


def test_a_size_refusal_must_state_the_limit():
    assert not _judge("tf-rest", "body-far-over", "http", 413, "too large")[0]
    assert _judge("tf-rest", "body-far-over", "http", 413, f"over the limit of {MAX_REQUEST_BYTES} bytes")[0]
    assert _judge("tf-grpc", "grpc-over-limit", "grpc", "RESOURCE_EXHAUSTED",
                  f"Received message larger than max (67113030 vs. {MAX_REQUEST_BYTES})")[0]


def test_known_exceptions_excuse_only_their_own_answer_on_their_own_target():
    ok, note = _judge("torch-grpc", "malformed-json", "error-body", "OK")
    assert ok and "GRPCJob" in note
    assert not _judge("torch-grpc", "grpc-over-limit", "error-body", "OK")[0]
    assert _judge("torch-grpc", "unknown-model", "grpc", "INTERNAL", "ModelNotFoundException")[0]
    assert not _judge("torch-grpc", "unknown-model", "grpc", "INTERNAL", "NullPointerException")[0]
    assert not _judge("tf-grpc", "unknown-model", "grpc", "INTERNAL", "ModelNotFoundException")[0]
    ok, note = _judge("torch-rest", "body-far-over", "http", 413, "")
    assert ok and "HttpObjectAggregator" in note
    assert not _judge("torch-rest", "body-far-over", "http", 500, "")[0]
    assert not _judge("tf-rest", "body-far-over", "reset", 413)[0]  # the drop-in has no excuse for a reset
    assert not _judge("torch-rest", "body-far-over", "reset", 413)[0]  # keep-alive: TorchServe must not reset


def test_garbage_on_the_grpc_port_may_only_be_closed():
    for kind in ("goaway", "closed", "reset"):
        assert _judge("tf-grpc", "grpc-garbage", kind, None)[0]
    assert not _judge("tf-grpc", "grpc-garbage", "timeout", None)[0]


# -- reading answers off the wire ------------------------------------------------------------------------------------

def _read(raw: bytes) -> tuple[int, bytes]:
    server, client = socket.socketpair()
    with server, client:
        server.sendall(raw)
        server.shutdown(socket.SHUT_WR)
        return matrix._read_response(matrix._Reader(client))


def test_responses_are_read_by_content_length_chunks_or_to_the_end():
    assert _read(b"HTTP/1.1 400 Bad\r\nContent-Length: 4\r\n\r\nabcdEXTRA") == (400, b"abcd")
    assert _read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n") == (
        200, b"abcde")
    assert _read(b"HTTP/1.1 413 Too Large\r\nConnection: close\r\n\r\nrest") == (413, b"rest")
    answer = matrix._http_answer(503, b'{"code": 503, "type": "InternalServerException", "message": "failed"}')
    assert (answer.kind, answer.status, answer.message) == ("http", 503, "failed")
    assert matrix._http_answer(413, b"").text == "HTTP 413 (empty body)"


def test_a_server_that_closes_after_the_headers_is_a_row_not_a_crash():
    """Expect: 100-continue, and the server reads the headers and hangs up: an answer of kind closed."""
    import threading

    from loadtests.targets import Target

    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up_after_the_headers():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)

    thread = threading.Thread(target=hang_up_after_the_headers, daemon=True)
    thread.start()
    with listener:
        target = Target("tf-rest", "127.0.0.1", listener.getsockname()[1], server={})
        answer = matrix.post(target, Post(b"x" * 100, "expect"), "tiny")
    thread.join(5)
    assert answer.kind in ("closed", "reset"), answer


def test_a_goaway_frame_is_found_after_other_frames():
    settings_frame = (0).to_bytes(3, "big") + bytes([4, 0]) + bytes(4)
    debug = b"HTTP/2 client preface string missing or corrupt"
    goaway = (8 + len(debug)).to_bytes(3, "big") + bytes([7, 0]) + bytes(4) + bytes(4) + (1).to_bytes(4, "big") + debug
    assert matrix._find_goaway(settings_frame + goaway) == (1, debug.decode())
    assert matrix._find_goaway(settings_frame) is None


def test_the_table_marks_failures_and_numbers_the_notes():
    rows = [{"target": "tf-rest", "input": "nan", "answer": "HTTP 400", "message": "m", "next_good": True,
             "restarted": False, "ok": True},
            {"target": "torch-grpc", "input": "nan", "answer": 'OK with {"error"}', "message": "m",
             "next_good": True, "restarted": False, "ok": True, "note": "gRPC says OK"},
            {"target": "torch-rest", "input": "huge-number", "answer": "HTTP 503", "message": "Prediction failed",
             "next_good": True, "restarted": False, "ok": False}]
    section = {"targets": {"tf-rest": {}, "torch-rest": {}, "torch-grpc": {}}, "rows": rows, "passed": False}
    table = matrix_table(section)
    assert "HTTP 400 ok" in table and 'OK with {"error"} ok*1' in table and "HTTP 503 FAIL" in table
    assert "*1 gRPC says OK" in table and "FAIL torch-rest huge-number" in table
    assert table.splitlines()[2].split()[1] == "-"  # huge-number was not sent to tf-rest
    assert table.endswith("matrix: 2 of 3 rows ok, FAILED")


# -- the handler's codec: what made TorchServe answer 503 ------------------------------------------------------------

@pytest.mark.parametrize(("name", "says"), [("deep-nesting", "nested too deeply"), ("huge-number", "4300 digits"),
                                            ("boolean-in-tensor", "booleans"), ("invalid-utf8", "not UTF-8")])
def test_the_handler_codec_refuses_what_crashed_or_slipped_through(name, says):
    body = BY_NAME[name].probe("torch-rest", CTX).body
    with pytest.raises(rest_codec.PayloadError, match=says):
        request = rest_codec.parse_json(body, MAX_REQUEST_BYTES)
        rest_codec.decode_images(request, "images", (32, 32, 1), 256)


def test_the_handler_codec_still_reads_a_good_batch_exactly():
    request = rest_codec.parse_json(rest_codec.encode_instances(np.stack([IMAGE, IMAGE])), MAX_REQUEST_BYTES)
    assert np.array_equal(rest_codec.decode_images(request, "images", (32, 32, 1), 256), np.stack([IMAGE, IMAGE]))


def test_the_handler_keeps_the_reason_phrase_ascii_whatever_the_message_echoes():
    # TorchServe frames the phrase by its length in characters and sends its UTF-8 bytes: "façade" in the phrase
    # broke the worker's frame; TorchServe answered 500 "Worker died." (or no one, for 120 s) and restarted it.
    from serving.torch.handler import TFServingJSONHandler

    class Context:
        def __init__(self) -> None:
            self.statuses: list[tuple[int, str, int]] = []

        def set_response_status(self, code: int, phrase: str, idx: int) -> None:
            self.statuses.append((code, phrase, idx))

    handler = TFServingJSONHandler()
    handler.meta, handler.input_shape, handler.max_batch, handler.max_bytes = (
        {"input_name": "images"}, (32, 32, 1), 256, MAX_REQUEST_BYTES)
    rows = [{"body": BY_NAME[name].probe("torch-rest", CTX).body} for name in ("non-ascii-signature", "crlf-signature")]
    context = Context()
    answers = handler.handle(rows, context)
    assert context.statuses == [(400, "Bad Request", 0), (400, "Bad Request", 1)]
    assert "façade" in json.loads(answers[0])["error"] and "X-Injected" in json.loads(answers[1])["error"]


def test_the_dropin_refuses_booleans_in_a_float_input_as_tf_serving_does():
    from serving.tf.dropin.errors import InvalidArgument
    from serving.tf.dropin.json_tensor import to_array
    from serving.tf.dropin.servable import TensorInfo

    info = TensorInfo("images:0", np.dtype(np.float32), (-1, 32, 32, 1))
    with pytest.raises(InvalidArgument, match="expects DT_FLOAT values but the JSON holds booleans"):
        to_array([[0.5, True]], info, "images")
    assert to_array([[0.5, 1]], info, "images").dtype == np.float32
    assert to_array([True, False], TensorInfo("flags:0", np.dtype(np.bool_), (-1,)), "flags").dtype == np.bool_


# -- both real servers ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def targets(deployed, artifacts):
    from loadtests.targets import resolve_targets
    from serving.config import DeployConfig

    return resolve_targets(NAMES, DeployConfig(model="tiny", artifacts=artifacts.root), "127.0.0.1")


def test_every_bad_input_is_refused_and_both_servers_keep_serving(targets, artifacts):
    section = matrix.run_matrix(targets, artifacts, say=lambda line: None)
    bad = [row for row in section["rows"] if not row["ok"]]
    assert not bad, "rows that broke the rule:\n" + "\n".join(
        f"{row['target']} {row['input']}: {row['answer']} {row['message']!r} next_good={row['next_good']} "
        f"restarted={row['restarted']} {row.get('note', '')}" for row in bad)
    assert section["passed"] and set(section["targets"]) == set(NAMES)
    assert schema_errors({"schema_version": 1, "matrix": {"written": "now", **section}}, "reliability") == []
    assert len(section["rows"]) == sum(len(item.targets) for item in CATALOGUE)
    assert all(row["restarted"] is False for row in section["rows"])  # every server's processes were visible
    by = {(row["target"], row["input"]): row for row in section["rows"]}
    # the fixes of issue 16: a 400 with the codec's message, and the drop-in's 413 read by a keep-alive client
    assert by[("torch-rest", "deep-nesting")]["answer"] == "HTTP 400"
    assert by[("torch-rest", "huge-number")]["answer"] == "HTTP 400"
    assert by[("tf-rest", "body-far-over")]["answer"] == "HTTP 413"
    # TF Serving runs NaN and Infinity (the note says so) but refuses 1e999, as rapidjson does
    assert by[("tf-rest", "nan")]["answer"] == "HTTP 200" and "kParseNanAndInfFlag" in by[("tf-rest", "nan")]["note"]
    assert by[("tf-rest", "overflow-1e999")]["answer"] == "HTTP 400"
    assert str(MAX_REQUEST_BYTES) in by[("tf-rest", "body-far-over")]["message"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["instances", "inputs", "signature_name", "images", "b64"]) | st.text(max_size=4),
        children, max_size=3),
    max_leaves=40)


def test_random_json_bodies_get_an_answer_below_500_and_change_nothing(targets, artifacts):
    rest = [target for target in targets if target.transport == "rest"]
    before = [matrix.server_state(target, "tiny") for target in rest]

    # No shrinking: against a server that hangs, every try would wait out the 30 s timeout (the body is reported).
    @settings(max_examples=50, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate))
    @given(value=JSON)
    def every_server_answers(value: object) -> None:
        body = json.dumps(value).encode("utf-8")  # NaN and infinities as JSON's NaN/Infinity tokens
        for target in rest:
            answer = matrix.post(target, Post(body), "tiny")
            assert answer.kind == "http" and answer.status < 500, (target.name, body[:200], answer)
            assert answer.status < 400 or answer.message, (target.name, body[:200], answer)

    every_server_answers()
    good = matrix._good_requests(artifacts, "tiny")
    for target, state in zip(rest, before, strict=True):
        assert good.succeeds(target, "tiny") == (True, "")
        assert state is not None and matrix.server_state(target, "tiny") == state, target.name
