"""Data for the shared training stage: scikit-learn's bundled digits or a user's image folder.

Images come out as float32 NHWC in [0, 1] at the model's input size, split
train/validation/test with a fixed seed (stratified, so every class is in
every split). The same arrays feed both frameworks and every parity check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from common.errors import UsageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    """Splits as (images NHWC float32 in [0, 1], integer labels), plus the label names."""

    name: str
    labels: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    normalization: str  # how a raw pixel becomes a model input, for apps that feed the model

    def describe(self) -> str:
        return (f"{self.name}: {len(self.labels)} classes, train {len(self.y_train)}, "
                f"validation {len(self.y_val)}, test {len(self.y_test)}, input {self.x_train.shape[1:]}")


def resize_batch(images: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Resize float images (N, H, W) in [0, 1] bilinearly to NHWC at `size`, with `channels`."""
    height, width = size
    out = np.empty((len(images), height, width), dtype=np.float32)
    for index, image in enumerate(images):
        resized = Image.fromarray(image.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
        out[index] = np.asarray(resized, dtype=np.float32)
    out = np.clip(out, 0.0, 1.0)[..., None]
    return np.repeat(out, channels, axis=-1) if channels > 1 else out


def load_digits_images() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's 1,797 8x8 digits (shipped in the package), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64), [str(d) for d in range(10)]


def load_image(file: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as HWC float32 in [0, 1]: grayscale for 1 channel, RGB for 3, bilinear resize."""
    try:
        with Image.open(file) as image:
            pixels = image.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"cannot read image {file}: {exc}") from None
    array = np.asarray(pixels, dtype=np.float32) / 255.0
    return array[..., None] if channels == 1 else array


def load_image_folder(root: Path, size: tuple[int, int], channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read root/<class>/<image> into NHWC float32 in [0, 1]; classes sorted by name."""
    if not root.is_dir():
        raise UsageError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UsageError(f"image folder {root} has {len(classes)} class subfolder(s); at least 2 are needed")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"class folder {root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for file in files:
            images.append(load_image(file, size, channels))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def split(images: np.ndarray, labels: np.ndarray, seed: int, test: float = 0.15, val: float = 0.15) -> tuple:
    """Stratified train/validation/test split, fixed by `seed`."""
    counts = np.bincount(labels)
    if counts.min() < 3:
        raise UsageError("every class needs at least 3 images (one each for train, validation and test)")
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            images, labels, test_size=test, random_state=seed, stratify=labels)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=val / (1 - test), random_state=seed, stratify=y_rest)
    except ValueError as exc:
        raise UsageError(f"cannot split the data set: {exc}") from None
    return x_train, y_train, x_val, y_val, x_test, y_test


def load_dataset(source: str, input_shape: tuple[int, int, int], seed: int) -> Dataset:
    """`source` is 'digits' or the path of an image folder with one subfolder per class."""
    height, width, channels = input_shape
    if source == "digits":
        raw, labels, names = load_digits_images()
        images = resize_batch(raw, (height, width), channels)
        name, normalization = "digits", "digits intensity (0..16) / 16, bilinear resize"
    else:
        root = Path(source)
        images, labels, names = load_image_folder(root, (height, width), channels)
        name, normalization = root.name, "pixel / 255 (grayscale for 1 channel, RGB for 3), bilinear resize"
    parts = split(images, labels, seed)
    return Dataset(name, names, *parts, normalization=normalization)
