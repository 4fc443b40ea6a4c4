"""What `make deploy` started, as a typed record: artifacts/run/<server>.json.

Deploy writes one record per running server (what runs, its identity, ports,
the knobs actually in effect, process group, log file); undeploy stops exactly
that, and the load tests, the sweep and `make status` read it. Nobody reads a
server's own config files to learn its knobs: they are in the record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import UsageError
from common.procs import group_alive
from serving.tf.dropin.config import BatchingParameters, batching_fields, parse_batching_parameters
from serving.tf.dropin.errors import StartupError


@dataclass(frozen=True)
class TfKnobs:
    """TF Serving's batching knobs. A None size: the file does not set it, so the official server's default holds."""

    enable_batching: bool
    batching_parameters_file: str | None = None
    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    max_enqueued_batches: int | None = None
    num_batch_threads: int | None = None
    # The thread settings deploy gave the server, by the name the server knows them (flag or variable); None:
    # deploy set none (a compose service, or a record from before deploy sized them).
    threads: dict[str, int] | None = None


@dataclass(frozen=True)
class TorchKnobs:
    """TorchServe's per-model knobs as registered, and whether its APIs want the token."""

    workers: int
    batch_size: int
    max_batch_delay_ms: int
    token_auth: bool
    threads: dict[str, int] | None = None  # as TfKnobs.threads: config.properties keys, JVM flag, environment
    logging: str | None = None  # "project" (serving/torch/log4j2.xml), "torchserve" (built in); None: unknown


Knobs = TfKnobs | TorchKnobs
KNOBS_OF = {"tf": TfKnobs, "torch": TorchKnobs}
SIZES = {f.name for f in fields(BatchingParameters)}


def tf_knobs_in_effect(enable_batching: bool, batching_file: Path, mode: str) -> TfKnobs:
    """The batching knobs a TF server runs with, read from its file with the drop-in's own parser.

    The drop-in fills what the file leaves out with its defaults, so its record holds every size; for the
    official server (binary, compose image) only what the file sets is known. A file the drop-in cannot
    read leaves the sizes unknown (None): the server itself says why, at start-up.
    """
    if not enable_batching:
        return TfKnobs(enable_batching=False)
    try:
        if mode == "dropin":
            sizes = asdict(parse_batching_parameters(batching_file))
        else:
            sizes = {name: int(value) for name, value in batching_fields(batching_file).items() if name in SIZES}
    except (StartupError, ValueError):
        sizes = {}
    return TfKnobs(True, str(batching_file), **sizes)


@dataclass(frozen=True)
class DeployRecord:
    server: str  # "tf" or "torch": common.targets' sides
    mode: str  # tf: compose | binary | dropin; torch: compose | native
    identity: str  # what the server is, in words (the drop-in always says it is not the official binary)
    model: str
    ports: dict[str, int]  # by common.targets' port_key
    knobs: Knobs
    cpus: list[int] | None = None  # the CPUs the server is pinned to; None: not pinned (or a container)
    pgid: int | None = None  # the process group undeploy stops; None for compose services
    log: str = ""
    command: list[str] | None = None
    service: str | None = None  # compose only
    profile: str | None = None  # compose only: cpu or gpu
    key_file: str | None = None  # torch with token authorization
    started: str = ""
    # Seconds from just before the server was started to its first correct answer on REST predict.
    cold_start_s: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> DeployRecord:
        """A record from its JSON; a UsageError naming the file when it is not one deploy wrote."""
        try:
            knobs = KNOBS_OF[data["server"]](**data["knobs"])
            return cls(**{**data, "knobs": knobs})
        except (KeyError, TypeError) as exc:
            raise UsageError(f"{source} is not a deploy record ({type(exc).__name__}: {exc}); "
                              "remove it and run 'make deploy'") from None


def record_file(run_dir: Path, server: str) -> Path:
    return run_dir / f"{server}.json"


def load_record(run_dir: Path, server: str) -> DeployRecord | None:
    """The record as deploy wrote it, whether or not its server still runs; None when there is none."""
    path = record_file(run_dir, server)
    if not path.exists():
        return None
    return DeployRecord.from_json(json.loads(path.read_text(encoding="utf-8")), path)


def read_record(run_dir: Path, server: str) -> DeployRecord | None:
    """The record of a running server, or None (a stale one, whose processes are gone, is removed)."""
    record = load_record(run_dir, server)
    if record is not None and record.mode != "compose" and not group_alive(record.pgid):
        remove_record(run_dir, server)
        return None
    return record


def write_record(run_dir: Path, record: DeployRecord) -> DeployRecord:
    """Write the record and a PID file beside it; the record as written.

    A record is dated when first written; writing it again (deploy adds cold_start_s once the server answers)
    keeps that date.
    """
    record = replace(record, started=record.started or datetime.now(UTC).isoformat(timespec="seconds"))
    run_dir.mkdir(parents=True, exist_ok=True)
    record_file(run_dir, record.server).write_text(json.dumps(record.as_json(), indent=2) + "\n", encoding="utf-8")
    (run_dir / f"{record.server}.pid").write_text(f"{record.pgid or ''}\n", encoding="utf-8")
    return record


def remove_record(run_dir: Path, server: str) -> None:
    record_file(run_dir, server).unlink(missing_ok=True)
    (run_dir / f"{server}.pid").unlink(missing_ok=True)
