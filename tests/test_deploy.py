"""The deploy lifecycle as users run it: deploy both servers, smoke, predict, deploy again, undeploy."""

import dataclasses
import json
import shutil

import jsonschema
import numpy as np
from PIL import Image

from common.cpus import available_cpus
from common.paths import REPO_ROOT
from common.procs import free_port, port_open
from common.targets import NAMES
from model.checkpoint import load_checkpoint
from model.reference import build_both
from serving import deploy
from serving.clients import make_client
from serving.config import PORT_VARIABLES, DeployConfig
from serving.record import DeployRecord, TorchKnobs
from serving.tf.dropin.config import parse_batching_parameters
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
    torch_knobs = {key: value for key, value in records["torch"]["knobs"].items() if key != "threads"}
    assert torch_knobs == {"workers": 1, "batch_size": 8, "max_batch_delay_ms": 5, "token_auth": True,
                           "logging": "project"}
    assert records["tf"]["ports"]["rest"] == int(env["TF_REST_PORT"])


def test_the_record_names_every_thread_pool_sized_to_the_servers_cpus(deployed):
    env, _ = deployed
    records = json.loads(run_module("serving", "status", env=env).stdout)
    cpus = len(records["tf"]["cpus"] or available_cpus())
    tf, torch = records["tf"]["knobs"], records["torch"]["knobs"]
    assert tf["threads"] == {"tensorflow_intra_op_parallelism": cpus, "tensorflow_inter_op_parallelism": cpus,
                             "rest_api_num_threads": 4 * cpus, "num_batch_threads": cpus}
    assert tf["num_batch_threads"] == cpus  # read back from the batching file the server was given
    assert torch["threads"] == {"number_of_netty_threads": cpus, "netty_client_threads": cpus,
                                "ActiveProcessorCount": cpus, "OMP_NUM_THREADS": cpus, "MKL_NUM_THREADS": cpus,
                                "TS_TORCH_THREADS": cpus}


def test_deploy_records_and_prints_each_servers_cold_start(deployed):
    env, stdout = deployed
    records = json.loads(run_module("serving", "status", env=env).stdout)
    for side in ("tf", "torch"):
        assert records[side]["cold_start_s"] > 0
        assert f"deploy-{side}: ready in {records[side]['cold_start_s']:.1f} s" in stdout


def _cfg(tmp_path, cpus: list[int] | None) -> DeployConfig:
    return DeployConfig(model="tiny", artifacts=tmp_path, server_cpus=cpus, tf_grpc_port=8500, tf_rest_port=8501)


def test_the_tf_command_line_carries_thread_counts_for_the_cpu_set(tmp_path):
    cfg = _cfg(tmp_path, [1, 2, 3])
    flags = deploy._tf_flags(cfg, deploy.sized_batching_file(cfg))
    for flag in ("--tensorflow_intra_op_parallelism=3", "--tensorflow_inter_op_parallelism=3",
                 "--rest_api_num_threads=12", f"--batching_parameters_file={tmp_path / 'run' / 'tf-batching.config'}"):
        assert flag in flags
    unbatched = deploy._tf_flags(dataclasses.replace(cfg, tf_enable_batching=False), None)
    assert "--tensorflow_intra_op_parallelism=3" in unbatched and not any("batching" in f for f in unbatched)


def test_unpinned_servers_are_sized_to_the_cpus_deploy_may_use(tmp_path):
    assert _cfg(tmp_path, None).server_thread_count == len(available_cpus())
    assert deploy.tf_threads(_cfg(tmp_path, [0, 1]))["tensorflow_intra_op_parallelism"] == 2


def test_the_batching_file_gets_one_batch_thread_per_cpu_and_keeps_its_sizes(tmp_path):
    source = tmp_path / "mine.config"
    source.write_text("max_batch_size { value: 8 }\n"
                      "num_batch_threads {\n  value: 6\n}\n"  # the multi-line form of the text format
                      "batch_timeout_micros { value: 500 }\n")
    cfg = dataclasses.replace(_cfg(tmp_path, [4, 5]), tf_batching_file=source)
    sized = deploy.sized_batching_file(cfg)
    params = parse_batching_parameters(sized)
    assert (params.max_batch_size, params.batch_timeout_micros, params.num_batch_threads) == (8, 500, 2)
    text = sized.read_text()
    deploy.sized_batching_file(dataclasses.replace(cfg, tf_batching_file=sized))  # the sweep restoring it
    assert sized.read_text() == text and text.count("num_batch_threads {") == 1


def test_torchserve_config_carries_thread_counts_for_the_cpu_set(tmp_path):
    ts_cfg = deploy.torchserve_config(_cfg(tmp_path, [2, 3, 4, 5]))
    (tmp_path / "models" / "torch").mkdir(parents=True)
    lines = ts_cfg.properties().splitlines()
    for line in ("number_of_netty_threads=4", "netty_client_threads=4", "vmargs=-XX:ActiveProcessorCount=4"):
        assert line in lines
    assert ts_cfg.thread_environment() == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4", "TS_TORCH_THREADS": "4"}
    assert not any(line.startswith(("number_of_netty_threads", "vmargs")) for line in
                   dataclasses.replace(ts_cfg, threads=None).properties().splitlines())
    assert "token_expiration_min=1440" in lines  # a day: TorchServe's own hour ends long runs half-way
    assert not any(line.startswith("token_expiration_min") for line in
                   dataclasses.replace(ts_cfg, token_auth=False).properties().splitlines())


def test_the_results_server_object_carries_cold_start_and_threads_and_fits_the_schema():
    from loadtests.targets import server_record

    knobs = TorchKnobs(1, 8, 5, True, {"number_of_netty_threads": 1, "OMP_NUM_THREADS": 1})
    record = DeployRecord("torch", "native", "TorchServe", "tiny", {"inference": 8080}, knobs, cpus=[1],
                          cold_start_s=7.25)
    server = server_record(record)
    assert server["cold_start_s"] == 7.25 and server["knobs"]["threads"]["OMP_NUM_THREADS"] == 1
    schema = json.loads((REPO_ROOT / "common/schemas/summary.schema.json").read_text())
    jsonschema.validate(server, {"$defs": schema["$defs"], "$ref": "#/$defs/server"})
    with_bad_threads = {**server, "knobs": {**server["knobs"], "threads": {"OMP_NUM_THREADS": 0}}}
    assert not jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/server"}).is_valid(
        with_bad_threads)


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
