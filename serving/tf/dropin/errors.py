"""The drop-in's errors, named after the status codes TF Serving answers with.

Front ends map them: REST to the HTTP status, gRPC to the grpc.StatusCode.
"""

from __future__ import annotations


class StartupError(Exception):
    """A flag or config file the server cannot start with: it exits 2 with this one line.

    The drop-in is a server of its own and imports nothing from the rest of the repository,
    so it has its own, instead of the project's UsageError.
    """


class ServingError(Exception):
    http_status = 500
    grpc_code = "INTERNAL"


class InvalidArgument(ServingError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class FailedPrecondition(ServingError):
    """E.g. :classify on a signature whose method is predict."""

    http_status = 400
    grpc_code = "FAILED_PRECONDITION"


class Unavailable(ServingError):
    """E.g. the batch queue is full."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"
