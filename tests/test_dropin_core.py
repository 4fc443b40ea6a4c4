"""The drop-in's seams without a front end: flags, configs, version rollout, batching."""

import re
import threading

import numpy as np
import pytest

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
from tests.conftest import run_module

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
  config { name: "b" base_path: "/models/b" }
}""")
    a, b = parse_model_config_file(config)
    assert (a.name, a.policy, a.versions, a.labels) == ("a", "specific", (1, 2), {"stable": 1})
    assert (b.name, b.policy, b.num_versions) == ("b", "latest", 1)
    config.write_text("model_config_list { config { name: 'a' base_pathx: '/x' } }")
    with pytest.raises(StartupError, match="cannot read --model_config_file"):
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


def test_unknown_flags_are_rejected_by_name(tmp_path):
    done = run_module("serving.tf.dropin", "--port=9000", f"--model_base_path={tmp_path}",
                      "--tensorflow_intra_op_parallelism=4", "--enable_model_warmup=true")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "--enable_model_warmup, --tensorflow_intra_op_parallelism" in lines[0]
    assert "not implemented by the TF Serving drop-in" in lines[0]


@pytest.mark.parametrize(("option", "text", "says"), [
    ("--model_config_file", "improperly formatted file", "cannot read --model_config_file"),  # TF Serving's testdata
    ("--monitoring_config_file", "prometheus_config { enable: true", "cannot parse MonitoringConfig"),
])
def test_a_bad_config_file_stops_the_server_at_once_with_one_line(tmp_path, option, text, says):
    """As tensorflow_model_server: the parse error is reported and the process exits non-zero, serving nothing."""
    config = tmp_path / "config.txt"
    config.write_text(text)
    model = ["--model_name=tiny", f"--model_base_path={tmp_path}"] if option != "--model_config_file" else []
    done = run_module("serving.tf.dropin", f"--port={free_port()}", f"{option}={config}", *model)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # TensorFlow logs its own
    assert done.returncode == 2 and len(errors) == 1 and says in errors[0], done.stderr


def _half_plus_two_tflite(path, with_signature: bool) -> None:
    """TF Serving's half_plus_two (y = 0.5 x + 2, input x of shape [-1, 1]) as a model.tflite."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    @tf.autograph.experimental.do_not_convert
    def half_plus_two(x):
        return {"y": x * 0.5 + 2.0}

    function = half_plus_two.get_concrete_function()
    # With a trackable object the converter writes a SignatureDef; without one, none (as TF Serving's testdata).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], half_plus_two if with_signature else None)
    path.mkdir(parents=True)
    (path / "model.tflite").write_bytes(converter.convert())


@pytest.mark.parametrize("with_signature", [True, False])
def test_tflite_models_are_served_with_and_without_a_signature_def(tmp_path, with_signature):
    _half_plus_two_tflite(tmp_path / "half_plus_two" / "00000123", with_signature)
    core = DropInCore([ModelConfig("half_plus_two", tmp_path / "half_plus_two")], prefer_tflite=True)
    core.poll()
    servable = core.manager.servable("half_plus_two")
    assert servable.platform == "tflite" and list(servable.signatures) == ["serving_default"]
    (name,) = servable.signature("serving_default").inputs  # without a SignatureDef: the tensor's own name
    _, outputs = core.predict(ModelRef("half_plus_two"), {name: np.array([[1.0], [2.0], [5.0]], np.float32)})
    (result,) = outputs.values()
    assert result.tolist() == [[2.5], [3.0], [4.5]]  # three rows: the input was resized to the request's batch
