"""gRPC over TLS as TF Serving's --ssl_config_file sets it up, with certificates made here by openssl."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.tf.dropin.config import ModelConfig, parse_ssl_config
from serving.tf.dropin.core import DropInCore
from serving.tf.dropin.grpc_api import serve_grpc
from tests.tf_serving_models import half_plus_n_tf1

TIMEOUT = 20.0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(directory: Path, name: str) -> None:
    """name.key and name.crt for localhost / 127.0.0.1, signed by the test CA."""
    (directory / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}", cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext", cwd=directory)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=test-ca", cwd=directory)
    _signed(directory, "server")
    _signed(directory, "client")
    return directory


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    core = DropInCore([ModelConfig("default", half_plus_n_tf1(tmp_path_factory.mktemp("models") / "hp2"))])
    core.start_polling(0)
    yield core
    core.stop()


def _ssl_config_file(pki: Path, client_verify: bool) -> Path:
    """An SSLConfig as TF Serving's docs write it: the PEM text in the file itself."""
    def pem(name: str) -> str:
        return (pki / name).read_text().replace("\n", "\\n")

    lines = [f'server_key: "{pem("server.key")}"', f'server_cert: "{pem("server.crt")}"',
             f'custom_ca: "{pem("ca.crt")}"', f"client_verify: {str(client_verify).lower()}"]
    path = pki / f"ssl-{client_verify}.config"
    path.write_text("\n".join(lines) + "\n")
    return path


def _predict(channel: grpc.Channel) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, TIMEOUT)
    return response.outputs["y"].float_val[0]


def _refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        _predict(channel)
    return caught.value.code()


@pytest.mark.parametrize("client_verify", [False, True])
def test_grpc_serves_over_tls_as_the_ssl_config_says(pki, core, client_verify):
    ssl = parse_ssl_config(_ssl_config_file(pki, client_verify))
    assert ssl.client_verify is client_verify and ssl.server_cert.startswith("-----BEGIN CERTIFICATE-----\n")
    server = serve_grpc(core, "127.0.0.1", 0, ssl=ssl, profiler=False)
    target = f"localhost:{server.port}"
    ca = (pki / "ca.crt").read_bytes()
    with_client_cert = grpc.ssl_channel_credentials(ca, (pki / "client.key").read_bytes(),
                                                    (pki / "client.crt").read_bytes())
    try:
        with grpc.secure_channel(target, with_client_cert) as channel:
            assert _predict(channel) == 3.0
        with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
            if client_verify:
                assert _refused(channel) == grpc.StatusCode.UNAVAILABLE  # the handshake wants a client certificate
            else:
                assert _predict(channel) == 3.0
        with grpc.insecure_channel(target) as channel:
            assert _refused(channel) == grpc.StatusCode.UNAVAILABLE  # plaintext never reaches the services
    finally:
        server.stop(grace=None)
