"""What each target is: its address, its token, and the server behind it, from what `make deploy` recorded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import metadata

from common.errors import UsageError
from common.procs import port_open
from common.targets import target_named
from serving.config import DeployConfig
from serving.record import DeployRecord, read_record


@dataclass
class Target:
    name: str  # tf-rest, tf-grpc, torch-rest, torch-grpc
    host: str
    port: int
    server: dict  # the summary's "server" object: identity, binary, version, official, knobs
    token: str = ""

    @property
    def side(self) -> str:
        return target_named(self.name).side

    @property
    def framework(self) -> str:
        return target_named(self.name).framework

    @property
    def transport(self) -> str:
        return target_named(self.name).transport

    @property
    def locust_host(self) -> str:
        return f"http://{self.host}:{self.port}" if self.transport == "rest" else f"{self.host}:{self.port}"


def server_record(record: DeployRecord) -> dict:
    """The summary's server object from a deploy record: which binary, which version, official or not."""
    if record.mode == "compose":
        from serving.deploy import compose_image

        image = compose_image(record.service)
        binary = "torchserve" if record.server == "torch" else "tensorflow/serving image"
        return _server(record, binary, f"image {image}", official=True)
    if record.server == "torch":
        binary, version, official = "torchserve", metadata.version("torchserve"), True
    elif record.mode == "dropin":
        version = f"on tensorflow {metadata.version('tensorflow')}"
        binary, official = "tf-serving-dropin", False
    else:
        binary, version, official = "tensorflow_model_server", record.identity, True
    return _server(record, binary, version, official)


def _server(record: DeployRecord, binary: str, version: str, official: bool) -> dict:
    return {"identity": record.identity, "binary": binary, "version": version, "official": official,
            "knobs": asdict(record.knobs), "cpus": record.cpus}


def resolve_targets(names: tuple[str, ...], cfg: DeployConfig, host: str) -> list[Target]:
    """Every requested target, checked reachable, or a UsageError naming the first that is not."""
    from serving.smoke import token_for

    targets = []
    for name in names:
        spec = target_named(name)
        side = spec.side
        record = read_record(cfg.run_dir, side)
        if record is None:
            raise UsageError(f"{name}: no {side} server deployed (artifacts/run/{side}.json is missing); "
                             f"run 'make deploy' first")
        port = int(record.ports[spec.port_key])
        if not port_open(port, host):
            raise UsageError(f"{name}: nothing answers on {host}:{port}; is the server still running? "
                             f"(make status, make deploy)")
        if record.model != cfg.model:
            raise UsageError(f"{name}: the deployed model is {record.model!r}, not {cfg.model!r}; "
                             f"set MODEL or redeploy")
        token = (token_for(cfg, name) or "") if spec.needs_token else ""
        targets.append(Target(name, host, port, server_record(record), token))
    return targets

