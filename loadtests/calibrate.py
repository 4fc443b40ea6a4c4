"""The generator's own ceiling: locust against trivial local endpoints that answer at once.

    python -m loadtests.calibrate serve --rest-port P --grpc-port Q   (started by the sweep)

The endpoints return a fixed small answer without reading the model, so the
throughput locust reaches against them is what the generator itself can push
on this machine with these users. A server's peak is shown as a fraction of
it: near 1 means the generator, not the server, set the number.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

from common.errors import OneLineArgumentParser

REST_ANSWER = b'{"predictions": [[1.0]]}'
HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(REST_ANSWER)).encode() + b"\r\n\r\n" + REST_ANSWER)


async def _http_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: read a request head and its Content-Length body, answer, repeat."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            writer.write(HTTP_RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _grpc_server(port: int):
    import grpc

    def answer(request: bytes, context) -> bytes:
        return b""

    class AnyMethod(grpc.GenericRpcHandler):
        def service(self, handler_call_details):
            return grpc.unary_unary_rpc_method_handler(answer)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((AnyMethod(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


async def _serve(rest_port: int, grpc_port: int) -> None:
    grpc_server = _grpc_server(grpc_port)
    http_server = await asyncio.start_server(_http_connection, "127.0.0.1", rest_port)
    async with http_server:
        await http_server.serve_forever()
    grpc_server.stop(0)


def start_endpoints(rest_port: int, grpc_port: int, cpus: list[int] | None, log: Path) -> subprocess.Popen:
    """The trivial endpoints in their own process on the servers' CPU set; ready when both ports answer."""
    from common.procs import port_open, start_group

    command = [sys.executable, "-m", "loadtests.calibrate", "serve", "--rest-port", str(rest_port),
               "--grpc-port", str(grpc_port)]
    process = start_group(command, log, cwd=Path(__file__).resolve().parent.parent, cpus=cpus)
    deadline = time.monotonic() + 30
    while not (port_open(rest_port) and port_open(grpc_port)):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"calibration endpoints did not start; see {log}")
        time.sleep(0.2)
    return process


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m loadtests.calibrate")
    parser.add_argument("mode", choices=("serve",))
    parser.add_argument("--rest-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.rest_port, args.grpc_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
