"""The drop-in's seams without a front end: flags, configs, version rollout, batching."""

import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from common.paths import REPO_ROOT
from common.procs import free_port
from model.spec import get_spec
from serving.tf.dropin.config import (
    ModelConfig,
    parse_batching_parameters,
    parse_model_config_file,
    parse_monitoring_config,
)
from serving.tf.dropin.core import DropInCore, ModelRef
from serving.tf.dropin.errors import InvalidArgument, NotFound, StartupError
from serving.tf.dropin.flags import parse_flags
from serving.tf.dropin.servable import LoadOptions
from serving.tf.dropin.server import load_options
from tests.conftest import run_module
from tests.tf_serving_models import half_plus_n_tf1, half_plus_two_tf2, half_plus_two_tflite, keras_sequential

SPEC = get_spec("tiny")
IMAGES = np.random.default_rng(0).random((4, *SPEC.input_shape), dtype=np.float32)


@pytest.fixture
def expected(savedmodel_versions):
    """Each of the two versions' reference output on IMAGES."""
    return {v: savedmodel_versions.reference(v, IMAGES) for v in (1, 2)}


def _core_serving_version_1(savedmodel_versions, tmp_path, batching=None):
    """A core polling tmp_path/tiny, where version 1 has been placed and loaded."""
    base = savedmodel_versions.copy_to(tmp_path / "tiny", 1)
    core = DropInCore([ModelConfig("tiny", base)], batching=batching)
    core.poll()
    return base, core


def _predict(core, version=None):
    servable, outputs = core.predict(ModelRef("tiny", version), {"images": IMAGES})
    return servable.version, outputs["probabilities"]


def test_new_version_is_served_and_the_old_one_unloaded(savedmodel_versions, expected, tmp_path):
    base, core = _core_serving_version_1(savedmodel_versions, tmp_path)
    version, probabilities = _predict(core)
    assert version == 1 and np.abs(probabilities - expected[1]).max() <= 1e-5
    in_flight = core.manager.servable("tiny")  # a request that started on version 1

    savedmodel_versions.copy_to(base, 2)
    core.poll()
    version, probabilities = _predict(core)
    assert version == 2 and np.abs(probabilities - expected[2]).max() <= 1e-5
    assert [(s.version, s.state) for s in core.status("tiny")] == [(2, "AVAILABLE"), (1, "END")]
    with pytest.raises(NotFound):
        core.predict(ModelRef("tiny", 1), {"images": IMAGES})
    # the request that held version 1 still completes on it
    assert np.abs(in_flight.run("serving_default", {"images": IMAGES})["probabilities"] - expected[1]).max() <= 1e-5


def test_a_zero_padded_version_directory_is_served_from_where_it_was_found(savedmodel_versions, expected,
                                                                           tmp_path):
    """TF Serving's own test models name versions '00000123': version 123, loaded from that directory."""
    import shutil

    base = tmp_path / "tiny"
    shutil.copytree(savedmodel_versions.root / "1", base / "00000123")
    core = DropInCore([ModelConfig("tiny", base)])
    core.poll()
    assert [(s.version, s.state) for s in core.status("tiny")] == [(123, "AVAILABLE")]
    version, probabilities = _predict(core, 123)
    assert version == 123 and np.abs(probabilities - expected[1]).max() <= 1e-5


def test_a_version_that_fails_to_load_leaves_the_serving_one_in_place(savedmodel_versions, expected, tmp_path):
    base, core = _core_serving_version_1(savedmodel_versions, tmp_path)
    (base / "3").mkdir()
    (base / "3" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    core.poll()
    version, probabilities = _predict(core)
    assert version == 1 and np.abs(probabilities - expected[1]).max() <= 1e-5
    broken = core.status("tiny", 3)[0]
    assert broken.state == "END" and broken.error_code != "OK" and "load failed" in broken.error_message


def test_batching_merges_concurrent_requests(savedmodel_versions, expected, tmp_path):
    from serving.tf.dropin.config import BatchingParameters

    batching = BatchingParameters(max_batch_size=64, batch_timeout_micros=200_000)
    _, core = _core_serving_version_1(savedmodel_versions, tmp_path, batching)
    results, barrier = [None] * 16, threading.Barrier(16)

    def one(index):
        barrier.wait()
        results[index] = core.predict(ModelRef("tiny"), {"images": IMAGES[index % 4:index % 4 + 1]})[1]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = core.batcher.stats
    assert stats.requests == 16 and stats.batches < 16 and stats.largest_batch_requests > 1
    for index, outputs in enumerate(results):  # each caller got its own row back
        assert np.abs(outputs["probabilities"][0] - expected[1][index % 4]).max() <= 1e-5


def test_a_request_past_its_deadline_is_left_out_of_its_batch(savedmodel_versions, tmp_path):
    """It is answered DEADLINE_EXCEEDED at its deadline, and its batch, when it runs, runs without it."""
    from serving.tf.dropin.config import BatchingParameters
    from serving.tf.dropin.errors import DeadlineExceeded

    _, core = _core_serving_version_1(savedmodel_versions, tmp_path, BatchingParameters(batch_timeout_micros=300_000))
    with pytest.raises(DeadlineExceeded, match="waiting for the request's batch"):
        core.predict(ModelRef("tiny"), {"images": IMAGES[:1]}, deadline=time.monotonic() + 0.05)
    time.sleep(0.6)  # past the batch's timeout: it has closed
    assert (core.batcher.stats.requests, core.batcher.stats.batches) == (0, 0)
    assert core.predict(ModelRef("tiny"), {"images": IMAGES[:1]})[1]["probabilities"].shape == (1, 10)


def test_a_cancelled_async_predict_is_counted_as_cancelled_and_left_out_of_its_batch(savedmodel_versions, tmp_path):
    """The REST front end awaits predict_async on its event loop; a task cancelled there takes its request out."""
    import asyncio

    from serving.tf.dropin.config import BatchingParameters

    _, core = _core_serving_version_1(savedmodel_versions, tmp_path, BatchingParameters(batch_timeout_micros=300_000))

    async def cancel_one() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(core.predict_async(
            ModelRef("tiny"), {"images": IMAGES[:1]}, None, None,
            run_blocking=lambda function, *args: loop.run_in_executor(None, function, *args)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_one())
    time.sleep(0.6)  # past the batch's timeout: it has closed
    assert (core.batcher.stats.requests, core.batcher.stats.batches) == (0, 0)
    assert 'status="CANCELLED"} 1' in core.metrics_text()


def test_batching_refuses_a_request_larger_than_max_batch_size(savedmodel_versions, tmp_path):
    from serving.tf.dropin.config import BatchingParameters

    _, core = _core_serving_version_1(savedmodel_versions, tmp_path, BatchingParameters(max_batch_size=2))
    with pytest.raises(InvalidArgument, match="larger than maximum batch size 2"):
        core.predict(ModelRef("tiny"), {"images": IMAGES})


def test_model_config_file_serves_several_models_with_labels(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("""
model_config_list {
  config { name: "a" base_path: "/models/a" model_platform: "tensorflow"
           model_version_policy { specific { versions: 1 versions: 2 } }
           version_labels { key: "stable" value: 1 } }
  config { name: "b" base_path: "/models/b" model_type: TENSORFLOW }
}""")
    a, b = parse_model_config_file(config)
    assert (a.name, a.policy, a.versions, a.labels) == ("a", "specific", (1, 2), {"stable": 1})
    assert (b.name, b.policy, b.num_versions) == ("b", "latest", 1)
    config.write_text("model_config_list { config { name: 'a' base_pathx: '/x' } }")
    with pytest.raises(StartupError, match="Error parsing text-format tensorflow.serving.ModelServerConfig"):
        parse_model_config_file(config)


@pytest.mark.parametrize(("entries", "words"), [
    ('config { name: "a" base_path: "/m/a" }', "Illegal setting neither ModelServerConfig::model_type"),
    ('config { name: "a" base_path: "/m/a" model_platform: "pytorch" }', "Model a requests unsupported platform"),
    ('config { name: "a" base_path: "/m/a" model_platform: "tensorflow" model_type: TENSORFLOW }',
     "Illegal setting both"),
    ('config { name: "a" base_path: "m/a" model_platform: "tensorflow" }', "to have an absolute path or URI"),
    ('config { name: "a" base_path: "/m/a" model_platform: "tensorflow" } '
     'config { name: "a" base_path: "/m/b" model_platform: "tensorflow" }', "Illegal to list model a multiple times"),
    ('config { name: "a" base_path: "/m/a" model_platform: "tensorflow" '
     'logging_config { sampling_config { sampling_rate: 1.0 } } }', "No request-logger-creator provided"),
    ('config { name: "a" base_path: "gs://bucket/a" model_platform: "tensorflow" }', "reads local paths only"),
    ('config { name: "a" base_path: "/m/a" model_type: OTHER }', "model_type choice 2 not supported"),
])
def test_a_model_config_tf_serving_refuses_is_refused_in_its_words(tmp_path, entries, words):
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ {entries} }}")
    with pytest.raises(StartupError, match=re.escape(words)):
        parse_model_config_file(config)


def test_batching_and_monitoring_files_in_tf_serving_text_format(tmp_path):
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500 }\n"
                        "num_batch_threads { value: 3 }\n")
    params = parse_batching_parameters(batching)
    assert (params.max_batch_size, params.batch_timeout_micros, params.num_batch_threads) == (8, 500, 3)
    batching.write_text("pad_variable_length_inputs: true\n")
    with pytest.raises(StartupError, match="not implemented by the drop-in.*pad_variable_length_inputs"):
        parse_batching_parameters(batching)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config {\n  enable: true\n  path: "/metrics"\n}\n')
    assert parse_monitoring_config(monitoring).prometheus_enabled
    assert parse_monitoring_config(monitoring).prometheus_path == "/metrics"


@pytest.mark.parametrize(("text", "enabled", "path"), [
    # TF Serving's own testdata/monitoring_config.txt: a colon before the block, commas between fields
    ('prometheus_config: {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n', True,
     "/monitoring/prometheus/metrics"),
    ("prometheus_config { enable: false }  # off\n", False, "/monitoring/prometheus/metrics"),
    ("", False, "/monitoring/prometheus/metrics"),  # an empty MonitoringConfig: Prometheus stays off
])
def test_monitoring_config_is_read_as_tf_serving_reads_it(tmp_path, text, enabled, path):
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text(text)
    config = parse_monitoring_config(monitoring)
    assert (config.prometheus_enabled, config.prometheus_path) == (enabled, path)


@pytest.mark.parametrize(("text", "says"), [
    ("prometheus_config { enable: true", "cannot parse MonitoringConfig"),
    ("prometheus_config { enabled: true }", "no field(s) ['enabled']"),
])
def test_a_monitoring_config_that_is_not_one_stops_the_server(tmp_path, text, says):
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text(text)
    with pytest.raises(StartupError, match=re.escape(says)):
        parse_monitoring_config(monitoring)


def test_flags_are_tensorflow_model_server_flags(tmp_path):
    flags = parse_flags(["--port=9000", "--rest_api_port", "9001", "--model_name=tiny",
                         f"--model_base_path={tmp_path}", "--enable_batching", "--prefer_tflite_model=false"])
    assert (flags.port, flags.rest_api_port, flags.enable_batching, flags.prefer_tflite_model) == \
        (9000, 9001, True, False)
    assert flags.bind_address == "127.0.0.1"
    assert (flags.enable_signature_method_name_check, flags.enable_profiler) == (False, True)  # TF Serving's defaults


def test_thread_pool_flags_size_tensorflow_s_pools(tmp_path):
    base = ["--port=9000", f"--model_base_path={tmp_path}"]
    options = load_options(parse_flags([*base, "--tensorflow_session_parallelism=2",
                                        "--tensorflow_inter_op_parallelism=1", "--use_tflite_model=true",
                                        "--saved_model_tags=serve,gpu"]))
    assert (options.intra_op_threads, options.inter_op_threads, options.prefer_tflite, options.tags) == \
        (2, 1, True, ("serve", "gpu"))
    with pytest.raises(StartupError, match="--rest_api_num_threads must be 0 or more"):
        parse_flags([*base, "--rest_api_num_threads=-1"])


def test_unknown_flags_are_rejected_by_name(tmp_path):
    done = run_module("serving.tf.dropin", "--port=9000", f"--model_base_path={tmp_path}",
                      "--tensorflow_session_config_file=x", "--platform_config_file=y")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "--platform_config_file, --tensorflow_session_config_file" in lines[0]
    assert "not implemented by the TF Serving drop-in" in lines[0]


@pytest.mark.parametrize(("option", "text", "says"), [
    # TF Serving's testdata/bad_model_config.txt; its suite's testBadModelConfig looks for this phrase in stderr
    ("--model_config_file", "improperly formatted file",
     "Error parsing text-format tensorflow.serving.ModelServerConfig"),
    ("--monitoring_config_file", "prometheus_config { enable: true", "cannot parse MonitoringConfig"),
    ("--ssl_config_file", 'server_key: "unterminated', "Error parsing text-format tensorflow.serving.SSLConfig"),
    ("--ssl_config_file", 'server_key: "k" server_cert: "c" client_verify: true', "client_verify needs custom_ca"),
])
def test_a_bad_config_file_stops_the_server_at_once_with_one_line(tmp_path, option, text, says):
    """As tensorflow_model_server: the parse error is reported and the process exits non-zero, serving nothing."""
    config = tmp_path / "config.txt"
    config.write_text(text)
    model = ["--model_name=tiny", f"--model_base_path={tmp_path}"] if option != "--model_config_file" else []
    done = run_module("serving.tf.dropin", f"--port={free_port()}", f"{option}={config}", *model)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # TensorFlow logs its own
    assert done.returncode == 2 and len(errors) == 1 and says in errors[0], done.stderr


@pytest.mark.parametrize("with_signature", [True, False])
def test_tflite_models_are_served_with_and_without_a_signature_def(tmp_path, with_signature):
    base = half_plus_two_tflite(tmp_path / "half_plus_two", with_signature)
    core = DropInCore([ModelConfig("half_plus_two", base)], LoadOptions(prefer_tflite=True))
    core.poll()
    servable = core.manager.servable("half_plus_two")
    assert servable.platform == "tflite" and list(servable.signatures) == ["serving_default"]
    (name,) = servable.signature("serving_default").inputs  # without a SignatureDef: the tensor's own name
    _, outputs = core.predict(ModelRef("half_plus_two"), {name: np.array([[1.0], [2.0], [5.0]], np.float32)})
    (result,) = outputs.values()
    assert result.tolist() == [[2.5], [3.0], [4.5]]  # three rows: the input was resized to the request's batch


def test_a_tensor_whose_shape_differs_from_the_signature_reaches_tensorflow(tmp_path):
    """TF Serving's half_plus_two declares x as [-1, 1]; x of shape [3] is TensorFlow's to judge, and it answers."""
    core = DropInCore([ModelConfig("half_plus_two", half_plus_n_tf1(tmp_path / "half_plus_two"))])
    core.poll()
    _, outputs = core.predict(ModelRef("half_plus_two"), {"x": np.array([2.0, 3.0, 4.0], np.float32)})
    assert outputs["y"].tolist() == [3.0, 3.5, 4.0]


@pytest.mark.parametrize("shape", [(1, 3), (1, 32, 32), (1, 32, 32, 1, 1)])
def test_a_tensorflow_error_is_invalid_argument_led_by_the_misfitting_input(savedmodel_versions, tmp_path, shape):
    """Our own model keeps a helpful message: which input has which shape, then TensorFlow's own words.

    With oneDNN's custom kernels, on some CPUs the first two shapes abort the process and the third
    is answered as if it were right: the drop-in runs TensorFlow's own kernels (its __init__).
    """
    _, core = _core_serving_version_1(savedmodel_versions, tmp_path)
    ours = f"input 'images' has shape {list(shape)}; expected [-1, 32, 32, 1] (-1 is any size)"
    with pytest.raises(InvalidArgument) as error:
        core.predict(ModelRef("tiny"), {"images": np.ones(shape, np.float32)})
    assert str(error.value).startswith(ours + ": ") and len(str(error.value)) > len(ours) + 10
    _predict(core)  # and the core keeps serving


def test_the_drop_in_turns_onednn_custom_kernels_off_before_tensorflow_runs_unless_told():
    code = "import os, serving.tf.dropin; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    assert _python(code, env) == "0"
    assert _python(code, {**env, "TF_ENABLE_ONEDNN_OPTS": "1"}) == "1"  # a user's explicit choice stands


def _python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def test_a_keras_export_is_served_under_its_signature_def_s_keys(tmp_path):
    core = DropInCore([ModelConfig("keras", keras_sequential(tmp_path / "keras"))])
    core.poll()
    servable, signature = core.resolve(ModelRef("keras"))
    assert servable.version == 123 and list(signature.inputs) == ["x"]
    _, outputs = core.predict(ModelRef("keras"), {"x": np.array([[2.0]], np.float32)})
    assert outputs["output_0"].tolist() == [[2.0]]


def _example(x: float) -> bytes:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(x)
    return example.SerializeToString()


@pytest.mark.parametrize("check", [False, True])
def test_classify_on_a_tf2_model_needs_the_method_name_check_off(tmp_path, check):
    """tf.saved_model.save writes every signature as predict; TF Serving serves its classify/regress signatures
    unless --enable_signature_method_name_check is on (it is off by default)."""
    core = DropInCore([ModelConfig("tf2", half_plus_two_tf2(tmp_path / "tf2"))], method_name_check=check)
    core.poll()
    classify = ModelRef("tf2", signature_name="classify_x_to_y")
    regress = ModelRef("tf2", signature_name="regress_x_to_y")
    if not check:
        assert core.classify(classify, [_example(2.0), _example(4.0)])[1] == [[("", 3.0)], [("", 4.0)]]
        assert core.regress(regress, [_example(2.0)])[1] == [3.0]
        return
    with pytest.raises(InvalidArgument, match="Expected classification signature method_name to be "
                                              "tensorflow/serving/classify. Was: tensorflow/serving/predict"):
        core.classify(classify, [_example(2.0)])
    with pytest.raises(InvalidArgument, match="Expected regression signature method_name"):
        core.regress(regress, [_example(2.0)])
