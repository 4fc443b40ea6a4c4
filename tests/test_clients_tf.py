"""serving.clients without a server: the TF gRPC tensor encoding and the client factory."""

import numpy as np
import pytest
import tensorflow as tf

from serving import clients


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.random((3, 32, 32, 1), dtype=np.float32)


def test_encoded_tensor_round_trips_through_tensorflow_exactly(images):
    proto = clients.encode_tensor(images)
    decoded = tf.make_ndarray(proto)
    assert decoded.dtype == np.float32 and decoded.shape == images.shape
    assert np.array_equal(decoded, images)
    assert np.array_equal(clients.decode_tensor(proto), images)


def test_decoding_reads_what_tensorflow_writes(images):
    assert np.array_equal(clients.decode_tensor(tf.make_tensor_proto(images)), images)
    # Protos built field by field (as TF Serving may answer) carry float_val, and one value means "fill".
    listed = tf.make_tensor_proto(images[0, :2, :2, 0])
    listed.float_val.extend(np.frombuffer(listed.tensor_content, dtype="<f4").tolist())
    listed.tensor_content = b""
    assert np.array_equal(clients.decode_tensor(listed), images[0, :2, :2, 0])
    filled = tf.make_tensor_proto(0.5, dtype=tf.float32, shape=[2, 3])
    assert np.array_equal(clients.decode_tensor(filled), np.full((2, 3), 0.5, dtype=np.float32))


def test_decoding_refuses_other_dtypes():
    with pytest.raises(clients.ClientError, match="DT_INT32"):
        clients.decode_tensor(tf.make_tensor_proto(np.arange(4, dtype=np.int32)))


def test_make_client_rejects_an_unknown_target():
    with pytest.raises(ValueError, match="tf-rest, tf-grpc, torch-rest, torch-grpc"):
        clients.make_client("tf-http", model="tiny")


@pytest.mark.parametrize(("target", "version", "url"), [
    ("tf-rest", None, "http://127.0.0.1:8501/v1/models/tiny:predict"),
    ("tf-rest", 2, "http://127.0.0.1:8501/v1/models/tiny/versions/2:predict"),
    ("torch-rest", None, "http://127.0.0.1:8080/predictions/tiny"),
    ("torch-rest", 2, "http://127.0.0.1:8080/predictions/tiny/2"),
])
def test_rest_urls_use_the_default_ports(target, version, url):
    with clients.make_client(target, model="tiny", version=version) as client:
        assert client.url == url


def test_grpc_clients_default_to_the_usual_ports():
    # Channels connect lazily, so building a client needs no server.
    for target, port in (("tf-grpc", 8500), ("torch-grpc", 7070)):
        with clients.make_client(target, model="tiny", token="t") as client:
            assert client.address == f"127.0.0.1:{port}"
            assert client.metadata == (("authorization", "Bearer t"),)
