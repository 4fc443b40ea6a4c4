"""Security defaults, checked on the servers `python -m serving deploy` starts (the `deployed` fixture).

Loopback only; TorchServe's management API behind its token, not on the inference port, and registering
archives from the local model store only; the drop-in never unpickles or executes what a request carries and
refuses deep nesting; the token file is private, git-ignored and never copied into output, logs or records.
Checked elsewhere, not again here: compose publishes every port on loopback (test_compose), TorchServe refuses
inference without the inference token (test_clients_torch), the drop-in's body size limit (test_dropin_rest*).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import gzip
import http.server
import json
import pickle
import subprocess
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psutil
import pytest

from common.errors import UsageError
from common.paths import REPO_ROOT
from common.reference import load_reference
from loadtests.server_stats import group_members
from serving.clients import make_client
from serving.record import load_record
from serving.torch import protos
from serving.torch.management import Management, ManagementError
from serving.torch.server import mar_with_version, read_keys, token_expiry
from tests.conftest import run_module

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}  # the JVM may bind IPv4 loopback as an IPv4-mapped IPv6 socket
NOT_A_TOKEN = "-made-up-token"


@pytest.fixture(scope="module")
def torch_record(deployed, artifacts):
    return load_record(artifacts.run_dir, "torch")


@pytest.fixture(scope="module")
def keys(torch_record) -> dict[str, str]:
    return read_keys(Path(torch_record.key_file))


@pytest.fixture(scope="module")
def management(torch_record, keys) -> Management:
    return Management(torch_record.ports["management"], keys["management"])


@contextlib.contextmanager
def archives_in_store(artifacts, *versions: str):
    """Copies of the deployed tiny.mar in the model store as 'security-<version>.mar', removed afterwards."""
    store = artifacts.torch_model_store
    made = [mar_with_version(store / "tiny.mar", version, store / f"security-{version}.mar") for version in versions]
    try:
        yield [mar.name for mar in made]
    finally:
        for mar in made:
            mar.unlink(missing_ok=True)


def _http(method: str, url: str, token: str | None = None, body: dict | bytes | None = None) -> tuple[int, str]:
    """(status, body text) of one request, 4xx and 5xx included; a dict body is sent as JSON."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


# -- loopback -----------------------------------------------------------------------------------------------------

def _listening(pgid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the process group (TorchServe: frontend and workers)."""
    found = set()
    for process in group_members(pgid):
        try:
            found |= {(c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue  # gone, or not ours to inspect
    return found


@pytest.mark.parametrize("side", ["tf", "torch"])
def test_every_socket_a_deployed_server_listens_on_is_loopback(deployed, artifacts, side):
    record = load_record(artifacts.run_dir, side)
    listening = _listening(record.pgid)
    assert set(record.ports.values()) <= {port for _, port in listening}, listening  # the group is the server
    assert {address for address, _ in listening} <= LOOPBACK, listening


# -- TorchServe: tokens, the management API, registration -----------------------------------------------------------

@pytest.mark.parametrize("token_kind", ["none", "made-up", "inference"])
def test_management_refuses_a_missing_or_wrong_token_and_never_echoes_it(artifacts, torch_record, keys, management,
                                                                         token_kind):
    token = {"none": None, "made-up": NOT_A_TOKEN, "inference": keys["inference"]}[token_kind]
    base = f"http://127.0.0.1:{torch_record.ports['management']}"
    with archives_in_store(artifacts, "7") as (archive,):  # one that registers with the management token
        for method, path in (("GET", "/models"), ("POST", f"/models?url={archive}&model_name=intruder")):
            status, body = _http(method, base + path, token)
            assert (status, json.loads(body)["type"]) == (400, "InvalidKeyException"), (method, path, body)
            assert not any(secret in body for secret in (NOT_A_TOKEN, *keys.values())), body
    assert management.models() == ["tiny"]


def test_grpc_management_refuses_a_missing_token_and_the_inference_port_has_no_management(torch_record, keys):
    stubs = protos.ensure_stubs()
    ports = torch_record.ports
    for port, metadata, refused in ((ports["grpc_management"], (), grpc.StatusCode.PERMISSION_DENIED),
                                    (ports["grpc"], (("authorization", f"Bearer {keys['management']}"),),
                                     grpc.StatusCode.UNIMPLEMENTED)):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = stubs.management_pb2_grpc.ManagementAPIsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.ListModels(stubs.management_pb2.ListModelsRequest(), metadata=metadata, timeout=30)
            assert error.value.code() == refused, error.value.details()


def test_the_inference_port_does_not_answer_management_requests(artifacts, torch_record, keys, management):
    base = f"http://127.0.0.1:{torch_record.ports['inference']}"
    with archives_in_store(artifacts, "9") as (archive,):  # the management port would register it
        for token in (keys["inference"], keys["management"]):
            for method, path in (("GET", "/models"), ("POST", f"/models?url={archive}&model_name=intruder")):
                status, body = _http(method, base + path, token)
                assert status >= 400 and '"models"' not in body, (method, path, status, body)
    assert management.models() == ["tiny"]


@contextlib.contextmanager
def _counting_http_server(body: bytes):
    """A local HTTP server that would hand out `body`: its port, and the paths it was asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("url", ["https://example.com/m.mar", "http://127.0.0.1:{port}/m.mar", "file://{outside}"])
def test_registering_an_archive_from_outside_the_store_is_refused_and_registers_nothing(
        artifacts, management, tmp_path, url):
    store = artifacts.torch_model_store
    outside = mar_with_version(store / "tiny.mar", "8", tmp_path / "m.mar")  # a valid archive, only elsewhere
    before = (management.models(), management.versions("tiny"), sorted(store.iterdir()))
    with _counting_http_server(outside.read_bytes()) as (port, asked):
        with pytest.raises(ManagementError) as refused:
            management.register("intruder", url.format(port=port, outside=outside))
    assert 400 <= refused.value.status < 500 and "does not match any allowed URL" in str(refused.value)
    assert asked == []  # refused before anything was fetched
    assert (management.models(), management.versions("tiny"), sorted(store.iterdir())) == before


def test_an_archive_in_the_store_rolls_out_as_a_new_version(artifacts, torch_record, keys, management):
    reference = load_reference(artifacts, "tiny")
    with archives_in_store(artifacts, "1", "2") as (first, second):
        try:
            management.register("canary", first)
            assert management.versions("canary") == {"1": True}
            assert management.roll_out("canary", second) == "2"
            assert management.versions("canary") == {"2": True}
            with make_client("torch-rest", port=torch_record.ports["inference"], model="canary",
                             token=keys["inference"]) as client:
                predicted = client.predict(reference.images[:8]).argmax(1)
            assert predicted.tolist() == reference.expected_classes[:8].tolist()
        finally:
            with contextlib.suppress(ManagementError):
                for version in management.versions("canary"):
                    management.unregister("canary", version)
    assert management.models() == ["tiny"] and management.versions("tiny") == {"1": True}


# -- the TF Serving drop-in -----------------------------------------------------------------------------------------

DROPIN_FILES = sorted((REPO_ROOT / "serving/tf/dropin").glob("*.py"))
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


def _unsafe(source: str, name: str) -> list[str]:
    """Where a module could unpickle or execute something: imports, builtin calls, allow_pickle=..."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{name}:{node.lineno} imports {m}" for m in modules if m.split(".")[0] in UNSAFE_MODULES]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in UNSAFE_CALLS:
            found.append(f"{name}:{node.lineno} calls {node.func.id}()")
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            found.append(f"{name}:{node.value.lineno} passes allow_pickle")
    return found


def test_the_dropin_never_imports_a_deserializer_of_code_or_calls_eval():
    assert {"grpc_api.py", "json_tensor.py", "rest_server.py"} <= {path.name for path in DROPIN_FILES}
    assert [found for path in DROPIN_FILES for found in _unsafe(path.read_text(encoding="utf-8"), path.name)] == []
    planted = "import pickle as p\nfrom marshal import loads\nexec(code)\nnp.load(f, allow_pickle=True)\n"
    assert len(_unsafe(planted, "planted.py")) == 4  # the check sees each way in


class _Touch:
    """Unpickling this creates `marker`: proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _pickle_bomb(tmp_path: Path) -> tuple[bytes, Path]:
    marker = tmp_path / "unpickled"
    blob = pickle.dumps(_Touch(marker))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Touch(control)))  # the payload is live: loading it runs code
    assert control.exists()
    return blob, marker


def _tensors(blob: bytes) -> dict[str, object]:
    from tensorflow.core.framework import resource_handle_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])
    variant = tensor_pb2.VariantTensorDataProto(type_name="pickle", metadata=blob)
    handle = resource_handle_pb2.ResourceHandleProto(device="/cpu:0", container=blob.hex(), name="h")
    return {"DT_VARIANT": tensor_pb2.TensorProto(dtype=types_pb2.DT_VARIANT, tensor_shape=shape, variant_val=[variant]),
            "DT_RESOURCE": tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE, tensor_shape=shape,
                                                  resource_handle_val=[handle]),
            "DT_STRING": tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[blob])}


def test_a_pickle_sent_to_the_dropin_is_refused_never_run(deployed, tmp_path):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    env, _ = deployed
    blob, marker = _pickle_bomb(tmp_path)
    with grpc.insecure_channel(f"127.0.0.1:{env['TF_GRPC_PORT']}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for dtype, tensor in _tensors(blob).items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "tiny"
            request.inputs["images"].CopyFrom(tensor)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Predict(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (dtype, refused.value.details())
    encoded = {"b64": base64.b64encode(blob).decode()}
    for body in ({"instances": [encoded]}, {"inputs": {"images": encoded}}, {"instances": [blob.decode("latin-1")]}):
        status, answer = _http("POST", f"http://127.0.0.1:{env['TF_REST_PORT']}/v1/models/tiny:predict", body=body)
        assert status == 400 and "error" in json.loads(answer), answer
    assert not marker.exists()


@pytest.mark.parametrize("depth", [100, 2_000, 200_000])
def test_the_dropin_refuses_deep_nesting_and_keeps_serving(deployed, artifacts, depth):
    env, _ = deployed
    url = f"http://127.0.0.1:{env['TF_REST_PORT']}/v1/models/tiny:predict"
    status, answer = _http("POST", url, body=b'{"instances": ' + b"[" * depth + b"0.5" + b"]" * depth + b"}")
    assert status == 400 and "error" in json.loads(answer), answer[:500]
    reference = load_reference(artifacts, "tiny")
    with make_client("tf-rest", port=int(env["TF_REST_PORT"]), model="tiny") as client:
        assert client.predict(reference.images[:1]).argmax(1)[0] == reference.expected_classes[0]


# -- the token file -------------------------------------------------------------------------------------------------

def test_the_token_file_is_written_at_deploy_time_private_and_git_ignored(torch_record):
    key_file = Path(torch_record.key_file)
    for private in (key_file, key_file.parent):  # TorchServe narrows the file to 0600; deploy makes its directory 0700
        assert private.stat().st_mode & 0o077 == 0, f"{private}: {oct(private.stat().st_mode)}"
    # written by this deploy's server, not left over: TorchServe writes it once it is up, deploy removes it before
    assert key_file.stat().st_mtime >= psutil.Process(torch_record.pgid).create_time()
    default = Path("artifacts/run/torchserve/key_file.json")  # where `make deploy` puts it in the repository
    done = subprocess.run(["git", "check-ignore", "-q", str(default)], cwd=REPO_ROOT)
    assert done.returncode == 0, f"{default} is not git-ignored (or is tracked)"


def test_tokens_last_a_day_not_torchserves_hour_and_an_expired_one_stops_a_load_test_before_it_starts(
        torch_record, tmp_path):
    from loadtests.targets import check_token_fresh

    # TorchServe's default is 60 minutes, after which it refuses every request: a sweep begun 50 minutes
    # after deploy failed half-way with every TorchServe request refused (refused_token, PERMISSION_DENIED)
    key_file = Path(torch_record.key_file)
    written = datetime.fromtimestamp(key_file.stat().st_mtime, UTC)
    for api in ("inference", "management"):
        assert token_expiry(key_file, api) - written == pytest.approx(timedelta(minutes=24 * 60), abs=timedelta(
            minutes=2)), api
    check_token_fresh(key_file, "torch-rest")  # fresh: no error
    with pytest.raises(UsageError, match=r"torch-rest: TorchServe's inference token expired at .* redeploy"):
        check_token_fresh(key_file, "torch-rest", now=token_expiry(key_file) + timedelta(seconds=1))
    stale = tmp_path / "key_file.json"  # as TorchServe writes it: nanoseconds and a Z
    stale.write_text(json.dumps({"inference": {"key": "k", "expiration time": "2026-12-07T02:02:56.594360467Z"}}))
    assert token_expiry(stale) == datetime(2026, 12, 7, 2, 2, 56, 594360, tzinfo=UTC)
    with pytest.raises(UsageError, match="expired at 2026-12-07 02:02 UTC"):
        check_token_fresh(stale, "torch-grpc")


def test_no_token_appears_in_deploys_output_logs_records_or_results(deployed, artifacts, torch_record, keys):
    from loadtests.targets import server_record

    env, deploy_stdout = deployed
    texts = {"deploy stdout": deploy_stdout, "results server object": json.dumps(server_record(torch_record))}
    for command in ("status", "smoke"):
        done = run_module("serving", command, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        texts[f"serving {command}"] = done.stdout + done.stderr
    key_file = Path(torch_record.key_file)
    written = [path for root in (artifacts.run_dir, artifacts.root / "results") if root.is_dir()
               for path in root.rglob("*") if path.is_file() and path != key_file
               and "tmp" not in path.relative_to(root).parts]  # tmp: TorchServe's unpacked archives
    assert any(path.name == "torchserve.log" for path in written)
    for path in written:
        data = path.read_bytes()
        texts[str(path)] = (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8", "replace")
    leaks = [(api, where) for where, text in texts.items() for api, key in keys.items() if key in text]
    assert leaks == []
    assert all(len(key) >= 8 for key in keys.values())  # long enough that a chance match is no worry
