"""Shared fixtures: one real training run and export into a temporary artifacts root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.paths import REPO_ROOT, ArtifactPaths  # noqa: E402


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> ArtifactPaths:
    """The tiny profile trained with the default trainer and exported, as `make demo` does."""
    from training.config import ExportConfig, TrainConfig
    from training.export import run_export
    from training.train import run_training

    root = tmp_path_factory.mktemp("artifacts")
    run_training(TrainConfig(artifacts=root))
    run_export(ExportConfig(model_name="tiny", artifacts=root))
    return ArtifactPaths(root)


class SavedModelVersions:
    """Versions 1 and 2 of the tiny model with different random weights, exported once per session."""

    def __init__(self, root: Path) -> None:
        import keras

        from serving.tf.export import export_savedmodel
        from training.keras_model import build_keras_model
        from training.spec import get_spec

        self.root, self.models = root, {}
        for version, seed in ((1, 1), (2, 2)):
            keras.utils.set_random_seed(seed)
            self.models[version] = build_keras_model(get_spec("tiny"))
            export_savedmodel(self.models[version], root / str(version))

    def reference(self, version: int, images):
        """The Keras model's own output for `images`: what serving the version must answer."""
        return self.models[version](images, training=False).numpy()

    def copy_to(self, base: Path, *versions: int) -> Path:
        """Place these versions under a model base path, as a deploy would (a poll then finds them)."""
        import shutil

        for version in versions:
            shutil.copytree(self.root / str(version), base / str(version))
        return base


@pytest.fixture(scope="session")
def savedmodel_versions(tmp_path_factory) -> SavedModelVersions:
    return SavedModelVersions(tmp_path_factory.mktemp("savedmodel-versions"))


def run_module(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m <args>` from the repository as a user would, capturing output."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


PORT_VARIABLES = ("TF_GRPC_PORT", "TF_REST_PORT", "TS_INFERENCE_PORT", "TS_MANAGEMENT_PORT", "TS_METRICS_PORT",
                  "TS_GRPC_PORT", "TS_GRPC_MANAGEMENT_PORT")


@pytest.fixture(scope="session")
def deployed(artifacts):
    """Both servers started by `python -m serving deploy` on free ports, as users do; stopped at the end."""
    from common.procs import free_port

    # the local servers whatever this host has: a Docker engine would otherwise pick compose
    env = {"ARTIFACTS": str(artifacts.root), "TF_SERVER": "dropin", "TS_SERVER": "native",
           **{v: str(free_port()) for v in PORT_VARIABLES}}
    done = run_module("serving", "deploy", env=env)
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield env, done.stdout
    finally:
        run_module("serving", "undeploy", env=env)


@pytest.fixture(scope="session")
def edge(artifacts) -> dict:
    """`python -m edge` run once on the session's artifacts: every on-device file, measured and published."""
    from edge.__main__ import run_edge

    return run_edge(artifacts, "tiny", None)


@pytest.fixture
def deploy_defaults(monkeypatch):
    """DeployConfig() with no TorchServe knob set in the environment: the defaults deploy runs with."""
    from serving.config import DeployConfig

    for knob in ("TS_WORKERS", "TS_BATCH_SIZE", "TS_MAX_BATCH_DELAY_MS"):
        monkeypatch.delenv(knob, raising=False)
    return DeployConfig()
