"""Benchmark: does server-side batching raise the drop-in's throughput under concurrent load?

  python -m serving.tf.bench_dropin [--clients 16] [--seconds 10] [--model tiny]

Starts the drop-in twice as a separate process (batching off, then on with
serving/tf/batching.config), drives each with N concurrent keep-alive REST
clients sending one test image per request, and prints throughput, latency
percentiles, the batches the server formed, and the on/off ratio. Figures hold
for this machine only; the load generator shares the CPU with the server.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time

import numpy as np

from common.environment import host_record, package_versions
from common.errors import OneLineArgumentParser, UsageError, run_cli
from common.fsutil import write_results_file
from common.paths import REPO_ROOT, ArtifactPaths, default_artifacts_root
from common.procs import free_port, log_tail, start_group, stop_group, wait_http_ok


def _drive(port: int, path: str, body: bytes, clients: int, seconds: float) -> list[float]:
    """Closed loop: each client sends, waits for the answer, sends again. Returns latencies (s)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures = []
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failures.append(response.status)
            latencies[index].append(time.perf_counter() - started)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed (statuses {sorted(set(failures))})")
    return [value for per_client in latencies for value in per_client]


def _metric(port: int, name: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/monitoring/prometheus/metrics")
    for line in connection.getresponse().read().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def run_one(paths: ArtifactPaths, model: str, batching: bool, clients: int, seconds: float, body: bytes) -> dict:
    """Start the drop-in, warm up, measure a steady window, stop it."""
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, "-m", "serving.tf.dropin", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
               f"--model_name={model}", f"--model_base_path={paths.tf_model_base(model)}",
               f"--monitoring_config_file={REPO_ROOT / 'serving/tf/monitoring.config'}"]
    if batching:
        command += ["--enable_batching", f"--batching_parameters_file={REPO_ROOT / 'serving/tf/batching.config'}"]
    log_file = paths.run_dir / f"bench-dropin-{'batching' if batching else 'plain'}.log"
    process = start_group(command, log_file, cwd=REPO_ROOT, env=dict(os.environ))
    try:
        if not wait_http_ok(f"http://127.0.0.1:{rest_port}/v1/models/{model}", 120, lambda: process.poll() is None):
            raise RuntimeError(f"drop-in did not start:\n{log_tail(log_file)}")
        path = f"/v1/models/{model}:predict"
        _drive(rest_port, path, body, clients, min(3.0, seconds))  # warm-up, not counted
        batches_before = _metric(rest_port, "tf_serving_dropin_batches_total")
        requests_before = _metric(rest_port, "tf_serving_dropin_batched_requests_total")
        latencies = np.asarray(_drive(rest_port, path, body, clients, seconds))
        batches = _metric(rest_port, "tf_serving_dropin_batches_total") - batches_before
        batched = _metric(rest_port, "tf_serving_dropin_batched_requests_total") - requests_before
    finally:
        stop_group(process.pid)
    return {"batching": batching, "requests": int(len(latencies)), "throughput_rps": len(latencies) / seconds,
            "p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3),
            "server_batches": int(batches),
            "mean_requests_per_batch": float(batched / batches) if batches else None}


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m serving.tf.bench_dropin", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0:
        raise UsageError("--clients must be at least 1 and --seconds positive")
    paths = ArtifactPaths(default_artifacts_root())
    test_set = paths.checkpoint_dir(args.model) / "test_set.npz"
    if not test_set.is_file() or not paths.tf_model_base(args.model).is_dir():
        raise UsageError(f"no exported model {args.model!r}; run 'make train export' first")
    with np.load(test_set) as data:
        body = json.dumps({"instances": data["images"][:1].tolist()}).encode()
    results = [run_one(paths, args.model, batching, args.clients, args.seconds, body) for batching in (False, True)]
    print(f"tf-serving-dropin REST, model {args.model}, batch 1 per request, {args.clients} closed-loop clients, "
          f"{args.seconds:g} s window; batching config serving/tf/batching.config")
    print(f"{'batching':<9} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batches':>8} {'req/batch':>10}")
    for row in results:
        per_batch = f"{row['mean_requests_per_batch']:.2f}" if row["mean_requests_per_batch"] else "-"
        print(f"{'on' if row['batching'] else 'off':<9} {row['requests']:>9} {row['throughput_rps']:>8.1f} "
              f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['server_batches']:>8} {per_batch:>10}")
    ratio = results[1]["throughput_rps"] / results[0]["throughput_rps"]
    print(f"throughput ratio batching on / off: {ratio:.2f}x")
    record = {"results": results, "ratio": ratio, "clients": args.clients, "seconds": args.seconds,
              "server": "tf-serving-dropin (not the official binary)", "host": host_record(),
              "packages": package_versions()}
    out = write_results_file(paths.results_dir, "dropin-batching.json", record)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
