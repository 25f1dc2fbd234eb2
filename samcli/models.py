"""Models: mlp, cnn (1-D signals or 2-D images), resnet (CIFAR-style, 18 or 20), linear, diag-linear.

`model.channels` for cnn: on images, one 3x3 conv + norm + activation + 2x2 max-pool per entry
(default [16, 32]). On 1-D signals ((C, L) inputs, e.g. mnist1d's (1, 40)) the first entry is a
kernel-5 conv at stride 1 and every later entry a kernel-3 conv at stride 2, "same" padding, then
flatten and a linear layer: the small conv nets that generalize on mnist1d (Greydanus 2020). The
1-D default is [32, 32, 32] (9,610 parameters on (1, 40) without norm). `model.channels: null`
(the config default) picks the default for the input's shape.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import ConfigError, ModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus}
IMAGE_CHANNELS = [16, 32]
SIGNAL_CHANNELS = [32, 32, 32]


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    """Build the configured model; `outputs` is the number of classes (1 for scalar regression). A
    target (model.target: the user's factory) is called with model.args, input_shape and num_outputs."""
    if cfg.target is not None:
        from .targets import build_target_model
        return build_target_model(cfg.target, cfg.args, input_shape, outputs)
    features = math.prod(input_shape)
    if cfg.name == "mlp":
        return mlp(features, cfg.widths, outputs, ACTIVATIONS[cfg.activation])
    if cfg.name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, outputs))
    if cfg.name == "diag-linear":
        return DiagLinear(features, outputs)
    if cfg.name == "cnn" and len(input_shape) == 2:
        channels = cfg.channels or SIGNAL_CHANNELS
        return cnn1d(input_shape, channels, outputs, cfg.norm, ACTIVATIONS[cfg.activation])
    if cfg.name == "cnn" and len(input_shape) != 3:   # flat features (synthetic) have no neighbourhoods to convolve
        raise ConfigError(f"model.name=cnn needs image inputs (C, H, W) or signals (C, L), but the data set "
                          f"gives shape {input_shape}; use model mlp or an image or signal data set")
    if cfg.name == "resnet" and len(input_shape) != 3:
        raise ConfigError(f"model.name=resnet needs image inputs (C, H, W), but the data set gives shape "
                          f"{input_shape}; use model cnn or mlp, or an image data set")
    if cfg.name == "cnn":
        return cnn(input_shape[0], cfg.channels or IMAGE_CHANNELS, outputs, cfg.norm, ACTIVATIONS[cfg.activation])
    if cfg.name == "resnet":
        return resnet(cfg.depth, input_shape[0], outputs, cfg.norm)
    raise ConfigError(f"model.name={cfg.name!r} is unknown")


def mlp(features: int, widths: list[int], outputs: int, activation=nn.ReLU) -> nn.Sequential:
    """A flattening MLP: Linear + activation for each width, then a Linear layer to `outputs`."""
    layers: list[nn.Module] = [nn.Flatten()]
    for width in widths:
        layers += [nn.Linear(features, width), activation()]
        features = width
    layers.append(nn.Linear(features, outputs))
    return nn.Sequential(*layers)


def _norm(kind: str, channels: int, dims: int = 2) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "group":   # 8 groups (fewer when channels < 8 or 8 does not divide them)
        return nn.GroupNorm(math.gcd(8, channels) if channels >= 8 else channels, channels)
    return nn.Identity()


def cnn(in_channels: int, channels: list[int], outputs: int, norm: str, activation=nn.ReLU) -> nn.Sequential:
    """A 2-D CNN: per width a 3x3 conv, norm, activation, 2x2 max-pool; global average pool, Linear head."""
    layers: list[nn.Module] = []
    for width in channels:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=norm == "none"), _norm(norm, width),
                   activation(), nn.MaxPool2d(2, ceil_mode=True)]
        in_channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, outputs)]
    return nn.Sequential(*layers)


def cnn1d(input_shape: tuple[int, int], channels: list[int], outputs: int, norm: str,
          activation=nn.ReLU) -> nn.Sequential:
    """Conv1d k5 s1, then k3 s2 per further entry of `channels`; flatten; linear, on (C, L) inputs.
    Convs carry a bias only without norm (the norm's shift replaces it)."""
    layers: list[nn.Module] = []
    in_channels, length = input_shape
    for i, width in enumerate(channels):
        kernel, stride = (5, 1) if i == 0 else (3, 2)
        layers += [nn.Conv1d(in_channels, width, kernel, stride, padding=kernel // 2, bias=norm == "none"),
                   _norm(norm, width, dims=1), activation()]
        in_channels, length = width, (length + 2 * (kernel // 2) - kernel) // stride + 1
    layers += [nn.Flatten(), nn.Linear(in_channels * length, outputs)]
    return nn.Sequential(*layers)


class DiagLinear(nn.Module):
    """f(x) = x @ (u * v), the u * v (diagonal linear network) parameterization of a linear model.

    For several outputs, u and v are (features, outputs) matrices multiplied entrywise.
    """

    def __init__(self, features: int, outputs: int, init: float = 0.1):
        super().__init__()
        self.u = nn.Parameter(torch.full((features, outputs), init))
        self.v = nn.Parameter(torch.full((features, outputs), init))

    def forward(self, x):
        """The outputs x @ (u * v) for a batch x (flattened per example)."""
        return x.flatten(1) @ (self.u * self.v)


class _BasicBlock(nn.Module):
    """torchvision's BasicBlock with a selectable normalization (torchvision's takes a norm_layer,
    but its conv1x1/conv3x3 helpers are what we reuse; the block body is the standard one)."""
    # its forward only chains and sums its children: with piecewise-linear children the block is
    # piecewise-linear too (the exact trace path, curvature/ggn_trace.py, reads this)
    piecewise_linear_forward = True

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str):
        super().__init__()
        from torchvision.models.resnet import conv1x1, conv3x3
        self.conv1, self.bn1 = conv3x3(in_planes, planes, stride), _norm(norm, planes)
        self.conv2, self.bn2 = conv3x3(planes, planes), _norm(norm, planes)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(conv1x1(in_planes, planes, stride), _norm(norm, planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet(depth: int, in_channels: int, outputs: int, norm: str) -> nn.Module:
    """CIFAR-style ResNet: depth 20 = 3 stages x 3 blocks of 16/32/64 (He et al. 2016),
    depth 18 = 4 stages x 2 blocks of 64..512 with a 3x3 stem (the common CIFAR ResNet-18)."""
    widths, blocks = ([16, 32, 64], [3, 3, 3]) if depth == 20 else ([64, 128, 256, 512], [2, 2, 2, 2])
    layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                               _norm(norm, widths[0]), nn.ReLU()]
    in_planes = widths[0]
    for stage, (planes, count) in enumerate(zip(widths, blocks)):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(_BasicBlock(in_planes, planes, stride, norm))
            in_planes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_planes, outputs)]
    return nn.Sequential(*layers)
