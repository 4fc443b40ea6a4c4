"""The target vocabulary (common/targets.py) and the places that must agree with it."""

import pytest

from common.errors import UsageError
from common.targets import BODIES, NAMES, TARGETS, names_of, ordered, target_named
from serving.clients import CLIENTS
from serving.config import DeployConfig


def test_the_four_targets_in_table_order():
    assert NAMES == ("tf-rest", "tf-grpc", "torch-rest", "torch-grpc")
    assert names_of("tf") == ("tf-rest", "tf-grpc") and names_of("torch") == ("torch-rest", "torch-grpc")
    assert names_of("all") == NAMES
    assert ordered({"torch-grpc": 1, "tf-rest": 2, "other": 3}) == ["tf-rest", "torch-grpc"]
    assert BODIES == ("rest", "tf_grpc", "torch_grpc")  # both REST targets send the same bytes


def test_each_target_says_what_it_is():
    grpc = target_named("torch-grpc")
    assert (grpc.side, grpc.framework, grpc.transport, grpc.is_grpc, grpc.needs_token) == (
        "torch", "pytorch", "grpc", True, True)
    rest = target_named("tf-rest")
    assert rest.endpoint.format(model="tiny") == "/v1/models/tiny:predict" and not rest.needs_token


def test_unknown_names_are_usage_errors_listing_the_choices():
    with pytest.raises(UsageError, match="choose one of: tf-rest, tf-grpc, torch-rest, torch-grpc"):
        target_named("tf-http")
    with pytest.raises(UsageError, match="unknown side"):
        names_of("jax")


def test_clients_and_deploy_ports_cover_every_target(monkeypatch):
    for variable in ("TF_GRPC_PORT", "TF_REST_PORT", "TS_INFERENCE_PORT", "TS_GRPC_PORT"):
        monkeypatch.delenv(variable, raising=False)
    cfg = DeployConfig()
    assert set(CLIENTS) == set(NAMES)
    for spec in TARGETS:
        assert cfg.port_of(spec.name) == spec.default_port  # deploy's defaults are the servers' usual ports
        assert spec.port_key in cfg.ports(spec.side)  # the key deploy records the port under
