"""Shared fixtures: one real training run and export into a temporary artifacts root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Before any test module imports TensorFlow: the drop-in's package sets TF_ENABLE_ONEDNN_OPTS=0 at import, which
# TensorFlow reads once. Tests run the drop-in's code in this process, and oneDNN's kernels abort the whole process
# on some malformed inputs (README); without this, whether they are on depends on which module is collected first.
import serving.tf.dropin  # noqa: F401, I001
from common.paths import REPO_ROOT, ArtifactPaths
from serving.config import PORT_VARIABLES


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> ArtifactPaths:
    """The tiny profile trained with the default trainer and exported, as `make demo` does."""
    from export.config import ExportConfig
    from export.run import run_export
    from training.config import TrainConfig
    from training.train import run_training

    root = tmp_path_factory.mktemp("artifacts")
    run_training(TrainConfig(artifacts=root))
    run_export(ExportConfig(model_name="tiny", artifacts=root))
    return ArtifactPaths(root)


class SavedModelVersions:
    """Versions 1 and 2 of the tiny model with different random weights, exported once per session."""

    def __init__(self, root: Path) -> None:
        import keras

        from export.savedmodel import export_savedmodel
        from model.keras_model import build_keras_model
        from model.spec import get_spec

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
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


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


# Test tiers: `pytest -m unit` is the quick loop (no Java, no training run); `pytest` runs everything.
# train, export or deploy; or start the drop-in as a process (TF Serving's integration suite, ported)
HEAVY_FIXTURES = {"artifacts", "deployed", "edge", "savedmodel_versions", "saved_models", "tflite_models"}
SLOW_FIXTURES = {"deployed", "edge"}  # over 20 s of setup of their own, on top of `artifacts`
# tests that train, convert and serve a model, start a server or run the host's Java themselves, without one of
# the fixtures above
# (node ids, parameters aside); the prereqs one checks the host's real prerequisites, Java among them
INTEGRATION_TESTS = {
    "tests/test_cli.py::test_training_on_an_image_folder_uses_its_class_names",
    "tests/test_dropin_core.py::test_a_bad_config_file_stops_the_server_at_once_with_one_line",
    "tests/test_dropin_core.py::test_tflite_models_are_served_with_and_without_a_signature_def",
    "tests/test_dropin_tf_serving.py::test_predict_batching",
    "tests/test_prereqs.py::test_everything_present_is_one_line_and_success",
    "tests/test_training.py::test_same_seed_gives_same_weights_and_accuracy",
    "tests/test_training.py::test_tf_trainer_exports_pass_the_parity_gate",
}
# integration tests whose own call takes over 20 s on 2 cores
SLOW_TESTS = {
    "tests/test_deploy.py::test_undeploy_stops_everything_and_leaves_no_port_listening",
    "tests/test_training.py::test_same_seed_gives_same_weights_and_accuracy",
    "tests/test_training.py::test_tf_trainer_exports_pass_the_parity_gate",
}


def tier(item: pytest.Item) -> tuple[str, ...]:
    """The markers a test gets, so that `-m unit` needs neither Java nor a training run.

    `integration`: the test uses a fixture that trains, exports or deploys (`item.fixturenames` is the
    transitive closure, so `torchserve`, `short_run`, `published` and the like count), or it trains, starts
    a server or runs Java itself (INTEGRATION_TESTS). `slow` as well: it needs `deployed` or `edge`, or its own
    call is long (SLOW_TESTS); the ~25 s `artifacts` run is shared by nearly all integration tests, so it does
    not count. Everything else is `unit`."""
    node, fixtures = item.nodeid.split("[")[0], set(getattr(item, "fixturenames", ()))
    if fixtures.isdisjoint(HEAVY_FIXTURES) and node not in INTEGRATION_TESTS:
        return ("unit",)
    return ("integration", "slow") if node in SLOW_TESTS or fixtures & SLOW_FIXTURES else ("integration",)


def pytest_collection_modifyitems(config, items):
    modules = {item.nodeid.split("::")[0]: item.module for item in items if isinstance(item, pytest.Function)}
    stale = [node for node in sorted(INTEGRATION_TESTS | SLOW_TESTS)
             if node.split("::")[0] in modules and not hasattr(modules[node.split("::")[0]], node.split("::")[1])]
    if stale:  # a renamed test would silently drop back to `unit` or lose `slow`
        raise pytest.UsageError(f"tests/conftest.py names tests that no longer exist: {stale}")
    for item in items:
        for marker in tier(item):
            item.add_marker(marker)
