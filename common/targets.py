"""The four targets the comparison loads, declared once, as data.

A target is one transport of one server: TF Serving's REST and gRPC APIs and
TorchServe's inference REST and gRPC APIs. Every stage that names targets
(deploy, smoke, clients, load tests, the report) reads them from here instead
of splitting strings like "tf-rest".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from common.errors import UsageError


@dataclass(frozen=True)
class Target:
    name: str  # what users type and results record: tf-rest, tf-grpc, torch-rest, torch-grpc
    side: str  # the server behind it, as deploy records name it: tf | torch
    framework: str  # tensorflow | pytorch
    transport: str  # rest | grpc
    default_port: int  # the server's usual port for this transport
    port_key: str  # this transport's key in the deploy record's "ports"
    body: str  # the wire bytes load tests send: both REST targets send the same body
    endpoint: str  # REST: the predict path ({model} filled in); gRPC: the predict method

    @property
    def is_grpc(self) -> bool:
        return self.transport == "grpc"

    @property
    def needs_token(self) -> bool:
        """TorchServe's APIs take a Bearer token (token authorization is on by default); TF Serving's do not."""
        return self.side == "torch"


TARGETS: tuple[Target, ...] = (
    Target("tf-rest", "tf", "tensorflow", "rest", 8501, "rest", "rest", "/v1/models/{model}:predict"),
    Target("tf-grpc", "tf", "tensorflow", "grpc", 8500, "grpc", "tf_grpc",
           "/tensorflow.serving.PredictionService/Predict"),
    Target("torch-rest", "torch", "pytorch", "rest", 8080, "inference", "rest", "/predictions/{model}"),
    Target("torch-grpc", "torch", "pytorch", "grpc", 7070, "grpc", "torch_grpc",
           "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"),
)
NAMES: tuple[str, ...] = tuple(target.name for target in TARGETS)
SIDES: tuple[str, ...] = tuple(dict.fromkeys(target.side for target in TARGETS))
BODIES: tuple[str, ...] = tuple(dict.fromkeys(target.body for target in TARGETS))
_BY_NAME = {target.name: target for target in TARGETS}


def target_named(name: str) -> Target:
    """The target called `name`, or a UsageError listing the four."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown target {name!r}; choose one of: {', '.join(NAMES)}") from None


def names_of(side: str) -> tuple[str, ...]:
    """The target names of one side ('tf', 'torch') or of both ('all'), in the table's order."""
    if side == "all":
        return NAMES
    if side not in SIDES:
        raise UsageError(f"unknown side {side!r}; choose one of: {', '.join(SIDES)}, all")
    return tuple(t.name for t in TARGETS if t.side == side)


def ordered(names: Iterable[str]) -> list[str]:
    """`names` (any iterable of target names) in the table's order; unknown names are dropped."""
    present = set(names)
    return [name for name in NAMES if name in present]


def bearer_token(text: str) -> str:
    """The token a token file holds: its text, or the inference key when it is TorchServe's key_file.json.

    Raises ValueError, KeyError or TypeError for JSON that is not a key file."""
    text = text.strip()
    return json.loads(text)["inference"]["key"] if text.startswith("{") else text
