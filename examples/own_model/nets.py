"""A small CNN as a samcli model target: `model: {target: examples/own_model/nets.py:build, args: {width: 8}}`.

samcli calls `build` with the config's `model.args`, plus `input_shape` (one example's shape, here
(1, 12, 12)) and `num_outputs` (the number of classes) because its signature names them.
"""
from torch import nn


def build(input_shape, num_outputs, width=8):
    """Two 3x3 conv layers with ReLU and max-pooling, global average pooling, a linear head."""
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(width, num_outputs))
