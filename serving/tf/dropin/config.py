"""The drop-in's configuration files, in TF Serving's text formats.

--model_config_file  ModelServerConfig (tensorflow_serving/config/model_server_config.proto,
                     parsed with the proto that tensorflow-serving-api ships)
--batching_parameters_file  BatchingParameters: `max_batch_size { value: 32 }` ...
--monitoring_config_file    MonitoringConfig: `prometheus_config { enable: true path: "..." }`
--ssl_config_file           SSLConfig: server_key, server_cert, custom_ca (PEM text), client_verify
The last three protos are not shipped in the pip package: the flat text formats
of the first two are read here, rejecting fields the drop-in does not implement;
SSLConfig is declared here field for field and read by protobuf's own text parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from serving.tf.dropin.errors import StartupError


@dataclass(frozen=True)
class ModelConfig:
    """One served model: name, base path, version policy and labels."""

    name: str
    base_path: Path
    policy: str = "latest"  # latest | all | specific
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)


class ModelConfigError(ValueError):
    """A ModelServerConfig TF Serving would refuse; the message is TF Serving's own."""


def parse_model_config_file(path: Path) -> list[ModelConfig]:
    """ModelServerConfig text proto -> ModelConfigs; StartupError on anything malformed."""
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(Path(path).read_text(encoding="utf-8"), proto)
    except (OSError, text_format.ParseError) as exc:
        raise StartupError(f"cannot read --model_config_file {path}: Error parsing text-format "
                           f"tensorflow.serving.ModelServerConfig: {exc}") from None
    if proto.WhichOneof("config") != "model_config_list":
        raise StartupError(f"{path}: only model_config_list is supported")
    try:
        return models_from_list(proto.model_config_list)
    except ModelConfigError as exc:
        raise StartupError(f"{path}: {exc}") from None


def models_from_list(config_list) -> list[ModelConfig]:
    """A ModelConfigList proto as ModelConfigs, checked as TF Serving's ServerCore checks it (ValidateModelConfigList,
    GetPlatform): unique names, absolute base paths, the platform "tensorflow". ModelConfigError says what is wrong."""
    models = []
    for entry in config_list.config:
        if not entry.name:
            raise ModelConfigError("every model needs a name")
        if entry.name in (m.name for m in models):
            raise ModelConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        if "://" in entry.base_path:  # TF Serving would read gs:// or s3://; the drop-in has no such file systems
            raise ModelConfigError(f"model {entry.name}: the drop-in reads local paths only, not {entry.base_path}")
        if not entry.base_path.startswith("/"):
            raise ModelConfigError(f"Expected model {entry.name} to have an absolute path or URI; "
                                   f"got base_path()={entry.base_path}")
        _check_platform(entry)
        if entry.HasField("logging_config"):  # the open-source server has no request logger to give it to
            raise ModelConfigError(f"model {entry.name}: logging_config: No request-logger-creator provided.")
        policy = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        models.append(ModelConfig(
            name=entry.name, base_path=Path(entry.base_path), policy=policy,
            num_versions=max(1, entry.model_version_policy.latest.num_versions),
            versions=tuple(entry.model_version_policy.specific.versions),
            labels=dict(entry.version_labels)))
    return models


_MODEL_TYPE_TENSORFLOW = 1  # ModelType.TENSORFLOW, the deprecated way to name the platform


def _check_platform(entry) -> None:
    if entry.model_type:
        if entry.model_platform:
            raise ModelConfigError("Illegal setting both ModelServerConfig::model_type (deprecated) "
                                   "and ModelServerConfig::model_platform.")
        if entry.model_type != _MODEL_TYPE_TENSORFLOW:
            raise ModelConfigError(f"ModelServerConfig::model_type choice {entry.model_type} not supported.")
        return
    if not entry.model_platform:
        raise ModelConfigError("Illegal setting neither ModelServerConfig::model_type (deprecated) "
                               "nor ModelServerConfig::model_platform.")
    if entry.model_platform != "tensorflow":
        raise ModelConfigError(f"Model {entry.name} requests unsupported platform {entry.model_platform}")


_ASSIGNMENT = re.compile(r"^\s*(\w+)\s*(?::\s*(\S+)|\{\s*value\s*:\s*(\S+)\s*\})\s*$")


@dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int = 32
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1


def _flat_text_proto(path: Path, kind: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StartupError(f"cannot read {kind} {path}: {exc.strerror}") from None
    values = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _ASSIGNMENT.match(line)
        if not match:
            raise StartupError(f"{kind} {path}: cannot parse line {line!r}")
        values[match.group(1)] = match.group(2) or match.group(3)
    return values


def batching_fields(path: Path) -> dict[str, str]:
    """The fields a BatchingParameters text proto sets, as written (deploy records them as knobs)."""
    return _flat_text_proto(path, "--batching_parameters_file")


def parse_batching_parameters(path: Path | None) -> BatchingParameters:
    """BatchingParameters text proto; fields the drop-in does not implement are refused."""
    if path is None:
        return BatchingParameters()
    values = batching_fields(path)
    known = set(BatchingParameters.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise StartupError(f"--batching_parameters_file {path}: fields not implemented by the drop-in: {unknown}")
    try:
        params = BatchingParameters(**{k: int(v) for k, v in values.items()})
    except ValueError as exc:
        raise StartupError(f"--batching_parameters_file {path}: {exc}") from None
    if min(params.max_batch_size, params.max_enqueued_batches, params.num_batch_threads) < 1:
        raise StartupError(f"--batching_parameters_file {path}: sizes and thread counts must be at least 1")
    return params


@dataclass(frozen=True)
class MonitoringConfig:
    prometheus_enabled: bool = False
    prometheus_path: str = "/monitoring/prometheus/metrics"


_PROTO_TRUE = {"true", "True", "t", "1"}  # what protobuf's text format reads as a true bool


def parse_monitoring_config(path: Path | None) -> MonitoringConfig:
    """MonitoringConfig text proto, as TF Serving reads it: `prometheus_config { enable: true path: "/..." }`.

    The text format allows `prometheus_config: {` and commas between fields (TF Serving's own
    testdata/monitoring_config.txt uses both); a file without the block leaves Prometheus off.
    """
    if path is None:
        return MonitoringConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StartupError(f"cannot read --monitoring_config_file {path}: {exc.strerror}") from None
    text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    block = re.fullmatch(r"\s*(?:prometheus_config\s*:?\s*\{([^}]*)\}\s*)?", text)
    if not block:
        raise StartupError(f"--monitoring_config_file {path}: cannot parse MonitoringConfig text "
                           "(expected: prometheus_config { enable: true path: \"/monitoring/prometheus/metrics\" })")
    fields = dict(re.findall(r"(\w+)\s*:\s*(\"[^\"]*\"|[^\s,;]+)", block.group(1) or ""))
    unknown = sorted(set(fields) - {"enable", "path"})
    if unknown:
        raise StartupError(f"--monitoring_config_file {path}: prometheus_config has no field(s) {unknown}")
    where = fields.get("path", "").strip('"')
    return MonitoringConfig(fields.get("enable") in _PROTO_TRUE, where or MonitoringConfig.prometheus_path)


@dataclass(frozen=True)
class SslConfig:
    """TF Serving's SSLConfig (tensorflow_serving/config/ssl_config.proto): PEM text itself, not file names."""

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def _ssl_config_message():
    """SSLConfig as a protobuf class, built from its four fields (same names and numbers as ssl_config.proto), in a
    pool of its own so that it never clashes with a package that ships the real one."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="tf_serving_dropin/ssl_config.proto", package="tensorflow.serving",
                                              syntax="proto3")
    message = file.message_type.add(name="SSLConfig")
    for number, (name, kind) in enumerate((("server_key", field.TYPE_STRING), ("server_cert", field.TYPE_STRING),
                                           ("custom_ca", field.TYPE_STRING), ("client_verify", field.TYPE_BOOL)), 1):
        message.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


def parse_ssl_config(path: Path | None) -> SslConfig | None:
    """--ssl_config_file, read as TF Serving reads it; StartupError when it does not parse or cannot be used."""
    if path is None:
        return None
    proto = _ssl_config_message()()
    try:
        text_format.Parse(Path(path).read_text(encoding="utf-8"), proto)
    except OSError as exc:
        raise StartupError(f"cannot read --ssl_config_file {path}: {exc.strerror}") from None
    except text_format.ParseError as exc:
        raise StartupError(f"--ssl_config_file {path}: Error parsing text-format tensorflow.serving.SSLConfig: "
                           f"{exc}") from None
    if not proto.server_key or not proto.server_cert:
        raise StartupError(f"--ssl_config_file {path}: server_key and server_cert (PEM text) are both required")
    if proto.client_verify and not proto.custom_ca:
        raise StartupError(f"--ssl_config_file {path}: client_verify needs custom_ca, the PEM of the CA that signs "
                           "client certificates")
    return SslConfig(proto.server_key, proto.server_cert, proto.custom_ca, proto.client_verify)
