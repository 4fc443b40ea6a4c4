"""`make gpu-bench`: the in-process ceiling of both frameworks on a GPU, per batch size and dtype.

  python -m serving.gpu_bench [--model mobilenet] [--batch-sizes 1,2,4,...,256] [--iterations 50]
                              [--warmup 10] [--frameworks torch,tf] [--dtypes float32,float16,bfloat16]

--model defaults to $MODEL, else $PROFILE, else tiny, as every serving command and make do;
mobilenet is the GPU workload (make gpu-bench PROFILE=mobilenet).

Builds the checkpoint's model in each framework that sees the GPU (the same weights the
servers get), one framework at a time, then times batches of 1 to 256 images in float32
and in mixed float16 and bfloat16 (torch.autocast; Keras's mixed_<dtype> policy), bfloat16
only where the GPU supports it. Each dtype's top-1 agreement with the same framework's
float32 predictions is recorded (float32 is always computed for it, even when not timed).
TensorFlow allocates GPU memory as it needs it (memory growth), not all of it up front.
Each timed iteration copies the batch from host memory and the probabilities back, as a
server must, and waits for the GPU, so a row is a ceiling a server on the same GPU is
measured against. Writes artifacts/results/gpu-bench.json with the GPU's name, driver and
CUDA versions, and prints a table. A benchmark prints figures; nothing here asserts a time.

On a host without a GPU it says so in one line and exits 2 (CI never needs a GPU).
"""

from __future__ import annotations

import argparse
import functools
import gc
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from common.environment import host_record, package_versions
from common.errors import EXIT_USAGE, OneLineArgumentParser, run_cli
from common.fsutil import write_results_file
from common.paths import ArtifactPaths, default_artifacts_root, default_model
from common.timing import time_calls
from model.parity import compare

FRAMEWORKS = ("torch", "tf")
DTYPES = ("float32", "float16", "bfloat16")
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_BATCH_SIZE = 4096
AGREEMENT_IMAGES = 256  # test images each dtype is checked on against the same framework's float32
NO_GPU = ("gpu-bench: no GPU on this host (torch.cuda.is_available() is False and TensorFlow lists no GPU); "
          "run it on a GPU host")


# -- options ----------------------------------------------------------------------------------
def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): positive integers up to MAX_BATCH_SIZE, sorted, duplicates dropped."""
    try:
        sizes = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"batch sizes must be between 1 and {MAX_BATCH_SIZE}, got {text!r}")
    return tuple(sorted(sizes))


def _choices(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
        unknown = [name for name in chosen if name not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}, got {text!r}")
        return chosen
    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(prog="python -m serving.gpu_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model(),
                        help="checkpoint (default: $MODEL, else $PROFILE, else tiny; mobilenet is the GPU workload)")
    parser.add_argument("--batch-sizes", type=parse_batch_sizes, default=DEFAULT_BATCH_SIZES,
                        help="comma-separated (default 1,2,4,...,256)")
    parser.add_argument("--iterations", type=_positive, default=50, help="timed batches per row (default 50)")
    parser.add_argument("--warmup", type=_positive, default=10, help="untimed batches first (default 10)")
    parser.add_argument("--frameworks", type=_choices(FRAMEWORKS), default=FRAMEWORKS, help="torch,tf (default)")
    parser.add_argument("--dtypes", type=_choices(DTYPES), default=DTYPES,
                        help="float32,float16,bfloat16 (default all; bfloat16 where the GPU supports it)")
    parser.add_argument("--artifacts", type=Path, default=default_artifacts_root())
    return parser


# -- figures ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    framework: str
    dtype: str
    batch_size: int
    iterations: int
    images_per_s: float
    p50_ms: float
    p99_ms: float


def summarize(framework: str, dtype: str, batch_size: int, seconds: list[float]) -> Row:
    """One row from per-iteration wall times: throughput over the whole window, latency percentiles."""
    p50, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 99])
    return Row(framework, dtype, batch_size, len(seconds), batch_size * len(seconds) / sum(seconds),
               float(p50), float(p99))


def format_table(rows: Iterable[Row]) -> str:
    lines = [f"{'framework':<10}{'dtype':<10}{'batch':>6}{'images/s':>12}{'p50 ms':>10}{'p99 ms':>10}"]
    lines += [f"{r.framework:<10}{r.dtype:<10}{r.batch_size:>6}{r.images_per_s:>12,.1f}{r.p50_ms:>10.3f}"
              f"{r.p99_ms:>10.3f}" for r in rows]
    return "\n".join(lines)


# -- GPU detection ----------------------------------------------------------------------------
def torch_sees_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _gpu_device_present() -> bool:
    """A cheap look for a GPU driver, so a GPU-less host never pays for importing TensorFlow."""
    return bool(shutil.which("nvidia-smi")) or any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/kfd"))


def tf_sees_gpu() -> bool:
    try:
        import tensorflow as tf
    except ImportError:
        return False
    return bool(tf.config.list_physical_devices("GPU"))


def frameworks_on_gpu(wanted: tuple[str, ...]) -> list[str]:
    """The wanted frameworks that see a GPU; TensorFlow is only asked when a GPU driver is present."""
    found = ["torch"] if "torch" in wanted and torch_sees_gpu() else []
    if "tf" in wanted and (found or _gpu_device_present()) and tf_sees_gpu():
        found.append("tf")
    return found


def let_tf_memory_grow() -> None:
    """TensorFlow takes GPU memory as it needs it instead of nearly all of it; before any TF op runs."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def gpu_record(frameworks: list[str]) -> dict[str, object]:
    """The GPU's name, driver and CUDA versions, from nvidia-smi and from each framework's build."""
    record: dict[str, object] = {}
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, timeout=30)
        if done.returncode == 0 and done.stdout.strip():
            name, driver, memory = (part.strip() for part in done.stdout.splitlines()[0].split(","))
            record.update(name=name, driver_version=driver, memory=memory)
    if "torch" in frameworks:
        import torch

        record.setdefault("name", torch.cuda.get_device_name(0))
        record["torch_cuda_version"] = torch.version.cuda
        record["torch_cudnn_version"] = torch.backends.cudnn.version()
        record["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    if "tf" in frameworks:
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        record["tf_cuda_version"] = build.get("cuda_version")
        record["tf_cudnn_version"] = build.get("cudnn_version")
    return record


# -- the two frameworks -----------------------------------------------------------------------
Predict = Callable[[np.ndarray], np.ndarray]
Runner = tuple[Predict, Callable[[], None]]  # predict(host images) -> host probabilities; wait for the GPU
RunnerFor = Callable[[str], Runner | str]  # dtype -> its runner, or why the dtype is skipped


def _torch_runners(checkpoint) -> RunnerFor:
    """One float32 torch build on the GPU (torch only, no Keras model); each dtype runs it under autocast."""
    import torch

    from model.torch_model import build_torch_model
    from model.transfer import weights_to_torch

    model = build_torch_model(checkpoint.spec)
    weights_to_torch(checkpoint.weights(), model)
    model = model.to("cuda").eval()

    def runner(dtype: str) -> Runner | str:
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bfloat16 support (torch.cuda.is_bf16_supported() is False)"
        autocast = torch.autocast("cuda", dtype=getattr(torch, dtype), enabled=dtype != "float32")

        def predict(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode(), autocast:
                return model(torch.from_numpy(images).to("cuda")).float().cpu().numpy()

        return predict, torch.cuda.synchronize

    return runner


def _tf_runners(checkpoint) -> RunnerFor:
    """A Keras build per dtype: a mixed-precision policy applies to the layers built while it is set."""
    import keras
    import tensorflow as tf

    from model.keras_model import build_keras_model
    from model.transfer import weights_to_keras

    gpu = tf.config.list_physical_devices("GPU")[0]
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))

    def runner(dtype: str) -> Runner | str:
        if dtype == "bfloat16" and tuple(capability) < (8, 0):
            return f"this GPU (compute capability {capability}) has no bfloat16 tensor cores for Keras's mixed_bfloat16"
        keras.mixed_precision.set_global_policy("float32" if dtype == "float32" else f"mixed_{dtype}")
        try:  # the variables stay float32 under a mixed policy
            model = build_keras_model(checkpoint.spec)
            weights_to_keras(checkpoint.weights(), model, checkpoint.spec)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        infer = tf.function(lambda images: model(images, training=False))

        def predict(images: np.ndarray) -> np.ndarray:
            with tf.device("/GPU:0"):
                return tf.cast(infer(tf.constant(images)), tf.float32).numpy()  # .numpy() waits for the GPU

        return predict, lambda: None

    return runner


RUNNERS: dict[str, Callable[[object], RunnerFor]] = {"torch": _torch_runners, "tf": _tf_runners}


def _release_gpu_memory(framework: str) -> None:
    """Hand torch's cached GPU memory back (its model is gone) before the next framework builds its own."""
    if framework == "torch":
        import torch

        gc.collect()
        torch.cuda.empty_cache()


def bench_framework(framework: str, checkpoint, args: argparse.Namespace) -> tuple[list[Row], dict, list[dict]]:
    """Rows for every dtype and batch size, top-1 agreement per dtype, and the dtypes skipped.

    float32 is always run first: it is the reference every dtype's agreement is measured against,
    also when only float16 or bfloat16 is timed.
    """
    runner_for = functools.cache(RUNNERS[framework](checkpoint))
    test_images = checkpoint.test_set()[0][:AGREEMENT_IMAGES].astype(np.float32)
    reference = runner_for("float32")[0](test_images)
    rng = np.random.default_rng(0)
    rows, agreement, skipped = [], {}, []
    for dtype in args.dtypes:
        runner = runner_for(dtype)
        if isinstance(runner, str):
            skipped.append({"framework": framework, "dtype": dtype, "reason": runner})
            continue
        predict, synchronize = runner
        agreement[dtype] = compare(f"{framework} {dtype}", reference, predict(test_images)).top1_agreement
        for batch in args.batch_sizes:
            images = rng.random((batch, *checkpoint.spec.input_shape), dtype=np.float32)
            seconds = time_calls(functools.partial(predict, images), args.warmup, args.iterations, synchronize)
            rows.append(summarize(framework, dtype, batch, seconds))
            print(format_table([rows[-1]]).splitlines()[1], flush=True)
    return rows, agreement, skipped


# -- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    frameworks = frameworks_on_gpu(args.frameworks)
    if not frameworks:
        print(NO_GPU, file=sys.stderr)
        return EXIT_USAGE
    if "tf" in frameworks:
        let_tf_memory_grow()
    from model.checkpoint import load_checkpoint

    paths = ArtifactPaths(args.artifacts.resolve())
    checkpoint = load_checkpoint(paths.checkpoint_dir(args.model))
    results = {"kind": "gpu-bench", "model": args.model, "profile": checkpoint.meta["profile"],
               "input_shape": list(checkpoint.spec.input_shape),
               "multiply_accumulates": checkpoint.spec.multiply_accumulates(),
               "trained_briefly": checkpoint.meta.get("trained_briefly", False),
               "method": {"warmup": args.warmup, "iterations": args.iterations,
                          "includes_host_copies": True, "mixed_precision": "torch.autocast / Keras mixed_<dtype>"},
               "gpu": gpu_record(frameworks), "frameworks": frameworks, "rows": [], "top1_agreement": {},
               "skipped": [], "versions": package_versions(), "host": host_record(),
               "date": datetime.now(UTC).isoformat(timespec="seconds")}
    print(f"gpu-bench: {args.model} on {results['gpu'].get('name', 'GPU')}, frameworks {', '.join(frameworks)}")
    print(format_table([]))
    for framework in frameworks:
        rows, agreement, skipped = bench_framework(framework, checkpoint, args)
        results["rows"] += [asdict(row) for row in rows]
        results["top1_agreement"][framework] = agreement
        results["skipped"] += skipped
        _release_gpu_memory(framework)
    for skip in results["skipped"]:
        print(f"skipped {skip['framework']} {skip['dtype']}: {skip['reason']}")
    out = write_results_file(paths.results_dir, "gpu-bench.json", results, schema="gpu-bench")
    print(f"gpu-bench: wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
