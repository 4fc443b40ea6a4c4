"""Write a PyTorch model as a torch.export program and pack it into a TorchServe .mar."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.paths import REPO_ROOT

# The handler and codec TorchServe runs are packed into the .mar as files; export does not import serving.
HANDLER = REPO_ROOT / "serving" / "torch" / "handler.py"
CODEC = REPO_ROOT / "serving" / "rest_codec.py"
NUMERIC_JSON = REPO_ROOT / "serving" / "tf" / "dropin" / "numeric_json.py"  # the codec's JSON -> array fast path
PROGRAM_FILE = "model.pt2"
META_FILE = "model_meta.json"


def export_program(model: torch.nn.Module, input_shape: tuple[int, ...], max_batch: int, path: Path) -> Path:
    """torch.export the model with a dynamic batch dimension (1..max_batch) and save it."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    example = torch.zeros((2, *input_shape), dtype=torch.float32)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes={"images": {0: batch}})
    torch.export.save(program, str(path))
    return path


def run_program(path: Path, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Probabilities from a saved program, as the handler computes them."""
    module = torch.export.load(str(path)).module()
    with torch.inference_mode():
        parts = [module(torch.from_numpy(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts)


def _archiver() -> str:
    """torch-model-archiver from the same environment as this interpreter."""
    beside = Path(sys.executable).with_name("torch-model-archiver")
    found = str(beside) if beside.exists() else shutil.which("torch-model-archiver")
    if not found:
        raise RuntimeError("torch-model-archiver is not installed; run 'make setup'")
    return found


def build_mar(program: Path, meta: dict[str, Any], model_name: str, version: str, out_dir: Path) -> Path:
    """Pack program + handler + codec (rest_codec.py, numeric_json.py) + metadata into out_dir/<model_name>.mar."""
    work = program.parent
    meta_file = work / META_FILE
    meta_file.write_text(json.dumps({**meta, "program_file": PROGRAM_FILE}, indent=2), encoding="utf-8")
    extra = [meta_file] + [shutil.copy(source, work / source.name) for source in (CODEC, NUMERIC_JSON)]
    command = [_archiver(), "--model-name", model_name, "--version", version,
               "--serialized-file", str(program), "--handler", str(HANDLER),
               "--extra-files", ",".join(map(str, extra)), "--export-path", str(out_dir), "--force"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed: {done.stderr.strip() or done.stdout.strip()}")
    return out_dir / f"{model_name}.mar"


def extract_program(mar: Path, into: Path) -> Path:
    """Take the program back out of a .mar, to check the archived bytes themselves."""
    with zipfile.ZipFile(mar) as archive:
        archive.extract(PROGRAM_FILE, into)
    return into / PROGRAM_FILE
