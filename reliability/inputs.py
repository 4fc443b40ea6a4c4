"""The bad-input catalogue: every malformed request the matrix sends, as data.

An input is a name, one line saying what is wrong, and for each target it applies to a recipe that builds the
request (a probe) from a Context: the deployed model, one good image and that target's batch limit. The REST
targets get the very same bytes wherever the wire format is shared; torch-grpc carries that JSON body as
input["body"], as TorchServe's gRPC API does; tf-grpc gets the TensorProto that means the same mistake.
Probes are built one at a time, when sent, so the 70 MB bodies are never all held at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from common.targets import ordered

# The request size limit both servers run with: the drop-in's --max_body_bytes default and the gRPC limit deploy
# gives it, TorchServe's max_request_size (REST and gRPC), the handler's max_request_bytes from export.
MAX_REQUEST_BYTES = 64 << 20
FAR_OVER_BYTES = 70_000_000  # the 70 MB body of issue 16
INPUT_NAME = "images"  # the model's input, as export names it (the named-instance key, the gRPC input)
TRICKLE_PIECES, TRICKLE_S = 16, 2.0  # a slow body: this many pieces spread over this long


@dataclass(frozen=True)
class Context:
    """What the inputs are built against: the deployed model, one good image, the target's batch limit."""

    model: str
    image: np.ndarray  # height x width x channels, float32
    max_batch: int | None  # the largest batch the target accepts; None: it sets none

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape)


@dataclass(frozen=True)
class Post:
    """An HTTP POST of `body` to the target's predict path, sent `how`: plain (keep-alive, as curl or requests),
    close (Connection: close, as urllib), expect (Expect: 100-continue first), truncate (half the body, then the
    client shuts its side) or trickle (in TRICKLE_PIECES pieces over TRICKLE_S)."""

    body: bytes
    how: str = "plain"
    model: str | None = None  # a model name other than the deployed one
    version: int | None = None


@dataclass(frozen=True)
class Tensor:
    """A TensorProto: dtype by its TensorFlow name, shape, little-endian tensor_content."""

    dtype: str
    shape: tuple[int, ...]
    content: bytes


@dataclass(frozen=True)
class Call:
    """One gRPC predict: torch-grpc sends `body` as input["body"], tf-grpc `tensor` as the input INPUT_NAME."""

    body: bytes | None = None
    tensor: Tensor | None = None
    model: str | None = None
    version: int | None = None
    signature: str | None = None


@dataclass(frozen=True)
class Raw:
    """Bytes written straight to the gRPC port, where an HTTP/2 client preface belongs."""

    data: bytes


Probe = Post | Call | Raw
Recipe = Callable[[Context], Probe | None]  # None: not applicable with this context (e.g. no batch limit)


@dataclass(frozen=True)
class BadInput:
    name: str
    description: str
    recipes: Mapping[str, Recipe] = field(repr=False)  # by target name; a target not named does not apply
    states_limit: bool = False  # the answer must name MAX_REQUEST_BYTES (a size limit is useless unstated)
    ends_connection: bool = False  # no request to answer: the server may only close (garbage on the gRPC port)

    @property
    def targets(self) -> list[str]:
        return ordered(self.recipes)

    def probe(self, target: str, ctx: Context) -> Probe | None:
        recipe = self.recipes.get(target)
        return None if recipe is None else recipe(ctx)


# -- bodies and tensors ---------------------------------------------------------------------------------------------

def instances(value: object) -> bytes:
    """{"instances": value} as JSON; NaN and infinities are written as the NaN/Infinity tokens."""
    return json.dumps({"instances": value}).encode("utf-8")


def good_body(ctx: Context) -> bytes:
    return instances([ctx.image.tolist()])


def _with_token(ctx: Context, token: str) -> bytes:
    """A one-image body whose first pixel is the raw JSON text `token` (1e999 and 5,000 digits cannot be dumped)."""
    image = ctx.image.tolist()
    image[0][0][0] = "@"
    return instances([image]).replace(b'"@"', token.encode("ascii"), 1)


def _batch(shape: tuple[int, ...]) -> np.ndarray:
    """A batch of the given shape, every pixel 0.5: what matters is the shape."""
    return np.full(shape, 0.5, dtype=np.float32)


def _one_pixel(ctx: Context, value: float) -> np.ndarray:
    """The good image as a batch of one, its first pixel set to `value`."""
    batch = ctx.image[None].copy()
    batch.flat[0] = value
    return batch


def padded(size: int) -> bytes:
    """A body of exactly `size` bytes that is valid JSON (an empty batch and spaces): only its size is wrong."""
    head = b'{"instances": []}'
    return head + b" " * (size - len(head))


def float_tensor(array: np.ndarray, dtype: str = "DT_FLOAT") -> Tensor:
    numpy_type = {"DT_FLOAT": "<f4", "DT_DOUBLE": "<f8"}[dtype]
    return Tensor(dtype, tuple(array.shape), np.ascontiguousarray(array, dtype=numpy_type).tobytes())


# -- recipe makers ----------------------------------------------------------------------------------------------------

def _json(body: Callable[[Context], bytes],
          tensor: Callable[[Context], Tensor | None] | None = None) -> dict[str, Recipe]:
    """The same body to both REST targets and inside torch-grpc's request; tf-grpc gets `tensor`, if any."""
    recipes: dict[str, Recipe] = {"tf-rest": lambda c: Post(body(c)), "torch-rest": lambda c: Post(body(c)),
                                  "torch-grpc": lambda c: Call(body=body(c))}
    if tensor is not None:
        recipes["tf-grpc"] = lambda c: _call_or_none(tensor(c))
    return recipes


def _call_or_none(tensor: Tensor | None) -> Call | None:
    return None if tensor is None else Call(tensor=tensor)


def _images(make: Callable[[Context], np.ndarray | None]) -> dict[str, Recipe]:
    """A batch of images (wrong in shape or value) as JSON for REST and torch-grpc, as a tensor for tf-grpc."""
    def body(c: Context) -> bytes | None:
        batch = make(c)
        return None if batch is None else instances(batch.tolist())

    def tensor(c: Context) -> Tensor | None:
        batch = make(c)
        return None if batch is None else float_tensor(batch)

    def post(c: Context) -> Post | None:
        data = body(c)
        return None if data is None else Post(data)

    def call(c: Context) -> Call | None:
        data = body(c)
        return None if data is None else Call(body=data)

    return {"tf-rest": post, "tf-grpc": lambda c: _call_or_none(tensor(c)), "torch-rest": post, "torch-grpc": call}


def _http(how: str, body: Callable[[Context], bytes]) -> dict[str, Recipe]:
    """HTTP-level mistakes: the REST targets only (gRPC frames its own messages)."""
    return {"tf-rest": lambda c: Post(body(c), how), "torch-rest": lambda c: Post(body(c), how)}


def _elsewhere(model: str | None = None, version: int | None = None) -> dict[str, Recipe]:
    """A good request addressed to a model or version that is not served."""
    def post(c: Context) -> Post:
        return Post(good_body(c), model=model, version=version)

    return {"tf-rest": post, "torch-rest": post,
            "tf-grpc": lambda c: Call(tensor=float_tensor(c.image[None]), model=model, version=version),
            "torch-grpc": lambda c: Call(body=good_body(c), model=model, version=version)}


def _signature(name: str) -> dict[str, Recipe]:
    """A good image for a signature that is not served; every server's refusal names it, so `name` is echoed."""
    def body(c: Context) -> bytes:
        return json.dumps({"signature_name": name, "instances": [c.image.tolist()]}).encode()

    return {**_json(body), "tf-grpc": lambda c: Call(tensor=float_tensor(c.image[None]), signature=name)}


def _over_batch(c: Context) -> np.ndarray | None:
    return None if c.max_batch is None else _batch((c.max_batch + 1, *c.shape))


def _half_tensor(c: Context) -> Tensor:
    """A tensor whose content is half of what its shape says: gRPC's truncated body."""
    whole = float_tensor(c.image[None])
    return Tensor(whole.dtype, whole.shape, whole.content[: len(whole.content) // 2])


def _grpc_over_limit(c: Context) -> Call:
    """One image more than fits in MAX_REQUEST_BYTES of tensor_content: a well-formed message over the limit."""
    count = MAX_REQUEST_BYTES // c.image.nbytes + 1
    return Call(tensor=Tensor("DT_FLOAT", (count, *c.shape), bytes(count * c.image.nbytes)))


def _ragged(c: Context) -> bytes:
    image = c.image.tolist()
    return instances([image, image[:-1]])


def _deep(depth: int) -> bytes:
    return b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"


GARBAGE = b"GARBAGE\x00\xff\xfe" * 8  # not an HTTP/2 preface, not an HTTP/1 request line either

CATALOGUE: tuple[BadInput, ...] = (
    BadInput("malformed-json", "JSON cut off in the middle of an array", _json(lambda c: b'{"instances": [[1, 2')),
    BadInput("not-an-object", "a JSON array where the request object belongs", _json(lambda c: b"[1, 2, 3]")),
    BadInput("instances-not-a-list", '"instances" is a number', _json(lambda c: b'{"instances": 5}')),
    BadInput("wrong-rank", "images without their channel axis",
             _images(lambda c: _batch((1, *c.shape[:-1])))),
    BadInput("wrong-height", "images one row short", _images(lambda c: _batch((1, c.shape[0] - 1, *c.shape[1:])))),
    BadInput("wrong-width", "images one column short",
             _images(lambda c: _batch((1, c.shape[0], c.shape[1] - 1, *c.shape[2:])))),
    BadInput("wrong-channels", "three channels where the model takes one",
             _images(lambda c: _batch((1, *c.shape[:-1], c.shape[-1] + 2)))),
    BadInput("wrong-dtype", 'images as {"b64": ...} bytes (gRPC: a DT_DOUBLE tensor)',
             _json(lambda c: instances([{"b64": "AAAA"}]), lambda c: float_tensor(c.image[None], "DT_DOUBLE"))),
    BadInput("string-in-tensor", 'one pixel is the string "0.5"', _json(lambda c: _with_token(c, '"0.5"'))),
    BadInput("boolean-in-tensor", "one pixel is true", _json(lambda c: _with_token(c, "true"))),
    BadInput("null-in-tensor", "one pixel is null", _json(lambda c: _with_token(c, "null"))),
    BadInput("nan", "one pixel is NaN", _images(lambda c: _one_pixel(c, np.nan))),
    BadInput("infinity", "one pixel is Infinity", _images(lambda c: _one_pixel(c, np.inf))),
    BadInput("overflow-1e999", "one pixel is 1e999, beyond any float", _json(lambda c: _with_token(c, "1e999"))),
    BadInput("empty-batch", "no images at all", _images(lambda c: _batch((0, *c.shape)))),
    BadInput("ragged", "the second image is one row short", _json(_ragged)),
    BadInput("batch-over-limit", "one image more than the server's largest batch", _images(_over_batch)),
    BadInput("deep-nesting", "arrays nested 100,000 deep", _json(lambda c: _deep(100_000))),
    BadInput("huge-number", "one pixel is a number of 5,000 digits", _json(lambda c: _with_token(c, "9" * 5000))),
    BadInput("invalid-utf8", "bytes that are not UTF-8 inside the JSON",
             _json(lambda c: b'{"instances": [[[[\xff\xfe]]]]}')),
    BadInput("body-one-byte-over", "a body one byte over the size limit",
             _http("plain", lambda c: padded(MAX_REQUEST_BYTES + 1)), states_limit=True),
    BadInput("body-far-over", "a 70 MB body (keep-alive, as curl and requests send it)",
             _http("plain", lambda c: padded(FAR_OVER_BYTES)), states_limit=True),
    BadInput("body-far-over-close", "a 70 MB body with Connection: close (as urllib sends it)",
             _http("close", lambda c: padded(FAR_OVER_BYTES)), states_limit=True),
    BadInput("body-far-over-expect", "a 70 MB body announced with Expect: 100-continue",
             _http("expect", lambda c: padded(FAR_OVER_BYTES)), states_limit=True),
    BadInput("truncated-body", "half the body Content-Length announces, then the client shuts its side "
             "(gRPC: tensor_content half its shape)", {**_http("truncate", good_body),
                                                        "tf-grpc": lambda c: Call(tensor=_half_tensor(c))}),
    BadInput("slow-body", f"a bad body trickled in {TRICKLE_PIECES} pieces over {TRICKLE_S:g} s; a good request "
             "on another connection meanwhile", _http("trickle", lambda c: _with_token(c, "null"))),
    BadInput("unknown-model", "a good request to a model that is not served", _elsewhere(model="no-such-model")),
    BadInput("unknown-version", "a good request to version 99", _elsewhere(version=99)),
    BadInput("unknown-signature", 'signature_name "no-such-signature"', _signature("no-such-signature")),
    BadInput("non-ascii-signature", 'signature_name "façade": the refusal echoes non-ASCII text',
             _signature("façade")),
    BadInput("crlf-signature", "signature_name with CR LF and a header line: the refusal echoes them",
             _signature("a\r\nX-Injected: yes")),
    BadInput("grpc-garbage", "bytes that are not HTTP/2 on the gRPC port",
             {"tf-grpc": lambda c: Raw(GARBAGE), "torch-grpc": lambda c: Raw(GARBAGE)}, ends_connection=True),
    BadInput("grpc-over-limit", "a gRPC message over the size limit",
             {"tf-grpc": _grpc_over_limit, "torch-grpc": lambda c: Call(body=padded(MAX_REQUEST_BYTES + 1))},
             states_limit=True),
)
NAMES: tuple[str, ...] = tuple(item.name for item in CATALOGUE)
