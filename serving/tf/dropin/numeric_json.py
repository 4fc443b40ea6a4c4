"""Nested JSON lists of numbers -> numpy arrays, fast; shared by the drop-in's REST codec and TorchServe's handler.

A predict body is mostly one tensor: `{"instances": [[[[0.0], [0.5], ...]]]}`. Parsed the ordinary way, each of its
numbers and each of its innermost lists becomes a Python object (a 32x32x1 image: about 2,000 of them), and numpy
then walks them all again: on the development machine 131 us to parse 13 kB and 133 us to make the array, about a
quarter of what a REST request costs the drop-in. loads_with_array() parses such a body without building the nested
lists (see there); any other body is left to the caller's ordinary parser, so the two paths give the same arrays and
the same errors.

Depends on numpy (and orjson where installed) only: TorchServe's archive ships this file beside rest_codec.py, and
the drop-in imports nothing from outside its package, so it lives here, once, for both.
"""

from __future__ import annotations

import json
from itertools import chain
from typing import Any

import numpy as np

try:
    import orjson

    _loads = orjson.loads
    _DecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # TorchServe's stock image has no orjson; the standard library gives the same numbers
    _loads = json.loads
    _DecodeError = ValueError

# The bytes a nested list of JSON numbers is made of, and the subset that only numbers use.
_NUMBER_BYTES = b"0123456789+-.eE \t\r\n"
_ARRAY_BYTES = _NUMBER_BYTES + b"[],"
# Stands in for the array while the rest of the body is parsed. Written where the array was, it is one JSON string
# between others' quotes if the array text was inside a string, which is never valid JSON: such bodies fall back.
_PLACEHOLDER = b'"\\u0000numeric-array\\u0000"'
_PLACEHOLDER_VALUE = "\x00numeric-array\x00"
_NUL = b"\\u0000"  # the only way JSON can write a NUL into a string
# Deeper arrays take the ordinary parser, which refuses nesting beyond its own limit in its own words.
_MAX_DEPTH = 32


def loads_with_array(body: bytes, keys: tuple[str, ...]) -> dict | None:
    """The body as a JSON object whose value under one of `keys` is already an ndarray, or None.

    It applies when everything from the body's first "[" to its last "]" is one rectangular array of numbers and
    that array is the value of one of `keys` in the top-level object: then the array's text becomes a flat list (its
    brackets deleted, a C loop), which is parsed and converted in one go, and its shape is read off the brackets and
    checked against the bracket pattern a rectangular array of that shape has. The numbers are the ones the ordinary
    parser reads, in the same dtype numpy would give their list (int64 for whole numbers, float64 beside a
    fraction). None (parse it the ordinary way) for anything else: strings, booleans, nulls, objects inside the
    array, ragged or empty lists, numbers too big for a double, two arrays, invalid JSON.
    """
    start, end = body.find(b"["), body.rfind(b"]") + 1
    if start < 0 or end <= start or _NUL in body:  # a client's own "\u0000..." string could pass for the placeholder
        return None
    text = body[start:end]
    if text.translate(None, _ARRAY_BYTES):  # something other than numbers and brackets: strings, true, {...}
        return None
    try:
        request = _loads(body[:start] + _PLACEHOLDER + body[end:])
    except _DecodeError:
        return None
    key = _key_holding_placeholder(request, keys)
    if key is None:
        return None
    array = _rectangular_numbers(text)
    if array is None:
        return None
    request[key] = array
    return request


def _key_holding_placeholder(request: Any, keys: tuple[str, ...]) -> str | None:
    """Which of `keys` the array was the value of (the placeholder is the body's only string holding a NUL)."""
    if not isinstance(request, dict):
        return None
    return next((key for key in keys if request.get(key) == _PLACEHOLDER_VALUE), None)


def _rectangular_numbers(text: bytes) -> np.ndarray | None:
    """The array a rectangular nested list of numbers holds, or None if it is not one (ragged, empty, not finite)."""
    brackets = text.translate(None, _NUMBER_BYTES)  # e.g. [[,],[,]] for [[1, 2], [3, 4]]
    shape = _shape_of(brackets)
    if shape is None or brackets != _brackets_of(shape):
        return None
    try:
        numbers = _loads(b"[" + text.translate(None, b"[]") + b"]")
    except _DecodeError:  # e.g. "1 2", "--1", 01, and 1e999 for orjson
        return None
    if len(numbers) != int(np.prod(shape)):  # the bracket pattern allows an empty place ([1, ]): the count does not
        return None
    array = np.array(numbers)
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
        return None  # integers over 64 bits (object), or 1e999 read as infinity by the standard library
    return array.reshape(shape)


def _shape_of(brackets: bytes) -> tuple[int, ...] | None:
    """The shape a rectangular array with this bracket pattern would have, read from its first elements.

    The first list at depth k ends at the first run of (depth - k + 1) "]": the runs inside it are shorter. Its
    length in bytes, with the length of the pattern of one of its elements, gives how many elements it has.
    """
    depth = len(brackets) - len(brackets.lstrip(b"["))
    if not 0 < depth <= _MAX_DEPTH:
        return None
    shape = [brackets.count(b",", depth - 1, brackets.find(b"]")) + 1]
    element = shape[0] + 1  # bytes in the pattern of the innermost list: n - 1 commas and two brackets
    for level in range(depth - 1, 0, -1):  # outwards from the innermost list
        run = depth - level + 1
        end = brackets.find(b"]" * run) + run
        count, rest = divmod(end - (level - 1) - 1, element + 1)
        if rest or count < 1:
            return None
        shape.insert(0, count)
        element = 1 + count * (element + 1)
    return tuple(shape)


def _brackets_of(shape: tuple[int, ...]) -> bytes:
    """The bracket pattern of a rectangular array: (2, 2) -> b"[[,],[,]]"."""
    pattern = b"[" + b"," * (shape[-1] - 1) + b"]"
    for length in reversed(shape[:-1]):
        pattern = b"[" + b",".join([pattern] * length) + b"]"
    return pattern


def numeric_array(value: Any) -> tuple[np.ndarray, bool]:
    """np.asarray(value), faster for the nested lists of an image, and whether a JSON boolean sits among the numbers.

    A rectangular list is flattened level by level (C loops), so numpy converts one flat list instead of discovering
    the shape of thousands of small ones. Ragged or mixed lists take np.asarray's own path, which words the error.
    numpy turns [0.5, true] into [0.5, 1.0] without a word, hence the boolean scan (a C loop over the flat list). An
    ndarray (from loads_with_array) is returned as it is: it holds numbers only.
    """
    if isinstance(value, np.ndarray):
        return value, False
    shape, level = [], [value]
    while level and type(level[0]) is list:
        width = len(level[0])
        if any(type(item) is not list or len(item) != width for item in level):
            return np.asarray(value), False
        shape.append(width)
        level = list(chain.from_iterable(level))
    array = np.array(level)
    if array.dtype.kind == "O" or array.ndim != 1:  # a list among the leaves: ragged below the first elements
        return np.asarray(value), False
    return array.reshape(shape), array.dtype.kind != "b" and bool in set(map(type, level))
