"""`make edge` / `python -m edge`: on-device formats from the same weights, and what each costs.

  python -m edge [--model tiny] [--calibration FILE.npz]

Writes artifacts/models/edge/<model>_<variant>.{tflite,pte,onnx}, each with a
<file>.json sidecar (signature, input/output dtype, shape and quantization,
labels, input normalization), prints the table and writes
artifacts/results/edge.json. Bad input exits 2 with one line; files are
staged and only published when every format converted and was measured.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common.errors import OneLineArgumentParser, UsageError, run_cli  # noqa: E402
from common.fsutil import write_results_file  # noqa: E402
from common.paths import ArtifactPaths, default_artifacts_root  # noqa: E402

RUNTIME_PACKAGES = {"litert": "ai-edge-litert", "executorch": "executorch", "onnxruntime": "onnxruntime"}


def _latest_savedmodel(paths: ArtifactPaths, model: str) -> Path:
    base = paths.tf_model_base(model)
    versions = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []
    if not versions or not (base / str(versions[-1]) / "saved_model.pb").is_file():
        raise UsageError(f"no SavedModel under {base}; run 'make export' first")
    return base / str(versions[-1])


def _calibration(path: Path | None, checkpoint, input_shape: tuple[int, ...]) -> np.ndarray:
    if path is None:
        images = checkpoint.calibration_images()
        source = "the checkpoint's calibration.npz"
    else:
        try:
            with np.load(path, allow_pickle=False) as data:
                images = data["images"]
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"cannot read calibration set {path} (an .npz with an 'images' array): {exc}") from None
        source = str(path)
    if len(images) == 0:
        raise UsageError(f"calibration set from {source} is empty")
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise UsageError(f"calibration images from {source} have shape {list(images.shape[1:])}; "
                         f"the model takes {list(input_shape)}")
    return images.astype(np.float32)


def _sidecar(file: Path, fmt: str, meta: dict, io: dict) -> None:
    """What an app needs beside the model file (TFLite metadata tooling is not installable here)."""
    sidecar = {"format": fmt, "model": meta["model_name"], "signature": "serving_default", **io,
               "labels": meta["labels"], "normalization": meta["normalization"],
               "input_range": [0.0, 1.0], "layout": "NHWC"}
    file.with_name(file.name + ".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")


def _float_io(input_shape: tuple[int, ...], classes: int) -> dict:
    return {"input": {"name": "images", "dtype": "float32", "shape": [1, *input_shape], "quantization": None},
            "output": {"name": "probabilities", "dtype": "float32", "shape": [1, classes], "quantization": None}}


def stage_formats(scratch: Path, savedmodel: Path, checkpoint, calibration: np.ndarray) -> list[tuple]:
    """Convert every format into scratch; returns (format, runtime, file, loader, quantized)."""
    from edge import executorch_export, onnx_export, tflite
    from training.reference import build_both

    meta, name = checkpoint.meta, checkpoint.meta["model_name"]
    input_shape = tuple(meta["input_shape"])
    staged = []
    for variant, description in tflite.VARIANTS.items():
        print(f"  tflite {variant:<13} {description}", flush=True)
        file = tflite.convert(savedmodel, variant, scratch / f"{name}_{variant}.tflite", calibration)
        _sidecar(file, f"tflite-{variant}", meta, tflite.io_details(file))
        staged.append((f"tflite-{variant}", "litert", file, tflite.load_tflite, variant != "float32"))
    torch_model = build_both(checkpoint).torch_model
    classes = len(meta["labels"])
    for label, export, quantized in (
            ("executorch-float32", lambda f: executorch_export.export_pte_float32(torch_model, input_shape, f), False),
            ("executorch-int8", lambda f: executorch_export.export_pte_int8(torch_model, input_shape, calibration, f),
             True)):
        print(f"  {label}", flush=True)
        file = export(scratch / f"{name}_{label.split('-')[1]}.pte")
        _sidecar(file, label, meta, _float_io(input_shape, classes))
        staged.append((label, "executorch", file, executorch_export.load_pte, quantized))
    print("  onnx-float32, onnx-dynamic-int8", flush=True)
    onnx_float = onnx_export.export_onnx_float32(torch_model, input_shape, scratch / f"{name}_float32.onnx")
    onnx_int8 = onnx_export.quantize_onnx_dynamic_int8(onnx_float, scratch / f"{name}_dynamic-int8.onnx")
    for label, file, quantized in (("onnx-float32", onnx_float, False), ("onnx-dynamic-int8", onnx_int8, True)):
        _sidecar(file, label, meta, _float_io(input_shape, classes))
        staged.append((label, "onnxruntime", file, onnx_export.load_onnx, quantized))
    return staged


def run_edge(paths: ArtifactPaths, model: str, calibration_file: Path | None) -> dict:
    from common.environment import host_record, package_versions
    from common.fsutil import ensure_writable_dir, publish, staging_dir
    from common.manifest import artifact_entry, update_manifest
    from edge.evaluate import format_table, installed_bytes, measure
    from training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(paths.checkpoint_dir(model))
    savedmodel = _latest_savedmodel(paths, model)
    calibration = _calibration(calibration_file, checkpoint, tuple(checkpoint.meta["input_shape"]))
    ensure_writable_dir(paths.results_dir)
    from training.reference import build_both  # loads both frameworks: only once the input is valid

    images, labels = checkpoint.test_set()
    reference = build_both(checkpoint).reference_probabilities(images)
    float_accuracy = float((reference.argmax(1) == labels).mean())
    savedmodel_bytes = sum(p.stat().st_size for p in savedmodel.rglob("*") if p.is_file())
    print(f"edge {model}: from {savedmodel} ({savedmodel_bytes:,} bytes), {len(calibration)} calibration images",
          flush=True)
    results = []
    with staging_dir(paths.edge_dir) as scratch:
        staged = stage_formats(scratch, savedmodel, checkpoint, calibration)
        print("measuring (single image, one thread, after warm-up)", flush=True)
        for fmt, runtime, file, load, quantized in staged:
            results.append(measure(fmt, runtime, file, load(file), images, labels, reference, savedmodel_bytes,
                                   float_accuracy, quantized))
        for (_, _, file, _, _), result in zip(staged, results, strict=True):
            final = publish(file, paths.edge_dir / file.name)
            publish(file.with_name(file.name + ".json"), paths.edge_dir / (file.name + ".json"))
            result.path = str(final.relative_to(paths.root))
    print(format_table(results))
    by_format = {r.format: r for r in results}
    int8_ratio = by_format["tflite-int8-io"].bytes / by_format["tflite-float32"].bytes
    missed = "; missed: quantization parameters and graph overhead dominate a model this small"
    print(f"full-integer int8 TFLite / float32 TFLite bytes: {int8_ratio:.3f} "
          f"(goal <= 0.3{missed if int8_ratio > 0.3 else ''})")
    record = {"model": model, "int8_to_float32_tflite_bytes": int8_ratio,
              "savedmodel": str(savedmodel.relative_to(paths.root)),
              "savedmodel_bytes": savedmodel_bytes, "float32_accuracy": float_accuracy,
              "results": [r.as_dict() for r in results],
              "runtime_installed_bytes": {rt: installed_bytes(pkg) for rt, pkg in RUNTIME_PACKAGES.items()},
              "latency": "single image, 1 thread, 20 warm-up + 200 timed runs", "host": host_record(),
              "packages": package_versions([*RUNTIME_PACKAGES.values(), "tensorflow", "torch", "onnx"])}
    out = write_results_file(paths.results_dir, "edge.json", record)
    for runtime, size in record["runtime_installed_bytes"].items():
        print(f"runtime {runtime:<12} installed size {size / 1e6:,.1f} MB" if size
              else f"runtime {runtime}: not installed")
    tools = package_versions([*RUNTIME_PACKAGES.values(), "tensorflow", "torch"])
    entries = [artifact_entry(paths.root / r.path, paths.root, r.format, tools, test_accuracy=r.accuracy,
                              parity={"format": r.format, "samples": len(labels),
                                      "max_abs_delta": r.max_abs_delta, "top1_agreement": r.top1_agreement})
               for r in results]
    update_manifest(paths.manifest, None, entries)
    print(f"written {out}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m edge", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("MODEL", os.environ.get("PROFILE", "tiny")))
    parser.add_argument("--artifacts", type=Path, default=default_artifacts_root())
    parser.add_argument("--calibration", type=Path, help="an .npz with 'images' (default: the checkpoint's)")
    args = parser.parse_args(argv)
    run_edge(ArtifactPaths(args.artifacts), args.model, args.calibration)
    return 0


if __name__ == "__main__":
    run_cli(main)
