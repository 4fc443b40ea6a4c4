"""What both front ends call: predict, classify, regress, multi-inference, metadata and status, protocol-free.

Front ends decode their wire format into numpy arrays (or serialized tf.Examples),
call these methods with the request's deadline, and encode the answer; errors are
the exceptions in errors.py. The checks here are the ones TF Serving makes
(predict_util, classifier, regressor, multi_inference); what TF Serving leaves
to TensorFlow is left to TensorFlow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.tf.dropin.batching import Batcher
from serving.tf.dropin.config import BatchingParameters, ModelConfig
from serving.tf.dropin.errors import (
    CodedError,
    FailedPrecondition,
    InvalidArgument,
    ServingError,
    Unimplemented,
)
from serving.tf.dropin.manager import ModelManager, VersionStatus
from serving.tf.dropin.metrics import Metrics
from serving.tf.dropin.servable import (
    CLASSIFY_METHOD,
    DEFAULT_LOAD,
    REGRESS_METHOD,
    LoadOptions,
    Servable,
    Signature,
    check_inputs,
    shape_hint,
)

DEFAULT_SIGNATURE = "serving_default"
EXAMPLES_INPUT = "inputs"  # the serialized tf.Examples, for classify and regress alike
CLASSES, SCORES, REGRESS_OUTPUTS = "classes", "scores", "outputs"

# One classification: (label, score) per class; TF Serving leaves an absent label "" and an absent score 0.
Classification = list[tuple[str, float]]
log = logging.getLogger("tf-serving-dropin")
# How an event loop runs a blocking call: run_blocking(function, *args) -> awaitable of its result.
RunBlocking = Callable[..., Awaitable[Any]]


@dataclass
class ModelRef:
    """Which model a request names: TF Serving's ModelSpec."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE


@dataclass
class InferenceTask:
    """One task of a MultiInference request: a signature and the method to run it as."""

    ref: ModelRef
    method_name: str


@dataclass
class TaskResult:
    """A MultiInference task's answer: classifications or regressions, in the task's order."""

    task: InferenceTask
    classifications: list[Classification] | None = None
    regressions: list[float] | None = None


class DropInCore:
    def __init__(self, models: list[ModelConfig], load_options: LoadOptions = DEFAULT_LOAD,
                 batching: BatchingParameters | None = None, method_name_check: bool = False,
                 allow_unavailable_labels: bool = False) -> None:
        self.manager = ModelManager(models, load_options, warm_up=self._warm_up)
        self.batcher = Batcher(batching) if batching else None
        self.method_name_check = method_name_check  # TF Serving's --enable_signature_method_name_check
        # TF Serving's --allow_version_labels_for_unavailable_models
        self.allow_unavailable_labels = allow_unavailable_labels
        self.metrics = Metrics()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._config_lock = threading.Lock()  # one poll or config reload at a time

    # -- lifecycle -------------------------------------------------------------------------
    def poll(self) -> None:
        with self._config_lock:
            self._poll()

    def _poll(self) -> None:
        before = self.manager.loaded_servables()
        self.manager.poll()
        if self.batcher:
            for servable in before - self.manager.loaded_servables():
                self.batcher.forget(servable)

    def start_polling(self, seconds: float, reload_models=None, reload_seconds: float = 0) -> None:
        """Poll version directories every `seconds` (0: load once, as TF Serving does); re-read the model config
        every `reload_seconds` with `reload_models` (a config that fails is logged, and the old one kept)."""
        def loop() -> None:
            last_reload = time.monotonic()
            while not self._stop.wait(seconds or reload_seconds):
                if reload_models and reload_seconds and time.monotonic() - last_reload >= reload_seconds:
                    self._reload_from(reload_models)
                    last_reload = time.monotonic()
                if seconds:
                    self.poll()

        self.poll()
        if seconds > 0 or (reload_models and reload_seconds > 0):
            self._poller = threading.Thread(target=loop, daemon=True, name="version-poller")
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()

    def _warm_up(self, servable: Servable) -> None:
        # warmup.py decodes records with the gRPC front end's helpers, which import this module: import it late.
        from serving.tf.dropin.warmup import replay_warmup

        try:
            replay_warmup(self, servable, self.manager.load_options.warmup_iterations)
        except Exception:
            if self.batcher:  # the version never serves: stop the batch threads its warm-up started
                self.batcher.forget(servable)
            raise

    def _reload_from(self, reload_models) -> None:
        try:
            self.reload_config(reload_models())
        except Exception as exc:  # a bad edit of the config file must not stop the server
            log.error("tf-serving-dropin: failed to reload the model config; keeping the current one: %s", exc)

    def reload_config(self, models: list[ModelConfig]) -> None:
        """TF Serving's ServerCore::ReloadConfig: serve this model list from now on, and return once every model new
        to the list serves a version. Models left out are unloaded. A label must name a version that is serving
        (FAILED_PRECONDITION otherwise), unless allow_unavailable_labels; a new model that loads no version is
        UNKNOWN, as TF Serving answers, and stays configured (the poll keeps trying)."""
        with self._config_lock:
            self.check_labels(models)
            new = [m.name for m in models if m.name not in self.manager.model_names()]
            self.manager.set_models(models)
            self._poll()
        missing = self.manager.unavailable(new)
        if missing:
            raise CodedError("UNKNOWN", f"{len(missing)} model(s) did not become available: "
                                        f"{{{', '.join(missing)}}}")

    def check_labels(self, models: list[ModelConfig]) -> None:
        """TF Serving's UpdateModelVersionLabelMap: a label may only name a version that is available for inference
        (with --allow_version_labels_for_unavailable_models, any version, but a label already set keeps its own)."""
        for model in models:
            for label, version in model.labels.items():
                if self.manager.is_available(model.name, version):
                    continue
                current = self.manager.label_version(model.name, label)
                if self.allow_unavailable_labels and current in (None, version):
                    continue
                raise FailedPrecondition(f"Request to assign label to version {version} of model {model.name}, "
                                         "which is not currently available for inference")

    # -- predict ---------------------------------------------------------------------------
    def resolve(self, ref: ModelRef) -> tuple[Servable, Signature]:
        servable = self.manager.servable(ref.name, ref.version, ref.label)
        return servable, servable.signature(ref.signature)

    def predict(self, ref: ModelRef, inputs: dict[str, np.ndarray], output_filter: list[str] | None = None,
                deadline: float | None = None) -> tuple[Servable, dict[str, np.ndarray]]:
        """Run a signature; returns the servable that answered (for its version) and the outputs.

        `deadline` is a time.monotonic() value: the request's own (gRPC deadline or --rest_api_timeout_in_ms)."""
        with self._counting(ref, "predict"):
            return self.run_predict(ref, inputs, output_filter or [], deadline)

    async def predict_async(self, ref: ModelRef, inputs: dict[str, np.ndarray], output_filter: list[str] | None,
                            deadline: float | None, *,
                            run_blocking: RunBlocking) -> tuple[Servable, dict[str, np.ndarray]]:
        """predict() for a caller on an event loop: a request the batcher takes waits for its batch without holding a
        thread; any other runs on `run_blocking(function, *args)` (loop.run_in_executor with the caller's pool)."""
        output_filter = output_filter or []
        with self._counting(ref, "predict"):
            servable, signature, checked = self._checked(ref, inputs, output_filter)
            if not self._batches(signature, checked):
                outputs = await run_blocking(self._run_checked, ref, servable, signature, checked, output_filter,
                                             deadline)
                return servable, outputs
            try:
                outputs = await self.batcher.run_async(servable, ref.signature, checked, deadline)
            except InvalidArgument as exc:
                raise _with_shape_hint(signature, checked, exc) from None
            return servable, _filtered(outputs, output_filter)

    def run_predict(self, ref: ModelRef, inputs: dict[str, np.ndarray], output_filter: list[str],
                    deadline: float | None, servable: Servable | None = None) -> tuple[Servable, dict[str, np.ndarray]]:
        """predict() uncounted, on the servable `ref` names or on the one given (a version warming up)."""
        servable, signature, checked = self._checked(ref, inputs, output_filter, servable)
        return servable, self._run_checked(ref, servable, signature, checked, output_filter, deadline)

    def _run_checked(self, ref: ModelRef, servable: Servable, signature: Signature, checked: dict[str, np.ndarray],
                     output_filter: list[str], deadline: float | None) -> dict[str, np.ndarray]:
        """Run checked inputs, through the batcher when they batch; blocks until the outputs are there."""
        try:
            if self._batches(signature, checked):
                outputs = self.batcher.run(servable, ref.signature, checked, deadline)
            else:
                outputs = servable.run(ref.signature, checked, output_filter, deadline)
        except InvalidArgument as exc:
            raise _with_shape_hint(signature, checked, exc) from None
        return _filtered(outputs, output_filter)

    def _checked(self, ref: ModelRef, inputs: dict[str, np.ndarray], output_filter: list[str],
                 servable: Servable | None = None) -> tuple[Servable, Signature, dict[str, np.ndarray]]:
        """The servable and signature a predict runs, and its inputs, after TF Serving's checks."""
        if servable is None:
            servable, signature = self.resolve(ref)
        else:
            signature = servable.signature(ref.signature)
        checked = check_inputs(ref.signature, signature, inputs)
        _check_output_filter(output_filter, signature)
        return servable, signature, checked

    def _batches(self, signature: Signature, inputs: dict[str, np.ndarray]) -> bool:
        return self.batcher is not None and _batchable(signature, inputs)

    # -- classify, regress, multi-inference on serialized tf.Examples ----------------------
    def classify(self, ref: ModelRef, examples: list[bytes],
                 deadline: float | None = None) -> tuple[Servable, list[Classification]]:
        """Run a classification signature: one list of (label, score) per example."""
        task = InferenceTask(ref, CLASSIFY_METHOD)
        with self._counting(ref, "classify"):
            servable, (result,) = self.run_inference([task], examples, deadline)
        return servable, result.classifications

    def regress(self, ref: ModelRef, examples: list[bytes],
                deadline: float | None = None) -> tuple[Servable, list[float]]:
        """Run a regression signature: one value per example."""
        task = InferenceTask(ref, REGRESS_METHOD)
        with self._counting(ref, "regress"):
            servable, (result,) = self.run_inference([task], examples, deadline)
        return servable, result.regressions

    def multi_inference(self, tasks: list[InferenceTask], examples: list[bytes],
                        deadline: float | None = None) -> tuple[Servable, list[TaskResult]]:
        """Several classify/regress signatures of one model on the same examples (TF Serving's MultiInference):
        every task must name the same model, and no signature twice."""
        name = tasks[0].ref.name if tasks else ""
        with self._counting(ModelRef(name), "multi_inference"):
            return self.run_inference(tasks, examples, deadline)

    def run_inference(self, tasks: list[InferenceTask], examples: list[bytes], deadline: float | None,
                      servable: Servable | None = None) -> tuple[Servable, list[TaskResult]]:
        """Classify/regress/multi-inference uncounted, on the servable the tasks name or on the one given."""
        _check_tasks(tasks)
        if not examples:
            raise InvalidArgument("Input is empty.")
        if servable is None:
            servable = self.manager.servable(tasks[0].ref.name, tasks[0].ref.version, tasks[0].ref.label)
        plans = [(task, *self._example_signature(servable.signature(task.ref.signature), task.method_name))
                 for task in tasks]  # every task checked before any runs
        serialized = np.asarray(examples, dtype=object)
        results = []
        # One run per signature, as TF Serving's TFRT runtime does: a TF2 model gives each signature its own input
        # placeholder, which TF Serving's Session path (one run, one shared input tensor) would refuse.
        for task, key, fetches in plans:
            outputs = servable.run(task.ref.signature, {key: serialized}, fetches, deadline)
            if task.method_name == CLASSIFY_METHOD:
                results.append(TaskResult(task, classifications=classifications(outputs, len(examples))))
            else:
                results.append(TaskResult(task, regressions=regressions(outputs, len(examples))))
        return servable, results

    def _example_signature(self, signature: Signature, method: str) -> tuple[str, list[str]]:
        """TF Serving's PreProcessClassification / PreProcessRegression: the input key and the outputs to fetch."""
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        if self.method_name_check and signature.method_name != method:
            raise InvalidArgument(f"Expected {kind} signature method_name to be {method}. "
                                  f"Was: {signature.method_name}")
        if len(signature.inputs) != 1:
            raise InvalidArgument("Expected one input Tensor.")
        outputs = sorted(signature.outputs)
        if method == CLASSIFY_METHOD and len(outputs) not in (1, 2):
            raise InvalidArgument(f"Expected one or two output Tensors, found {len(outputs)}")
        if method == REGRESS_METHOD and len(outputs) != 1:
            raise InvalidArgument("Expected one output Tensor.")
        if EXAMPLES_INPUT not in signature.inputs:
            raise FailedPrecondition(f"No {kind} inputs found in SignatureDef: the input is "
                                     f"{sorted(signature.inputs)}, not '{EXAMPLES_INPUT}'")
        if method == REGRESS_METHOD:
            if REGRESS_OUTPUTS not in signature.outputs:
                raise FailedPrecondition(f"No regression outputs found in SignatureDef: the output is {outputs}, "
                                         f"not '{REGRESS_OUTPUTS}'")
            return EXAMPLES_INPUT, [REGRESS_OUTPUTS]
        wanted = [key for key in (CLASSES, SCORES) if key in signature.outputs]
        if not wanted:
            raise FailedPrecondition('Expected classification signature outputs to contain at least one of '
                                     f'"{CLASSES}" or "{SCORES}". Signature outputs: {outputs}')
        return EXAMPLES_INPUT, wanted

    # -- bookkeeping ----------------------------------------------------------------------
    @contextmanager
    def _counting(self, ref: ModelRef, api: str) -> Iterator[None]:
        """Count the request and its latency in the metrics under its outcome: OK, its error code, INTERNAL (a bug)
        or CANCELLED."""
        started = time.perf_counter()
        status = "OK"
        try:
            yield
        except ServingError as exc:
            status = exc.code
            raise
        except Exception:  # a bug: a failure, not an OK request
            status = "INTERNAL"
            raise
        except BaseException:  # the caller gave up: its event loop cancelled the request's task
            status = "CANCELLED"
            raise
        finally:
            self.metrics.observe(ref.name, api, status, time.perf_counter() - started)

    def metadata(self, ref: ModelRef) -> tuple[Servable, dict]:
        """The servable and its SignatureDef protos, as written in the model (TF Serving returns them all)."""
        servable = self.manager.servable(ref.name, ref.version, ref.label)
        return servable, servable.signature_defs()

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        if label is not None:
            version = self.manager.servable(name, None, label).version
        return self.manager.status(name, version)

    def metrics_text(self, version: str = "") -> str:
        return self.metrics.render(self.batcher.stats if self.batcher else None, version)


def _batchable(signature: Signature, inputs: dict[str, np.ndarray]) -> bool:
    """Whether requests can be concatenated along the batch dimension: each input fits a signature shape that is
    fixed but for a leading -1. Anything else runs on its own, and TensorFlow decides."""
    for key, array in inputs.items():
        shape = signature.inputs[key].shape
        if not shape or shape[0] != -1 or -1 in shape[1:] or not signature.inputs[key].accepts(array.shape):
            return False
    return True


def _filtered(outputs: dict[str, np.ndarray], output_filter: list[str]) -> dict[str, np.ndarray]:
    return {key: outputs[key] for key in output_filter} if output_filter else outputs


def _with_shape_hint(signature: Signature, inputs: dict[str, np.ndarray], exc: InvalidArgument) -> InvalidArgument:
    """TensorFlow's message, led by which input misfits the signature, if any."""
    hint = shape_hint(signature, inputs)
    return InvalidArgument(f"{hint}: {exc}" if hint else str(exc))


def _check_output_filter(wanted: list[str], signature: Signature) -> None:
    """TF Serving's predict_util checks on output_filter."""
    for index, key in enumerate(wanted):
        if key not in signature.outputs:
            raise InvalidArgument(f"output tensor alias not found in signature: {key} Outputs expected to be in the "
                                  f"set {{{','.join(sorted(signature.outputs))}}}.")
        if key in wanted[:index]:
            raise InvalidArgument(f"duplicate output tensor alias: {key}")


def _check_tasks(tasks: list[InferenceTask]) -> None:
    """TF Serving's MultiInference checks, in its order and words."""
    if not tasks:
        raise InvalidArgument("MultiInferenceRequest has no tasks")
    names, signatures = set(), set()
    for task in tasks:
        if not task.ref.name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        names.add(task.ref.name)
        if len(names) > 1:
            raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        if task.ref.signature in signatures:
            raise InvalidArgument(f"Duplicate evaluation of signature: {task.ref.signature}")
        signatures.add(task.ref.signature)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")


def _label(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def classifications(outputs: dict[str, np.ndarray], examples: int) -> list[Classification]:
    """TF Serving's PostProcessClassificationResult: 'classes' (DT_STRING) and/or 'scores' (DT_FLOAT), each
    [batch_size, num_classes]."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for key, array, kind in ((CLASSES, classes, "OSU"), (SCORES, scores, "f")):
        if array is None:
            continue
        if array.ndim != 2:
            raise InvalidArgument(f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)}")
        if array.dtype.kind not in kind or (key == SCORES and array.dtype != np.float32):
            raise InvalidArgument(f"Expected {key} Tensor of {'DT_STRING' if key == CLASSES else 'DT_FLOAT'}. "
                                  f"Got: {array.dtype}")
        if array.shape[0] != examples:
            raise InvalidArgument(f"Expected {key} output batch size of {examples}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                              f"{scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    return [[(_label(classes[row, column]) if classes is not None else "",
              float(scores[row, column]) if scores is not None else 0.0) for column in range(width)]
            for row in range(examples)]


def regressions(outputs: dict[str, np.ndarray], examples: int) -> list[float]:
    """TF Serving's PostProcessRegressionResult: 'outputs' (DT_FLOAT) shaped [batch_size] or [batch_size, 1]."""
    values = outputs[REGRESS_OUTPUTS]
    if values.dtype != np.float32:
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT. Got: {values.dtype}")
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                              f"{list(values.shape)}")
    if values.shape[0] != examples:
        raise InvalidArgument(f"Input batch size did not match output batch size: {examples} vs. {values.shape[0]}")
    return [float(value) for value in values.reshape(-1)]
