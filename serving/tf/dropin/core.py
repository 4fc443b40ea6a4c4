"""What both front ends call: predict, classify, regress, metadata and status, protocol-free.

Front ends decode their wire format into numpy arrays, call these methods and
encode the answer; errors are the exceptions in errors.py.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass

import numpy as np

from serving.tf.dropin.batching import Batcher
from serving.tf.dropin.config import BatchingParameters, ModelConfig
from serving.tf.dropin.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, ServingError
from serving.tf.dropin.manager import ModelManager, VersionStatus
from serving.tf.dropin.metrics import Metrics
from serving.tf.dropin.servable import CLASSIFY_METHOD, REGRESS_METHOD, Servable, Signature, check_inputs

DEFAULT_SIGNATURE = "serving_default"


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


class DropInCore:
    def __init__(self, models: list[ModelConfig], prefer_tflite: bool = False,
                 batching: BatchingParameters | None = None, request_timeout_s: float | None = None) -> None:
        self.manager = ModelManager(models, prefer_tflite)
        self.batcher = Batcher(batching) if batching else None
        self.metrics = Metrics()
        self.request_timeout_s = request_timeout_s
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def poll(self) -> None:
        before = self._loaded_servables()
        self.manager.poll()
        if self.batcher:
            for servable in before - self._loaded_servables():
                self.batcher.forget(servable)

    def _loaded_servables(self) -> set[Servable]:
        return {s for versions in self.manager._loaded.values() for s in versions.values()}

    def start_polling(self, seconds: float, reload_models=None, reload_seconds: float = 0) -> None:
        """Poll version directories every `seconds` (0: load once, as TF Serving does)."""

        def loop() -> None:
            last_reload = time.monotonic()
            while not self._stop.wait(seconds):
                if reload_models and reload_seconds and time.monotonic() - last_reload >= reload_seconds:
                    self.manager.set_models(reload_models())
                    last_reload = time.monotonic()
                self.poll()

        self.poll()
        if seconds > 0:
            self._poller = threading.Thread(target=loop, daemon=True, name="version-poller")
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()

    # -- requests --------------------------------------------------------------------------
    def resolve(self, ref: ModelRef) -> tuple[Servable, Signature]:
        servable = self.manager.servable(ref.name, ref.version, ref.label)
        return servable, servable.signature(ref.signature)

    def predict(self, ref: ModelRef, inputs: dict[str, np.ndarray]) -> tuple[Servable, dict[str, np.ndarray]]:
        """Run a signature; returns the servable that answered (for its version) and the outputs."""
        return self._timed(ref, "predict", lambda: self._run(ref, inputs))

    def classify(self, ref: ModelRef, examples: list[bytes]) -> tuple[Servable, dict[str, np.ndarray]]:
        """Run a classify signature on serialized tf.Examples: outputs 'classes' and/or 'scores'."""
        return self._timed(ref, "classify", lambda: self._run_examples(ref, examples, CLASSIFY_METHOD))

    def regress(self, ref: ModelRef, examples: list[bytes]) -> tuple[Servable, dict[str, np.ndarray]]:
        """Run a regress signature on serialized tf.Examples: output 'outputs'."""
        return self._timed(ref, "regress", lambda: self._run_examples(ref, examples, REGRESS_METHOD))

    def _run(self, ref: ModelRef, inputs: dict[str, np.ndarray]) -> tuple[Servable, dict[str, np.ndarray]]:
        servable, signature = self.resolve(ref)
        checked = check_inputs(ref.signature, signature, inputs)
        if self.batcher and all(info.shape and info.shape[0] == -1 for info in signature.inputs.values()):
            try:
                return servable, self.batcher.run(servable, ref.signature, checked, self.request_timeout_s)
            except concurrent.futures.TimeoutError:
                raise DeadlineExceeded("request timed out waiting for its batch") from None
        return servable, servable.run(ref.signature, checked)

    def _run_examples(self, ref: ModelRef, examples: list[bytes], method: str):
        servable, signature = self.resolve(ref)
        if signature.method_name != method:
            kind = "classification" if method == CLASSIFY_METHOD else "regression"
            raise FailedPrecondition(f"Expected {kind} signature method_name to be {method}. "
                                     f"Was: {signature.method_name}")
        if len(signature.inputs) != 1:
            raise InvalidArgument(f"Expected one input Tensor, signature has {len(signature.inputs)}")
        (key,) = signature.inputs
        return servable, servable.run(ref.signature, {key: np.asarray(examples, dtype=object)})

    def _timed(self, ref: ModelRef, api: str, call):
        started = time.perf_counter()
        status = "OK"
        try:
            return call()
        except ServingError as exc:
            status = exc.grpc_code
            raise
        except Exception:  # e.g. a TensorFlow runtime error: a failure, not an OK request
            status = "INTERNAL"
            raise
        finally:
            self.metrics.observe(ref.name, api, status, time.perf_counter() - started)

    def metadata(self, ref: ModelRef) -> tuple[Servable, dict[str, Signature]]:
        servable = self.manager.servable(ref.name, ref.version, ref.label)
        return servable, servable.signatures

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        if label is not None:
            version = self.manager.servable(name, None, label).version
        return self.manager.status(name, version)

    def metrics_text(self, version: str = "") -> str:
        return self.metrics.render(self.batcher.stats if self.batcher else None, version)
