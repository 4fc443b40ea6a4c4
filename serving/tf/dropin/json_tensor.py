"""TF Serving's JSON <-> tensor codec (its json_tensor.cc), for the REST front end.

Requests: the row ("instances") and columnar ("inputs") formats, read against the
signature's TensorInfo so that JSON numbers become the input's dtype, strings
and {"b64": ...} become DT_STRING bytes, and tf.Examples are built for
classify/regress. Responses: "predictions" / "outputs", written by orjson
straight from numpy arrays. Bodies are only ever parsed as JSON: nothing is
evaluated or unpickled.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np
import orjson

from serving.tf.dropin import numeric_json
from serving.tf.dropin.errors import InvalidArgument
from serving.tf.dropin.numeric_json import numeric_array
from serving.tf.dropin.servable import TensorInfo

_INT64 = np.iinfo(np.int64)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# numpy dtypes orjson writes itself (OPT_SERIALIZE_NUMPY); others go through .tolist()
_ORJSON_NUMPY = {np.dtype(t) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
                                        np.uint64, np.uint32, np.uint16, np.uint8, np.bool_)}

_DT_NAMES = {
    np.dtype(np.float32): "DT_FLOAT", np.dtype(np.float64): "DT_DOUBLE", np.dtype(np.float16): "DT_HALF",
    np.dtype(np.int8): "DT_INT8", np.dtype(np.int16): "DT_INT16", np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int64): "DT_INT64", np.dtype(np.uint8): "DT_UINT8", np.dtype(np.uint16): "DT_UINT16",
    np.dtype(np.uint32): "DT_UINT32", np.dtype(np.uint64): "DT_UINT64", np.dtype(np.bool_): "DT_BOOL",
    np.dtype(object): "DT_STRING", np.dtype(np.complex64): "DT_COMPLEX64", np.dtype(np.complex128): "DT_COMPLEX128",
}


def dumps(payload: Any) -> bytes:
    """JSON bytes; numpy arrays inside are written by orjson directly (no .tolist())."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


# -- request bodies ---------------------------------------------------------------------------------------------------

def parse_request_body(body: bytes) -> dict:
    """The body as a JSON object. A body that is one array of numbers under "instances" or "inputs" comes back with
    that array already an ndarray (numeric_json); any other goes to orjson (fast, strict), and what orjson refuses
    to the standard library, which, as TF Serving's parser (rapidjson with kParseNanAndInfFlag), also reads NaN,
    Infinity and -Infinity, refuses a number too big for a double (1e999), and words its errors."""
    if not body.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    request = numeric_json.loads_with_array(body, ("instances", "inputs"))  # the common body, its tensor an ndarray
    if request is not None:
        return request
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        request = _parse_leniently(body)
    if not isinstance(request, dict):
        raise InvalidArgument("JSON Value: the request body is not an object")
    return request


def _finite_double(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # Python reads 1e999 as infinity; rapidjson refuses it
        raise InvalidArgument(f"JSON Parse error: Number too big to be stored in double: {text[:40]}")
    return value


def _parse_leniently(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=_finite_double)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"JSON Parse error: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InvalidArgument(f"JSON Parse error: {type(exc).__name__}: {exc}") from None


def signature_name(request: dict) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument("'signature_name' key must be a string")
    return name


def predict_inputs(request: dict, infos: dict[str, TensorInfo]) -> tuple[dict[str, np.ndarray], bool]:
    """A :predict body's tensors, and whether it was in row format (the answer is then row format too)."""
    if "instances" in request and "inputs" in request:
        raise InvalidArgument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in request:
        return decode_instances(request["instances"], infos), True
    if "inputs" in request:
        return decode_columnar(request["inputs"], infos), False
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _is_named(value: Any) -> bool:
    """A row-format instance keyed by input name (a {"b64": ...} object is a value, not a name)."""
    return isinstance(value, dict) and not _is_b64(value)


def decode_instances(instances: Any, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    """Row format: one list entry per example, either a value (one input) or an object keyed by input name."""
    if not isinstance(instances, (list, np.ndarray)):
        raise InvalidArgument("Excepting 'instances' to be an list/array")
    if not len(instances):
        raise InvalidArgument("No values in 'instances' array")
    if not infos:
        raise InvalidArgument("Failed to get input map for signature")
    if not _is_named(instances[0]):
        if len(infos) > 1:
            raise InvalidArgument("instances is a plain list, but expecting list of objects as multiple input tensors "
                                  f"required as per tensorinfo_map: {sorted(infos)}")
        for index, item in enumerate(instances if isinstance(instances, list) else ()):  # an ndarray: numbers only
            if _is_named(item):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
        ((key, info),) = infos.items()
        return {key: to_array(instances, info, key)}
    columns: dict[str, list] = {key: [] for key in infos}
    for index, item in enumerate(instances):
        if not _is_named(item):
            raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
        if set(item) != set(infos):
            raise InvalidArgument(f"Failed to process element: {index} of 'instances' list. JSON object has keys "
                                  f"{sorted(item)} but must only have keys: {','.join(sorted(infos))}")
        for key in infos:
            columns[key].append(item[key])
    return {key: to_array(values, infos[key], key) for key, values in columns.items()}


def decode_columnar(inputs: Any, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    """Columnar format: one value (one input) or an object of whole tensors keyed by input name."""
    if not infos:
        raise InvalidArgument("Failed to get input map for signature")
    if not _is_named(inputs):
        if len(infos) > 1:
            raise InvalidArgument("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                  f"required as per tensorinfo_map: {sorted(infos)}")
        ((key, info),) = infos.items()
        return {key: to_array(inputs, info, key)}
    unknown = sorted(set(inputs) - set(infos))
    if unknown:
        raise InvalidArgument(f"Unknown named input(s) {unknown} in 'inputs' object; the signature has {sorted(infos)}")
    for key in infos:
        if key not in inputs:
            raise InvalidArgument(f"Missing named input: {key} in 'inputs' object.")
    return {key: to_array(inputs[key], info, key) for key, info in infos.items()}


def to_array(value: Any, info: TensorInfo, name: str) -> np.ndarray:
    """A JSON value as an array of the input's dtype; wrong JSON types and ragged lists are InvalidArgument.

    numpy infers the JSON's own type first (fast, in C), then the inferred kind is checked against the signature,
    so "1.5" never becomes a float and 1.5 never silently becomes an int."""
    kind = info.dtype.kind
    if kind in "OSU":
        return _string_array(value.tolist() if isinstance(value, np.ndarray) else value, name)
    try:
        array, booleans = numeric_array(value)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"input '{name}' is not a rectangular array of numbers (ragged lists, or lists mixed "
                              f"with scalars): {exc}") from None
    got = array.dtype.kind
    if booleans and kind != "b":  # numpy reads true as 1.0 beside numbers; TF Serving wants IsNumber() for these
        raise InvalidArgument(f"input '{name}' expects {_dt_name(info.dtype)} values but the JSON holds booleans")
    if kind == "b":
        ok = got == "b"
    elif kind in "iu":
        ok = got in "iu" and _fits(array, info.dtype)
    elif kind in "fc" or info.dtype.name == "bfloat16":
        ok = got in "iuf"
    else:
        raise InvalidArgument(f"input '{name}' has dtype {info.dtype}, which the REST API cannot fill from JSON")
    if not ok:
        raise InvalidArgument(f"input '{name}' expects {_dt_name(info.dtype)} values but the JSON holds "
                              f"{_json_kind(array)}")
    return array.astype(info.dtype, copy=False)


def _fits(array: np.ndarray, dtype: np.dtype) -> bool:
    if array.size == 0:
        return True
    bounds = np.iinfo(dtype)
    return bool(array.min() >= bounds.min and array.max() <= bounds.max)


def _json_kind(array: np.ndarray) -> str:
    names = {"b": "booleans", "U": "strings", "O": "mixed, null or object values", "f": "non-integer numbers",
             "i": "integers out of range", "u": "integers out of range"}
    return names.get(array.dtype.kind, str(array.dtype))


def _string_array(value: Any, name: str) -> np.ndarray:
    """DT_STRING: JSON strings (UTF-8) or {"b64": ...} objects, as an object array of bytes."""
    flat: list[bytes] = []
    shape = _walk_strings(value, name, flat, depth=0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _walk_strings(value: Any, name: str, flat: list[bytes], depth: int) -> tuple[int, ...]:
    """Append the leaves of a nested list to `flat`; return its shape, refusing ragged lists."""
    if isinstance(value, list):
        if depth >= 32:
            raise InvalidArgument(f"input '{name}' is nested too deeply")
        shapes = {_walk_strings(item, name, flat, depth + 1) for item in value}
        if len(shapes) > 1:
            raise InvalidArgument(f"input '{name}' is ragged: its lists have shapes {sorted(shapes)}")
        return (len(value), *(shapes.pop() if shapes else ()))
    flat.append(_string_value(value, name))
    return ()


def _string_value(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument(f"input '{name}': unable to base64 decode {value['b64'][:32]!r}") from None
    raise InvalidArgument(f"input '{name}' expects DT_STRING values (strings or {{\"b64\": ...}}), "
                          f"got {type(value).__name__}")


# -- tf.Example for classify / regress --------------------------------------------------------------------------------

def examples_from_request(request: dict, verb: str) -> list[bytes]:
    """Serialized tf.Examples; a "context" Example is prepended to each, so that parsing merges it with the example's
    own features (the example wins on a shared name), which is what TF Serving feeds an ExampleListWithContext."""
    context = b""
    if "context" in request:
        context = json_to_example(request["context"]).SerializeToString()
    examples = request.get("examples")
    if examples is None:
        raise InvalidArgument(f"When method is {verb}, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise InvalidArgument("Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgument("'examples' value is an empty array")
    return [context + json_to_example(example).SerializeToString() for example in examples]


def json_to_example(value: Any):
    """A JSON object of features as a tf.train.Example: ints (and booleans) -> int64_list, numbers with a fraction
    -> float_list (ints among them are promoted), strings and {"b64": ...} -> bytes_list; scalars or flat lists."""
    from tensorflow.core.example import example_pb2

    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        items = content if isinstance(content, list) else [content]
        kinds = {_feature_kind(item, name) for item in items}
        if kinds == {"bytes"}:
            feature.bytes_list.value.extend(_string_value(item, name) for item in items)
        elif kinds == {"int64"}:
            feature.int64_list.value.extend(int(item) for item in items)
        elif kinds <= {"int64", "float"} and kinds:
            feature.float_list.value.extend(float(item) for item in items)
        elif kinds:
            raise InvalidArgument(f"Unexpected element type in feature: {name}: it mixes {sorted(kinds)} values")
    return example


def _feature_kind(item: Any, name: str) -> str:
    if isinstance(item, bool):
        return "int64"
    if isinstance(item, int):
        if not _INT64.min <= item <= _INT64.max:
            raise InvalidArgument(f"Feature: {name} has an integer outside int64. Only int64 is supported.")
        return "int64"
    if isinstance(item, float):
        if abs(item) > _FLOAT32_MAX and np.isfinite(item):
            raise InvalidArgument(f"Feature: {name} has a value that does not fit a float: {item}")
        return "float"
    if isinstance(item, str) or _is_b64(item):
        return "bytes"
    raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")


def _json_type(value: Any) -> str:
    names = {dict: "Object", list: "Array", str: "String", bool: "Boolean", int: "Number", float: "Number"}
    return "Null" if value is None else names.get(type(value), type(value).__name__)



# -- responses --------------------------------------------------------------------------------------------------------

def encode_rows(outputs: dict[str, np.ndarray]) -> list:
    """Row format: one entry per example; a bare value for one output, an object keyed by output name for several."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    batch = None
    for key, array in outputs.items():
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {key} has no shape information ")
        if array.shape[0] < 1:
            raise InvalidArgument(f"Tensor name: {key} has invalid batch size: {array.shape[0]}")
        if batch is not None and array.shape[0] != batch:
            raise InvalidArgument(f"Tensor name: {key} has inconsistent batch size: {array.shape[0]} "
                                  f"expecting: {batch}")
        batch = array.shape[0]
    columns = {key: json_values(outputs[key], key) for key in sorted(outputs)}
    if len(columns) == 1:
        return next(iter(columns.values()))
    return [{key: values[row] for key, values in columns.items()} for row in range(batch)]


def encode_columns(outputs: dict[str, np.ndarray]) -> Any:
    """Columnar format: the whole tensor for one output, an object of tensors keyed by output name for several."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    if len(outputs) == 1:
        ((key, array),) = outputs.items()
        return json_values(array, key)
    return {key: json_values(outputs[key], key) for key in sorted(outputs)}


def json_values(array: np.ndarray, name: str) -> Any:
    """An output tensor as a value dumps() writes: numbers as a C-contiguous numpy array (or a list of them, one per
    row, so that a row is a value too). DT_STRING outputs whose name ends in "_bytes" are written as {"b64": ...},
    as TF Serving does; so are other strings that are not valid UTF-8 (TF Serving would emit invalid JSON)."""
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind in "OSU":
        return _strings_to_json(array.tolist(), name.endswith("_bytes"))
    if kind == "c":
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {_dt_name(array.dtype)}")
    if array.dtype not in _ORJSON_NUMPY:  # e.g. bfloat16
        array = array.astype(np.float32)
    if kind == "f" and not np.isfinite(array).all():
        return _with_non_finite(array)
    if array.ndim == 0:
        return array.item()
    return list(np.ascontiguousarray(array))  # rows: numpy arrays (written by orjson) or numpy scalars


def _with_non_finite(array: np.ndarray) -> Any:
    """A float tensor holding NaN or infinities, per row as pre-written JSON: orjson would write them as null, TF
    Serving writes the tokens NaN, Infinity and -Infinity (its WriteDecimal)."""
    if array.ndim == 0:
        return orjson.Fragment(_float_text(array))
    return [orjson.Fragment(_float_text(row)) for row in array]


def _float_text(array: np.ndarray) -> bytes:
    if array.ndim > 0:
        return b"[" + b",".join(_float_text(item) for item in array) + b"]"
    return _number_text(array[()])


def _number_text(value: float) -> bytes:
    """One float as TF Serving's WriteDecimal writes it: NaN, Infinity, -Infinity, or the number (numpy scalars in
    their own precision, as orjson writes them)."""
    if math.isnan(value):
        return b"NaN"
    if math.isinf(value):
        return b"-Infinity" if value < 0 else b"Infinity"
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def _strings_to_json(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_strings_to_json(item, as_b64) for item in value]
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not as_b64:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def classification_json(results: list[list[tuple[str, float]]]) -> list:
    """:classify's "results": per example, [label, score] per class."""
    return [[[label, json_number(score)] for label, score in classes] for classes in results]


def regression_json(results: list[float]) -> list:
    """:regress's "results": one value per example."""
    return [json_number(value) for value in results]


def json_number(value: float) -> Any:
    """A float as dumps() should write it: NaN and infinities as TF Serving's tokens, not orjson's null."""
    return value if math.isfinite(value) else orjson.Fragment(_number_text(value))


def metadata_json(signature_defs: dict) -> dict:
    """SignatureDefs as TF Serving's REST API writes GetModelMetadataResponse: every field, defaults included
    (`"defaults": {}`, empty names), int64 as strings, enums by name."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    defs = get_model_metadata_pb2.SignatureDefMap()
    for key, definition in signature_defs.items():
        defs.signature_def[key].CopyFrom(definition)
    return json_format.MessageToDict(defs, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _dt_name(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype in _DT_NAMES:
        return _DT_NAMES[dtype]
    if dtype.name == "bfloat16":
        return "DT_BFLOAT16"
    return "DT_STRING" if dtype.kind in "SU" else "DT_INVALID"

