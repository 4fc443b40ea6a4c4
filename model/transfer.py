"""Exact weight transfer between the Keras and PyTorch builds of one spec.

Weights travel as a framework-neutral dict, {layer name: {weight name: array}},
in Keras's layouts (kernels HWIO). The same dict is the checkpoint format
(model/checkpoint.py stores it as an .npz).
"""

from __future__ import annotations

import keras
import numpy as np
import torch

from model.checkpoint import Weights
from model.spec import ModelSpec
from model.torch_model import SpecNet

_BN_KEYS = ("gamma", "beta", "moving_mean", "moving_variance")


def weights_from_keras(model: keras.Model, spec: ModelSpec) -> Weights:
    """Read every weighted layer of a Keras build into the neutral dict."""
    weights: Weights = {}
    for layer in spec.layers():
        if not layer.has_weights:
            continue
        arrays = [np.asarray(w) for w in model.get_layer(layer.name).get_weights()]
        if layer.kind == "batchnorm":
            weights[layer.name] = dict(zip(_BN_KEYS, arrays, strict=True))
        elif layer.kind == "dense":
            weights[layer.name] = {"kernel": arrays[0], "bias": arrays[1]}
        else:
            weights[layer.name] = {"kernel": arrays[0]}
    return weights


def weights_to_keras(weights: Weights, model: keras.Model, spec: ModelSpec) -> None:
    """Write the neutral dict into a Keras build, in place."""
    for layer in spec.layers():
        if not layer.has_weights:
            continue
        entry = weights[layer.name]
        if layer.kind == "batchnorm":
            arrays = [entry[key] for key in _BN_KEYS]
        elif layer.kind == "dense":
            arrays = [entry["kernel"], entry["bias"]]
        else:
            arrays = [entry["kernel"]]
        model.get_layer(layer.name).set_weights(arrays)


def weights_from_torch(model: SpecNet) -> Weights:
    """Read every weighted layer of a PyTorch build into the neutral dict."""
    weights: Weights = {}
    for layer in model.spec.layers():
        if not layer.has_weights:
            continue
        module = model.named[layer.name]
        if layer.kind == "batchnorm":
            tensors = (module.weight, module.bias, module.running_mean, module.running_var)
            weights[layer.name] = {key: _numpy(t) for key, t in zip(_BN_KEYS, tensors, strict=True)}
        elif layer.kind == "dense":
            weights[layer.name] = {"kernel": _numpy(module.weight).T.copy(), "bias": _numpy(module.bias)}
        elif layer.kind == "depthwise":  # torch (C, 1, kh, kw) -> keras (kh, kw, C, 1)
            weights[layer.name] = {"kernel": _numpy(module.weight).transpose(2, 3, 0, 1).copy()}
        else:  # torch (out, in, kh, kw) -> keras (kh, kw, in, out)
            weights[layer.name] = {"kernel": _numpy(module.weight).transpose(2, 3, 1, 0).copy()}
    return weights


def weights_to_torch(weights: Weights, model: SpecNet) -> None:
    """Write the neutral dict into a PyTorch build, in place."""
    with torch.no_grad():
        for layer in model.spec.layers():
            if not layer.has_weights:
                continue
            module, entry = model.named[layer.name], weights[layer.name]
            if layer.kind == "batchnorm":
                targets = (module.weight, module.bias, module.running_mean, module.running_var)
                for key, target in zip(_BN_KEYS, targets, strict=True):
                    target.copy_(torch.from_numpy(entry[key]))
            elif layer.kind == "dense":
                module.weight.copy_(torch.from_numpy(entry["kernel"].T.copy()))
                module.bias.copy_(torch.from_numpy(entry["bias"]))
            elif layer.kind == "depthwise":
                module.weight.copy_(torch.from_numpy(entry["kernel"].transpose(2, 3, 0, 1).copy()))
            else:
                module.weight.copy_(torch.from_numpy(entry["kernel"].transpose(3, 2, 0, 1).copy()))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)
