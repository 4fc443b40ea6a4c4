"""`make gpu-bench`: the in-process ceiling of both frameworks on a GPU, per batch size and dtype.

  python -m serving.gpu_bench [--model mobilenet] [--batch-sizes 1,2,4,...,256] [--iterations 50]
                              [--warmup 10] [--frameworks torch,tf] [--dtypes float32,float16,bfloat16]

Builds the checkpoint's model in each framework that sees the GPU (the same weights the
servers get), then times batches of 1 to 256 images in float32 and in mixed float16 and
bfloat16 (torch.autocast; Keras's mixed_<dtype> policy), bfloat16 only where the GPU
supports it. Each timed iteration copies the batch from host memory and the probabilities
back, as a server must, and waits for the GPU, so a row is a ceiling a server on the same
GPU is measured against. Writes artifacts/results/gpu-bench.json with the GPU's name,
driver and CUDA versions, and prints a table. A benchmark prints figures; nothing here
asserts a time.

On a host without a GPU it says so in one line and exits 2 (CI never needs a GPU).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import functools  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common.environment import host_record, package_versions  # noqa: E402
from common.errors import EXIT_USAGE, OneLineArgumentParser, run_cli  # noqa: E402
from common.fsutil import write_results_file  # noqa: E402
from common.paths import ArtifactPaths, default_artifacts_root  # noqa: E402

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
    parser.add_argument("--model", default=os.environ.get("MODEL", os.environ.get("PROFILE", "mobilenet")),
                        help="checkpoint name (default: $MODEL, else mobilenet, the documented GPU workload)")
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


def time_iterations(step: Callable[[], object], synchronize: Callable[[], None], warmup: int,
                    iterations: int) -> list[float]:
    """Wall time of each of `iterations` calls after `warmup` untimed ones, the device drained each time."""
    for _ in range(warmup):
        step()
    synchronize()
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def top1_agreement(probabilities: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == np.argmax(reference, axis=1)))


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
    found = [name for name in wanted if name == "torch" and torch_sees_gpu()]
    if "tf" in wanted and (found or _gpu_device_present()) and tf_sees_gpu():
        found.append("tf")
    return found


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
def _torch_runner(checkpoint, dtype: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]] | str:
    """predict(host images) -> host probabilities on the GPU, and the sync; or why the dtype is skipped."""
    import torch

    from training.reference import build_both

    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bfloat16 support (torch.cuda.is_bf16_supported() is False)"
    model = build_both(checkpoint).torch_model.to("cuda").eval()
    autocast = torch.autocast("cuda", dtype=getattr(torch, dtype), enabled=dtype != "float32")

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast:
            return model(torch.from_numpy(images).to("cuda")).float().cpu().numpy()

    return predict, torch.cuda.synchronize


def _tf_runner(checkpoint, dtype: str) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[], None]] | str:
    import keras
    import tensorflow as tf

    from training.keras_model import build_keras_model
    from training.transfer import weights_to_keras

    gpu = tf.config.list_physical_devices("GPU")[0]
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
    if dtype == "bfloat16" and tuple(capability) < (8, 0):
        return f"this GPU (compute capability {capability}) has no bfloat16 tensor cores for Keras's mixed_bfloat16"
    # A Keras policy applies to layers built while it is set; the variables stay float32.
    keras.mixed_precision.set_global_policy("float32" if dtype == "float32" else f"mixed_{dtype}")
    try:
        model = build_keras_model(checkpoint.spec)
        weights_to_keras(checkpoint.weights(), model, checkpoint.spec)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    infer = tf.function(lambda images: model(images, training=False))

    def predict(images: np.ndarray) -> np.ndarray:
        with tf.device("/GPU:0"):
            return tf.cast(infer(tf.constant(images)), tf.float32).numpy()  # .numpy() waits for the GPU

    return predict, lambda: None


RUNNERS = {"torch": _torch_runner, "tf": _tf_runner}


def bench_framework(framework: str, checkpoint, args: argparse.Namespace) -> tuple[list[Row], dict, list[dict]]:
    """Rows for every dtype and batch size, top-1 agreement per dtype, and the dtypes skipped."""
    test_images = checkpoint.test_set()[0][:AGREEMENT_IMAGES].astype(np.float32)
    rng = np.random.default_rng(0)
    rows, agreement, skipped, reference = [], {}, [], None
    for dtype in args.dtypes:
        runner = RUNNERS[framework](checkpoint, dtype)
        if isinstance(runner, str):
            skipped.append({"framework": framework, "dtype": dtype, "reason": runner})
            continue
        predict, synchronize = runner
        probabilities = predict(test_images)
        reference = probabilities if dtype == "float32" else reference
        if reference is not None:
            agreement[dtype] = top1_agreement(probabilities, reference)
        for batch in args.batch_sizes:
            images = rng.random((batch, *checkpoint.spec.input_shape), dtype=np.float32)
            seconds = time_iterations(functools.partial(predict, images), synchronize, args.warmup, args.iterations)
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
    from training.checkpoint import load_checkpoint

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
    for skip in results["skipped"]:
        print(f"skipped {skip['framework']} {skip['dtype']}: {skip['reason']}")
    out = write_results_file(paths.results_dir, "gpu-bench.json", results)
    print(f"gpu-bench: wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
