"""Typed deployment settings, read from the environment with defaults that run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from common.cpus import available_cpus, parse_server_cpus
from common.errors import UsageError
from common.paths import REPO_ROOT, ArtifactPaths, default_artifacts_root, default_model
from common.targets import target_named

# The batching parameters deploy passes to TF Serving, and the file docker-compose.yml mounts.
DEFAULT_TF_BATCHING_FILE = REPO_ROOT / "serving/tf/batching.config"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} must be an integer, got {value!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "true" if default else "false").lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise UsageError(f"{name} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


# The environment variables that choose every port deploy opens (DeployConfig's *_port fields).
PORT_VARIABLES = ("TF_GRPC_PORT", "TF_REST_PORT", "TS_INFERENCE_PORT", "TS_MANAGEMENT_PORT", "TS_METRICS_PORT",
                  "TS_GRPC_PORT", "TS_GRPC_MANAGEMENT_PORT")


@dataclass
class DeployConfig:
    """Ports are TF Serving's and TorchServe's usual ones; every knob has an environment variable."""

    model: str = field(default_factory=default_model)
    artifacts: Path = field(default_factory=default_artifacts_root)
    host: str = field(default_factory=lambda: os.environ.get("BIND_ADDRESS", "127.0.0.1"))
    tf_grpc_port: int = field(default_factory=lambda: _env_int("TF_GRPC_PORT", 8500))
    tf_rest_port: int = field(default_factory=lambda: _env_int("TF_REST_PORT", 8501))
    tf_enable_batching: bool = field(default_factory=lambda: _env_bool("TF_ENABLE_BATCHING", True))
    tf_batching_file: Path = field(default_factory=lambda: Path(
        os.environ.get("TF_BATCHING_FILE", DEFAULT_TF_BATCHING_FILE)))
    tf_server: str = field(default_factory=lambda: os.environ.get("TF_SERVER", "auto"))  # auto|compose|binary|dropin
    ts_server: str = field(default_factory=lambda: os.environ.get("TS_SERVER", "auto"))  # auto|compose|native
    compose_profile: str = field(default_factory=lambda: os.environ.get("COMPOSE_PROFILE", "cpu"))  # cpu|gpu
    ts_inference_port: int = field(default_factory=lambda: _env_int("TS_INFERENCE_PORT", 8080))
    ts_management_port: int = field(default_factory=lambda: _env_int("TS_MANAGEMENT_PORT", 8081))
    ts_metrics_port: int = field(default_factory=lambda: _env_int("TS_METRICS_PORT", 8082))
    ts_grpc_port: int = field(default_factory=lambda: _env_int("TS_GRPC_PORT", 7070))
    ts_grpc_management_port: int = field(default_factory=lambda: _env_int("TS_GRPC_MANAGEMENT_PORT", 7071))
    ts_workers: int = field(default_factory=lambda: _env_int("TS_WORKERS", 1))
    ts_batch_size: int = field(default_factory=lambda: _env_int("TS_BATCH_SIZE", 8))
    ts_max_batch_delay_ms: int = field(default_factory=lambda: _env_int("TS_MAX_BATCH_DELAY_MS", 5))
    ts_token_auth: bool = field(default_factory=lambda: _env_bool("TS_TOKEN_AUTH", True))
    # TorchServe's tokens expire (its default: 60 minutes, after which every request is refused until a
    # redeploy or a renewal); a day lasts through tuning, several sweeps and a soak.
    ts_token_expiration_min: int = field(default_factory=lambda: _env_int("TS_TOKEN_EXPIRATION_MIN", 24 * 60))
    # TorchServe's logging: the project's serving/torch/log4j2.xml, or TorchServe's built-in configuration
    ts_logging: str = field(default_factory=lambda: os.environ.get("TS_LOGGING", "project"))  # project|torchserve
    # The CPUs both servers run on (SERVER_CPUSET=auto|all|1,2); the load generator gets the others.
    server_cpus: list[int] | None = field(default_factory=lambda: parse_server_cpus(os.environ.get("SERVER_CPUSET",
                                                                                                   "auto")))
    ready_timeout_s: float = field(default_factory=lambda: float(_env_int("READY_TIMEOUT_S", 180)))

    def __post_init__(self) -> None:
        if self.tf_server not in ("auto", "compose", "binary", "dropin"):
            raise UsageError(f"TF_SERVER must be auto, compose, binary or dropin, got {self.tf_server!r}")
        if self.compose_profile not in ("cpu", "gpu"):
            raise UsageError(f"COMPOSE_PROFILE must be cpu or gpu, got {self.compose_profile!r}")
        if self.ts_server not in ("auto", "compose", "native"):
            raise UsageError(f"TS_SERVER must be auto, compose or native, got {self.ts_server!r}")
        if min(self.ts_workers, self.ts_batch_size) < 1 or self.ts_max_batch_delay_ms < 0:
            raise UsageError("TS_WORKERS and TS_BATCH_SIZE must be at least 1, TS_MAX_BATCH_DELAY_MS at least 0")
        if self.ts_logging not in ("project", "torchserve"):
            raise UsageError(f"TS_LOGGING must be project or torchserve, got {self.ts_logging!r}")
        if self.ts_token_expiration_min < 1:
            raise UsageError(f"TS_TOKEN_EXPIRATION_MIN must be at least 1 minute, got {self.ts_token_expiration_min}")

    @property
    def server_thread_count(self) -> int:
        """The CPUs each server may use: every thread pool deploy sizes is sized from this.

        The servers' CPU set when pinned; unpinned, the CPUs deploy itself may run on (the host's, unless deploy
        was started inside a narrower set). Deploy passes it explicitly rather than trusting each runtime to read
        its affinity mask: most do (TensorFlow, OpenMP, the JVM), some size to the host or to a multiple
        (torch's inter-op pool, netty's two event loops per CPU), and a result must name what ran.
        """
        return len(self.server_cpus) if self.server_cpus else len(available_cpus())

    @property
    def paths(self) -> ArtifactPaths:
        return ArtifactPaths(Path(self.artifacts))

    @property
    def run_dir(self) -> Path:
        return self.paths.run_dir

    def ports(self, side: str) -> dict[str, int]:
        """The ports deploy gives one side's server, by the deploy record's keys (common.targets' port_key)."""
        if side == "tf":
            return {"grpc": self.tf_grpc_port, "rest": self.tf_rest_port}
        return {"inference": self.ts_inference_port, "management": self.ts_management_port,
                "metrics": self.ts_metrics_port, "grpc": self.ts_grpc_port,
                "grpc_management": self.ts_grpc_management_port}

    def port_of(self, name: str) -> int:
        spec = target_named(name)
        return self.ports(spec.side)[spec.port_key]
