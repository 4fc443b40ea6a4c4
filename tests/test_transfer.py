"""Code tests: weights move between the frameworks exactly."""

import numpy as np
import torch

from model.checkpoint import load_weights, save_weights
from model.keras_model import build_keras_model
from model.spec import get_spec
from model.torch_model import build_torch_model
from model.transfer import (
    weights_from_keras,
    weights_from_torch,
    weights_to_keras,
    weights_to_torch,
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.25)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for layer in a:
        assert a[layer].keys() == b[layer].keys()
        for name in a[layer]:
            np.testing.assert_array_equal(a[layer][name], b[layer][name], err_msg=f"{layer}/{name}")


def test_torch_to_keras_and_back_is_exact_on_random_weights():
    spec = get_spec("tiny")
    source = build_torch_model(spec)
    _randomize(source, seed=1)
    keras_model, target = build_keras_model(spec), build_torch_model(spec)
    weights_to_keras(weights_from_torch(source), keras_model, spec)
    weights_to_torch(weights_from_keras(keras_model, spec), target)
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_transferred_models_compute_the_same_function():
    spec = get_spec("tiny")
    torch_model = build_torch_model(spec)
    _randomize(torch_model, seed=2)
    keras_model = build_keras_model(spec)
    weights_to_keras(weights_from_torch(torch_model), keras_model, spec)
    images = np.random.default_rng(0).random((16, *spec.input_shape), dtype=np.float32)
    with torch.no_grad():
        expected = torch_model.eval()(torch.from_numpy(images)).numpy()
    actual = keras_model(images, training=False).numpy()
    assert np.abs(expected - actual).max() < 1e-5
    assert (expected.argmax(1) == actual.argmax(1)).all()


def test_keras_to_torch_is_exact():
    spec = get_spec("tiny")
    keras_model = build_keras_model(spec)
    for layer in keras_model.layers:
        layer.set_weights([np.random.default_rng(3).random(w.shape).astype(np.float32) for w in layer.get_weights()])
    torch_model = build_torch_model(spec)
    weights_to_torch(weights_from_keras(keras_model, spec), torch_model)
    _assert_same(weights_from_keras(keras_model, spec), weights_from_torch(torch_model))


def test_checkpoint_weights_round_trip_exactly(tmp_path):
    spec = get_spec("tiny")
    model = build_torch_model(spec)
    _randomize(model, seed=4)
    weights = weights_from_torch(model)
    save_weights(weights, str(tmp_path / "weights.npz"))
    _assert_same(weights, load_weights(str(tmp_path / "weights.npz")))
