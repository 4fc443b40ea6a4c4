"""TF Serving's REST predict body, decoded into one float32 image batch.

Both servers speak this wire format so a load generator can send identical
bytes to each. This module depends on numpy and numeric_json only: it is
packed into the TorchServe archive beside the handler with numeric_json.py
(the drop-in's, so both servers turn JSON numbers into arrays with the same
code), so it must not import the project.

Accepted bodies (https://www.tensorflow.org/tfx/serving/api_rest):
  {"instances": [image, ...]}                    row format
  {"instances": [{"<input>": image}, ...]}       row format, named input
  {"inputs": [image, ...]}                       columnar format
  {"inputs": {"<input>": [image, ...]}}          columnar format, named input
each optionally with "signature_name". Answers are {"predictions": [...]}.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

try:  # inside the TorchServe archive it sits beside this file
    import numeric_json
except ImportError:  # in the repository: the drop-in's copy, the only one (the archive ships that file)
    from serving.tf.dropin import numeric_json

DEFAULT_SIGNATURE = "serving_default"


class PayloadError(ValueError):
    """The request body is not a valid predict request; maps to HTTP 400."""

    status = 400


def parse_json(body: Any, max_bytes: int) -> Any:
    """Bytes/str are parsed as JSON (size-checked first); already-decoded objects pass through."""
    if isinstance(body, (bytes, bytearray)):
        if len(body) > max_bytes:
            raise PayloadError(f"request body is {len(body)} bytes; the limit is {max_bytes}")
        request = numeric_json.loads_with_array(body, ("instances", "inputs"))  # the common body, images an ndarray
        if request is not None:
            return request
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("request body is not UTF-8 JSON") from None
    if isinstance(body, str):
        try:
            return json.loads(body, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise PayloadError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        # Valid JSON the decoder still refuses: nesting deeper than the interpreter's recursion limit, an integer
        # over Python's 4,300-digit conversion limit. Both are the client's doing, so a 400 and not a crash.
        except RecursionError:
            raise PayloadError("malformed JSON: nested too deeply") from None
        except PayloadError:  # NaN or Infinity, refused by _reject_constant with its own message
            raise
        except ValueError as exc:  # the advice after ";" is about the server's Python, not the request
            raise PayloadError(f"malformed JSON: {str(exc).split(';')[0]}") from None
    return body


def _reject_constant(name: str) -> float:
    raise PayloadError(f"non-finite number {name} in request")


def _instances_to_list(instances: Any, input_name: str) -> Any:
    if isinstance(instances, np.ndarray):  # from numeric_json: numbers only, no named instances
        return instances
    if not isinstance(instances, list):
        raise PayloadError('"instances" must be a list')
    if instances and all(isinstance(item, dict) for item in instances):
        if any(set(item) != {input_name} for item in instances):
            raise PayloadError(f'every named instance must have exactly the key "{input_name}"')
        return [item[input_name] for item in instances]
    return instances


def _inputs_to_list(inputs: Any, input_name: str) -> Any:
    if isinstance(inputs, dict):
        if set(inputs) != {input_name}:
            raise PayloadError(f'"inputs" must name exactly the input "{input_name}", got {sorted(inputs)}')
        return inputs[input_name]
    return inputs


def decode_images(request: Any, input_name: str, input_shape: tuple[int, ...], max_batch: int,
                  signature: str = DEFAULT_SIGNATURE) -> np.ndarray:
    """Validate a decoded predict request and return its images as float32 (N, *input_shape)."""
    if not isinstance(request, dict):
        raise PayloadError('request must be a JSON object with "instances" or "inputs"')
    wanted = request.get("signature_name", signature)
    if wanted != signature:
        raise PayloadError(f'unknown signature_name "{wanted}"; this model serves "{signature}"')
    unknown = set(request) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise PayloadError(f"unknown request keys {sorted(unknown)}")
    if ("instances" in request) == ("inputs" in request):
        raise PayloadError('request must have exactly one of "instances" (row) or "inputs" (columnar)')
    if "instances" in request:
        rows = _instances_to_list(request["instances"], input_name)
    else:
        rows = _inputs_to_list(request["inputs"], input_name)
    return to_image_batch(rows, input_shape, max_batch)


def to_image_batch(rows: Any, input_shape: tuple[int, ...], max_batch: int) -> np.ndarray:
    """Check a nested list is a finite numeric batch of images of `input_shape`."""
    if not isinstance(rows, (list, np.ndarray)):
        raise PayloadError("the batch must be a list of images")
    if not len(rows):
        raise PayloadError("empty batch: send at least one image")
    if len(rows) > max_batch:
        raise PayloadError(f"batch of {len(rows)} images is over the limit of {max_batch}")
    try:
        array, booleans = numeric_json.numeric_array(rows)
    except (ValueError, TypeError, OverflowError, RecursionError):  # ragged, too deep, or not numbers at all
        raise PayloadError("images must be rectangular nested lists of numbers") from None
    if array.dtype == object or array.dtype.kind not in "iuf":
        raise PayloadError(f"images must be numbers, got {_kind_name(array)}")
    if booleans:
        raise PayloadError("images must be numbers, got booleans among them")
    expected = (len(rows), *input_shape)
    if array.shape != expected:
        raise PayloadError(f"images have shape {list(array.shape)}; expected {list(expected)} "
                           "(batch, height, width, channels)")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise PayloadError("images contain NaN or infinite values")
    return array


def _kind_name(array: np.ndarray) -> str:
    names = {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or nested values"}
    return names.get(array.dtype.kind, str(array.dtype))


def encode_predictions(probabilities: np.ndarray) -> dict[str, list]:
    """The REST answer for a batch of probability rows."""
    return {"predictions": [[float(p) if math.isfinite(p) else None for p in row] for row in probabilities]}


def encode_instances(images: np.ndarray) -> bytes:
    """A row-format predict body for a float32 image batch (what the clients send).

    Each float32 widens exactly to a Python float whose repr JSON writes, so a
    server that parses and narrows back to float32 gets the very same values.
    """
    return json.dumps({"instances": np.asarray(images, dtype=np.float32).tolist()}).encode("utf-8")
