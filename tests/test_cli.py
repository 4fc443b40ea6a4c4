"""CLI tests: bad input exits 2 with one line and leaves nothing half-written."""

import pytest

from tests.conftest import run_module
from tests.test_data import make_image_folder


def _assert_usage_error(done, fragment):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and fragment in lines[0], done.stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (["training", "train", "--profile", "huge"], "unknown profile 'huge'"),
    (["training", "train", "--trainer", "jax"], "unknown trainer 'jax'"),
    (["training", "train", "--epochs", "0"], "epochs and batch size must be at least 1"),
    (["training", "train", "--max-shift", "-1"], "max shift must be 0"),
    (["training", "train", "--bogus"], "unrecognized arguments: --bogus"),
    (["export", "--model", "nothing-here"], "no checkpoint at"),
    (["export", "--version", "0"], "version must be a positive integer"),
])
def test_bad_arguments(tmp_path, args, fragment):
    stage, *rest = args
    _assert_usage_error(run_module(stage, "--artifacts", str(tmp_path / "a"), *rest), fragment)


def test_missing_image_folder(tmp_path):
    done = run_module("training", "--artifacts", str(tmp_path / "a"), "train", "--data", str(tmp_path / "nope"))
    _assert_usage_error(done, "does not exist")
    assert not (tmp_path / "a" / "checkpoints" / "tiny").exists()


def test_folder_with_one_class(tmp_path):
    folder = make_image_folder(tmp_path / "one", classes=("only",))
    done = run_module("training", "--artifacts", str(tmp_path / "a"), "train", "--data", str(folder))
    _assert_usage_error(done, "at least 2 are needed")


def test_malformed_image_folder(tmp_path):
    folder = make_image_folder(tmp_path / "pets")
    (folder / "dog" / "broken.png").write_bytes(b"not a png")
    done = run_module("training", "--artifacts", str(tmp_path / "a"), "train", "--data", str(folder))
    _assert_usage_error(done, "cannot read image")
    assert not list((tmp_path / "a").rglob("checkpoint.json"))


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    done = run_module("training", "--artifacts", str(blocker / "artifacts"), "train")
    _assert_usage_error(done, "is not writable")


def test_training_on_an_image_folder_uses_its_class_names(tmp_path):
    folder = make_image_folder(tmp_path / "pets")
    done = run_module("training", "--artifacts", str(tmp_path / "a"), "train", "--data", str(folder),
                      "--epochs", "1", "--model-name", "pets")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[torch] epoch 1/1" in done.stdout
    import json
    meta = json.loads((tmp_path / "a" / "checkpoints" / "pets" / "checkpoint.json").read_text())
    assert meta["labels"] == ["cat", "dog", "eel"] and meta["dataset"] == "pets"


@pytest.mark.parametrize(("script", "args", "fragment"), [
    ("tvt-train", ["train", "--profile", "huge"], "unknown profile 'huge'"),
    ("tvt-export", ["--version", "0"], "version must be a positive integer"),
    ("tf-serving-dropin", ["--bogus"], "not implemented by the TF Serving drop-in: --bogus"),
])
def test_console_scripts_make_setup_installs(tmp_path, script, args, fragment):
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).with_name(script)
    assert command.is_file(), f"{command} is missing: make setup installs the project's console scripts"
    _assert_usage_error(subprocess.run([str(command), *args], cwd=tmp_path, capture_output=True, text=True,
                                       timeout=300), fragment)
