"""The calibration set full-integer quantization reads activation ranges from: load it, check it once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import UsageError


def check_calibration(images: np.ndarray | None, input_shape: tuple[int, ...] | None = None) -> None:
    """ValueError unless `images` is a non-empty numeric batch of `input_shape` images."""
    if images is None or len(images) == 0:
        raise ValueError("int8 quantization needs calibration images; got none")
    if np.asarray(images).dtype.kind not in "fiu":
        raise ValueError(f"calibration images must be numbers; got dtype {np.asarray(images).dtype}")
    if input_shape is not None and tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(f"calibration images have shape {list(images.shape[1:])}; "
                         f"the model takes {list(input_shape)}")


def load_calibration(path: Path | None, checkpoint, input_shape: tuple[int, ...]) -> np.ndarray:
    """The images in `path` (an .npz with an 'images' array), or the checkpoint's own set; UsageError if unusable."""
    if path is None:
        images, source = checkpoint.calibration_images(), "the checkpoint's calibration.npz"
    else:
        images, source = _read_npz_images(path), str(path)
    try:
        check_calibration(images, input_shape)
    except ValueError as exc:
        raise UsageError(f"calibration set from {source}: {exc}") from None
    return images.astype(np.float32)


def _read_npz_images(path: Path) -> np.ndarray:
    problem = "an .npz with an 'images' array"
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read calibration set {path} ({problem}): {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"calibration set {path} is a single array; expected {problem}")
    with data:
        if "images" not in data.files:
            raise UsageError(f"calibration set {path} has no 'images' array (has {data.files}); expected {problem}")
        return data["images"]
