"""Model warm-up, as TF Serving's saved_model_warmup: replay a version's recorded requests before it serves.

A version directory may hold assets.extra/tf_serving_warmup_requests, a TFRecord file of
PredictionLog protos (predict, classify, regress or multi-inference requests). Each record
runs --num_request_iterations_for_warmup times (default once) against the version being
loaded, through the same checks and batching as a live request, so that TensorFlow's lazy
initialisation happens before the first client waits on it. As in TF Serving, the file is
optional; a record that fails, a record that does not parse, a file that is not a TFRecord
and more than 1,000 records all fail the load, so the version never serves; the model name
and version in the records are ignored (the version being loaded answers).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tensorflow_serving.apis import prediction_log_pb2

from serving.tf.dropin.core import DropInCore, InferenceTask, ModelRef
from serving.tf.dropin.errors import CodedError, InvalidArgument, Unimplemented
from serving.tf.dropin.grpc_api import decode_inputs, serialized_examples
from serving.tf.dropin.servable import CLASSIFY_METHOD, REGRESS_METHOD, Servable

log = logging.getLogger("tf-serving-dropin")

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords


def replay_warmup(core: DropInCore, servable: Servable, iterations: int = 1) -> int:
    """Run every warm-up record of the servable's version directory; the number of records read."""
    path = servable.path / WARMUP_FILE
    if not path.is_file():
        log.info("tf-serving-dropin: No warmup data file found at %s", path)
        return 0
    started = time.monotonic()
    log.info("tf-serving-dropin: Starting to read warmup data for model at %s (%d iteration(s) per record)",
             path, iterations)
    count = 0
    for record in _records(path):
        try:
            prediction_log = prediction_log_pb2.PredictionLog.FromString(record)
        except Exception:  # protobuf's DecodeError; the record is data, never code
            raise InvalidArgument(f"Failed to parse warmup record: {record[:64]!r} from {path}") from None
        for _ in range(max(1, iterations)):
            run_record(core, servable, prediction_log)
        count += 1
        if count > MAX_RECORDS:
            raise InvalidArgument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
    log.info("tf-serving-dropin: Finished reading warmup data for model at %s. Number of warmup records read: %d. "
             "Elapsed time (microseconds): %d.", path, count, (time.monotonic() - started) * 1e6)
    return count


def _records(path: Path):
    """The file's TFRecords, read by TensorFlow (which checks their CRCs)."""
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(str(path)):
            yield record.numpy()
    except tf.errors.DataLossError as exc:
        raise CodedError("DATA_LOSS", f"{exc.message}. Please verify your warmup data is in TFRecord format.") \
            from None


def run_record(core: DropInCore, servable: Servable, prediction_log) -> None:
    """One PredictionLog's request on this servable, as TF Serving's RunWarmupRequest does."""
    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        request = prediction_log.predict_log.request
        ref = _ref(servable, request.model_spec)
        inputs = decode_inputs(request.inputs, servable.signature(ref.signature))
        core.run_predict(ref, inputs, list(request.output_filter), None, servable=servable)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(prediction_log, kind).request
        method = CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD
        task = InferenceTask(_ref(servable, request.model_spec), method)
        core.run_inference([task], serialized_examples(request.input), None, servable=servable)
    elif kind == "multi_inference_log":
        request = prediction_log.multi_inference_log.request
        tasks = [InferenceTask(_ref(servable, task.model_spec), task.method_name) for task in request.tasks]
        core.run_inference(tasks, serialized_examples(request.input), None, servable=servable)
    elif kind is not None:  # session_run_log, predict_streamed_log
        number = prediction_log.DESCRIPTOR.fields_by_name[kind].number
        raise Unimplemented(f"Unsupported log_type for warmup: {number}")


def _ref(servable: Servable, spec) -> ModelRef:
    """The record's signature on the version being loaded (its own name and version are ignored)."""
    return ModelRef(servable.name, servable.version, signature_name=spec.signature_name)
