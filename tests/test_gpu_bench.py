"""make gpu-bench: one line and exit 2 without a GPU; option parsing, figures and the table with real numbers."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import pytest

from common.timing import time_calls
from serving import gpu_bench
from tests.conftest import run_module


def test_without_a_gpu_it_says_so_in_one_line_and_exits_2():
    if gpu_bench.torch_sees_gpu():
        pytest.skip("this host has a GPU")
    done = run_module("serving.gpu_bench", "--model", "tiny")
    assert done.returncode == 2
    assert done.stderr.strip() == gpu_bench.NO_GPU
    assert done.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", "0,8"], "between 1 and 4096"),
    (["--batch-sizes", "eight"], "integers"),
    (["--dtypes", "float8"], "choose from float32,float16,bfloat16"),
    (["--frameworks", "jax"], "choose from torch,tf"),
    (["--iterations", "-3"], "positive integer"),
])
def test_bad_options_exit_2_with_one_line(args, message):
    done = run_module("serving.gpu_bench", *args)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


def test_batch_sizes_parse_sorted_and_unique():
    assert gpu_bench.parse_batch_sizes("256,1, 8,8") == (1, 8, 256)
    assert gpu_bench.DEFAULT_BATCH_SIZES == tuple(2 ** n for n in range(9))
    with pytest.raises(argparse.ArgumentTypeError):
        gpu_bench.parse_batch_sizes("4097")


def test_summarize_turns_wall_times_into_throughput_and_percentiles():
    seconds = [0.010] * 98 + [0.020, 0.030]
    row = gpu_bench.summarize("torch", "float16", 32, seconds)
    assert row.iterations == 100
    assert row.images_per_s == pytest.approx(32 * 100 / 1.03)
    assert row.p50_ms == pytest.approx(10.0) and row.p99_ms == pytest.approx(np.percentile(seconds, 99) * 1000)


def test_table_has_one_aligned_line_per_row():
    rows = [gpu_bench.summarize("tf", "bfloat16", 256, [0.004, 0.005]), gpu_bench.summarize("torch", "float32", 1,
                                                                                               [0.0005])]
    lines = gpu_bench.format_table(rows).splitlines()
    assert lines[0].split() == ["framework", "dtype", "batch", "images/s", "p50", "ms", "p99", "ms"]
    assert lines[1].split() == ["tf", "bfloat16", "256", "56,888.9", "4.500", "4.990"]
    assert lines[2].split() == ["torch", "float32", "1", "2,000.0", "0.500", "0.500"]
    assert len({len(line) for line in lines}) == 1


def test_timing_counts_only_the_timed_iterations_and_drains_the_device_each_time():
    calls = {"step": 0, "sync": 0}
    seconds = time_calls(lambda: calls.__setitem__("step", calls["step"] + 1), warmup=3, iterations=5,
                         synchronize=lambda: calls.__setitem__("sync", calls["sync"] + 1))
    assert len(seconds) == 5 and all(s >= 0 for s in seconds)
    assert calls == {"step": 8, "sync": 6}


# Four 1x1x1 test images; the spec's input shape is all bench_framework reads besides them.
FAKE_CHECKPOINT = SimpleNamespace(spec=SimpleNamespace(input_shape=(1, 1, 1)),
                                  test_set=lambda: (np.zeros((4, 1, 1, 1), dtype=np.float32), np.zeros(4)))


REFERENCE = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])


def fake_runners(built: list[str]):
    """float32 answers REFERENCE; float16 flips the last image's class; bfloat16 is unsupported."""
    def runner(dtype: str):
        built.append(dtype)
        if dtype == "bfloat16":
            return "no bfloat16 here"
        answer = REFERENCE.copy()
        if dtype == "float16":
            answer[3] = answer[3, ::-1]
        return (lambda images: answer[:len(images)]), (lambda: None)
    return lambda checkpoint: runner


def test_agreement_is_against_float32_even_when_only_other_dtypes_are_timed(monkeypatch):
    built = []
    monkeypatch.setitem(gpu_bench.RUNNERS, "torch", fake_runners(built))
    args = argparse.Namespace(dtypes=("float16", "bfloat16"), batch_sizes=(1, 2), warmup=1, iterations=2)
    rows, agreement, skipped = gpu_bench.bench_framework("torch", FAKE_CHECKPOINT, args)
    assert built == ["float32", "float16", "bfloat16"]  # float32 first, each dtype built once
    assert agreement == {"float16": 0.75}
    assert [(row.dtype, row.batch_size) for row in rows] == [("float16", 1), ("float16", 2)]
    assert skipped == [{"framework": "torch", "dtype": "bfloat16", "reason": "no bfloat16 here"}]


def test_float32_is_built_once_and_agrees_with_itself(monkeypatch):
    built = []
    monkeypatch.setitem(gpu_bench.RUNNERS, "tf", fake_runners(built))
    args = argparse.Namespace(dtypes=("float32", "float16"), batch_sizes=(4,), warmup=1, iterations=1)
    _, agreement, _ = gpu_bench.bench_framework("tf", FAKE_CHECKPOINT, args)
    assert built == ["float32", "float16"] and agreement == {"float32": 1.0, "float16": 0.75}


def test_model_defaults_to_model_then_profile_then_tiny_as_make_does(monkeypatch):
    for name in ("MODEL", "PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert gpu_bench._parser().parse_args([]).model == "tiny"
    monkeypatch.setenv("PROFILE", "mobilenet")
    assert gpu_bench._parser().parse_args([]).model == "mobilenet"
    monkeypatch.setenv("MODEL", "tiny-tf")
    assert gpu_bench._parser().parse_args([]).model == "tiny-tf"


def test_tensorflow_is_only_asked_when_a_gpu_driver_is_present(monkeypatch):
    asked = []
    monkeypatch.setattr(gpu_bench, "torch_sees_gpu", lambda: False)
    monkeypatch.setattr(gpu_bench, "tf_sees_gpu", lambda: asked.append("tf") or True)
    monkeypatch.setattr(gpu_bench, "_gpu_device_present", lambda: False)
    assert gpu_bench.frameworks_on_gpu(("torch", "tf")) == [] and asked == []
    monkeypatch.setattr(gpu_bench, "_gpu_device_present", lambda: True)
    assert gpu_bench.frameworks_on_gpu(("torch", "tf")) == ["tf"] and asked == ["tf"]
    monkeypatch.setattr(gpu_bench, "torch_sees_gpu", lambda: True)
    assert gpu_bench.frameworks_on_gpu(("torch",)) == ["torch"]
