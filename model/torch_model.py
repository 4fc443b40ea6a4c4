"""Build a ModelSpec as a PyTorch module. It takes NHWC input, like the TF side,
so every server and format receives the same tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model.spec import BN_EPSILON, BN_MOMENTUM, Layer, ModelSpec


def _torch_layer(layer: Layer, channels: int) -> tuple[nn.Module, int]:
    """The module for one layer and the channel count after it."""
    pad = layer.kernel // 2
    if layer.kind == "conv":
        conv = nn.Conv2d(channels, layer.filters, layer.kernel, layer.stride, pad, bias=False)
        return conv, layer.filters
    if layer.kind == "depthwise":
        conv = nn.Conv2d(channels, channels, layer.kernel, layer.stride, pad, groups=channels, bias=False)
        return conv, channels
    if layer.kind == "batchnorm":
        return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM), channels
    if layer.kind == "relu6":
        return nn.ReLU6(), channels
    if layer.kind == "avgpool":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels
    if layer.kind == "dense":
        return nn.Linear(channels, layer.filters), layer.filters
    raise ValueError(f"unknown layer kind {layer.kind!r}")


class SpecNet(nn.Module):
    """A ModelSpec in PyTorch. forward() returns softmax probabilities; logits() does not."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.named = nn.ModuleDict()  # layers with weights, by spec name (for weight transfer)
        body = []
        channels = spec.input_shape[2]
        for index, layer in enumerate(spec.layers()):
            if layer.kind == "softmax":
                continue
            module, channels = _torch_layer(layer, channels)
            body.append(module)
            if layer.has_weights:
                self.named[layer.name] = module
            else:
                self.add_module(f"op{index}_{layer.kind}", module)
        self._body = body

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2)  # NHWC -> NCHW
        for module in self._body:
            x = module(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(images), dim=-1)


def build_torch_model(spec: ModelSpec) -> SpecNet:
    """A PyTorch module for `spec`, weights freshly initialised."""
    return SpecNet(spec)


def predict_torch(model: torch.nn.Module, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Softmax probabilities of an eval-mode model, in batches."""
    model.eval()
    with torch.inference_mode():
        parts = [model(torch.from_numpy(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(parts)
