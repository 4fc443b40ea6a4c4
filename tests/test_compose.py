"""docker-compose.yml as a real Compose implementation resolves it, and deploy's choice of compose.

`docker compose config` (Compose v2) or Debian's `docker-compose config` resolves the file
without a Docker engine (static validation only: deploy needs v2 and an engine); `make prereqs`
installs the latter. Checked on the resolved file: pinned
images, loopback ports, one set of limits for both servers, the paths export writes, token
authorization, healthchecks, the GPU reservations and the locust services.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from common.errors import UsageError
from common.paths import REPO_ROOT, ArtifactPaths
from serving import deploy
from serving.config import DeployConfig
from serving.torch.server import TorchServeConfig
from tests.conftest import run_module

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROFILES = ("cpu", "gpu", "loadtest")
SERVERS = ("tf-serving", "torchserve", "tf-serving-gpu", "torchserve-gpu")
# Every variable the file reads: removed from the environment so the file's own defaults are tested.
KNOBS = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE_FILE.read_text(encoding="utf-8")))


def _compose_command() -> list[str] | None:
    """Compose v2 as deploy runs it, else Debian's docker-compose: either resolves the file statically."""
    if deploy.compose_v2_installed():
        return list(deploy.COMPOSE_V2)
    return ["docker-compose"] if shutil.which("docker-compose") else None


def resolve(**variables: str) -> dict:
    """The file as Compose resolves it with every profile on and only `variables` set."""
    command = _compose_command()
    if command is None:
        pytest.fail("no Compose implementation: neither `docker compose` nor `docker-compose` is installed "
                    "(`make prereqs` installs Debian's docker-compose)")
    env = {name: value for name, value in os.environ.items() if name not in KNOBS} | variables
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    done = subprocess.run([*command, "-f", str(COMPOSE_FILE), *profiles, "config"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(command)} config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)["services"]


@pytest.fixture(scope="module")
def services() -> dict:
    return resolve()


def published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each published port; v1 prints strings, v2 mappings."""
    pairs = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.append((port.get("host_ip", ""), str(port.get("published", ""))))
        else:  # "address:port:port/protocol"; a port without an address fails here, as it should
            host_ip, host_port, _ = port.split(":")
            pairs.append((host_ip, host_port))
    return pairs


def mounts(service: dict) -> dict[str, tuple[str, bool]]:
    """{container path: (host path, read only)} for the service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
        else:
            source, target, *mode = volume.split(":")
            found[target] = (source, mode == ["ro"])
    return found


def words(command: str | list[str]) -> str:
    """A command as one string; v1 keeps a string command a string, v2 splits it."""
    return command if isinstance(command, str) else " ".join(command)


def limits(service: dict) -> dict[str, str]:
    return {key: str(float(value)) if key == "cpus" else str(value)
            for key, value in service["deploy"]["resources"]["limits"].items()}


def test_a_real_compose_implementation_resolves_every_profile(services):
    assert set(services) == {*SERVERS, "locust-master", "locust-workers"}
    assert {name: services[name]["profiles"] for name in services} == {
        "tf-serving": ["cpu"], "torchserve": ["cpu"], "tf-serving-gpu": ["gpu"], "torchserve-gpu": ["gpu"],
        "locust-master": ["loadtest"], "locust-workers": ["loadtest"]}


def test_every_image_has_a_pinned_version_tag(services):
    images = [services[name]["image"] for name in services]
    from_lines = re.findall(r"^FROM\s+(\S+)", (REPO_ROOT / "loadtests/Dockerfile").read_text(), re.MULTILINE)
    for image in images + from_lines:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.match(r"\d", tag), f"{image} is not pinned to a version"
    assert services["tf-serving"]["image"] == "tensorflow/serving:2.20.0"
    assert services["tf-serving-gpu"]["image"] == "tensorflow/serving:2.20.0-gpu"
    assert services["torchserve"]["image"] == "pytorch/torchserve:0.12.0-cpu"
    assert services["torchserve-gpu"]["image"] == "pytorch/torchserve:0.12.0-gpu"


def test_every_published_port_binds_loopback_by_default(services):
    ports = {name: published(service) for name, service in services.items()}
    assert all(host == "127.0.0.1" for pairs in ports.values() for host, _ in pairs), ports
    assert [port for _, port in ports["tf-serving"]] == ["8500", "8501"]
    assert [port for _, port in ports["torchserve"]] == ["8080", "8081", "8082", "7070"]
    wide = resolve(BIND_ADDRESS="0.0.0.0")  # the knob moves the servers' inference APIs, and only on purpose
    assert {host for host, _ in published(wide["tf-serving"])} == {"0.0.0.0"}
    assert published(wide["torchserve"]) == [("0.0.0.0", "8080"), ("127.0.0.1", "8081"), ("127.0.0.1", "8082"),
                                             ("0.0.0.0", "7070")]  # management and metrics never leave loopback


def test_both_servers_share_one_cpu_and_memory_limit(services):
    assert {str(limits(services[name])) for name in SERVERS} == {str({"cpus": "2.0", "memory": "4g"})}
    changed = resolve(SERVER_CPUS="3", SERVER_MEMORY="6g")
    assert {str(limits(changed[name])) for name in SERVERS} == {str({"cpus": "3.0", "memory": "6g"})}


@pytest.mark.parametrize("model", ["tiny", "mobilenet"])
def test_servers_mount_read_only_what_export_writes(model, tmp_path):
    for root, variables in ((REPO_ROOT / "artifacts", {}), (tmp_path, {"ARTIFACTS_DIR": str(tmp_path)})):
        paths = ArtifactPaths(root)
        resolved = resolve(MODEL=model, **variables)
        for name in ("tf-serving", "tf-serving-gpu"):
            assert mounts(resolved[name])[f"/models/{model}"] == (str(paths.tf_model_base(model)), True)
            assert resolved[name]["environment"]["MODEL_NAME"] == model
        for name in ("torchserve", "torchserve-gpu"):
            assert mounts(resolved[name])["/home/model-server/model-store"] == (str(paths.torch_model_store), True)
            assert resolved[name]["environment"]["MODEL"] == model


def test_tf_serving_gets_the_batching_and_monitoring_configs_deploy_passes(services):
    service = services["tf-serving"]
    for name in ("batching.config", "monitoring.config"):
        assert mounts(service)[f"/etc/tf-serving/{name}"] == (str(REPO_ROOT / "serving/tf" / name), True)
    assert {"--enable_batching=true", "--batching_parameters_file=/etc/tf-serving/batching.config",
            "--monitoring_config_file=/etc/tf-serving/monitoring.config"} <= set(service["command"])


def _properties(path: Path) -> dict[str, str]:
    lines = [line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines()
             if "=" in line and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in lines}


def test_torchserve_runs_the_projects_config_with_token_auth_and_deploys_batching(services, deploy_defaults):
    service = services["torchserve"]
    source, read_only = mounts(service)["/home/model-server/docker.properties"]
    assert Path(source) == REPO_ROOT / "serving/torch/docker.properties" and read_only
    properties = _properties(Path(source))
    assert properties["disable_token_authorization"] == "false"
    # the model API serves rollouts; archives register from the mounted store only, never from a remote URL
    assert properties["enable_model_api"] == "true"
    assert properties["allowed_urls"] == "file:///home/model-server/model-store/.*"
    # the same size limit as the native server, which the compose TF Serving's gRPC flag matches
    limit = TorchServeConfig.max_request_bytes
    assert properties["max_request_size"] == properties["max_response_size"] == str(limit)
    assert f"--grpc_channel_arguments=grpc.max_receive_message_length={limit}" in services["tf-serving"]["command"]
    script = words(service["command"])
    assert service["entrypoint"] == ["/bin/bash", "-c"]  # not the image's, which adds --disable-token-auth
    assert "/home/model-server/docker.properties" in script and "disable-token-auth" not in script
    assert service["environment"]["TS_WORKERS"] == str(deploy_defaults.ts_workers)
    assert service["environment"]["TS_BATCH_SIZE"] == str(deploy_defaults.ts_batch_size)
    assert service["environment"]["TS_MAX_BATCH_DELAY_MS"] == str(deploy_defaults.ts_max_batch_delay_ms)
    assert '\\"batchSize\\": $${TS_BATCH_SIZE}' in script or '\\"batchSize\\": ${TS_BATCH_SIZE}' in script


def test_both_servers_have_healthchecks_on_their_status_endpoints(services):
    for name in ("tf-serving", "tf-serving-gpu"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "/v1/models/" in test and "AVAILABLE" in test
    for name in ("torchserve", "torchserve-gpu"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert "/ping" in test and "Authorization" in test and "key_file.json" in test


def test_gpu_profile_reserves_an_nvidia_gpu_and_keeps_the_cpu_services_names(services):
    for name, alias in (("tf-serving-gpu", "tf-serving"), ("torchserve-gpu", "torchserve")):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert alias in services[name]["networks"]["default"]["aliases"]


def test_locust_master_and_scalable_workers_run_the_loadtest_image(services):
    master, workers = services["locust-master"], services["locust-workers"]
    for service in (master, workers):
        assert Path(service["build"]["context"]) == REPO_ROOT
        assert service["build"]["dockerfile"] == "loadtests/Dockerfile"
        assert mounts(service)["/results"] == (str(REPO_ROOT / "artifacts/results"), True)
        assert {"LOADTEST_TARGET", "LOADTEST_PAYLOADS", "LOADTEST_TOKEN"} <= set(service["environment"])
    master_command, worker_command = words(master["command"]), words(workers["command"])
    assert "--master" in master_command and "--headless" in master_command and "--host" in master_command
    assert "--worker" in worker_command and "--master-host locust-master" in worker_command
    # --scale locust-workers=N needs workers without a fixed name or published port
    assert "container_name" not in workers and "ports" not in workers


def test_loadtest_image_installs_only_the_locked_versions_it_needs():
    wanted = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO_ROOT / "loadtests/requirements.txt").read_text(),
                             re.MULTILINE))
    lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO_ROOT / "requirements.lock").read_text(),
                           re.MULTILINE))
    assert set(wanted) == {"locust", "grpcio", "numpy", "protobuf"}
    assert {name: lock[name] for name in wanted} == wanted


# -- deploy's choice of compose ----------------------------------------------------------------
@pytest.fixture
def cfg(tmp_path, monkeypatch) -> DeployConfig:
    for name in ("TS_SERVER", "TS_TOKEN_AUTH", "TF_SERVER", "TF_ENABLE_BATCHING", "TF_BATCHING_FILE", "BIND_ADDRESS",
                 "TS_INFERENCE_PORT"):
        monkeypatch.delenv(name, raising=False)
    return DeployConfig(model="tiny", artifacts=tmp_path)


def test_without_a_docker_cli_neither_an_engine_nor_compose_v2_answers(monkeypatch):
    monkeypatch.setattr(deploy.shutil, "which", lambda name: None)
    assert deploy.docker_engine_answers() is False and deploy.compose_v2_installed() is False
    with pytest.raises(UsageError) as refused:
        deploy.compose_command()
    assert str(refused.value) == deploy.COMPOSE_NEEDED


@pytest.mark.parametrize("engine, compose_v2, expected", [(True, True, ["docker", "compose"]), (False, True, None),
                                                          (True, False, None)])
def test_deploy_runs_compose_v2_only_with_an_engine(monkeypatch, engine, compose_v2, expected):
    """Debian's docker-compose (v1) has no `up --wait`: it validates the file, it does not deploy."""
    monkeypatch.setattr(deploy, "docker_engine_answers", lambda: engine)
    monkeypatch.setattr(deploy, "compose_v2_installed", lambda: compose_v2)
    if expected is None:
        with pytest.raises(UsageError, match="Compose v2"):
            deploy.compose_command()
    else:
        assert deploy.compose_command() == expected


@pytest.mark.parametrize("engine, token_auth, forced, expected", [
    (False, True, None, "native"),
    (True, True, None, "compose"),
    (True, False, None, "native"),  # the compose service always has token auth on
    (True, True, "native", "native"),
    (True, True, "compose", "compose"),
])
def test_torchserve_runs_in_compose_only_when_an_engine_answers(cfg, monkeypatch, engine, token_auth, forced,
                                                                 expected):
    monkeypatch.setattr(deploy, "compose_available", lambda: engine)
    if forced:
        cfg.ts_server = forced
    cfg.ts_token_auth = token_auth
    assert deploy.choose_torch_server(cfg) == expected


@pytest.mark.parametrize("engine, batching, forced, expected", [
    (False, {}, None, "dropin"),
    (True, {}, None, "compose"),
    (True, {"tf_enable_batching": False}, None, "dropin"),  # the compose service always batches
    (True, {"tf_batching_file": Path("other.config")}, None, "dropin"),  # ... with serving/tf/batching.config
    (True, {}, "dropin", "dropin"),
    (True, {}, "compose", "compose"),
])
def test_tf_serving_runs_in_compose_only_when_an_engine_answers_and_the_batching_is_its_own(
        cfg, monkeypatch, engine, batching, forced, expected):
    monkeypatch.setattr(deploy, "compose_available", lambda: engine)
    monkeypatch.setattr(deploy.shutil, "which", lambda name: None)  # no tensorflow_model_server either
    cfg = dataclasses.replace(cfg, **batching, tf_server=forced or "auto")
    assert deploy.choose_tf_server(cfg) == expected


@pytest.mark.parametrize("knob", [{"tf_enable_batching": False}, {"tf_batching_file": Path("other.config")}])
def test_forced_tf_compose_with_batching_the_service_lacks_is_a_usage_error(cfg, monkeypatch, knob):
    monkeypatch.setattr(deploy, "compose_available", lambda: True)
    with pytest.raises(UsageError, match="TF_ENABLE_BATCHING/TF_BATCHING_FILE"):
        deploy.choose_tf_server(dataclasses.replace(cfg, **knob, tf_server="compose"))


@pytest.mark.parametrize("variable, target", [("TF_SERVER", "tf"), ("TS_SERVER", "torch")])
def test_forced_compose_without_an_engine_exits_2_with_one_line(tmp_path, variable, target):
    """Through the command line users run, whatever this host has: PATH without a docker CLI."""
    (tmp_path / "bin").mkdir()
    done = run_module("serving", "deploy", "--target", target,
                      env={variable: "compose", "PATH": str(tmp_path / "bin"), "ARTIFACTS": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: {deploy.COMPOSE_NEEDED}\n" and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / f"{target}.json").exists()


@pytest.mark.parametrize("forced, token_auth", [("kubernetes", True), ("compose", False)])
def test_impossible_torchserve_choices_are_usage_errors(tmp_path, monkeypatch, forced, token_auth):
    monkeypatch.setenv("TS_SERVER", forced)
    monkeypatch.setenv("TS_TOKEN_AUTH", str(token_auth).lower())
    with pytest.raises(UsageError, match="TS_SERVER"):  # refused when read, or when chosen
        deploy.choose_torch_server(DeployConfig(model="tiny", artifacts=tmp_path))


def test_compose_gets_the_deploys_knobs_and_identity_names_the_pinned_image(cfg):
    assert deploy.compose_identity("torchserve") == \
        "official TorchServe image pytorch/torchserve:0.12.0-cpu (docker compose service torchserve)"
    assert deploy.compose_identity("tf-serving-gpu") == \
        "official TF Serving image tensorflow/serving:2.20.0-gpu (docker compose service tf-serving-gpu)"
    cfg.ts_inference_port = 18080
    env = deploy._compose_env(cfg)
    assert env["ARTIFACTS_DIR"] == str(cfg.paths.root) and env["MODEL"] == "tiny"
    assert env["BIND_ADDRESS"] == "127.0.0.1" and env["TS_INFERENCE_PORT"] == "18080"
    for knob in ("MODEL", "ARTIFACTS_DIR", "BIND_ADDRESS", "TF_GRPC_PORT", "TF_REST_PORT", "TS_INFERENCE_PORT",
                 "TS_MANAGEMENT_PORT", "TS_METRICS_PORT", "TS_GRPC_PORT", "TS_WORKERS", "TS_BATCH_SIZE",
                 "TS_MAX_BATCH_DELAY_MS"):
        assert knob in env and knob in KNOBS, f"{knob}: deploy passes it, docker-compose.yml must read it"
    assert deploy.compose_image("torchserve") == "pytorch/torchserve:0.12.0-cpu"
    assert deploy.compose_image("tf-serving") == "tensorflow/serving:2.20.0"


def test_the_gpu_profile_deploys_the_gpu_services_and_their_pinned_images(cfg, monkeypatch):
    assert deploy.compose_service(cfg, "torchserve") == "torchserve"
    gpu = dataclasses.replace(cfg, compose_profile="gpu")
    assert [deploy.compose_service(gpu, s) for s in ("tf-serving", "torchserve")] == ["tf-serving-gpu",
                                                                                      "torchserve-gpu"]
    assert deploy.compose_image(deploy.compose_service(gpu, "tf-serving")).endswith("-gpu")
    assert deploy.compose_image(deploy.compose_service(gpu, "torchserve")).endswith("-gpu")
    monkeypatch.setenv("COMPOSE_PROFILE", "tpu")
    with pytest.raises(UsageError, match="COMPOSE_PROFILE"):
        DeployConfig(model="tiny")
