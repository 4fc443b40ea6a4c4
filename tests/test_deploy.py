"""The deploy lifecycle as users run it: deploy both servers, smoke, predict, deploy again, undeploy."""

import json
import shutil

import numpy as np
from PIL import Image

from common.procs import free_port, port_open
from common.targets import NAMES
from model.checkpoint import load_checkpoint
from model.reference import build_both
from serving.clients import make_client
from serving.config import PORT_VARIABLES
from serving.torch.server import read_keys
from tests.conftest import run_module


def test_deploy_names_the_servers_and_smokes_all_four_transports(deployed):
    env, stdout = deployed
    assert "deploy-tf: using tf-serving-dropin (local drop-in" in stdout
    assert "deploy-torch: using TorchServe 0.12.0" in stdout
    for target in NAMES:
        assert f"smoke {target}" in stdout and "16/16" in stdout


def test_every_transport_equals_the_in_process_reference(deployed, artifacts):
    env, _ = deployed
    checkpoint = load_checkpoint(artifacts.checkpoint_dir("tiny"))
    images, _ = checkpoint.test_set()
    reference = build_both(checkpoint).reference_probabilities(images[:32])
    token = read_keys(artifacts.run_dir / "torchserve" / "key_file.json")["inference"]
    ports = {"tf-rest": "TF_REST_PORT", "tf-grpc": "TF_GRPC_PORT", "torch-rest": "TS_INFERENCE_PORT",
             "torch-grpc": "TS_GRPC_PORT"}
    for target, variable in ports.items():
        with make_client(target, port=int(env[variable]), model="tiny",
                         token=token if target.startswith("torch") else None) as client:
            assert np.abs(client.predict(images[:32]) - reference).max() <= 1e-5, target


def test_status_records_identity_ports_and_knobs(deployed):
    env, _ = deployed
    records = json.loads(run_module("serving", "status", env=env).stdout)
    assert records["tf"]["mode"] == "dropin" and "not the official binary" in records["tf"]["identity"]
    assert records["tf"]["knobs"]["enable_batching"] is True
    assert records["tf"]["knobs"]["max_batch_size"] == 32  # in effect: read from serving/tf/batching.config
    assert records["torch"]["knobs"] == {"workers": 1, "batch_size": 8, "max_batch_delay_ms": 5, "token_auth": True}
    assert records["tf"]["ports"]["rest"] == int(env["TF_REST_PORT"])


def test_deploying_twice_does_not_start_a_second_server(deployed):
    env, _ = deployed
    before = json.loads(run_module("serving", "status", env=env).stdout)
    done = run_module("serving", "deploy", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "deploy-tf: already running" in done.stdout and "deploy-torch: already running" in done.stdout
    after = json.loads(run_module("serving", "status", env=env).stdout)
    assert [after[s]["pgid"] for s in ("tf", "torch")] == [before[s]["pgid"] for s in ("tf", "torch")]


def test_predict_cli_classifies_an_image_file(deployed, artifacts, tmp_path):
    env, _ = deployed
    images, labels = load_checkpoint(artifacts.checkpoint_dir("tiny")).test_set()
    index = int(np.flatnonzero(labels == 7)[0])
    Image.fromarray((images[index, :, :, 0] * 255).round().astype(np.uint8), mode="L").save(tmp_path / "seven.png")
    for target in ("tf-grpc", "torch-rest"):
        done = run_module("serving", "predict", "--target", target, "--image", str(tmp_path / "seven.png"), env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)["label"] == "7"


def test_undeploy_stops_everything_and_leaves_no_port_listening(artifacts, tmp_path):
    # its own artifacts root, so its run directory is not the session fixture's
    for part in ("models/tf", "models/reference", "checkpoints"):
        shutil.copytree(artifacts.root / part, tmp_path / part)
    env = {"ARTIFACTS": str(tmp_path), "TF_SERVER": "dropin", **{v: str(free_port()) for v in PORT_VARIABLES}}
    assert run_module("serving", "deploy", "--target", "tf", env=env).returncode == 0
    assert port_open(int(env["TF_REST_PORT"]))
    done = run_module("serving", "undeploy", env=env)
    assert done.returncode == 0 and "undeploy: stopped tf-serving-dropin" in done.stdout
    assert not port_open(int(env["TF_REST_PORT"])) and not port_open(int(env["TF_GRPC_PORT"]))
    assert not (tmp_path / "run" / "tf.json").exists()
    assert "nothing was running" in run_module("serving", "undeploy", env=env).stdout


def test_deploy_without_exported_models_fails_clearly(tmp_path):
    done = run_module("serving", "deploy", "--target", "tf", env={"ARTIFACTS": str(tmp_path), "TF_SERVER": "dropin"})
    assert done.returncode == 1 and "run 'make export' first" in done.stderr
