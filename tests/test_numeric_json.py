"""numeric_json: the fast path from a predict body to an ndarray gives what the ordinary parse does, or steps aside."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.tf.dropin import numeric_json
from serving.tf.dropin.numeric_json import loads_with_array, numeric_array

KEYS = ("instances", "inputs")


def ordinary(body: bytes, key: str) -> np.ndarray:
    array, booleans = numeric_array(orjson.loads(body)[key])
    assert not booleans
    return array


def assert_same_array(fast: np.ndarray, slow: np.ndarray) -> None:
    assert fast.dtype == slow.dtype and fast.shape == slow.shape
    assert np.array_equal(fast, slow)
    assert (np.signbit(fast) == np.signbit(slow)).all()  # -0.0 stays -0.0


@pytest.mark.parametrize("body, key", [
    (b'{"instances": [[1, 2], [3, 4]]}', "instances"),  # whole numbers: int64, as numpy makes of the list
    (b'{"instances": [[1, 2], [3, 4.5]]}', "instances"),  # one fraction: float64 for all
    (b'{"inputs": [[[0.0], [-0.0]], [[1e-05], [2.5E+3]]], "signature_name": "serving_default"}', "inputs"),
    (b'{"signature_name": "s", "instances": [ 0.1 ,\n 0.2 ]}', "instances"),
    (b'{"instances": [18446744073709551615]}', "instances"),  # uint64's largest
    (b'{"instances": [[[[0.0703125], [0.2109375]]]]}', "instances"),
])
def test_a_rectangular_array_of_numbers_comes_back_as_the_ordinary_parse_makes_it(body, key):
    request = loads_with_array(body, KEYS)
    assert request is not None
    assert set(request) == set(orjson.loads(body))
    assert_same_array(request[key], ordinary(body, key))


@pytest.mark.parametrize("body", [
    b'{"instances": [[1, 2], [3]]}',  # ragged
    b'{"instances": [[1, 2], 3]}',  # a number beside a list
    b'{"instances": [[], [1]]}', b'{"instances": [[]]}', b'{"instances": []}',  # empty places
    b'{"instances": [1, ]}', b'{"instances": [1 2]}', b'{"instances": [01]}',  # invalid JSON in the array
    b'{"instances": [1e999]}',  # too big for a double: the ordinary parser words the error
    b'{"instances": [true, 1]}', b'{"instances": [null]}', b'{"instances": ["1"]}', b'{"instances": [NaN]}',
    b'{"instances": [{"x": [1]}]}',  # named inputs
    b'{"signature_name": "[1]"}',  # brackets inside a string: the placeholder breaks the JSON
    b'{"signature_name": "[1, 2]", "instances": 5}',
    b'{"instances": [1], "other": [2]}', b'{"instances": [1], "inputs": [2]}',  # two arrays
    b'{"examples": [1]}',  # not a tensor key
    b'[1, 2]',  # not an object
    b'{"instances": "\\u0000numeric-array\\u0000", "x": [1]}',  # a client's own string equal to the placeholder
    b'{"instances": "\\u0000numeric-array\\u0000", "x": {"y": [1]}}',
    b'{"instances": ' + b"[" * 33 + b"1" + b"]" * 33 + b"}",  # deeper than the fast path goes
    b'{"instances": [1]',  # truncated
])
def test_anything_else_is_left_to_the_ordinary_parser(body):
    assert loads_with_array(body, KEYS) is None


def test_a_bytearray_body_as_torchserve_hands_it_over_works_too():
    request = loads_with_array(bytearray(b'{"instances": [[0.5, 1.5]]}'), KEYS)
    assert_same_array(request["instances"], np.array([[0.5, 1.5]]))


def test_without_orjson_the_standard_library_reads_the_same_numbers(monkeypatch):
    """TorchServe's stock image has no orjson."""
    monkeypatch.setattr(numeric_json, "_loads", json.loads)
    monkeypatch.setattr(numeric_json, "_DecodeError", ValueError)
    body = b'{"instances": [[0.1, 2], [3e-7, -0.0]]}'
    assert_same_array(loads_with_array(body, KEYS)["instances"], ordinary(body, "instances"))
    assert loads_with_array(b'{"instances": [1e999]}', KEYS) is None  # json reads infinity; the fast path refuses it


def _nested(draw_leaf: st.SearchStrategy, depth: int) -> st.SearchStrategy:
    return draw_leaf if depth == 0 else st.lists(_nested(draw_leaf, depth - 1), min_size=0, max_size=3)


numbers = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-10, 10).map(lambda n: n / 8))
leaves = st.one_of(numbers, st.integers(2**63, 2**65), st.booleans(), st.none(), st.just("s"))
shapes = st.lists(st.integers(1, 3), min_size=1, max_size=4)


@st.composite
def rectangular(draw) -> list:
    shape = draw(shapes)
    flat = draw(st.lists(numbers, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return np.array(flat, dtype=object).reshape(shape).tolist()


def body_of(key: str, value, spaces: bool) -> bytes:
    return json.dumps({"signature_name": "serving_default", key: value},
                      separators=None if spaces else (",", ":")).encode()


@settings(max_examples=200, deadline=None)
@given(value=rectangular(), key=st.sampled_from(KEYS), spaces=st.booleans())
def test_any_rectangular_array_of_numbers_takes_the_fast_path(value, key, spaces):
    body = body_of(key, value, spaces)
    assert_same_array(loads_with_array(body, KEYS)[key], ordinary(body, key))


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, 4).flatmap(lambda d: _nested(leaves, d)),
       key=st.sampled_from(["instances", "inputs", "examples"]), spaces=st.booleans())
def test_fast_or_ordinary_the_array_is_the_same(value, key, spaces):
    body = body_of(key, value, spaces)
    request = loads_with_array(body, KEYS)
    if request is not None:
        assert key in KEYS
        assert_same_array(request[key], ordinary(body, key))


def test_the_archived_codec_imports_numeric_json_from_beside_itself(tmp_path):
    """In the .mar, rest_codec.py and numeric_json.py sit side by side, with the repository nowhere on the path."""
    from export.mar import CODEC, NUMERIC_JSON

    for source in (CODEC, NUMERIC_JSON):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    script = ("import sys; sys.path.insert(0, '.'); import rest_codec, numeric_json; "
              "r = rest_codec.parse_json(b'{\"instances\": [[1.5, 2]]}', 1000); "
              "print(type(r['instances']).__name__, r['instances'].tolist(), 'serving' in sys.modules)")
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ndarray", "[[1.5,", "2.0]]", "False"]
