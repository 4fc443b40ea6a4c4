"""`python -m export`: every deployment format from one checkpoint, gated on parity.

All formats are written into a staging directory first and checked against
the reference model on the whole test set; only when every one passes are
they moved into artifacts/models/ and recorded in artifacts/manifest.json.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.environment import package_versions
from common.fsutil import publish, sha256_of, staging_dir
from common.manifest import artifact_entry, directory_entry, update_manifest
from common.reference import Reference, write_reference
from export.config import ExportConfig
from export.mar import build_mar, export_program, extract_program, run_program
from export.savedmodel import INPUT_NAME, OUTPUT_NAME, SIGNATURE, export_savedmodel, run_savedmodel
from export.tflite import convert_float32, run_tflite
from model.checkpoint import Checkpoint, load_checkpoint
from model.parity import ParityReport, check
from model.parity import accuracy as top1_accuracy
from model.reference import build_both


@dataclass
class Exported:
    """One staged format: where it is now, where it goes, and how it fared."""

    fmt: str
    staged: Path
    final: Path
    parity: ParityReport
    accuracy: float
    tools: dict[str, str]


def _gate(fmt: str, run: Callable[[], np.ndarray], reference: np.ndarray, labels: np.ndarray,
          tolerance: float) -> tuple[ParityReport, float]:
    started = time.perf_counter()
    probabilities = run()
    report = check(fmt, reference, probabilities, tolerance)
    accuracy = top1_accuracy(probabilities, labels)
    print(f"  parity {fmt:<16} max|delta| {report.max_abs_delta:.2e}  top-1 agreement "
          f"{report.top1_agreement:.2%}  accuracy {accuracy:.4f}  ({time.perf_counter() - started:.1f}s)", flush=True)
    return report, accuracy


def _model_meta(checkpoint: Checkpoint, cfg: ExportConfig) -> dict:
    """What a server or app needs to feed the model, stored beside it."""
    meta = checkpoint.meta
    return {"model_name": cfg.model_name, "version": cfg.version, "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME, "signature": SIGNATURE, "input_shape": meta["input_shape"],
            "input_dtype": "float32", "labels": meta["labels"], "normalization": meta["normalization"],
            "max_batch": cfg.max_batch, "max_request_bytes": cfg.max_request_bytes}


def stage_all(checkpoint: Checkpoint, cfg: ExportConfig, scratch: Path) -> tuple[list[Exported], Path]:
    """Export every format into `scratch` and gate each on parity (raises ParityError).

    Also stages the reference answers every format was gated on, for the later stages to compare with.
    """
    models = build_both(checkpoint)
    images, labels = checkpoint.test_set()
    reference = models.reference_probabilities(images)
    answers = write_reference(scratch / "reference.npz", Reference(
        images, labels, reference, sha256_of(checkpoint.directory / "weights.npz")))
    tol, paths, name = cfg.tolerance, cfg.paths, cfg.model_name
    input_shape = tuple(checkpoint.meta["input_shape"])
    print(f"export {name} v{cfg.version}: reference is the {checkpoint.trainer} model, "
          f"{len(labels)} test images, tolerance {tol:g}", flush=True)
    tf_tools = package_versions(["tensorflow", "keras"])
    results = []

    savedmodel = export_savedmodel(models.keras_model, scratch / "savedmodel" / str(cfg.version))
    report, accuracy = _gate("tf-savedmodel", lambda: run_savedmodel(savedmodel, images), reference, labels, tol)
    results.append(Exported("tf-savedmodel", savedmodel, paths.tf_version_dir(name, cfg.version),
                            report, accuracy, tf_tools))

    tflite = convert_float32(savedmodel, scratch / f"{name}_float32.tflite")
    report, accuracy = _gate("tflite-float32", lambda: run_tflite(tflite, images), reference, labels, tol)
    results.append(Exported("tflite-float32", tflite, paths.edge_dir / tflite.name, report, accuracy,
                            package_versions(["tensorflow", "ai-edge-litert"])))

    (scratch / "torch").mkdir()
    program = export_program(models.torch_model, input_shape, cfg.max_batch, scratch / "torch" / "model.pt2")
    mar = build_mar(program, _model_meta(checkpoint, cfg), name, str(cfg.version), scratch)
    archived = extract_program(mar, scratch / "from_mar")
    report, accuracy = _gate("torchserve-mar", lambda: run_program(archived, images), reference, labels, tol)
    results.append(Exported("torchserve-mar", mar, paths.torch_model_store / mar.name, report, accuracy,
                            package_versions(["torch", "torch-model-archiver"])))
    return results, answers


def _manifest_entry(item: Exported, root: Path) -> dict:
    describe = directory_entry if item.final.is_dir() else artifact_entry
    return describe(item.final, root, item.fmt, item.tools,
                    test_accuracy=item.accuracy, parity=item.parity.as_dict())


def run_export(cfg: ExportConfig) -> list[dict]:
    """Export, gate, publish and record every format; returns the manifest entries."""
    checkpoint = load_checkpoint(cfg.paths.checkpoint_dir(cfg.model_name))
    models_root = cfg.paths.root / "models"
    reference_file = cfg.paths.reference_file(cfg.model_name)
    with staging_dir(models_root) as scratch:
        staged, answers = stage_all(checkpoint, cfg, scratch)
        for item in staged:
            publish(item.staged, item.final)
        publish(answers, reference_file)
    entries = [_manifest_entry(item, cfg.paths.root) for item in staged]
    trainer_tools = ["torch"] if checkpoint.trainer == "torch" else ["tensorflow", "keras"]
    reference_entry = artifact_entry(reference_file, cfg.paths.root, "reference-answers",
                                     package_versions(trainer_tools))
    model = {"name": cfg.model_name, **{k: v for k, v in checkpoint.meta.items() if k not in ("history", "host")},
             "version": cfg.version, "exported_formats": [item.fmt for item in staged]}
    update_manifest(cfg.paths.manifest, model, [*entries, reference_entry])
    return entries


def format_table(entries: list[dict]) -> str:
    """The short table `make export` prints: format, bytes, accuracy, max delta."""
    lines = [f"{'format':<16} {'bytes':>10} {'accuracy':>9} {'max|delta|':>11} {'top-1 agree':>12}  path"]
    for entry in entries:
        parity = entry["parity"]
        lines.append(f"{entry['format']:<16} {entry['bytes']:>10,} {entry['test_accuracy']:>9.4f} "
                     f"{parity['max_abs_delta']:>11.2e} {parity['top1_agreement']:>12.2%}  {entry['path']}")
    return "\n".join(lines)
