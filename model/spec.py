"""The architecture, defined once as data and built by both frameworks.

A profile is a MobileNet-style CNN: a strided 3x3 stem, then depthwise-separable
blocks (3x3 depthwise + batch norm + ReLU6, 1x1 pointwise + batch norm + ReLU6),
global average pooling and a dense softmax head. keras_model.py and
torch_model.py walk the same list of layers, so the two builds cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import UsageError

# Batch norm epsilon shared by both frameworks (their defaults differ: 1e-3 vs 1e-5).
BN_EPSILON = 1e-3
# Running-statistics update rate, in PyTorch's convention (Keras momentum = 1 - this).
BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class Layer:
    """One layer. kind is conv | depthwise | batchnorm | relu6 | avgpool | dense | softmax."""

    kind: str
    name: str = ""
    filters: int = 0
    kernel: int = 3
    stride: int = 1

    @property
    def has_weights(self) -> bool:
        return self.kind in ("conv", "depthwise", "batchnorm", "dense")


@dataclass(frozen=True)
class ModelSpec:
    """A profile: input size, classes, and the channel/stride plan of the blocks."""

    profile: str
    input_shape: tuple[int, int, int]  # height, width, channels (NHWC without N)
    num_classes: int
    stem_filters: int
    stem_stride: int
    blocks: tuple[tuple[int, int], ...]  # (pointwise filters, depthwise stride) per block

    def layers(self) -> list[Layer]:
        """The whole network as an ordered list of layers."""
        layers = [
            Layer("conv", "stem_conv", self.stem_filters, 3, self.stem_stride),
            Layer("batchnorm", "stem_bn"),
            Layer("relu6"),
        ]
        for index, (filters, stride) in enumerate(self.blocks):
            prefix = f"block{index}"
            layers += [
                Layer("depthwise", f"{prefix}_dw", 0, 3, stride),
                Layer("batchnorm", f"{prefix}_dw_bn"),
                Layer("relu6"),
                Layer("conv", f"{prefix}_pw", filters, 1, 1),
                Layer("batchnorm", f"{prefix}_pw_bn"),
                Layer("relu6"),
            ]
        layers += [Layer("avgpool"), Layer("dense", "head", self.num_classes), Layer("softmax")]
        return layers

    def with_input(self, input_shape: tuple[int, int, int], num_classes: int) -> ModelSpec:
        """The same architecture for another image size or class count (a user's own data)."""
        return ModelSpec(self.profile, input_shape, num_classes, self.stem_filters, self.stem_stride, self.blocks)

    def multiply_accumulates(self) -> int:
        """Multiply-accumulates for one image, counted from the layer list."""
        height, width, channels = self.input_shape
        total = 0
        for layer in self.layers():
            if layer.kind in ("conv", "depthwise"):
                height = (height + 2 * (layer.kernel // 2) - layer.kernel) // layer.stride + 1
                width = (width + 2 * (layer.kernel // 2) - layer.kernel) // layer.stride + 1
                per_pixel = layer.kernel * layer.kernel * channels
                if layer.kind == "conv":
                    per_pixel *= layer.filters
                    channels = layer.filters
                total += height * width * per_pixel
            elif layer.kind == "dense":
                total += channels * layer.filters
        return total


def _mobilenet_v1_plan(width: float) -> tuple[tuple[int, int], ...]:
    """MobileNetV1's 13 depthwise-separable blocks at a width multiplier."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)]
    plan += [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    return tuple((int(filters * width), stride) for filters, stride in plan)


PROFILES: dict[str, ModelSpec] = {
    # Digits at 32x32 grayscale: trains in under a minute on two cores. Wide enough (381,514 weights) that
    # int8 weights, not the fixed per-channel quantization tables, dominate a full-integer TFLite file.
    "tiny": ModelSpec("tiny", (32, 32, 1), 10, 16, 1, ((32, 2), (64, 2), (128, 2), (256, 1), (384, 1), (576, 1))),
    # MobileNetV1-0.75 at 224x224x3: ~317M multiply-accumulates, MobileNetV2-class cost.
    "mobilenet": ModelSpec("mobilenet", (224, 224, 3), 10, 24, 2, _mobilenet_v1_plan(0.75)),
}


def get_spec(profile: str) -> ModelSpec:
    """The spec for a profile name, or a UsageError listing the known ones."""
    try:
        return PROFILES[profile]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise UsageError(f"unknown profile {profile!r}; choose one of: {known}") from None
