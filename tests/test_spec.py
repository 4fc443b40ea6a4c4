"""Code tests: the one spec builds the same network in both frameworks."""

import pytest

from common.errors import UsageError
from model.keras_model import build_keras_model
from model.spec import PROFILES, get_spec
from model.torch_model import build_torch_model


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_both_frameworks_build_identical_parameter_counts(profile):
    spec = get_spec(profile)
    keras_model, torch_model = build_keras_model(spec), build_torch_model(spec)
    torch_trainable = sum(p.numel() for p in torch_model.parameters())
    torch_stats = sum(b.numel() for name, b in torch_model.named_buffers() if "running_" in name)
    keras_trainable = sum(int(w.numpy().size) for w in keras_model.trainable_weights)
    assert torch_trainable == keras_trainable
    assert torch_trainable + torch_stats == keras_model.count_params()


def test_mobilenet_profile_has_mobilenet_v2_class_cost():
    spec = get_spec("mobilenet")
    assert spec.input_shape == (224, 224, 3)
    assert spec.multiply_accumulates() >= 250_000_000


def test_spec_uses_depthwise_separable_blocks_and_softmax_head():
    kinds = [layer.kind for layer in get_spec("tiny").layers()]
    assert kinds.count("depthwise") == len(get_spec("tiny").blocks)
    assert kinds[-3:] == ["avgpool", "dense", "softmax"]


def test_unknown_profile_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError, match="unknown profile 'huge'.*mobilenet, tiny"):
        get_spec("huge")
