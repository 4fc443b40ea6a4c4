"""Loaders: turn one version directory into a servable with typed signatures.

A servable runs a SavedModel signature through TensorFlow, or, with
--prefer_tflite_model and a model.tflite in the version directory, through
the TFLite (LiteRT) interpreter.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.tf.dropin.errors import InvalidArgument

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
TFLITE_FILE = "model.tflite"
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorInfo:
    """One named signature input or output: its tensor name, numpy dtype and shape (-1 = any)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...] | None  # None: unknown rank


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = PREDICT_METHOD


def check_inputs(signature_name: str, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast and check request tensors against a signature; InvalidArgument says what is wrong."""
    missing = sorted(set(signature.inputs) - set(inputs))
    extra = sorted(set(inputs) - set(signature.inputs))
    if missing or extra:
        raise InvalidArgument(f"signature '{signature_name}' expects inputs {sorted(signature.inputs)}; "
                              f"missing {missing}, unexpected {extra}")
    checked = {}
    for key, info in signature.inputs.items():
        array = np.asarray(inputs[key])
        if array.dtype != info.dtype:
            if not np.can_cast(array.dtype, info.dtype, casting="same_kind") and array.dtype.kind not in "iub":
                raise InvalidArgument(f"input '{key}' has dtype {array.dtype}; expected {info.dtype}")
            array = array.astype(info.dtype)
        if info.shape is not None:
            if array.ndim != len(info.shape) or any(d != -1 and d != a for d, a in zip(info.shape, array.shape,
                                                                                       strict=True)):
                raise InvalidArgument(f"input '{key}' has shape {list(array.shape)}; expected {list(info.shape)} "
                                      "(-1 is any size)")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidArgument(f"input '{key}' contains NaN or infinite values")
        if array.ndim and array.shape[0] == 0:
            raise InvalidArgument(f"input '{key}' is an empty batch")
        checked[key] = array
    return checked


class Servable:
    """One loaded model version. run() is safe to call from many threads."""

    platform = "abstract"

    def __init__(self, name: str, version: int, path: Path, signatures: dict[str, Signature]) -> None:
        self.name, self.version, self.path, self.signatures = name, version, path, signatures

    def signature(self, signature_name: str) -> Signature:
        if signature_name not in self.signatures:
            raise InvalidArgument(f"Serving signature name: \"{signature_name}\" not found in signature def; "
                                  f"available: {sorted(self.signatures)}")
        return self.signatures[signature_name]

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _info_from_spec(spec) -> TensorInfo:
    shape = None if spec.shape.rank is None else tuple(-1 if d is None else int(d) for d in spec.shape.as_list())
    return TensorInfo(spec.name or "", np.dtype(spec.dtype.as_numpy_dtype), shape)


class SavedModelServable(Servable):
    platform = "tensorflow"

    def __init__(self, name: str, version: int, path: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))
        self._functions = dict(self._loaded.signatures)
        signatures = {}
        for key, function in self._functions.items():
            inputs = {k: _info_from_spec(s) for k, s in function.structured_input_signature[1].items()}
            outputs = {k: _info_from_spec(s) for k, s in function.structured_outputs.items()}
            signatures[key] = Signature(inputs, outputs, _method_name(path, key))
        super().__init__(name, version, path, signatures)

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        function = self._functions[signature_name]
        outputs = function(**{k: self._tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}


def _method_name(path: Path, signature_name: str) -> str:
    """The SignatureDef's method_name from saved_model.pb (TF's loader does not expose it)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in proto.meta_graphs:
        if signature_name in meta_graph.signature_def:
            return meta_graph.signature_def[signature_name].method_name or PREDICT_METHOD
    return PREDICT_METHOD


class TFLiteServable(Servable):
    """model.tflite through the LiteRT interpreter (one interpreter, serialised by a lock).

    A model without a SignatureDef (TF Serving's own testdata has one) is served, as TF Serving
    serves it, under "serving_default" with its input and output tensors keyed by tensor name.
    """

    platform = "tflite"

    def __init__(self, name: str, version: int, path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path / TFLITE_FILE), num_threads=threads)
        self._lock = threading.Lock()
        signatures = {}
        for key in self._interpreter.get_signature_list():
            runner = self._interpreter.get_signature_runner(key)
            inputs = {k: _info_from_details(d) for k, d in runner.get_input_details().items()}
            outputs = {k: _info_from_details(d) for k, d in runner.get_output_details().items()}
            signatures[key] = Signature(inputs, outputs)
        self._by_tensor_name = not signatures
        if self._by_tensor_name:
            signatures[DEFAULT_SIGNATURE] = Signature(
                {d["name"]: _info_from_details(d) for d in self._interpreter.get_input_details()},
                {d["name"]: _info_from_details(d) for d in self._interpreter.get_output_details()})
        super().__init__(name, version, path, signatures)

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._by_tensor_name:
                return self._run_tensors(inputs)
            runner = self._interpreter.get_signature_runner(signature_name)
            return {k: np.array(v) for k, v in runner(**inputs).items()}

    def _run_tensors(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Resize, feed and invoke by tensor index: the interpreter's API for a model without signatures."""
        interpreter = self._interpreter
        details = interpreter.get_input_details()
        for detail in details:
            interpreter.resize_tensor_input(detail["index"], inputs[detail["name"]].shape, strict=False)
        interpreter.allocate_tensors()
        for detail in details:
            interpreter.set_tensor(detail["index"], inputs[detail["name"]])
        interpreter.invoke()
        return {d["name"]: np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()}


def _info_from_details(details: dict) -> TensorInfo:
    shape = tuple(int(d) for d in details.get("shape_signature", details["shape"]))
    return TensorInfo(details.get("name", ""), np.dtype(details["dtype"]), shape)


def load_servable(name: str, version: int, path: Path, prefer_tflite: bool = False) -> Servable:
    """Load a version directory; raises on any failure (the manager keeps the serving version)."""
    if prefer_tflite and (path / TFLITE_FILE).is_file():
        return TFLiteServable(name, version, path)
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{path} has no saved_model.pb" + (" or model.tflite" if prefer_tflite else ""))
    return SavedModelServable(name, version, path)
