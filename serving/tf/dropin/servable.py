"""Loaders: turn one version directory into a servable with typed signatures.

A SavedModel is loaded as TF Serving loads it: its MetaGraphDef (tag "serve")
imported into a TensorFlow session, its SignatureDefs read from the graph as
written, and each request fed to the signature's tensors by name. So any
SavedModel runs (TF1 graphs, tf.saved_model.save, Keras exports), and a tensor
whose shape differs from the declared one reaches TensorFlow, which decides,
as in TF Serving. With --prefer_tflite_model and a model.tflite in the
version directory, the TFLite (LiteRT) interpreter runs it instead.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.tf.dropin.errors import DeadlineExceeded, InvalidArgument, from_tensorflow

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

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a tensor of `shape` fits the declared shape."""
        return self.shape is None or (len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)))


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = PREDICT_METHOD


@dataclass(frozen=True)
class LoadOptions:
    """How versions are loaded: TF Serving's --saved_model_tags, thread pools and --prefer_tflite_model."""

    prefer_tflite: bool = False
    tags: tuple[str, ...] = ("serve",)
    intra_op_threads: int = 0  # 0: TensorFlow sizes its pools itself
    inter_op_threads: int = 0
    tflite_threads: int = 1
    warmup: bool = True  # replay assets.extra/tf_serving_warmup_requests before serving (--enable_model_warmup)
    warmup_iterations: int = 1  # times each warm-up record runs (--num_request_iterations_for_warmup)


DEFAULT_LOAD = LoadOptions()


def check_inputs(signature_name: str, signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What TF Serving checks before running a signature: the input aliases. Shapes are TensorFlow's to judge, and
    NaN or infinite values run, as on TF Serving."""
    if set(inputs) != set(signature.inputs):
        sent, wanted = sorted(inputs), sorted(signature.inputs)
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sent)}}}) != "
            f"len({{{','.join(wanted)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(wanted)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(wanted) - set(sent)))}}}. "
            f"(signature '{signature_name}')")
    return {key: np.asarray(value) for key, value in inputs.items()}


def shape_hint(signature: Signature, inputs: dict[str, np.ndarray]) -> str:
    """Which inputs do not fit their declared shape, to put before TensorFlow's own (terser) message."""
    misfits = [f"input '{key}' has shape {list(np.shape(value))}; expected {list(signature.inputs[key].shape)} "
               "(-1 is any size)" for key, value in inputs.items()
               if key in signature.inputs and not signature.inputs[key].accepts(np.shape(value))]
    return "; ".join(misfits)


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

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
            deadline: float | None = None) -> dict[str, np.ndarray]:
        """The signature's outputs (all, or those named) for `inputs`; `deadline` is a time.monotonic() value."""
        raise NotImplementedError

    def signature_defs(self) -> dict:
        """SignatureDef protos keyed by signature name, for model metadata."""
        return {key: build_signature_def(signature) for key, signature in self.signatures.items()}


def remaining_ms(deadline: float | None) -> int:
    """Milliseconds left before `deadline`; DeadlineExceeded once it has passed (0: no deadline)."""
    if deadline is None:
        return 0
    left = int((deadline - time.monotonic()) * 1000)
    if left <= 0:
        raise DeadlineExceeded("Deadline exceeded before the model ran")
    return left


class SavedModelServable(Servable):
    platform = "tensorflow"

    def __init__(self, name: str, version: int, path: Path, options: LoadOptions = DEFAULT_LOAD) -> None:
        import tensorflow as tf
        from tensorflow.python.client import pywrap_tf_session

        self._tf, self._tf_session = tf, pywrap_tf_session
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=options.intra_op_threads,
                                          inter_op_parallelism_threads=options.inter_op_threads)
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph, config=config)
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self._session, list(options.tags), str(path))
        self._defs = dict(meta_graph.signature_def)
        self._port_cache: dict[tuple, tuple] = {}
        signatures = {key: _signature_from_def(definition) for key, definition in self._defs.items()}
        super().__init__(name, version, path, signatures)

    def signature_defs(self) -> dict:
        return self._defs

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
            deadline: float | None = None) -> dict[str, np.ndarray]:
        definition, signature = self._defs[signature_name], self.signatures[signature_name]
        fetches = list(outputs) if outputs else sorted(definition.outputs)
        feed_ports, fetch_ports = self._ports(signature_name, tuple(sorted(inputs)), tuple(fetches))
        feeds = {port: np.asarray(inputs[key], signature.inputs[key].dtype) for key, port in feed_ports.items()}
        timeout = remaining_ms(deadline)
        options = self._tf_session.TF_NewBufferFromString(
            self._tf.compat.v1.RunOptions(timeout_in_ms=timeout).SerializeToString()) if timeout else None
        try:
            # Session.run() would refuse a feed whose shape differs from the placeholder's; TF Serving's
            # Session::Run leaves that to the graph's ops, so the drop-in calls the runner under run() too.
            values = self._session._call_tf_sessionrun(options, feeds, fetch_ports, [], None)
        except self._tf.errors.OpError as exc:  # TensorFlow's verdict on the request, with its own code
            raise from_tensorflow(exc) from None
        finally:
            if options is not None:
                self._tf_session.TF_DeleteBuffer(options)
        return dict(zip(fetches, values, strict=True))

    def _ports(self, signature_name: str, feeds: tuple[str, ...], fetches: tuple[str, ...]):
        """The graph outputs of the signature's input and output tensors, looked up once per combination."""
        key = (signature_name, feeds, fetches)
        found = self._port_cache.get(key)
        if found is None:
            definition, graph = self._defs[signature_name], self._session.graph
            try:
                found = ({k: graph.get_tensor_by_name(definition.inputs[k].name)._as_tf_output() for k in feeds},
                         [graph.get_tensor_by_name(definition.outputs[k].name)._as_tf_output() for k in fetches])
            except (KeyError, ValueError) as exc:  # e.g. an output that is an operation, not a tensor
                raise InvalidArgument(f"signature '{signature_name}' cannot be run: {exc}") from None
            self._port_cache[key] = found
        return found


def _signature_from_def(definition) -> Signature:
    return Signature({key: _info_from_proto(info) for key, info in definition.inputs.items()},
                     {key: _info_from_proto(info) for key, info in definition.outputs.items()},
                     definition.method_name or PREDICT_METHOD)


def _info_from_proto(info) -> TensorInfo:
    import tensorflow as tf

    shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
    try:
        dtype = np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
    except TypeError:  # DT_INVALID: an op, not a tensor (TF2's __saved_model_init_op signature)
        dtype = np.dtype(object)
    return TensorInfo(info.name, dtype, shape)


def build_signature_def(signature: Signature):
    """A SignatureDef proto for a signature the drop-in built itself (TFLite)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    definition = meta_graph_pb2.SignatureDef(method_name=signature.method_name)
    for target, infos in ((definition.inputs, signature.inputs), (definition.outputs, signature.outputs)):
        for key, info in infos.items():
            proto = target[key]
            proto.name = info.name
            proto.dtype = tf.as_dtype(info.dtype).as_datatype_enum
            if info.shape is None:
                proto.tensor_shape.unknown_rank = True
            for size in info.shape or ():
                proto.tensor_shape.dim.add(size=size)
    return definition


class TFLiteServable(Servable):
    """model.tflite through the LiteRT interpreter (one interpreter, serialised by a lock).

    A model without a SignatureDef (TF Serving's own testdata has one) is served, as TF Serving
    serves it, under "serving_default" with its input and output tensors keyed by tensor name.
    """

    platform = "tflite"

    def __init__(self, name: str, version: int, path: Path, options: LoadOptions = DEFAULT_LOAD) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path / TFLITE_FILE), num_threads=options.tflite_threads)
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

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
            deadline: float | None = None) -> dict[str, np.ndarray]:
        remaining_ms(deadline)
        typed = {key: np.asarray(value, self.signatures[signature_name].inputs[key].dtype)
                 for key, value in inputs.items()}
        with self._lock:
            try:
                if self._by_tensor_name:
                    result = self._run_tensors(typed)
                else:
                    runner = self._interpreter.get_signature_runner(signature_name)
                    result = {k: np.array(v) for k, v in runner(**typed).items()}
            except ValueError as exc:  # the interpreter's word on shapes it cannot take
                raise InvalidArgument(str(exc)) from None
        return {key: result[key] for key in outputs} if outputs else result

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


def load_servable(name: str, version: int, path: Path, options: LoadOptions = DEFAULT_LOAD) -> Servable:
    """Load a version directory; raises on any failure (the manager keeps the serving version)."""
    if options.prefer_tflite and (path / TFLITE_FILE).is_file():
        return TFLiteServable(name, version, path, options)
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{path} has no saved_model.pb" + (" or model.tflite" if options.prefer_tflite else ""))
    return SavedModelServable(name, version, path, options)
