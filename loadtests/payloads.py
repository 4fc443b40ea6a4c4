"""Request bodies for every target, serialised once before a run, and the answers they must get.

`prepare` (in the orchestrator, where TensorFlow and the TorchServe stubs can
be imported) writes one payload file: for each of N batches of test images,
the TF Serving REST body (which TorchServe's handler also reads), the TF
Serving gRPC PredictRequest and the TorchServe gRPC PredictionsRequest as
wire bytes, plus the reference model's argmax for every image. It also carries
the protobuf descriptors of the two gRPC response messages, taken from the
installed packages, so a locust process can check gRPC answers with nothing
but `protobuf` installed (no TensorFlow in the generator, none in its image).

The file is an .npz of plain arrays (no pickles): variable-length bytes are
stored concatenated with offsets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.paths import ArtifactPaths
from common.reference import load_reference
from common.targets import BODIES, target_named
from common.tensors import decode_float_tensor

TF_RESPONSE = "tensorflow.serving.PredictResponse"
TF_OUTPUT = "probabilities"


def _pack(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0] + [len(chunk) for chunk in chunks]).astype(np.int64)
    return np.frombuffer(b"".join(chunks), dtype=np.uint8), offsets


def _descriptor_set(*modules: Any) -> bytes:
    """A FileDescriptorSet with the given generated modules' .proto files and all they import."""
    from google.protobuf import descriptor_pb2

    files: dict[str, Any] = {}

    def add(file_descriptor: Any) -> None:
        if file_descriptor.name in files:
            return
        for dependency in file_descriptor.dependencies:
            add(dependency)
        files[file_descriptor.name] = file_descriptor

    for module in modules:
        add(module.DESCRIPTOR)
    out = descriptor_pb2.FileDescriptorSet()
    for file_descriptor in files.values():  # dependencies first, as a pool wants them
        file_descriptor.CopyToProto(out.file.add())
    return out.SerializeToString()


def _tf_request(model: str, batch: np.ndarray) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    from serving.clients import encode_tensor
    from serving.rest_codec import DEFAULT_SIGNATURE

    request = predict_pb2.PredictRequest(inputs={"images": encode_tensor(batch)}, output_filter=[TF_OUTPUT])
    request.model_spec.name = model
    request.model_spec.signature_name = DEFAULT_SIGNATURE
    return request.SerializeToString()


def prepare(paths: ArtifactPaths, model: str, batch_size: int, out_file: Path, count: int = 32) -> Path:
    """Write the payload file for `count` batches of `batch_size` test images (cycling through the test set).

    The expected answers are export's reference answers (common/reference.py): nothing is rebuilt here.
    """
    from tensorflow_serving.apis import predict_pb2

    from model.checkpoint import load_checkpoint
    from serving.rest_codec import encode_instances
    from serving.torch.protos import ensure_stubs

    checkpoint = load_checkpoint(paths.checkpoint_dir(model))
    answers = load_reference(paths, model)
    images, reference = answers.images, answers.expected_classes
    torch_stubs = ensure_stubs()
    rest, tf_grpc, torch_grpc, expected = [], [], [], []
    for index in range(count):
        rows = np.arange(index * batch_size, (index + 1) * batch_size) % len(images)
        body = encode_instances(images[rows])
        rest.append(body)
        tf_grpc.append(_tf_request(model, images[rows]))
        torch_grpc.append(torch_stubs.inference_pb2.PredictionsRequest(
            model_name=model, input={"body": body}).SerializeToString())
        expected.append(reference[rows])
    meta = {"model": model, "profile": checkpoint.spec.profile, "batch_size": batch_size, "count": count,
            "multiply_accumulates": checkpoint.spec.multiply_accumulates(),
            "tf_response": TF_RESPONSE, "tf_output": TF_OUTPUT,
            "torch_response": torch_stubs.inference_pb2.PredictionResponse.DESCRIPTOR.full_name}
    arrays = {"expected": np.asarray(expected, dtype=np.int16),
              "descriptors": np.frombuffer(_descriptor_set(predict_pb2, torch_stubs.inference_pb2), dtype=np.uint8),
              "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    for name, chunks in (("rest", rest), ("tf_grpc", tf_grpc), ("torch_grpc", torch_grpc)):
        arrays[f"{name}_bytes"], arrays[f"{name}_offsets"] = _pack(chunks)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "wb") as handle:  # np.savez on a path would append .npz to any other suffix
        np.savez(handle, **arrays)
    return out_file


@dataclass
class Payloads:
    """A payload file, loaded: bodies by target and index, and a checker for the answers."""

    meta: dict
    bodies: dict[str, list[bytes]]
    expected: np.ndarray  # [count, batch_size] reference argmax
    _classes: dict[str, Any]

    @property
    def count(self) -> int:
        return len(self.expected)

    def body(self, target: str, index: int) -> bytes:
        return self.bodies[target_named(target).body][index % self.count]

    def predicted_classes(self, target: str, answer: bytes) -> np.ndarray:
        """The argmax per image in a server's answer (raises ValueError if it has no predictions)."""
        body = target_named(target).body
        if body == "tf_grpc":
            response = self._classes[self.meta["tf_response"]].FromString(answer)
            return decode_float_tensor(response.outputs[self.meta["tf_output"]]).argmax(-1)
        if body == "torch_grpc":
            answer = self._classes[self.meta["torch_response"]].FromString(answer).prediction
        decoded = json.loads(answer)
        if not isinstance(decoded, dict) or "predictions" not in decoded:
            raise ValueError(f"no predictions in the answer: {str(decoded)[:200]}")
        return np.asarray(decoded["predictions"], dtype=np.float32).argmax(-1)


def load(path: Path | str) -> Payloads:
    """Read a payload file written by prepare (no pickles are allowed in it)."""
    from google.protobuf import descriptor_pb2, message_factory

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes())
        bodies = {}
        for name in BODIES:
            blob, offsets = data[f"{name}_bytes"].tobytes(), data[f"{name}_offsets"]
            bodies[name] = [blob[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]
        expected = data["expected"].astype(np.int64)
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(data["descriptors"].tobytes())
    classes = message_factory.GetMessages(list(descriptor_set.file))
    return Payloads(meta, bodies, expected, classes)
