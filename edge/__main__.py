"""`make edge` / `python -m edge`: on-device formats from the same weights, and what each costs.

  python -m edge [--model tiny] [--calibration FILE.npz]

Writes artifacts/models/edge/<model>_<variant>.{tflite,pte,onnx}, each with a
<file>.json sidecar (signature, input/output dtype, shape and quantization,
labels, input normalization), prints the table and writes
artifacts/results/edge.json. Bad input exits 2 with one line; files are
staged and only published when every format converted and was measured,
and every float32 format passed the parity gate (exit 1 otherwise).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from common.errors import OneLineArgumentParser, UsageError, console_script
from common.fsutil import write_results_file
from common.paths import ArtifactPaths, default_artifacts_root, default_model
from common.reference import load_reference
from export.calibration import load_calibration
from model.parity import accuracy

RUNTIME_PACKAGES = {"litert": "ai-edge-litert", "executorch": "executorch", "onnxruntime": "onnxruntime"}


def _latest_savedmodel(paths: ArtifactPaths, model: str) -> Path:
    latest = paths.latest_tf_version_dir(model)
    if latest is None or not (latest / "saved_model.pb").is_file():
        raise UsageError(f"no SavedModel under {paths.tf_model_base(model)}; run 'make export' first")
    return latest


def _sidecar(file: Path, fmt: str, meta: dict, io: dict) -> None:
    """What an app needs beside the model file (TFLite metadata tooling is not installable here)."""
    sidecar = {"format": fmt, "model": meta["model_name"], "signature": "serving_default", **io,
               "labels": meta["labels"], "normalization": meta["normalization"],
               "input_range": [0.0, 1.0], "layout": "NHWC"}
    file.with_name(file.name + ".json").write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")


def _float_io(batch: int, input_shape: tuple[int, ...], classes: int) -> dict:
    """Float input and output; batch -1 means any batch size (the .onnx files), 1 means one image (.pte)."""
    return {"input": {"name": "images", "dtype": "float32", "shape": [batch, *input_shape], "quantization": None},
            "output": {"name": "probabilities", "dtype": "float32", "shape": [batch, classes], "quantization": None}}


def stage_formats(scratch: Path, savedmodel: Path, checkpoint, calibration: np.ndarray) -> list[tuple]:
    """Convert every format into scratch; returns (format, runtime, file, loader, quantized)."""
    from edge import executorch_export, onnx_export
    from export import tflite
    from model.reference import build_torch

    meta, name = checkpoint.meta, checkpoint.meta["model_name"]
    input_shape = tuple(meta["input_shape"])
    staged = []
    for variant, description in tflite.VARIANTS.items():
        print(f"  tflite {variant:<13} {description}", flush=True)
        file = tflite.convert(savedmodel, variant, scratch / f"{name}_{variant}.tflite", calibration)
        _sidecar(file, f"tflite-{variant}", meta, tflite.io_details(file))
        staged.append((f"tflite-{variant}", "litert", file, tflite.load_tflite, variant != "float32"))
    torch_model = build_torch(checkpoint)  # ExecuTorch and ONNX convert from the PyTorch build alone
    classes = len(meta["labels"])
    for label, export, quantized in (
            ("executorch-float32", lambda f: executorch_export.export_pte_float32(torch_model, input_shape, f), False),
            ("executorch-int8", lambda f: executorch_export.export_pte_int8(torch_model, input_shape, calibration, f),
             True)):
        print(f"  {label}", flush=True)
        file = export(scratch / f"{name}_{label.split('-')[1]}.pte")
        _sidecar(file, label, meta, _float_io(1, input_shape, classes))
        staged.append((label, "executorch", file, executorch_export.load_pte, quantized))
    print("  onnx-float32, onnx-dynamic-int8", flush=True)
    onnx_float = onnx_export.export_onnx_float32(torch_model, input_shape, scratch / f"{name}_float32.onnx")
    onnx_int8 = onnx_export.quantize_onnx_dynamic_int8(onnx_float, scratch / f"{name}_dynamic-int8.onnx")
    for label, file, quantized in (("onnx-float32", onnx_float, False), ("onnx-dynamic-int8", onnx_int8, True)):
        _sidecar(file, label, meta, _float_io(-1, input_shape, classes))
        staged.append((label, "onnxruntime", file, onnx_export.load_onnx, quantized))
    return staged


def run_edge(paths: ArtifactPaths, model: str, calibration_file: Path | None) -> dict:
    from common.environment import host_record, package_versions
    from common.fsutil import ensure_writable_dir, publish, staging_dir
    from common.manifest import artifact_entry, update_manifest
    from edge.evaluate import ACCURACY_FLAG_POINTS, LATENCY_RUNS, LATENCY_WARMUP, format_table, installed_bytes, measure
    from model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(paths.checkpoint_dir(model))
    savedmodel = _latest_savedmodel(paths, model)
    calibration = load_calibration(calibration_file, checkpoint, tuple(checkpoint.meta["input_shape"]))
    ensure_writable_dir(paths.results_dir)
    answers = load_reference(paths, model)  # what export gated every format on; nothing is rebuilt for it
    from export.tflite import quantization_parameter_bytes  # loads TensorFlow: only once the input is valid

    images, labels, reference = answers.images, answers.labels, answers.probabilities
    savedmodel_bytes = sum(p.stat().st_size for p in savedmodel.rglob("*") if p.is_file())
    print(f"edge {model}: from {savedmodel} ({savedmodel_bytes:,} bytes), {len(calibration)} calibration images",
          flush=True)
    results, quantization_bytes = [], {}
    with staging_dir(paths.edge_dir) as scratch:
        staged = stage_formats(scratch, savedmodel, checkpoint, calibration)
        print("measuring (single image, one thread, after warm-up); float32 formats are parity-gated", flush=True)
        for fmt, runtime, file, load, quantized in staged:
            result = measure(fmt, runtime, file, load(file), images, labels, reference, savedmodel_bytes, quantized)
            result.path = str((paths.edge_dir / file.name).relative_to(paths.root))
            results.append(result)
            if runtime == "litert":
                quantization_bytes[fmt] = quantization_parameter_bytes(file)
        for _, _, file, _, _ in staged:  # only now: every format converted, measured and passed its gate
            publish(file, paths.edge_dir / file.name)
            publish(file.with_name(file.name + ".json"), paths.edge_dir / (file.name + ".json"))
    print(format_table(results))
    by_format = {r.format: r for r in results}
    int8_ratio = by_format["tflite-int8-io"].bytes / by_format["tflite-float32"].bytes
    missed = "; missed: quantization parameters and graph overhead dominate a model this small"
    print(f"full-integer int8 TFLite / float32 TFLite bytes: {int8_ratio:.3f} "
          f"(goal <= 0.3{missed if int8_ratio > 0.3 else ''})")
    print(f"quantization parameters (scales, zero points) in tflite-int8-io: {quantization_bytes['tflite-int8-io']:,} "
          f"of {by_format['tflite-int8-io'].bytes:,} bytes")
    record = {"model": model, "int8_to_float32_tflite_bytes": int8_ratio,
              "savedmodel": str(savedmodel.relative_to(paths.root)),
              "savedmodel_bytes": savedmodel_bytes, "float32_accuracy": accuracy(reference, labels),
              "accuracy_flag_points": ACCURACY_FLAG_POINTS,
              "results": [r.as_dict() for r in results],
              "tflite_quantization_parameter_bytes": quantization_bytes,
              "runtime_installed_bytes": {rt: installed_bytes(pkg) for rt, pkg in RUNTIME_PACKAGES.items()},
              "latency": f"single image, 1 thread, {LATENCY_WARMUP} warm-up + {LATENCY_RUNS} timed runs",
              "host": host_record(),
              "packages": package_versions([*RUNTIME_PACKAGES.values(), "tensorflow", "torch", "onnx"])}
    out = write_results_file(paths.results_dir, "edge.json", record, schema="edge")
    for runtime, size in record["runtime_installed_bytes"].items():
        print(f"runtime {runtime:<12} installed size {size / 1e6:,.1f} MB" if size
              else f"runtime {runtime}: not installed")
    tools = package_versions([*RUNTIME_PACKAGES.values(), "tensorflow", "torch"])
    entries = [artifact_entry(paths.root / r.path, paths.root, r.format, tools, test_accuracy=r.accuracy,
                              parity=r.parity()) for r in results]
    update_manifest(paths.manifest, None, entries)
    print(f"written {out}")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="python -m edge", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model())
    parser.add_argument("--artifacts", type=Path, default=default_artifacts_root())
    parser.add_argument("--calibration", type=Path, help="an .npz with 'images' (default: the checkpoint's)")
    args = parser.parse_args(argv)
    from model.parity import ParityError

    try:
        run_edge(ArtifactPaths(args.artifacts), args.model, args.calibration)
    except ParityError as exc:  # a float32 format drifted: nothing was published
        print(f"edge stopped: {exc}", file=sys.stderr)
        return 1
    return 0


cli = console_script(main)

if __name__ == "__main__":
    cli()
