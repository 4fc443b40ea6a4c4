"""`make deploy-tf` / `make deploy-torch` / `make undeploy`: servers in the background, with PID files.

Everything a deploy starts is recorded in artifacts/run/<server>.json
(serving/record.py: what runs, its identity, ports, the knobs in effect,
process group, log file) so undeploy stops exactly that, and results can name
the server that produced them.

The TF side is chosen in this order, and the choice is printed: the compose
service with the official image when a Docker engine and Compose v2 answer and
the batching knobs are the ones the service mounts; the official
tensorflow_model_server binary when it is on PATH; the project's drop-in.
TF_SERVER (auto|compose|binary|dropin) forces one.
TorchServe runs as the compose service with the official image when a Docker
engine and Compose v2 answer (token authorization on) and natively otherwise;
TS_SERVER (auto|compose|native) forces one. A forced compose that cannot run is
a usage error. Compose services come from the `cpu` profile of
docker-compose.yml, or the `gpu` one with COMPOSE_PROFILE=gpu (make compose-gpu).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import yaml

from common.errors import UsageError
from common.paths import REPO_ROOT
from common.procs import group_alive, log_tail, port_open, start_group, stop_group, wait_http_ok
from common.reference import Reference, load_reference
from serving.config import DEFAULT_TF_BATCHING_FILE, DeployConfig
from serving.record import (
    DeployRecord,
    TorchKnobs,
    load_record,
    read_record,
    remove_record,
    tf_knobs_in_effect,
    write_record,
)
from serving.tf.dropin import SERVER_IDENTITY as DROPIN_IDENTITY
from serving.torch.server import LOG_CONFIG, ServerError, TorchServe, TorchServeConfig, read_keys, token_expiry


def _check_ports_free(ports: dict[str, int]) -> None:
    busy = [f"{name} {port}" for name, port in ports.items() if port and port_open(port)]
    if busy:
        raise ServerError(f"port(s) already in use by another process: {', '.join(busy)}; "
                          "stop it or choose other ports (see README: deployment knobs)")


# -- docker compose ---------------------------------------------------------------------------
def _compose_env(cfg: DeployConfig) -> dict[str, str]:
    """The deploy's knobs as docker-compose.yml's variables, so both ways of running agree."""
    knobs = {"MODEL": cfg.model, "ARTIFACTS_DIR": str(cfg.paths.root), "BIND_ADDRESS": cfg.host,
             "TF_GRPC_PORT": cfg.tf_grpc_port, "TF_REST_PORT": cfg.tf_rest_port,
             "TS_INFERENCE_PORT": cfg.ts_inference_port, "TS_MANAGEMENT_PORT": cfg.ts_management_port,
             "TS_METRICS_PORT": cfg.ts_metrics_port, "TS_GRPC_PORT": cfg.ts_grpc_port, "TS_WORKERS": cfg.ts_workers,
             "TS_BATCH_SIZE": cfg.ts_batch_size, "TS_MAX_BATCH_DELAY_MS": cfg.ts_max_batch_delay_ms}
    return {**_environ(), **{name: str(value) for name, value in knobs.items()}}


COMPOSE_V2 = ("docker", "compose")
COMPOSE_NEEDED = "TF_SERVER/TS_SERVER=compose needs a Docker engine and Compose v2 (--wait)"
COMPOSE_SERVERS = {"tf-serving": "TF Serving", "torchserve": "TorchServe"}
TORCHSERVE_KEY_FILE = "/home/model-server/key_file.json"  # in the container's working directory


def _docker_answers(*args: str) -> bool:
    """`docker <args>` exits 0 within 10 s (False without a docker CLI)."""
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", *args], capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def docker_engine_answers() -> bool:
    return _docker_answers("info")


def compose_v2_installed() -> bool:
    """`docker compose` (v2) is installed; Debian's docker-compose (v1) has no `up --wait`, so it does not count."""
    return _docker_answers("compose", "version")


def compose_available() -> bool:
    """deploy can run compose services: Compose v2 and a Docker engine that answers."""
    return compose_v2_installed() and docker_engine_answers()


def compose_command() -> list[str]:
    """The Compose v2 command deploy runs; a UsageError (one line, exit 2) when it cannot run here."""
    if not compose_available():
        raise UsageError(COMPOSE_NEEDED)
    return list(COMPOSE_V2)


def _compose(cfg: DeployConfig, *args: str, profile: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Compose v2 on docker-compose.yml's `profile` (default: the deploy's), with the deploy's knobs."""
    return subprocess.run([*compose_command(), "--profile", profile or cfg.compose_profile, *args], cwd=REPO_ROOT,
                          env=_compose_env(cfg), **kwargs)


def compose_service(cfg: DeployConfig, server: str) -> str:
    """The compose service for `server` (tf-serving, torchserve) in the chosen profile (gpu adds -gpu)."""
    return server if cfg.compose_profile == "cpu" else f"{server}-gpu"


def compose_image(service: str) -> str:
    """The pinned image docker-compose.yml runs for `service` (server identity is data)."""
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return compose["services"][service]["image"]


def compose_identity(service: str) -> str:
    """What a deploy record names a compose service by: its server and pinned image."""
    server = COMPOSE_SERVERS[service.removesuffix("-gpu")]
    return f"official {server} image {compose_image(service)} (docker compose service {service})"


def _start_compose(cfg: DeployConfig, service: str) -> dict:
    """`up --wait` one service until its healthcheck passes; the record's fields for it.

    On failure the service's last log lines go into the ServerError and the service is stopped.
    """
    wait = str(int(cfg.ready_timeout_s))
    done = _compose(cfg, "up", "-d", "--wait", "--wait-timeout", wait, service, capture_output=True, text=True)
    if done.returncode != 0:
        _fail_compose(cfg, service, f"did not become healthy: {done.stderr.strip()}")
    return {"pgid": None, "service": service, "profile": cfg.compose_profile, "log": f"docker compose logs {service}"}


def _fail_compose(cfg: DeployConfig, service: str, why: str) -> NoReturn:
    logs = _compose(cfg, "logs", "--tail", "40", service, capture_output=True, text=True).stdout
    _compose(cfg, "stop", service)
    raise ServerError(f"{service} (docker compose) {why}\n{logs}")


def _choose(forced: str, compose_refused: str | None, otherwise: str) -> str:
    """The server mode: `forced` unless auto; with auto, compose when it can run, else `otherwise`.

    A forced compose that cannot run (its refusal, or no engine / Compose v2) is a UsageError.
    """
    if forced == "compose":
        if compose_refused:
            raise UsageError(compose_refused)
        compose_command()  # raises the UsageError when no engine or no Compose v2 answers
    if forced != "auto":
        return forced
    return "compose" if compose_refused is None and compose_available() else otherwise


def _tf_compose_refusal(cfg: DeployConfig) -> str | None:
    """Why the tf-serving compose service cannot run these knobs: it mounts the default batching file, batching on."""
    if cfg.tf_enable_batching and cfg.tf_batching_file.resolve() == DEFAULT_TF_BATCHING_FILE.resolve():
        return None
    return ("the tf-serving compose service always runs with batching on and serving/tf/batching.config; "
            "unset TF_ENABLE_BATCHING/TF_BATCHING_FILE or use TF_SERVER=binary or dropin")


def choose_tf_server(cfg: DeployConfig) -> str:
    """compose, binary or dropin, in the documented order (TF_SERVER forces one)."""
    fallback = "binary" if shutil.which("tensorflow_model_server") else "dropin"
    return _choose(cfg.tf_server, _tf_compose_refusal(cfg), fallback)


# TF Serving's own default for --rest_api_num_threads: REST threads mostly wait (on the batching queue), so
# there are more of them than CPUs; one per CPU would let only that many requests into a batch at once.
REST_THREADS_PER_CPU = 4
NUM_BATCH_THREADS = re.compile(r"^\s*num_batch_threads\s*\{[^}]*\}[ \t]*\n?", re.MULTILINE)
SIZED_NOTE = "# set by make deploy: one batch thread per server CPU"


def tf_threads(cfg: DeployConfig) -> dict[str, int]:
    """Every thread pool of the TF server, by its flag or batching field, sized to the servers' CPUs.

    TensorFlow and the REST pool would size themselves from the affinity mask too; passing the counts makes
    them explicit and recorded. num_batch_threads comes from a file that does not know the CPU set.
    """
    cpus = cfg.server_thread_count
    threads = {"tensorflow_intra_op_parallelism": cpus, "tensorflow_inter_op_parallelism": cpus,
               "rest_api_num_threads": REST_THREADS_PER_CPU * cpus}
    if cfg.tf_enable_batching:
        threads["num_batch_threads"] = cpus
    return threads


def sized_batching_file(cfg: DeployConfig) -> Path:
    """The batching file the TF server reads: TF_BATCHING_FILE with num_batch_threads set to the CPU count.

    Written to the run directory; a file that already is that one (the sweep restoring a deployment) is
    rewritten from its own text.
    """
    text = NUM_BATCH_THREADS.sub("", cfg.tf_batching_file.read_text(encoding="utf-8")).replace(f"{SIZED_NOTE}\n", "")
    sized = cfg.run_dir / "tf-batching.config"
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    threads = tf_threads(cfg)["num_batch_threads"]
    sized.write_text(f"{text.rstrip()}\n{SIZED_NOTE}\nnum_batch_threads {{ value: {threads} }}\n", encoding="utf-8")
    return sized


def _tf_flags(cfg: DeployConfig, batching_file: Path | None) -> list[str]:
    """tensorflow_model_server's flags (the drop-in takes the same), thread pools sized to the server CPUs."""
    base = cfg.paths.tf_model_base(cfg.model)
    flags = [f"--port={cfg.tf_grpc_port}", f"--rest_api_port={cfg.tf_rest_port}", f"--model_name={cfg.model}",
             f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
             f"--monitoring_config_file={REPO_ROOT / 'serving/tf/monitoring.config'}"]
    flags += [f"--{name}={value}" for name, value in tf_threads(cfg).items() if name != "num_batch_threads"]
    # TF Serving takes gRPC messages up to 2 GiB; both servers get TorchServe's request limit (max_request_size),
    # so a message one server refuses for its size the other refuses too.
    flags.append(f"--grpc_channel_arguments=grpc.max_receive_message_length={TorchServeConfig.max_request_bytes}")
    if cfg.tf_enable_batching:
        flags += ["--enable_batching=true", f"--batching_parameters_file={batching_file}"]
    return flags


def _binary_identity() -> str:
    done = subprocess.run(["tensorflow_model_server", "--version"], capture_output=True, text=True, timeout=30)
    return f"official tensorflow_model_server ({(done.stdout or done.stderr).strip().splitlines()[0]})"


def _start_tf_process(cfg: DeployConfig, mode: str, batching_file: Path | None) -> tuple[str, dict]:
    """Start the official binary or the drop-in in its own process group: its identity and record fields."""
    flags = _tf_flags(cfg, batching_file)
    if mode == "binary":
        identity, command = _binary_identity(), ["tensorflow_model_server", *flags]
    else:
        identity = DROPIN_IDENTITY
        command = [sys.executable, "-m", "serving.tf.dropin", *flags, f"--bind_address={cfg.host}"]
    print(f"deploy-tf: using {identity}", flush=True)
    log_file = cfg.run_dir / "tf.log"
    process = start_group(command, log_file, cwd=REPO_ROOT, env=_environ(), cpus=cfg.server_cpus)
    return identity, {"pgid": process.pid, "command": command, "log": str(log_file)}


def _wait_tf_process_ready(cfg: DeployConfig, record: DeployRecord) -> None:
    """Poll the model status until AVAILABLE; on failure stop it and raise with its log tail."""
    status_url = f"http://127.0.0.1:{cfg.tf_rest_port}/v1/models/{cfg.model}"
    if not wait_http_ok(status_url, cfg.ready_timeout_s, lambda: group_alive(record.pgid)):
        undeploy_one(cfg, "tf")
        raise ServerError(f"TF Serving ({record.mode}) did not become ready:\n{log_tail(Path(record.log))}")


def deploy_tf(cfg: DeployConfig) -> DeployRecord:
    """Start TF Serving (or say it already runs) and wait until the model is AVAILABLE."""
    running = read_record(cfg.run_dir, "tf")
    if running:
        print(f"deploy-tf: already running ({running.identity}, pid {running.pgid}); not starting another")
        return running
    mode = choose_tf_server(cfg)
    base = cfg.paths.tf_model_base(cfg.model)
    if not base.is_dir():
        raise ServerError(f"no SavedModel at {base}; run 'make export' first")
    ports = cfg.ports("tf")
    _check_ports_free(ports)
    reference = load_reference(cfg.paths, cfg.model)  # the first answer must be a correct one
    if mode == "compose":  # the service mounts its batching file and sizes its own pools to the container
        service = compose_service(cfg, "tf-serving")
        identity = compose_identity(service)
        print(f"deploy-tf: using {identity}", flush=True)
        knobs = tf_knobs_in_effect(cfg.tf_enable_batching, cfg.tf_batching_file, mode)
        begun = time.monotonic()
        started = _start_compose(cfg, service)  # healthy: the model is AVAILABLE
    else:
        batching_file = sized_batching_file(cfg) if cfg.tf_enable_batching else None
        knobs = replace(tf_knobs_in_effect(cfg.tf_enable_batching, batching_file, mode), threads=tf_threads(cfg))
        print(f"deploy-tf: threads {_listed(knobs.threads)} (for {cfg.server_thread_count} CPU(s))", flush=True)
        begun = time.monotonic()
        identity, started = _start_tf_process(cfg, mode, batching_file)
    record = write_record(cfg.run_dir, DeployRecord(
        "tf", mode, identity, cfg.model, ports, knobs, cpus=cfg.server_cpus if mode != "compose" else None, **started))
    if mode != "compose":
        _wait_tf_process_ready(cfg, record)
    record = _record_cold_start(cfg, record, reference, "tf-rest", begun)
    print(f"deploy-tf: ready in {record.cold_start_s:.1f} s (start to first correct REST answer): "
          f"REST 127.0.0.1:{cfg.tf_rest_port}, gRPC 127.0.0.1:{cfg.tf_grpc_port}", flush=True)
    return record


def _listed(threads: dict[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in threads.items())


def first_correct_answer(cfg: DeployConfig, reference: Reference, target: str, begun: float,
                         token: str | None = None) -> float:
    """Seconds from `begun` (monotonic) until `target` answers one test image with the reference's class.

    A server that answers, but wrongly, is a ServerError at once; one that does not answer yet is asked again
    until READY_TIMEOUT_S has passed since `begun`.
    """
    from serving.clients import NotFound, Unavailable, make_client

    images, expected = reference.images[:1], int(reference.expected_classes[0])
    while True:
        try:
            with make_client(target, port=cfg.port_of(target), model=cfg.model, token=token, timeout=10) as client:
                predicted = int(client.predict(images).argmax(1)[0])
        except (Unavailable, NotFound) as exc:
            if time.monotonic() - begun > cfg.ready_timeout_s:
                raise ServerError(f"{target} gave no answer within {cfg.ready_timeout_s:g} s: {exc}") from None
            time.sleep(0.05)
            continue
        if predicted != expected:
            raise ServerError(f"{target}: the first answer is class {predicted}, the reference's is {expected}")
        return time.monotonic() - begun


def _record_cold_start(cfg: DeployConfig, record: DeployRecord, reference: Reference, target: str, begun: float,
                       token: str | None = None) -> DeployRecord:
    """The record with cold_start_s, written; on no or a wrong answer the server is stopped and the error raised."""
    try:
        seconds = first_correct_answer(cfg, reference, target, begun, token)
    except Exception:
        undeploy_one(cfg, record.server)
        raise
    return write_record(cfg.run_dir, replace(record, cold_start_s=round(seconds, 3)))


def _environ() -> dict[str, str]:
    return dict(os.environ)  # TF_CPP_MIN_LOG_LEVEL comes from common/__init__.py


# -- TorchServe -------------------------------------------------------------------------------
def torchserve_config(cfg: DeployConfig) -> TorchServeConfig:
    return TorchServeConfig(
        model_store=cfg.paths.torch_model_store, models=[cfg.model], run_dir=cfg.run_dir / "torchserve",
        host=cfg.host, inference_port=cfg.ts_inference_port, management_port=cfg.ts_management_port,
        metrics_port=cfg.ts_metrics_port, grpc_inference_port=cfg.ts_grpc_port,
        grpc_management_port=cfg.ts_grpc_management_port, workers=cfg.ts_workers, batch_size=cfg.ts_batch_size,
        max_batch_delay_ms=cfg.ts_max_batch_delay_ms, token_auth=cfg.ts_token_auth,
        token_expiration_min=cfg.ts_token_expiration_min, cpus=cfg.server_cpus, threads=cfg.server_thread_count,
        log_config=LOG_CONFIG if cfg.ts_logging == "project" else None)


def choose_torch_server(cfg: DeployConfig) -> str:
    """compose when a Docker engine and Compose v2 answer, native otherwise; TS_SERVER=compose|native forces one.

    The compose service always has token authorization on, so TS_TOKEN_AUTH=false runs natively.
    """
    refusal = None if cfg.ts_token_auth else ("the torchserve compose service always has token authorization on; "
                                              "use TS_SERVER=native with TS_TOKEN_AUTH=false")
    return _choose(cfg.ts_server, refusal, "native")


def _copy_compose_key_file(cfg: DeployConfig, service: str, ts_cfg: TorchServeConfig) -> None:
    """Copy the running service's key file to where the native server writes it, for the clients.

    The key file stays inside the container (no writable host mount for a non-root user to fight over).
    """
    done = _compose(cfg, "exec", "-T", service, "cat", TORCHSERVE_KEY_FILE, capture_output=True, text=True)
    if done.returncode != 0:
        _fail_compose(cfg, service, f"has no readable {TORCHSERVE_KEY_FILE}: {done.stderr.strip()}")
    ts_cfg.run_dir.mkdir(parents=True, exist_ok=True)
    ts_cfg.run_dir.chmod(0o700)  # private before the tokens are written, as serving/torch/server.py does
    ts_cfg.key_file.write_text(done.stdout, encoding="utf-8")
    ts_cfg.key_file.chmod(0o600)


def deploy_torch(cfg: DeployConfig) -> DeployRecord:
    """Start TorchServe (compose image or native) and wait until the model's workers are READY."""
    running = read_record(cfg.run_dir, "torch")
    if running:
        print(f"deploy-torch: already running ({running.identity}, pid {running.pgid}); not starting another")
        return running
    mode = choose_torch_server(cfg)
    ts_cfg = torchserve_config(cfg)
    ports = cfg.ports("torch")  # the ports torchserve_config() gave ts_cfg
    _check_ports_free(ports)
    from importlib import metadata

    service = compose_service(cfg, "torchserve")
    if mode == "compose":
        identity = compose_identity(service)
    else:
        identity = f"TorchServe {metadata.version('torchserve')} (pip package, Java frontend)"
    print(f"deploy-torch: using {identity}; token authorization {'on' if cfg.ts_token_auth else 'OFF'}", flush=True)
    reference = load_reference(cfg.paths, cfg.model)  # the first answer must be a correct one
    threads = ts_cfg.thread_settings() if mode != "compose" else None  # the image sizes its own to the container
    if threads:
        print(f"deploy-torch: threads {_listed(threads)} (for {cfg.server_thread_count} CPU(s))", flush=True)
    begun = time.monotonic()
    if mode == "compose":
        started = _start_compose(cfg, service)  # healthy: /ping answers with the token
        _copy_compose_key_file(cfg, service, ts_cfg)
    else:
        server = TorchServe(ts_cfg).start(timeout=cfg.ready_timeout_s)
        started = {"pgid": server.process.pid, "log": str(ts_cfg.log_file)}
    knobs = TorchKnobs(cfg.ts_workers, cfg.ts_batch_size, cfg.ts_max_batch_delay_ms, cfg.ts_token_auth, threads,
                       logging=cfg.ts_logging if mode != "compose" else None)
    record = write_record(cfg.run_dir, DeployRecord(
        "torch", mode, identity, cfg.model, ports, knobs, cpus=cfg.server_cpus if mode != "compose" else None,
        key_file=str(ts_cfg.key_file) if cfg.ts_token_auth else None, **started))
    token = read_keys(ts_cfg.key_file)["inference"] if cfg.ts_token_auth else None
    record = _record_cold_start(cfg, record, reference, "torch-rest", begun, token)
    print(f"deploy-torch: ready in {record.cold_start_s:.1f} s (start to first correct REST answer): "
          f"REST 127.0.0.1:{ts_cfg.inference_port}, gRPC 127.0.0.1:{ts_cfg.grpc_inference_port}", flush=True)
    if cfg.ts_token_auth:
        expiry = token_expiry(ts_cfg.key_file).strftime("%Y-%m-%d %H:%M UTC")
        print(f"deploy-torch: its tokens expire at {expiry}; every request is refused after that until the next "
              "deploy (TS_TOKEN_EXPIRATION_MIN sets the minutes)", flush=True)
    return record


# -- undeploy ---------------------------------------------------------------------------------
def undeploy_one(cfg: DeployConfig, server: str) -> bool:
    """Stop what deploy recorded for `server`; True if something was stopped."""
    record = load_record(cfg.run_dir, server)
    if record is None:
        return False
    if record.mode == "compose":
        _compose(cfg, "stop", record.service, profile=record.profile or "cpu")
        if record.key_file:  # the copied token dies with the container; don't leave it lying around
            Path(record.key_file).unlink(missing_ok=True)
    elif record.pgid:
        stop_group(record.pgid)
    remove_record(cfg.run_dir, server)
    still = [p for p in record.ports.values() if p and port_open(p)]
    if still:
        raise ServerError(f"{server}: port(s) {still} still listening after stop")
    print(f"undeploy: stopped {record.identity}", flush=True)
    return True


def undeploy(cfg: DeployConfig) -> None:
    stopped = [server for server in ("tf", "torch") if undeploy_one(cfg, server)]
    if not stopped:
        print("undeploy: nothing was running")

