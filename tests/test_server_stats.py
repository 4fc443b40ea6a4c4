"""loadtests.server_stats: the server's side of a window, from pages recorded off the real servers, a process group
started here, and both real servers under a few predicts."""

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from common.procs import stop_group
from loadtests.server_stats import (
    CounterReset,
    GroupSampler,
    ServerWatch,
    batch_summary,
    delta,
    parse_prometheus,
    tf_figures,
    torchserve_figures,
    total,
)
from serving import clients
from serving.record import DeployRecord, TfKnobs, load_record
from serving.torch.server import read_keys

# TorchServe 0.12 (metrics_mode=prometheus, metrics_config=serving/torch/metrics.yaml), batch size 8: the whole page
# with the model loaded and no predict yet (counters have a TYPE line and no sample until first used).
TS_BEFORE = """\
# HELP CPUUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE CPUUtilization gauge
CPUUtilization{Level="Host",Hostname="vm",} 100.0
# HELP GPUMemoryUsed Torchserve prometheus gauge metric with unit: Megabytes
# TYPE GPUMemoryUsed gauge
# HELP GPUUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE GPUUtilization gauge
# HELP WorkerThreadTime Torchserve prometheus gauge metric with unit: Milliseconds
# TYPE WorkerThreadTime gauge
WorkerThreadTime{Level="Host",Hostname="vm",} 11.0
# HELP Requests4XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests4XX counter
# HELP ts_inference_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_inference_latency_microseconds counter
# HELP MemoryAvailable Torchserve prometheus gauge metric with unit: Megabytes
# TYPE MemoryAvailable gauge
MemoryAvailable{Level="Host",Hostname="vm",} 21907.5234375
# HELP MemoryUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE MemoryUtilization gauge
MemoryUtilization{Level="Host",Hostname="vm",} 9.1
# HELP PredictionTime Torchserve prometheus gauge metric with unit: ms
# TYPE PredictionTime gauge
# HELP ProcessedBatches Torchserve prometheus counter metric with unit: Count
# TYPE ProcessedBatches counter
# HELP WorkerLoadTime Torchserve prometheus gauge metric with unit: Milliseconds
# TYPE WorkerLoadTime gauge
WorkerLoadTime{WorkerName="W-9000-tiny_1",Level="Host",Hostname="vm",} 8873.0
# HELP HandlerTime Torchserve prometheus gauge metric with unit: ms
# TYPE HandlerTime gauge
# HELP Requests5XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests5XX counter
# HELP GPUMemoryUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE GPUMemoryUtilization gauge
# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
# HELP DiskUsage Torchserve prometheus gauge metric with unit: Gigabytes
# TYPE DiskUsage gauge
DiskUsage{Level="Host",Hostname="vm",} 35.41306686401367
# HELP Requests2XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests2XX counter
Requests2XX{Level="Host",Hostname="vm",} 18.0
# HELP MemoryUsed Torchserve prometheus gauge metric with unit: Megabytes
# TYPE MemoryUsed gauge
MemoryUsed{Level="Host",Hostname="vm",} 2197.6171875
# HELP QueueTime Torchserve prometheus gauge metric with unit: Milliseconds
# TYPE QueueTime gauge
# HELP DiskAvailable Torchserve prometheus gauge metric with unit: Gigabytes
# TYPE DiskAvailable gauge
DiskAvailable{Level="Host",Hostname="vm",} 66.04921340942383
# HELP DiskUtilization Torchserve prometheus gauge metric with unit: Percent
# TYPE DiskUtilization gauge
DiskUtilization{Level="Host",Hostname="vm",} 34.9
# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_queue_latency_microseconds counter
"""
# The same server after 5 REST predicts of 3 images each, one at a time (the lines of the counters used).
TS_AFTER_REST = """\
# HELP ts_inference_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{model_name="tiny",model_version="default",hostname="vm",} 1332525.19
# HELP ProcessedBatches Torchserve prometheus counter metric with unit: Count
# TYPE ProcessedBatches counter
ProcessedBatches{BatchSize="3",ModelName="tiny",Level="Model",Hostname="vm",} 5.0
# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="tiny",model_version="default",hostname="vm",} 5.0
# HELP ts_queue_latency_microseconds Torchserve prometheus counter metric with unit: Microseconds
# TYPE ts_queue_latency_microseconds counter
ts_queue_latency_microseconds{model_name="tiny",model_version="default",hostname="vm",} 37242.873999999996
"""
# ... and after 4 more predicts of 2 images each by gRPC: requests and batches move, the latency counters do not.
TS_AFTER_GRPC = """\
# TYPE ts_inference_latency_microseconds counter
ts_inference_latency_microseconds{model_name="tiny",model_version="default",hostname="vm",} 1332525.19
# TYPE ProcessedBatches counter
ProcessedBatches{BatchSize="3",ModelName="tiny",Level="Model",Hostname="vm",} 5.0
ProcessedBatches{BatchSize="2",ModelName="tiny",Level="Model",Hostname="vm",} 4.0
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="tiny",model_version="default",hostname="vm",} 9.0
# TYPE ts_queue_latency_microseconds counter
ts_queue_latency_microseconds{model_name="tiny",model_version="default",hostname="vm",} 37242.873999999996
"""

# The drop-in (batching on, serving/tf/batching.config) after one warm-up predict of 3 images, and after 24 more:
# 4 threads x 5 REST predicts of 3 images, then 4 gRPC predicts of 2. Its pages, bucket lines left out.
TF_BEFORE = """\
# TYPE tf_serving_dropin_info gauge
tf_serving_dropin_info{server="tf-serving-dropin",version="0.1.0"} 1
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="tiny",API="predict",entrypoint="REST_OR_GRPC",status="OK"} 1
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_sum{model_name="tiny",API="predict",entrypoint="REST_OR_GRPC"} 511591.31200074626
:tensorflow:serving:request_latency_count{model_name="tiny",API="predict",entrypoint="REST_OR_GRPC"} 1
# TYPE :tensorflow:serving:batching_session:input_batch_size histogram
:tensorflow:serving:batching_session:input_batch_size_sum{} 3
:tensorflow:serving:batching_session:input_batch_size_count{} 1
# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram
:tensorflow:serving:batching_session:processed_batch_size_sum{} 3
:tensorflow:serving:batching_session:processed_batch_size_count{} 1
# TYPE :tensorflow:serving:batching_session:queuing_latency histogram
:tensorflow:serving:batching_session:queuing_latency_sum{thread_pool_name="batch_threads"} 3491.166000458179
:tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="batch_threads"} 1
# TYPE tf_serving_dropin_batched_requests_total counter
tf_serving_dropin_batched_requests_total 1
# TYPE tf_serving_dropin_batches_total counter
tf_serving_dropin_batches_total 1
# TYPE tf_serving_dropin_largest_batch_requests gauge
tf_serving_dropin_largest_batch_requests 1
# TYPE tf_serving_dropin_processed_batches_total counter
tf_serving_dropin_processed_batches_total{batch_size="3"} 1
"""
TF_AFTER = """\
# TYPE tf_serving_dropin_info gauge
tf_serving_dropin_info{server="tf-serving-dropin",version="0.1.0"} 1
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="tiny",API="predict",entrypoint="REST_OR_GRPC",status="OK"} 25
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{model_name="tiny",API="predict",entrypoint="REST_OR_GRPC",le="+Inf"} 25
:tensorflow:serving:request_latency_sum{model_name="tiny",API="predict",entrypoint="REST_OR_GRPC"} 742384.7999998543
:tensorflow:serving:request_latency_count{model_name="tiny",API="predict",entrypoint="REST_OR_GRPC"} 25
# TYPE :tensorflow:serving:batching_session:input_batch_size histogram
:tensorflow:serving:batching_session:input_batch_size_sum{} 71
:tensorflow:serving:batching_session:input_batch_size_count{} 25
# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram
:tensorflow:serving:batching_session:processed_batch_size_sum{} 71
:tensorflow:serving:batching_session:processed_batch_size_count{} 20
# TYPE :tensorflow:serving:batching_session:queuing_latency histogram
:tensorflow:serving:batching_session:queuing_latency_sum{thread_pool_name="batch_threads"} 82664.30600633612
:tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="batch_threads"} 25
# TYPE tf_serving_dropin_batched_requests_total counter
tf_serving_dropin_batched_requests_total 25
# TYPE tf_serving_dropin_batches_total counter
tf_serving_dropin_batches_total 20
# TYPE tf_serving_dropin_largest_batch_requests gauge
tf_serving_dropin_largest_batch_requests 3
# TYPE tf_serving_dropin_processed_batches_total counter
tf_serving_dropin_processed_batches_total{batch_size="2"} 4
tf_serving_dropin_processed_batches_total{batch_size="3"} 13
tf_serving_dropin_processed_batches_total{batch_size="6"} 1
tf_serving_dropin_processed_batches_total{batch_size="9"} 2
"""


def _without(text: str, *fragments: str) -> str:
    """The page less every line naming one of `fragments`: what a server without that metric would show."""
    return "".join(line for line in text.splitlines(keepends=True) if not any(f in line for f in fragments))


def _images(histogram: dict[str, int]) -> int:
    return sum(int(size) * count for size, count in histogram.items())


# -- Prometheus text and deltas ----------------------------------------------------------------------------------

def test_torchserve_page_parses_labels_values_and_declared_counters():
    before, after = parse_prometheus(TS_BEFORE), parse_prometheus(TS_AFTER_REST)
    assert total(after, "ts_inference_requests_total", model_name="tiny") == 5.0
    assert total(after, "ts_inference_requests_total", model_name="other") == 0.0  # declared, no such series
    assert total(before, "ts_inference_requests_total", model_name="tiny") == 0.0  # TYPE line only: not used yet
    assert total(before, "no_such_metric") is None
    assert total(before, "Requests2XX", Level="Host") == 18.0
    sample = next(s for s in after.samples if s.name == "ProcessedBatches")
    assert sample.labels == {"BatchSize": "3", "ModelName": "tiny", "Level": "Model", "Hostname": "vm"}


def test_torchserve_rest_window_gives_queue_inference_and_batch_sizes():
    figures = torchserve_figures(parse_prometheus(TS_BEFORE), parse_prometheus(TS_AFTER_REST), "tiny")
    assert figures.requests_seen == 5
    assert figures.queue_ms_mean == round(37242.873999999996 / 5 / 1000, 3)
    assert figures.inference_ms_mean == round((1332525.19 - 37242.873999999996) / 5 / 1000, 3)
    assert figures.batch_size == {"mean": 3.0, "histogram": {"3": 5}}
    assert figures.unavailable == []


def test_torchserve_grpc_window_counts_requests_and_batches_but_has_no_latency():
    figures = torchserve_figures(parse_prometheus(TS_AFTER_REST), parse_prometheus(TS_AFTER_GRPC), "tiny")
    assert figures.requests_seen == 4
    assert figures.queue_ms_mean is None and figures.inference_ms_mean is None
    assert any("REST requests only, not gRPC" in reason for reason in figures.unavailable)
    assert figures.batch_size == {"mean": 2.0, "histogram": {"2": 4}}


def test_torchserve_without_the_batch_metric_says_why():
    page = _without(TS_AFTER_REST, "ProcessedBatches")
    figures = torchserve_figures(parse_prometheus(TS_BEFORE), parse_prometheus(page), "tiny")
    assert figures.batch_size is None and figures.requests_seen == 5
    assert any("no ProcessedBatches" in reason for reason in figures.unavailable)


def test_dropin_window_gives_queue_inference_and_exact_batch_sizes():
    figures = tf_figures(parse_prometheus(TF_BEFORE), parse_prometheus(TF_AFTER), "tiny", batching=True)
    assert figures.requests_seen == 24
    queue_ms = round((82664.30600633612 - 3491.166000458179) / 24 / 1000, 3)
    request_ms = round((742384.7999998543 - 511591.31200074626) / 24 / 1000, 3)
    assert figures.queue_ms_mean == queue_ms and figures.inference_ms_mean == round(request_ms - queue_ms, 3)
    assert figures.batch_size["histogram"] == {"2": 4, "3": 12, "6": 1, "9": 2}  # the warm-up's batch of 3 is out
    assert _images(figures.batch_size["histogram"]) == 4 * 5 * 3 + 4 * 2
    assert figures.batch_size["mean"] == round(68 / 19, 3) and figures.unavailable == []


def test_dropin_with_batching_off_has_no_queue_and_no_batches():
    plain = ("batching_session", "tf_serving_dropin_batch", "tf_serving_dropin_largest", "processed_batches")
    figures = tf_figures(parse_prometheus(_without(TF_BEFORE, *plain)), parse_prometheus(_without(TF_AFTER, *plain)),
                         "tiny", batching=False)
    assert figures.requests_seen == 24 and figures.queue_ms_mean is None and figures.batch_size is None
    assert figures.inference_ms_mean == round((742384.7999998543 - 511591.31200074626) / 24 / 1000, 3)
    assert any("enable_batching=false" in reason for reason in figures.unavailable)


def test_official_tf_serving_buckets_give_the_mean_batch_size_only():
    figures = tf_figures(parse_prometheus(_without(TF_BEFORE, "processed_batches")),
                         parse_prometheus(_without(TF_AFTER, "processed_batches")), "tiny")
    assert figures.batch_size == {"mean": round((71 - 3) / (20 - 1), 3), "histogram": None}
    assert any("power-of-2 buckets" in reason for reason in figures.unavailable)


def test_a_counter_that_goes_down_is_a_restart_not_a_negative_delta():
    with pytest.raises(CounterReset, match="restarted"):
        delta(parse_prometheus(TS_AFTER_GRPC), parse_prometheus(TS_AFTER_REST), "ts_inference_requests_total")


def test_batch_histogram_keys_are_sizes_in_numeric_order():
    assert list(batch_summary({"10": 1.0, "9": 2.0, "1": 3.0})["histogram"]) == ["1", "9", "10"]
    assert batch_summary({}) is None


# -- the process group -----------------------------------------------------------------------------------------

GROUP_CHILD = textwrap.dedent("""
    import subprocess, sys, time
    helper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    print("ready", flush=True)
    sys.stdin.readline()
    held = [bytearray(8 * 2**20) for _ in range(8)]  # 64 MiB, touched: bytearray zero-fills
    start = time.process_time()
    while time.process_time() - start < 0.5:  # half a CPU-second of work, however long that takes here
        pass
    print("done", flush=True)
    sys.stdin.readline()
""")


def test_sampler_sees_the_whole_group_grow_and_work(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", GROUP_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        sampler = GroupSampler(child.pid, every_s=0.1)
        sampler.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        figures = sampler.stop()
    finally:
        stop_group(child.pid)
        child.wait(timeout=10)
    assert figures["processes"] == 2  # the child and the helper it started: one process group
    assert figures["rss_mib"]["end"] >= figures["rss_mib"]["start"] + 48
    assert figures["rss_mib"]["max"] >= figures["rss_mib"]["end"]
    assert figures["cpu_percent"]["mean"] > 0 and figures["cpu_percent"]["max"] >= figures["cpu_percent"]["mean"]


def test_a_watch_without_a_record_or_a_window_says_why():
    assert "no deploy record" in ServerWatch(None).stop()["unavailable"][0]
    record = DeployRecord("tf", "dropin", "drop-in", "tiny", {"rest": 1, "grpc": 2}, TfKnobs(False), pgid=None)
    figures = ServerWatch(record).stop()
    assert figures["cpu_percent"] is None and figures["requests_seen"] is None
    assert figures["unavailable"] == ["the run never reached its steady window: nothing was measured"]


# -- both real servers -------------------------------------------------------------------------------------------

IMAGES = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
SIZES = [1, 2, 3, 1, 3, 2]  # images per request; each thread sends them all


def _send_concurrently(make, threads: int = 3) -> tuple[int, int]:
    """Every thread sends SIZES with its own client; (requests, images) sent."""
    def send():
        with make() as client:
            for size in SIZES:
                client.predict(IMAGES[:size])

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return threads * len(SIZES), threads * sum(SIZES)


def _record(artifacts, server):
    record = load_record(artifacts.run_dir, server)
    assert record is not None, f"deploy wrote no {server} record"
    return record


def _check_process_figures(figures, pgid):
    assert figures["cpu_percent"]["mean"] > 0 and figures["rss_mib"]["max"] > 0
    assert figures["sources"]["cpu_rss"].startswith(f"psutil over process group {pgid}")


@pytest.mark.parametrize("target", ["torch-rest", "torch-grpc"])
def test_torchserve_figures_match_what_was_sent(deployed, artifacts, target):
    record = _record(artifacts, "torch")
    token = read_keys(artifacts.run_dir / "torchserve" / "key_file.json")["inference"]
    port = record.ports["inference" if target == "torch-rest" else "grpc"]
    watch = ServerWatch(record)
    watch.start()
    requests, images = _send_concurrently(lambda: clients.make_client(target, port=port, model="tiny", token=token))
    figures = watch.stop(settle_s=10.0)  # the batch counter travels through the worker's log
    assert figures["requests_seen"] == requests
    assert _images(figures["batch_size"]["histogram"]) == images
    assert figures["processes"] >= 3  # the torchserve launcher, Java frontend, Python worker
    _check_process_figures(figures, record.pgid)
    if target == "torch-rest":
        assert figures["queue_ms_mean"] > 0 and figures["inference_ms_mean"] > 0 and figures["unavailable"] == []
    else:
        assert figures["queue_ms_mean"] is None and figures["inference_ms_mean"] is None
        assert any("not gRPC" in reason for reason in figures["unavailable"])


@pytest.mark.parametrize("target", ["tf-rest", "tf-grpc"])
def test_dropin_figures_match_what_was_sent(deployed, artifacts, target):
    record = _record(artifacts, "tf")
    port = record.ports["rest" if target == "tf-rest" else "grpc"]
    watch = ServerWatch(record)
    watch.start()
    requests, images = _send_concurrently(lambda: clients.make_client(target, port=port, model="tiny"))
    figures = watch.stop()
    assert figures["requests_seen"] == requests
    assert _images(figures["batch_size"]["histogram"]) == images
    assert figures["queue_ms_mean"] > 0 and figures["inference_ms_mean"] > 0 and figures["unavailable"] == []
    assert figures["processes"] == 1
    _check_process_figures(figures, record.pgid)
