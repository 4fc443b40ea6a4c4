"""Run the real TorchServe (pip package, Java frontend) natively with the project's config.

Safe defaults: every API on 127.0.0.1, token authorization on, and models
registered only from the local model store (allowed_urls), never from a remote
URL. The model (registration) API is on with token authorization, for version
rollouts (serving/torch/management.py), and off without it.
TorchServe upstream is in limited maintenance (no security patches): keep it
on loopback or behind a gateway you patch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from common.procs import free_port, log_tail, start_group, stop_group, wait_http_ok
from serving.torch.management import Management, ManagementError

# TorchServe's own log files, rolled over without gzip on the serving CPU and each line written once (why: the file)
LOG_CONFIG = Path(__file__).resolve().with_name("log4j2.xml")


class ServerError(RuntimeError):
    """A server did not start or answer; the message carries its log tail."""


@dataclass
class TorchServeConfig:
    model_store: Path
    models: list[str]  # model names; each is <model_store>/<name>.mar
    run_dir: Path  # config, key file, logs, pid files
    host: str = "127.0.0.1"
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    workers: int = 1
    batch_size: int = 1
    max_batch_delay_ms: int = 5
    response_timeout_s: int = 120
    token_auth: bool = True
    token_expiration_min: int = 24 * 60  # TorchServe's own default is 60: every request refused after an hour
    cpus: list[int] | None = None  # pinned at start, so the worker's thread pools are sized for these CPUs
    threads: int | None = None  # every thread pool's size (the CPUs it runs on); None: TorchServe's own defaults
    max_request_bytes: int = 64 * 1024 * 1024
    log_config: Path | None = LOG_CONFIG  # None: TorchServe's built-in log4j2 configuration
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, **kwargs) -> TorchServeConfig:
        """A config whose five ports are free right now (for tests and parallel runs)."""
        ports = {name: free_port() for name in ("inference_port", "management_port", "metrics_port",
                                                 "grpc_inference_port", "grpc_management_port")}
        return cls(**ports, **kwargs)

    def properties(self) -> str:
        """config.properties text for TorchServe 0.12."""
        store = self.model_store.resolve()
        models = {name: {mar_version(store / f"{name}.mar"): {"defaultVersion": True, "marName": f"{name}.mar",
                                 "minWorkers": self.workers, "maxWorkers": self.workers,
                                 "batchSize": self.batch_size, "maxBatchDelay": self.max_batch_delay_ms,
                                 "responseTimeout": self.response_timeout_s}} for name in self.models}
        settings = {
            "inference_address": f"http://{self.host}:{self.inference_port}",
            "management_address": f"http://127.0.0.1:{self.management_port}",
            "metrics_address": f"http://127.0.0.1:{self.metrics_port}",
            "grpc_inference_address": self.host,
            "grpc_inference_port": str(self.grpc_inference_port),
            "grpc_management_address": "127.0.0.1",
            "grpc_management_port": str(self.grpc_management_port),
            "enable_grpc_ssl": "false",
            "model_store": str(store),
            "load_models": ",".join(f"{name}.mar" for name in self.models),
            "models": json.dumps(models),
            "allowed_urls": f"file://{re.escape(str(store))}/.*",
            # registering and unregistering models, behind the management token; allowed_urls keeps it to the store
            "enable_model_api": "true" if self.token_auth else "false",
            "disable_token_authorization": "false" if self.token_auth else "true",
            **({"token_expiration_min": str(self.token_expiration_min)} if self.token_auth else {}),
            "default_workers_per_model": str(self.workers),
            "max_request_size": str(self.max_request_bytes),
            "max_response_size": str(self.max_request_bytes),
            "install_py_dep_per_model": "false",
            "enable_envvars_config": "false",
            "metrics_mode": "prometheus",
            **self._thread_properties(),
            # TorchServe's default metrics plus the handler's ProcessedBatches (batch sizes; TorchServe has none)
            "metrics_config": str(Path(__file__).resolve().with_name("metrics.yaml")),
            **self.extra,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _thread_properties(self) -> dict[str, str]:
        """config.properties keys that size the frontend's pools: netty's default is two event loops per CPU.

        vmargs holds ActiveProcessorCount alone (TorchServe 0.12 passes no JVM options of its own, so its default
        heap stays): the JVM sizes its GC and compiler threads, and picks its collector, from that count.
        """
        if not self.threads:
            return {}
        return {"number_of_netty_threads": str(self.threads), "netty_client_threads": str(self.threads),
                "vmargs": f"-XX:ActiveProcessorCount={self.threads}"}

    def thread_environment(self) -> dict[str, str]:
        """The backend worker's thread counts; the worker inherits the frontend's environment.

        OpenMP and MKL size torch's intra-op pool; the handler reads TS_TORCH_THREADS (serving/torch/handler.py).
        """
        if not self.threads:
            return {}
        return {name: str(self.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TS_TORCH_THREADS")}

    def thread_settings(self) -> dict[str, int] | None:
        """What the deploy record names: every thread setting, by the name TorchServe, the JVM or the worker reads."""
        if not self.threads:
            return None
        settings = {key: int(value) for key, value in self._thread_properties().items() if key != "vmargs"}
        return {**settings, "ActiveProcessorCount": self.threads,
                **{name: int(value) for name, value in self.thread_environment().items()}}

    @property
    def key_file(self) -> Path:
        return self.run_dir / "key_file.json"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "torchserve.log"


def mar_version(mar: Path) -> str:
    """The model version torch-model-archiver wrote into the archive's manifest."""
    try:
        with zipfile.ZipFile(mar) as archive:
            return str(json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"])
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return "1.0"  # TorchServe's own default when a version cannot be read


def mar_with_version(mar: Path, version: str, out: Path) -> Path:
    """A copy of the archive `mar` at `out` whose manifest says `version`: the same model as another version.

    TorchServe keys a model's versions by the manifest's modelVersion, so a rollout needs one archive per version.
    """
    with zipfile.ZipFile(mar) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "MAR-INF/MANIFEST.json":
                manifest = json.loads(data)
                manifest["model"]["modelVersion"] = version
                data = json.dumps(manifest, indent=4).encode()
            copy.writestr(item, data)
    return out


def read_keys(key_file: Path) -> dict[str, str]:
    """The tokens TorchServe wrote: {'inference': ..., 'management': ..., 'API': ...}."""
    data = json.loads(key_file.read_text(encoding="utf-8"))
    return {api: entry["key"] for api, entry in data.items()}


def token_expiry(key_file: Path, api: str = "inference") -> datetime:
    """When TorchServe stops accepting the `api` token in its key file (its 'expiration time', UTC)."""
    data = json.loads(key_file.read_text(encoding="utf-8"))
    stamp = data[api]["expiration time"]  # ISO 8601 with nanoseconds and a Z: datetime takes microseconds
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]}+00:00")


def _torchserve_binary() -> str:
    beside = Path(sys.executable).with_name("torchserve")
    found = str(beside) if beside.exists() else shutil.which("torchserve")
    if not found:
        raise ServerError("torchserve is not installed; run 'make setup'")
    if not shutil.which("java"):
        raise ServerError("TorchServe needs Java 17 on PATH (java not found)")
    return found


class TorchServe:
    """One TorchServe instance: start() writes the config and waits until every model answers."""

    def __init__(self, config: TorchServeConfig) -> None:
        self.config = config
        self.process = None

    def start(self, timeout: float = 180.0) -> TorchServe:
        cfg = self.config
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        # TorchServe creates key_file.json with the default umask before narrowing it to 0600: a private
        # directory leaves no moment in which another local user can read the tokens
        cfg.run_dir.chmod(0o700)
        for name in cfg.models:
            if not (cfg.model_store / f"{name}.mar").is_file():
                raise ServerError(f"no archive {cfg.model_store / name}.mar; run 'make export' first")
        config_file = cfg.run_dir / "config.properties"
        config_file.write_text(cfg.properties(), encoding="utf-8")
        tmp = cfg.run_dir / "tmp"  # TorchServe keeps its pid file in $TMPDIR: one per instance
        tmp.mkdir(exist_ok=True)
        cfg.key_file.unlink(missing_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(cfg.run_dir / "logs"),
               "METRICS_LOCATION": str(cfg.run_dir / "logs"), **cfg.thread_environment()}
        command = [_torchserve_binary(), "--start", "--foreground", "--ncs", "--ts-config", str(config_file),
                   "--model-store", str(cfg.model_store.resolve())]
        if not cfg.token_auth:
            command.append("--disable-token-auth")
        if cfg.log_config:
            command += ["--log-config", str(cfg.log_config)]
        self.process = start_group(command, cfg.log_file, cwd=cfg.run_dir, env=env, cpus=cfg.cpus)
        try:
            self._wait_ready(timeout)
        except BaseException:  # whatever went wrong, leave nothing running
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        cfg = self.config
        alive = lambda: self.process.poll() is None  # noqa: E731
        ping = f"http://127.0.0.1:{cfg.inference_port}/ping"
        if not self._wait_key_file(timeout) or not wait_http_ok(ping, timeout, alive, self.auth_headers()):
            self.stop()
            raise ServerError(f"TorchServe did not become ready{self._bind_failure()}:\n{log_tail(cfg.log_file)}")
        for name in cfg.models:
            headers = self.auth_headers("management")
            status = f"http://127.0.0.1:{cfg.management_port}/models/{name}"
            if not wait_http_ok(status, timeout, alive, headers) or not self._workers_ready(name, timeout):
                self.stop()
                raise ServerError(f"TorchServe did not load {name}{self._bind_failure()}:\n{log_tail(cfg.log_file)}")

    def _bind_failure(self) -> str:
        """' (could not bind 127.0.0.1:PORT ...)' when the log says a port was taken, else ''."""
        log_file = self.config.log_file
        log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
        found = re.search(r"Failed to bind to address:? \S*?(\d+\.\d+\.\d+\.\d+:\d+)", log)
        return f" (could not bind {found.group(1)}; is something else listening there?)" if found else ""

    def _wait_key_file(self, timeout: float) -> bool:
        """With token auth on, TorchServe writes key_file.json once its APIs are up (wait until it parses)."""
        deadline = time.monotonic() + timeout
        while self.config.token_auth:
            try:
                read_keys(self.config.key_file)
                return True
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                return False
            time.sleep(0.2)
        return True

    def _workers_ready(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            workers = self._model_workers(name)
            if workers and all(worker.get("status") == "READY" for worker in workers):
                return True
            time.sleep(0.5)
        return False

    def _model_workers(self, name: str) -> list[dict]:
        """The model's workers from the management API, [] while it does not answer; a 4xx is a ServerError."""
        try:
            return self.management(timeout_s=5).workers(name)
        except ManagementError as error:
            if 400 <= error.status < 500:  # a refused token or request: waiting will not change the answer
                raise ServerError(f"TorchServe refused the management API's /models/{name}: {error}") from None
            return []
        except (OSError, ValueError, IndexError):
            return []  # not answering (yet, or it is going down): the caller re-checks the process

    def auth_headers(self, api: str = "inference") -> dict[str, str]:
        if not self.config.token_auth:
            return {}
        return {"Authorization": f"Bearer {read_keys(self.config.key_file)[api]}"}

    def management(self, timeout_s: float = Management.timeout_s) -> Management:
        """This instance's management API, with its management token."""
        token = read_keys(self.config.key_file)["management"] if self.config.token_auth else None
        return Management(self.config.management_port, token, timeout_s=timeout_s)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process.pid)
            self.process.wait(timeout=5)
            self.process = None
