"""serving.clients against the real TorchServe (token auth on): REST and gRPC give the reference answers and errors."""

import json

import numpy as np
import pytest

from common.fsutil import sha256_of
from common.procs import free_port, port_open
from model.checkpoint import load_checkpoint
from model.reference import build_both
from serving import clients
from serving.torch import protos
from serving.torch.server import TorchServe, TorchServeConfig, read_keys

TRANSPORTS = ["torch-rest", "torch-grpc"]


@pytest.fixture(scope="module")
def torchserve(artifacts, tmp_path_factory):
    config = TorchServeConfig.on_free_ports(model_store=artifacts.torch_model_store, models=["tiny"],
                                            run_dir=tmp_path_factory.mktemp("torchserve-clients"))
    server = TorchServe(config)
    try:
        server.start()
    except BaseException:  # start() stops on its own failures only, not on every exception inside it
        server.stop()
        raise
    yield server
    server.stop()
    assert not port_open(config.inference_port), "TorchServe REST still listening after stop()"
    assert not port_open(config.grpc_inference_port), "TorchServe gRPC still listening after stop()"


@pytest.fixture
def connect(torchserve):
    """connect(target, **overrides) -> a client for the test server's tiny model, closed after the test."""
    opened = []
    ports = {"torch-rest": torchserve.config.inference_port, "torch-grpc": torchserve.config.grpc_inference_port}

    def make(target, **overrides):
        settings = {"port": ports[target], "model": "tiny",
                    "token": read_keys(torchserve.config.key_file)["inference"], **overrides}
        opened.append(clients.make_client(target, **settings))
        return opened[-1]

    yield make
    for client in opened:
        client.close()


@pytest.fixture(scope="module")
def test_images(artifacts):
    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    images, _ = checkpoint.test_set()
    return images[:8], build_both(checkpoint).reference_probabilities(images[:8])


def test_stubs_are_generated_from_the_installed_jar():
    stubs = protos.ensure_stubs()
    stamp = protos.read_stamp()
    assert stamp["jar_sha256"] == sha256_of(protos.jar_path())
    assert hasattr(stubs.inference_pb2_grpc, "InferenceAPIsServiceStub")
    assert stubs.inference_pb2_grpc.__name__ == "serving.torch.proto_gen.inference_pb2_grpc"
    assert set(stubs.inference_pb2.PredictionsRequest.DESCRIPTOR.fields_by_name) >= {"model_name", "model_version",
                                                                                     "input"}
    assert protos.generate() is False, "a second run with the same jar must be a no-op"


@pytest.mark.parametrize("target", TRANSPORTS)
def test_predictions_equal_the_reference(connect, test_images, target):
    images, reference = test_images
    with connect(target) as client:
        probabilities = client.predict(images)
    assert probabilities.shape == reference.shape and probabilities.dtype == np.float32
    assert np.abs(probabilities - reference).max() <= 1e-5


def test_a_version_number_selects_that_archive_version(connect, test_images):
    images, reference = test_images
    for target in TRANSPORTS:
        assert np.abs(connect(target, version=1).predict(images[:2]) - reference[:2]).max() <= 1e-5


@pytest.mark.parametrize("key", [None, "management", "made-up"])
def test_grpc_without_the_inference_token_is_refused(torchserve, connect, test_images, key):
    # TorchServe 0.12 refuses a missing, wrong or other-API token over gRPC with PERMISSION_DENIED
    # ("Token Authorization failed...") and over REST with HTTP 400 InvalidKeyException.
    keys = read_keys(torchserve.config.key_file)
    token = {"management": keys["management"], "made-up": "-made-up-token"}.get(key)  # None: no token at all
    with pytest.raises(clients.Unauthorized, match="Token Authorization failed") as grpc_error:
        connect("torch-grpc", token=token).predict(test_images[0][:1])
    assert grpc_error.value.status == "PERMISSION_DENIED"
    with pytest.raises(clients.Unauthorized, match="InvalidKeyException") as rest_error:
        connect("torch-rest", token=token).predict(test_images[0][:1])
    assert rest_error.value.status == 400
    for answer in (str(grpc_error.value), str(rest_error.value)):  # a refusal never echoes a token, sent or real
        assert not any(secret and secret in answer for secret in (token, *keys.values())), answer


@pytest.mark.parametrize("target", TRANSPORTS)
def test_bad_input_raises_bad_request_with_the_handlers_message(connect, test_images, target):
    client = connect(target)
    with pytest.raises(clients.BadRequest, match=r"expected \[1, 32, 32, 1\]"):
        client.predict(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(clients.BadRequest, match="malformed JSON"):
        client.predict_body(b'{"instances": [1, 2')
    images, reference = test_images
    assert client.predict(images[:2]).argmax(1).tolist() == reference[:2].argmax(1).tolist()


@pytest.mark.parametrize("target", TRANSPORTS)
@pytest.mark.parametrize(("model", "version"), [("no-such-model", None), ("tiny", 99)])
def test_an_unknown_model_or_version_raises_not_found(connect, test_images, target, model, version):
    with pytest.raises(clients.NotFound, match="not found|does not exist"):
        connect(target, model=model, version=version).predict(test_images[0][:1])


@pytest.mark.parametrize("target", TRANSPORTS)
def test_a_closed_port_raises_unavailable_naming_the_address(connect, test_images, target):
    port = free_port()
    with pytest.raises(clients.Unavailable, match=f"127.0.0.1:{port}"):
        connect(target, port=port, timeout=5).predict(test_images[0][:1])


def test_the_same_json_body_works_over_both_transports(connect, test_images):
    images, _ = test_images
    body = json.dumps({"instances": [{"images": row} for row in images[:3].tolist()]}).encode()
    rest, grpc = (connect(target).predict_body(body) for target in TRANSPORTS)
    assert np.array_equal(rest, grpc)
