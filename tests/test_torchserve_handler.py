"""The .mar in the real TorchServe: TF Serving's REST body in, predictions out, bad input 400."""

import http.client
import http.server
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from common.procs import free_port, port_open
from model.checkpoint import load_checkpoint
from model.reference import build_both
from serving.torch.server import LOG_CONFIG, ServerError, TorchServe, TorchServeConfig

MAX_REQUEST_BYTES = 4_000_000


@pytest.fixture(scope="module")
def torchserve(artifacts, tmp_path_factory):
    config = TorchServeConfig.on_free_ports(model_store=artifacts.torch_model_store, models=["tiny"],
                                            run_dir=tmp_path_factory.mktemp("torchserve"), batch_size=4,
                                            max_request_bytes=MAX_REQUEST_BYTES)
    server = TorchServe(config).start()
    yield server
    server.stop()
    assert not port_open(config.inference_port), "TorchServe still listening after stop()"


def _post(server, body: bytes, headers=None):
    url = f"http://127.0.0.1:{server.config.inference_port}/predictions/tiny"
    headers = server.auth_headers() if headers is None else headers
    request = urllib.request.Request(url, data=body, headers={**headers, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def test_images(artifacts):
    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    images, _ = checkpoint.test_set()
    return images[:8], build_both(checkpoint).reference_probabilities(images[:8])


@pytest.mark.parametrize("wrap", ["instances", "named_instances", "inputs", "named_inputs"])
def test_predictions_equal_the_reference_in_every_body_format(torchserve, test_images, wrap):
    images, reference = test_images
    rows = images.tolist()
    body = {"instances": rows, "named_instances": [{"images": r} for r in rows],
            "inputs": rows, "named_inputs": {"images": rows}}[wrap]
    key = "inputs" if "inputs" in wrap else "instances"
    status, answer = _post(torchserve, json.dumps({key: body}).encode())
    assert status == 200
    assert np.abs(np.asarray(answer["predictions"]) - reference).max() <= 1e-5


def test_a_request_without_the_token_is_refused(torchserve, test_images):
    status, answer = _post(torchserve, json.dumps({"instances": test_images[0][:1].tolist()}).encode(), headers={})
    assert status == 400 and answer["type"] == "InvalidKeyException"


BAD_BODIES = {
    "malformed JSON": (b'{"instances": [1, 2', "malformed JSON"),
    "wrong shape": (b'{"instances": [[1, 2, 3]]}', "expected [1, 32, 32, 1]"),
    "strings": (json.dumps({"instances": [[["a"] * 32] * 32]}).encode(), "must be numbers"),
    "NaN": (b'{"instances": [' + json.dumps(np.zeros((32, 32, 1)).tolist()).replace("0.0", "NaN", 1).encode()
            + b"]}", "NaN or infinite"),
    "empty batch": (b'{"instances": []}', "empty batch"),
    "over the batch limit": (json.dumps({"instances": np.zeros((257, 32, 32, 1)).tolist()}).encode(),
                             "over the limit of 256"),
    "unknown signature": (b'{"signature_name": "other", "instances": [[1]]}', "unknown signature_name"),
    "neither key": (b'{"signature_name": "serving_default"}', "exactly one of"),
    "unknown key": (b'{"images": [[1]]}', "unknown request keys"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_input_gets_400_with_a_message_and_the_server_keeps_serving(torchserve, test_images, case):
    body, message = BAD_BODIES[case]
    status, answer = _post(torchserve, body)
    assert status == 400
    assert message in answer["error"]
    images, reference = test_images
    status, answer = _post(torchserve, json.dumps({"instances": images[:2].tolist()}).encode())
    assert status == 200 and np.argmax(answer["predictions"], 1).tolist() == reference[:2].argmax(1).tolist()


def test_each_log_line_goes_once_to_its_own_file_and_standard_output_gets_warnings_only(torchserve, test_images):
    """serving/torch/log4j2.xml in the real TorchServe. Built in, TorchServe writes its own lines twice to ts_log,
    every line of every log to standard output (the deploy log, never rotated) and two DEBUG lines per request."""
    status, _ = _post(torchserve, json.dumps({"instances": test_images[0][:1].tolist()}).encode())
    assert status == 200
    logs = torchserve.config.run_dir / "logs"
    ts_log = (logs / "ts_log.log").read_text(encoding="utf-8")
    stdout = torchserve.config.log_file.read_text(encoding="utf-8", errors="replace")
    assert "POST /predictions/tiny" in (logs / "access_log.log").read_text(encoding="utf-8")
    assert ts_log.count("Torchserve version:") == 1 and "[DEBUG]" not in ts_log and "ACCESS_LOG" not in ts_log
    assert not re.search(r"\[(INFO |DEBUG)\]", stdout), stdout[-2000:]


def test_log_files_roll_over_without_gzip():
    """Gzipping a full 100 MB log runs on the server's own CPU: at 70 % of saturation every rollover overflowed
    the job queue (README). Rollover is a rename; TorchServe's own classes log at INFO."""
    config = ET.parse(LOG_CONFIG).getroot()
    patterns = [appender.get("filePattern") for appender in config.iter("RollingFile")]
    assert len(patterns) == 5 and all(pattern.endswith(".%i.log") for pattern in patterns), patterns
    levels = {logger.get("name"): logger.get("level") for logger in config.iter("Logger")}
    assert levels["org.pytorch.serve"] == "info"


def test_a_body_over_the_size_limit_gets_413_and_the_server_keeps_serving(torchserve, test_images):
    # TorchServe's Java frontend refuses it from Content-Length, before the handler runs, with
    # 413 and an empty body; the body is not sent, as a client would not after an early answer.
    connection = http.client.HTTPConnection("127.0.0.1", torchserve.config.inference_port, timeout=30)
    connection.putrequest("POST", "/predictions/tiny")
    for name, value in {**torchserve.auth_headers(), "Content-Type": "application/json",
                        "Content-Length": str(MAX_REQUEST_BYTES + 1)}.items():
        connection.putheader(name, value)
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()
    images, reference = test_images
    status, answer = _post(torchserve, json.dumps({"instances": images[:1].tolist()}).encode())
    assert status == 200 and np.argmax(answer["predictions"], 1).tolist() == reference[:1].argmax(1).tolist()


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A management API that refuses every request as TorchServe does a bad token (a multi-line JSON body)."""

    def do_GET(self):
        body = b'{\n  "code": 401,\n  "type": "InvalidKeyException",\n  "message": "Token Authorization failed"\n}'
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_refused_management_request_fails_at_once_instead_of_waiting_out_the_timeout(tmp_path):
    management = http.server.HTTPServer(("127.0.0.1", free_port()), _Refusing)
    threading.Thread(target=management.serve_forever, daemon=True).start()
    config = TorchServeConfig(model_store=tmp_path, models=["tiny"], run_dir=tmp_path, token_auth=False,
                              management_port=management.server_port)
    server = TorchServe(config)
    server.process = subprocess.Popen(["sleep", "60"])  # a live process, as while TorchServe starts
    started = time.monotonic()
    try:
        with pytest.raises(ServerError, match="HTTP 401 .*Token Authorization failed"):
            server._workers_ready("tiny", timeout=60)
    finally:
        server.process.kill()
        server.process.wait()
        management.shutdown()
        management.server_close()
    assert time.monotonic() - started < 10


def test_a_taken_port_fails_start_with_the_port_named_and_nothing_left_running(artifacts, tmp_path):
    config = TorchServeConfig.on_free_ports(model_store=artifacts.torch_model_store, models=["tiny"], run_dir=tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", config.grpc_inference_port))
        squatter.listen()
        server = TorchServe(config)
        with pytest.raises(ServerError, match=f"could not bind 127.0.0.1:{config.grpc_inference_port}"):
            server.start(timeout=120)
    assert server.process is None
    assert not port_open(config.inference_port) and not port_open(config.management_port)
