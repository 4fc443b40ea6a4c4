"""Data tests: the splits are fixed by the seed and images are what the model expects."""

import numpy as np
import pytest
from PIL import Image

from common.errors import UsageError
from training.data import load_dataset


def test_digits_split_is_deterministic_stratified_and_scaled():
    first = load_dataset("digits", (32, 32, 1), seed=0)
    again = load_dataset("digits", (32, 32, 1), seed=0)
    other = load_dataset("digits", (32, 32, 1), seed=1)
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.y_test, other.y_test)
    assert len(first.y_train) + len(first.y_val) + len(first.y_test) == 1797
    assert set(np.unique(first.y_test)) == set(range(10))
    assert first.x_train.shape[1:] == (32, 32, 1) and first.x_train.dtype == np.float32
    assert 0.0 <= first.x_train.min() and first.x_train.max() <= 1.0


def test_digits_with_three_channels_repeats_grayscale():
    data = load_dataset("digits", (16, 16, 3), seed=0)
    np.testing.assert_array_equal(data.x_test[..., 0], data.x_test[..., 2])


def make_image_folder(root, classes=("cat", "dog", "eel"), per_class=6, size=12):
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            pixels = (rng.random((size, size)) * 60 + index * 90).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{k}.png")
    return root


def test_image_folder_gives_classes_from_subfolder_names(tmp_path):
    data = load_dataset(str(make_image_folder(tmp_path / "pets")), (32, 32, 1), seed=0)
    assert data.labels == ["cat", "dog", "eel"]
    assert data.x_train.shape[1:] == (32, 32, 1)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 18
    # class 2 images were drawn brighter than class 0 ones: labels follow the folders
    assert data.x_test[data.y_test == 2].mean() > data.x_test[data.y_test == 0].mean()


def test_image_folder_with_one_class_is_rejected(tmp_path):
    with pytest.raises(UsageError, match="1 class subfolder"):
        load_dataset(str(make_image_folder(tmp_path / "one", classes=("only",))), (32, 32, 1), seed=0)
