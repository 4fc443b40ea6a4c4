"""The drop-in's errors, named after TensorFlow's status codes (tensorflow/core/protobuf/error_codes.proto).

The core raises them with a `code` name; each front end turns the code into its
own status in one table (REST: rest_api.HTTP_STATUS, gRPC: grpc_api's
grpc.StatusCode by name). TensorFlow's own errors keep their code and message
(`from_tensorflow`), as TF Serving passes a Session::Run status through.
"""

from __future__ import annotations

import grpc


class StartupError(Exception):
    """A flag or config file the server cannot start with: it exits 2 with this one line.

    The drop-in is a server of its own and imports nothing from the rest of the repository,
    so it has its own, instead of the project's UsageError.
    """


class ServingError(Exception):
    """A request that failed; `code` is the TensorFlow / gRPC status code name."""

    code = "INTERNAL"


class InvalidArgument(ServingError):
    code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    code = "NOT_FOUND"


class FailedPrecondition(ServingError):
    """E.g. :classify on a signature without an 'inputs' input (TF Serving's PreProcessClassification)."""

    code = "FAILED_PRECONDITION"


class Unavailable(ServingError):
    """E.g. the batch queue is full."""

    code = "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    code = "DEADLINE_EXCEEDED"


class Unimplemented(ServingError):
    code = "UNIMPLEMENTED"


class CodedError(ServingError):
    """Any other code, e.g. one TensorFlow raised (RESOURCE_EXHAUSTED, OUT_OF_RANGE...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# TensorFlow's error codes are gRPC's status codes, number for number.
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
_BY_CODE = {cls.code: cls for cls in (InvalidArgument, NotFound, FailedPrecondition, Unavailable, DeadlineExceeded,
                                      Unimplemented)}


def error_for(code: str, message: str) -> ServingError:
    """The ServingError for a status code name."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls else CodedError(code, message)


def from_tensorflow(exc) -> ServingError:
    """A tf.errors.OpError as the ServingError of the same code, with TensorFlow's own message."""
    return error_for(CODE_NAMES.get(exc.error_code, "UNKNOWN"), exc.message)
