"""What each target is: its address, its token, and the server behind it, from what `make deploy` recorded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from common.errors import UsageError
from common.procs import port_open
from common.targets import bearer_token, target_named
from serving.config import DeployConfig
from serving.record import DeployRecord, read_record


@dataclass
class Target:
    name: str  # tf-rest, tf-grpc, torch-rest, torch-grpc
    host: str
    port: int
    server: dict  # the summary's "server" object: identity, binary, version, official, knobs
    token: str = ""
    host_header: str = ""  # an endpoint behind a gateway that routes by Host (KServe)
    url: str = ""  # set for an endpoint deploy did not start (--url)
    record: DeployRecord | None = None  # what deploy started: the server-side figures sample its processes

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
        if self.url:
            return self.url
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
            "knobs": asdict(record.knobs), "cpus": record.cpus, "cold_start_s": record.cold_start_s}


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
        if token and record.key_file:
            check_token_fresh(Path(record.key_file), name)
        targets.append(Target(name, host, port, server_record(record), token, record=record))
    return targets


def check_token_fresh(key_file: Path, name: str, now: datetime | None = None) -> None:
    """A UsageError when TorchServe's inference token has expired: every request would be refused."""
    from serving.torch.server import token_expiry

    try:
        expiry = token_expiry(key_file)
    except (OSError, KeyError, ValueError):
        return  # a key file without an expiration time: the server decides, and a refusal shows as failures
    if expiry <= (now or datetime.now(UTC)):
        raise UsageError(f"{name}: TorchServe's inference token expired at {expiry:%Y-%m-%d %H:%M} UTC and every "
                         "request would be refused; redeploy (make deploy-torch; TS_TOKEN_EXPIRATION_MIN sets how "
                         "long tokens last)")



def _token_from(path: Path) -> str:
    """The bearer token in a file: the file's text, or the inference key of TorchServe's key_file.json."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
    try:
        token = bearer_token(text)
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{path} is JSON but not TorchServe's key file (no inference.key)") from None
    if not token:
        raise UsageError(f"the token file {path} is empty")
    return token


def external_target(url: str, names: tuple[str, ...] | None, host_header: str | None,
                    token_file: Path | None) -> Target:
    """An endpoint deploy did not start: its wire format is the one --target names; checked reachable."""
    if not names or len(names) != 1:
        raise UsageError("--url loads one endpoint: name its wire format with exactly one --target "
                         "(tf-rest, tf-grpc, torch-rest or torch-grpc)")
    name = names[0]
    parsed = urlsplit(url if "://" in url else f"grpc://{url}")
    scheme = "http" if target_named(name).transport == "rest" else "grpc"
    if parsed.scheme not in (scheme, "https" if scheme == "http" else scheme) or not parsed.hostname:
        raise UsageError(f"--url {url!r} is not a {scheme} address for {name} "
                         f"(e.g. {'http://HOST:8501' if scheme == 'http' else 'HOST:8500'})")
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    if not port_open(port, parsed.hostname):
        raise UsageError(f"{name}: nothing answers on {parsed.hostname}:{port} ({url})")
    where = f"{url}" + (f" with Host: {host_header}" if host_header else "")
    server = {"identity": f"external endpoint {where} (not started by deploy: what serves it is not recorded here)",
              "binary": "external", "version": "unknown", "official": False, "knobs": None, "cpus": None}
    url = url if parsed.scheme in ("http", "https") else f"{parsed.hostname}:{port}"
    token = _token_from(token_file) if token_file else ""
    return Target(name, parsed.hostname, port, server, token, host_header or "", url.rstrip("/"))
