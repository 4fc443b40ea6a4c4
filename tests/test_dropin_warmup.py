"""Model warm-up as TF Serving does it: assets.extra/tf_serving_warmup_requests replayed before a version serves.

The records are PredictionLog protos in a TFRecord file, written here with the installed TensorFlow
into TF Serving's half_plus_two (TF1, with classify and regress signatures).
"""

from __future__ import annotations

import logging

import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving.tf.dropin.config import ModelConfig
from serving.tf.dropin.core import DropInCore, ModelRef
from serving.tf.dropin.errors import NotFound
from serving.tf.dropin.flags import parse_flags
from serving.tf.dropin.servable import LoadOptions
from serving.tf.dropin.server import load_options
from serving.tf.dropin.warmup import MAX_RECORDS, WARMUP_FILE, replay_warmup
from tests.tf_serving_models import VERSION_DIR, half_plus_n_tf1

VERSION = int(VERSION_DIR)


def _predict_log(key: str = "x") -> prediction_log_pb2.PredictionLog:
    record = prediction_log_pb2.PredictionLog()
    request = record.predict_log.request
    request.model_spec.name = "some_other_name"  # ignored: the version being loaded answers
    tensor = request.inputs[key]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.float_val.extend([2.0, 3.0])
    tensor.tensor_shape.dim.add().size = 2
    tensor.tensor_shape.dim.add().size = 1
    return record


def _examples(request) -> None:
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)


def _classify_regress_multi_logs() -> list[prediction_log_pb2.PredictionLog]:
    classify, regress, multi = (prediction_log_pb2.PredictionLog() for _ in range(3))
    classify.classify_log.request.model_spec.signature_name = "classify_x_to_y"
    _examples(classify.classify_log.request)
    regress.regress_log.request.model_spec.signature_name = "regress_x_to_y"
    _examples(regress.regress_log.request)
    for signature, method in (("classify_x_to_y", "classify"), ("regress_x_to_y", "regress")):
        task = multi.multi_inference_log.request.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name, task.model_spec.signature_name = "half_plus_two", signature
    _examples(multi.multi_inference_log.request)
    return [classify, regress, multi]


def _write(base, records: list[bytes]):
    import tensorflow as tf

    path = base / VERSION_DIR / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path


def _model(tmp_path, records: list[bytes] | None):
    base = half_plus_n_tf1(tmp_path / "half_plus_two")
    if records is not None:
        _write(base, records)
    return base


def _core(base, **options) -> DropInCore:
    core = DropInCore([ModelConfig("half_plus_two", base)], LoadOptions(**options))
    core.poll()
    return core


def _load_error(core: DropInCore) -> str:
    (status,) = core.status("half_plus_two")
    assert status.state == "END" and status.error_code != "OK"
    with pytest.raises(NotFound):
        core.predict(ModelRef("half_plus_two"), {"x": [[2.0]]})
    return f"{status.error_code}: {status.error_message}"


def test_every_kind_of_record_runs_before_the_version_serves(tmp_path, caplog):
    records = [_predict_log(), *_classify_regress_multi_logs()]
    base = _model(tmp_path, [r.SerializeToString() for r in records])
    with caplog.at_level(logging.INFO, logger="tf-serving-dropin"):
        core = _core(base)
    assert [(s.version, s.state) for s in core.status("half_plus_two")] == [(VERSION, "AVAILABLE")]
    assert "Number of warmup records read: 4" in caplog.text
    servable = core.manager.servable("half_plus_two")
    runs = []
    real_run = servable.run
    servable.run = lambda *args, **kwargs: runs.append(args[0]) or real_run(*args, **kwargs)
    assert replay_warmup(core, servable, iterations=2) == 4
    # each record twice; multi-inference runs its two signatures
    assert sorted(runs) == sorted(["serving_default", "classify_x_to_y", "regress_x_to_y",
                                   "classify_x_to_y", "regress_x_to_y"] * 2)
    assert core.predict(ModelRef("half_plus_two"), {"x": [[2.0]]})[1]["y"].tolist() == [[3.0]]


def test_no_warmup_file_loads_as_before(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="tf-serving-dropin"):
        core = _core(_model(tmp_path, None))
    assert core.status("half_plus_two")[0].state == "AVAILABLE"
    assert "No warmup data file found at" in caplog.text


@pytest.mark.parametrize(("records", "words"), [
    ([_predict_log("nope").SerializeToString()], "INVALID_ARGUMENT: load failed: input size does not match signature"),
    ([b"\x08\xff\xff\xff"], "Failed to parse warmup record"),
    ([prediction_log_pb2.PredictionLog(session_run_log={}).SerializeToString()],
     "UNIMPLEMENTED: load failed: Unsupported log_type for warmup: 5"),
    ([_predict_log().SerializeToString()] * (MAX_RECORDS + 1), "Number of warmup records exceeds the maximum (1000)"),
])
def test_a_warmup_that_fails_fails_the_load(tmp_path, records, words):
    core = _core(_model(tmp_path, records))
    assert words in _load_error(core)


def test_a_failed_warmup_through_the_batcher_leaves_no_batch_thread(tmp_path):
    import threading

    from serving.tf.dropin.config import BatchingParameters

    records = [_predict_log().SerializeToString(), _predict_log("nope").SerializeToString()]
    core = DropInCore([ModelConfig("half_plus_two", _model(tmp_path, records))], batching=BatchingParameters())
    core.poll()
    assert "input size does not match" in _load_error(core)
    started = [t for t in threading.enumerate() if t.name.startswith("batch-half_plus_two")]
    for thread in started:
        thread.join(timeout=5)  # stopped threads end at once; one left running would wait here in vain
    assert not any(thread.is_alive() for thread in started)


def test_a_file_that_is_not_a_tfrecord_is_data_loss(tmp_path):
    base = _model(tmp_path, [])
    (base / VERSION_DIR / WARMUP_FILE).write_bytes(b"this is not a TFRecord file, only some text" * 3)
    error = _load_error(_core(base))
    assert error.startswith("DATA_LOSS") and "Please verify your warmup data is in TFRecord format" in error


def test_warmup_can_be_turned_off_and_iterated_by_flag(tmp_path):
    base = _model(tmp_path, [_predict_log("nope").SerializeToString()])
    assert _core(base, warmup=False).status("half_plus_two")[0].state == "AVAILABLE"  # never replayed
    flags = ["--model_name=half_plus_two", f"--model_base_path={base}"]
    assert load_options(parse_flags(flags)).warmup and load_options(parse_flags(flags)).warmup_iterations == 1
    options = load_options(parse_flags([*flags, "--enable_model_warmup=false",
                                        "--num_request_iterations_for_warmup=3"]))
    assert (options.warmup, options.warmup_iterations) == (False, 3)
