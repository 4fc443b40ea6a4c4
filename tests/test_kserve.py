"""deploy/kserve/: both InferenceServices parse, use KServe's TF Serving and TorchServe predictors, and match."""

from __future__ import annotations

import re

import pytest
import yaml

from common.paths import REPO_ROOT

KSERVE = REPO_ROOT / "deploy/kserve"
PREDICTORS = {"tf-serving": "tensorflow", "torchserve": "pytorch"}


def manifest(name: str, model: str = "tiny", storage: str = "s3://bucket/prefix") -> dict:
    """The manifest as envsubst '$MODEL $STORAGE_URI' fills it."""
    text = (KSERVE / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text.replace("${MODEL}", model).replace("${STORAGE_URI}", storage))


@pytest.mark.parametrize("name", PREDICTORS)
def test_manifest_is_an_inference_service_with_only_documented_parameters(name):
    text = (KSERVE / f"{name}.yaml").read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{(\w+)\}", text)) == {"MODEL", "STORAGE_URI"}
    document = manifest(name)
    assert document["apiVersion"] == "serving.kserve.io/v1beta1" and document["kind"] == "InferenceService"


@pytest.mark.parametrize("name, framework", PREDICTORS.items())
def test_predictor_is_kserves_framework_predictor_with_a_pinned_runtime(name, framework):
    predictor = manifest(name)["spec"]["predictor"]
    spec = predictor[framework]
    assert re.fullmatch(r"\d+\.\d+\.\d+", spec["runtimeVersion"]), "runtimeVersion is the image tag: pin it"
    if framework == "pytorch":
        assert spec["protocolVersion"] == "v1"  # TF Serving's REST body, as everywhere in the project


def test_storage_uri_is_the_parameter_in_the_layout_kserve_expects():
    assert manifest("tf-serving", "mobilenet", "gs://b/p")["spec"]["predictor"]["tensorflow"]["storageUri"] == \
        "gs://b/p/tf/mobilenet"
    assert manifest("torchserve", "mobilenet", "gs://b/p")["spec"]["predictor"]["pytorch"]["storageUri"] == \
        "gs://b/p/torch"
    assert manifest("torchserve", "mobilenet")["metadata"]["name"] == "mobilenet-torchserve"


def test_both_ask_for_the_same_resources_and_autoscaling():
    tf, torch = (manifest(name)["spec"]["predictor"] for name in PREDICTORS)
    resources = tf["tensorflow"]["resources"]
    assert resources == torch["pytorch"]["resources"]
    assert resources["requests"] == resources["limits"] and {"cpu", "memory"} <= set(resources["limits"])
    scaling = ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")
    assert {key: tf[key] for key in scaling} == {key: torch[key] for key in scaling}
    assert 1 <= tf["minReplicas"] < tf["maxReplicas"] and tf["scaleTarget"] > 0
    assert tf["scaleMetric"] in ("concurrency", "rps", "cpu", "memory")


def _kserve_properties() -> dict[str, str]:
    """config.properties as envsubst '$MODEL $MODEL_VERSION' fills it (tiny, 1)."""
    text = (KSERVE / "config.properties").read_text(encoding="utf-8")
    filled = text.replace("${MODEL}", "tiny").replace("${MODEL_VERSION}", "1")
    return dict(line.split("=", 1) for line in filled.splitlines() if "=" in line and not line.startswith("#"))


def test_torchserve_config_for_kserve_loads_the_model_with_deploys_batching_and_no_envelope(deploy_defaults):
    properties = _kserve_properties()
    model = yaml.safe_load(properties["model_snapshot"])["models"]["tiny"]["1"]  # JSON is YAML
    assert model["marName"] == "tiny.mar"
    assert (model["minWorkers"], model["maxWorkers"], model["batchSize"], model["maxBatchDelay"]) == (
        deploy_defaults.ts_workers, deploy_defaults.ts_workers, deploy_defaults.ts_batch_size,
        deploy_defaults.ts_max_batch_delay_ms)
    assert properties["enable_envvars_config"] == "false" and "service_envelope" not in properties


def test_torchserve_for_kserve_only_loads_archives_from_the_mounted_model_store():
    properties = _kserve_properties()
    # KServe's storage initializer puts STORAGE_URI/torch at /mnt/models; the manifest's storageUri is that
    assert manifest("torchserve")["spec"]["predictor"]["pytorch"]["storageUri"].endswith("/torch")
    assert properties["model_store"] == "/mnt/models/model-store"
    assert properties["allowed_urls"] == "file:///mnt/models/model-store/.*"
    assert properties["enable_model_api"] == "false"
