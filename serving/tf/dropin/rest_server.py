"""The REST front end's HTTP server: moves bytes between keep-alive connections and an api's dispatch().

`api` is anything with `async dispatch_async(method, raw_path, body, run_blocking) -> Response`
(rest_api.RestApi). The event loop runs in a daemon thread of its own; what blocks (TensorFlow, a request that does
not batch) runs through run_blocking on a thread pool of `--rest_api_num_threads` threads, never on the loop, and a
batched predict waits for its batch on the loop without a thread. Every response has a Content-Length, Content-Type,
`Server: SERVER_IDENTITY` and `X-Served-By: SERVER_NAME`; errors are JSON `{"error": "..."}`.
"""

# Server choice: aiohttp 3.14's low-level aiohttp.web.Server, on uvloop where it is installed (else asyncio's
# loop), over uvicorn (+ Starlette or a raw ASGI app) and over the old http.server.ThreadingHTTPServer.
# Measured on this 2-core machine (lscpu: "AMD EPYC"), server pinned to CPU 1 and wrk to CPU 0, 8 connections,
# 1 wrk thread, 10 s after a 3 s warm-up, 3 runs each, req/s median [min-max]. Handler: POST of one 28x28x1
# image as nested JSON lists -> orjson -> float32 array -> ~150 us of numpy 64x64 matmuls (which release the
# GIL) on an 8-thread pool -> orjson answer of 10 floats:
#   ThreadingHTTPServer (work on the connection's thread)  1083 [904-1134]  p50 6.6 ms  p99 33 ms
#   aiohttp web.Application                                 929 [864-954]   p50 7.4 ms  p99 35 ms
#   aiohttp web.Server (low level) + uvloop                1220 [1022-1223] p50 5.4 ms  p99 33 ms
#   uvicorn 0.55 (httptools, uvloop) + Starlette           1040 [1012-1044] p50 6.8 ms  p99 31 ms
#   uvicorn 0.55 (httptools, uvloop), raw ASGI app          980 [964-1109]  p50 7.1 ms  p99 29 ms
#   this module (aiohttp low level + uvloop, parsing inside dispatch) 1085 [855-1116] p50 5.9 ms  p99 36 ms
# With a 60-byte body and time.sleep(0.0002) for the work, to show the server's own cost: threading 3630,
# aiohttp low level 3311 (asyncio loop) and 4135 (uvloop), uvicorn+Starlette 3126, raw ASGI 3711 req/s; at 256
# connections threading falls to 2548 req/s with ~110 socket errors a run, aiohttp+uvloop 3651 with none,
# uvicorn raw ASGI 3933 with ~10.
# Parsing the JSON into an array costs ~250 us of the ~900 us each request takes, so the asyncio servers differ
# by less than the run-to-run noise; the choice rests on control instead. aiohttp lets this module decide from
# the headers before a byte of the body is read (413 instead of 100 Continue: the low-level server sends no
# automatic 100 Continue), read the body itself with a bound (chunked bodies included), drain a moderately
# over-limit body after the 413 so the client reads it instead of a reset, and answer malformed HTTP with a
# JSON 400 carrying the identity headers (RequestHandler.handle_error). uvicorn answers malformed requests
# with its own fixed plain-text 400 without our headers, and has no hook for it.

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
from http import HTTPStatus
from typing import Any

from aiohttp import HttpVersion11, web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from serving.tf.dropin import SERVER_IDENTITY, SERVER_NAME
from serving.tf.dropin.rest_api import Response, error_response

log = logging.getLogger("tf-serving-dropin")

_BACKLOG = 128  # listen backlog: a load generator opens many connections at once
_MAX_HEADERS = 100  # like http.server, the old front end
_SHUTDOWN_GRACE_S = 5.0  # shutdown lets a request in progress finish for this long
_DRAIN_S = 5.0  # how long an over-limit body is read and thrown away after the 413
# ... and how far over the limit a body may be and still be drained whole: max(max_body_bytes, this). A body left
# partly unread when the connection closes makes the kernel reset it, and the reset destroys the 413 the client has
# not read yet: a 70 MB body over the 64 MiB limit was reset when only 64 MiB of it were drained.
_MIN_DRAIN_BYTES = 4 << 20


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (4135 against 3311 req/s on asyncio's, 60-byte bodies, measured here)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Refused(Exception):
    """A request answered from its headers alone (413, 400); the connection closes after the answer."""

    def __init__(self, status: int, message: str, drain: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.drain = drain  # bytes of unread body to read and discard, so the client sees the answer, not a reset


def _web_response(response: Response, close: bool = False) -> web.Response:
    headers = [("Content-Type", response.content_type), ("Server", SERVER_IDENTITY), ("X-Served-By", SERVER_NAME),
               *response.headers]
    answer = web.Response(status=response.status, body=response.body, headers=headers)
    if close:
        answer.force_close()  # adds Connection: close
    return answer


def _log_error(method: str, path: str, response: Response) -> None:
    """One line per failed request, like the old _Handler._respond; nothing at all for a good one."""
    if response.status >= 400:
        level = logging.ERROR if response.status >= 500 else logging.WARNING
        log.log(level, "tf-serving-dropin: %s %s -> %d %s", method, path, response.status, response.error)


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's connection handler, with malformed HTTP answered as JSON with the identity headers.

    aiohttp's parser reports every malformed request (bad request line, bad or too long headers, bad
    Content-Length or chunk) as a 400 without saying which line was too long, so those are 400 here where
    http.server said 414 or 431; too many headers (over 100, http.server's limit) is 431 as it was.
    """

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of a response is out already: nothing sane can follow it
            raise ConnectionError("response already started; cannot send an error after it")
        if isinstance(exc, LineTooLong):
            text = f"Bad request: the request line or a header is over {exc.args[1]} bytes"
        elif isinstance(exc, HttpProcessingError):  # the first line only: llhttp appends a dump of the bytes
            text = "Bad request: " + ((exc.message or "").strip().splitlines() or ["malformed HTTP"])[0].rstrip(":")
            if text.startswith("Bad request: Too many headers"):
                status, text = 431, "Too many headers"  # http.server's answer; aiohttp says 400
        elif status >= 500:
            log.debug("tf-serving-dropin: internal error in the HTTP server", exc_info=exc)
            text = f"Internal error: {type(exc).__name__}: {exc}" if exc is not None else HTTPStatus(status).phrase
        else:
            text = message or HTTPStatus(status).phrase
        response = error_response(status, text)
        if isinstance(exc, HttpProcessingError):
            _log_error("-", "-", response)  # the request line may be what was malformed
        else:
            _log_error(request.method, request.raw_path, response)
        return _web_response(response, close=True)


# aiohttp's stand-in for a request it could not parse, as HTTP/1.1 so the error's status line says HTTP/1.1.
_UNPARSED = web_protocol.ERROR._replace(version=HttpVersion11)


class _Server(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        # What web.Server.__call__ does, with _Protocol for RequestHandler (aiohttp 3.14).
        return _Protocol(self, loop=self._loop, **self._kwargs)

    def _make_request(self, message: Any, *args: Any) -> web.BaseRequest:
        return super()._make_request(_UNPARSED if message is web_protocol.ERROR else message, *args)


class RestServer:
    """A running REST front end: .port is the bound port, .api the api it serves, .shutdown() stops it."""

    def __init__(self, api: Any, sock: socket.socket, max_body_bytes: int, num_threads: int) -> None:
        self._api = api
        self._sock = sock
        self._port = int(sock.getsockname()[1])
        self._max_body_bytes = max_body_bytes
        self._drain_bytes = max(max_body_bytes, _MIN_DRAIN_BYTES)
        self._executor = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix=f"rest-{self._port}")
        self._loop = _new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rest-api-{self._port}")
        self._runner: web.ServerRunner | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def api(self) -> Any:
        return self._api

    # -- life cycle ----------------------------------------------------------------------------------------------------

    def _start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=30)
        except BaseException:
            self.shutdown()
            raise

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    async def _open(self) -> None:
        server = _Server(self._handle, access_log=None, max_headers=_MAX_HEADERS,
                         lingering_time=0,  # over-limit bodies are drained by _refuse, within bounds
                         auto_decompress=False)  # the body goes to dispatch as sent, like TF Serving
        self._runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_GRACE_S)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock, backlog=_BACKLOG).start()

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, closes idle keep-alive connections, waits for the rest

    def shutdown(self) -> None:
        """Stop listening and close every connection (a request in progress gets a few seconds); idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=_SHUTDOWN_GRACE_S + 5)
            except Exception:  # shutting down regardless
                log.debug("tf-serving-dropin: REST server on port %d did not close cleanly", self._port, exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        self._sock.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- one request ---------------------------------------------------------------------------------------------------

    def _run_blocking(self, function: Any, *args: Any) -> asyncio.Future:
        """What may block (TensorFlow, a model's metadata) runs on the --rest_api_num_threads pool, not the loop."""
        return self._loop.run_in_executor(self._executor, function, *args)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            body = await self._read_body(request)
        except _Refused as refused:
            return await self._refuse(request, refused)
        method = "GET" if request.method == "HEAD" else request.method  # HEAD: GET's headers; aiohttp drops the body
        try:
            response = await self._api.dispatch_async(method, request.raw_path, body, self._run_blocking)
        except RuntimeError as exc:  # the pool is shut down: the server is stopping
            response = error_response(503, f"Server is shutting down: {exc}")
        except Exception as exc:  # dispatch is not supposed to raise; a bug must cost one request, not the server
            log.debug("tf-serving-dropin: dispatch raised on %s %s", method, request.raw_path, exc_info=True)
            response = error_response(500, f"Internal error: {type(exc).__name__}: {exc}")
        _log_error(request.method, request.raw_path, response)
        return _web_response(response)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The body, never more than max_body_bytes of it held; refused from Content-Length before it is read."""
        limit = self._max_body_bytes
        over = f"over the limit of {limit} bytes"
        length = request.content_length
        expects = request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue"
        if length is not None and length > limit:
            # Expect: 100-continue is refused instead of continued: the client should not send the body at all.
            drain = length if not expects and length <= limit + self._drain_bytes else 0  # all of it, or none
            raise _Refused(413, f"request body of {length} bytes is {over}", drain=drain)
        if not request.body_exists:
            return b""
        if expects:  # the low-level server leaves 100 Continue to us
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunks, size = [], 0  # Content-Length, or Transfer-Encoding: chunked and then no length is known
        try:
            while chunk := await request.content.readany():  # never past Content-Length: aiohttp stops there
                size += len(chunk)
                if size > limit:
                    raise _Refused(413, f"chunked request body is {over}", drain=self._drain_bytes)
                chunks.append(chunk)
        except (ConnectionError, web_protocol.RequestPayloadError) as exc:  # client gone, or a broken chunk
            of = "" if length is None else f" of {length}"
            raise _Refused(400, f"request body ended after {size}{of} bytes ({exc})") from None
        if length is not None and size != length:
            raise _Refused(400, f"request body ended after {size} of {length} bytes")
        return b"".join(chunks)

    async def _refuse(self, request: web.BaseRequest, refused: _Refused) -> web.StreamResponse:
        response = error_response(refused.status, str(refused))
        _log_error(request.method, request.raw_path, response)
        answer = _web_response(response, close=True)  # the unread body would be taken for the next request
        if refused.drain:
            with contextlib.suppress(Exception):  # the client may be gone; either way the connection closes
                await answer.prepare(request)
                await answer.write_eof()
                await self._drain(request, refused.drain)
        return answer

    async def _drain(self, request: web.BaseRequest, left: int) -> None:
        """Read and throw away up to `left` bytes of what is left of the body, so closing does not reset the 413."""
        async with asyncio.timeout(_DRAIN_S):
            while left > 0 and (chunk := await request.content.readany()):
                left -= len(chunk)


def serve_rest(api: Any, host: str, port: int, *, max_body_bytes: int = 64 << 20, num_threads: int = 0) -> RestServer:
    """Serve `api` over HTTP/1.1 on host:port (IPv4 or IPv6; port 0 picks a free one) from a background thread.

    num_threads is --rest_api_num_threads: the threads dispatch runs on; 0 means TF Serving's default, 4 per CPU
    this process may run on. Returns once the socket listens; OSError if it cannot be bound.
    """
    threads = num_threads if num_threads > 0 else 4 * len(os.sched_getaffinity(0))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart at once; a port in use still fails
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"tf-serving-dropin: cannot listen for REST on {host}:{port}: {exc.strerror}") from exc
    server = RestServer(api, sock, max_body_bytes, threads)
    server._start()
    log.debug("tf-serving-dropin: REST API listening on %s:%d with %d threads", host, server.port, threads)
    return server
