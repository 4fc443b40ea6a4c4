"""Build a ModelSpec as a Keras model (NHWC float32 in, softmax probabilities out)."""

from __future__ import annotations

import keras
import numpy as np

from model.spec import BN_EPSILON, BN_MOMENTUM, Layer, ModelSpec


def _keras_layers(layer: Layer) -> list[keras.layers.Layer]:
    # Keras "same" padding is asymmetric for stride 2 (extra row at the bottom)
    # while PyTorch pads both sides; explicit symmetric padding makes the two
    # frameworks compute the same function.
    pad = layer.kernel // 2
    if layer.kind in ("conv", "depthwise") and layer.stride > 1 and pad:
        padding: list[keras.layers.Layer] = [keras.layers.ZeroPadding2D(pad, name=f"{layer.name}_pad")]
        mode = "valid"
    else:
        padding, mode = [], "same"
    if layer.kind == "conv":
        conv = keras.layers.Conv2D(layer.filters, layer.kernel, layer.stride, mode, use_bias=False, name=layer.name)
        return padding + [conv]
    if layer.kind == "depthwise":
        conv = keras.layers.DepthwiseConv2D(layer.kernel, layer.stride, mode, use_bias=False, name=layer.name)
        return padding + [conv]
    if layer.kind == "batchnorm":
        return [keras.layers.BatchNormalization(momentum=1 - BN_MOMENTUM, epsilon=BN_EPSILON, name=layer.name)]
    if layer.kind == "relu6":
        return [keras.layers.ReLU(6.0)]
    if layer.kind == "avgpool":
        return [keras.layers.GlobalAveragePooling2D()]
    if layer.kind == "dense":
        return [keras.layers.Dense(layer.filters, name=layer.name)]
    if layer.kind == "softmax":
        return [keras.layers.Softmax(name="probabilities")]
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def build_keras_model(spec: ModelSpec) -> keras.Model:
    """A functional Keras model for `spec`, weights freshly initialised."""
    inputs = keras.Input(shape=spec.input_shape, dtype="float32", name="images")
    outputs = inputs
    for layer in spec.layers():
        for keras_layer in _keras_layers(layer):
            outputs = keras_layer(outputs)
    return keras.Model(inputs, outputs, name=f"{spec.profile}_cnn")


def keras_logits_model(model: keras.Model) -> keras.Model:
    """The same network without its final softmax, for numerically stable training."""
    return keras.Model(model.inputs, model.get_layer("probabilities").input)


def predict_keras(model: keras.Model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Softmax probabilities in inference mode, in batches."""
    return np.concatenate([model(images[i:i + batch], training=False).numpy()
                           for i in range(0, len(images), batch)])
