"""Every model builds and maps tiny inputs to (batch, outputs)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from samcli.config import ConfigError, ModelConfig
from samcli.models import DiagLinear, build_model


def _out(cfg: ModelConfig, input_shape, outputs: int, batch: int = 2) -> torch.Tensor:
    torch.manual_seed(0)
    model = build_model(cfg, input_shape, outputs)
    return model(torch.randn(batch, *input_shape))


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "softplus"])
def test_mlp_shapes(activation):
    cfg = ModelConfig(name="mlp", widths=[16, 8], activation=activation)
    assert _out(cfg, (40,), 10, batch=3).shape == (3, 10)
    assert _out(cfg, (1, 8, 8), 1).shape == (2, 1)          # image inputs are flattened


def test_mlp_layer_widths():
    model = build_model(ModelConfig(name="mlp", widths=[16, 8]), (40,), 10)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 16), (16, 8), (8, 10)]


def test_linear_shape():
    model = build_model(ModelConfig(name="linear"), (1, 8, 8), 10)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert sum(p.numel() for p in model.parameters()) == 64 * 10 + 10


@pytest.mark.parametrize("outputs", [1, 3])
def test_diag_linear_is_x_times_u_v(outputs):
    model = build_model(ModelConfig(name="diag-linear"), (5,), outputs)
    assert isinstance(model, DiagLinear)
    with torch.no_grad():
        model.u.copy_(torch.randn(5, outputs))
        model.v.copy_(torch.randn(5, outputs))
    x = torch.randn(4, 5)
    torch.testing.assert_close(model(x), x @ (model.u * model.v))
    assert model(x).shape == (4, outputs)
    # image inputs are flattened first
    images = torch.randn(2, 1, 2, 2)
    image_model = build_model(ModelConfig(name="diag-linear"), (1, 2, 2), outputs)
    torch.testing.assert_close(image_model(images), images.flatten(1) @ (image_model.u * image_model.v))


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32)])
def test_cnn_shapes(norm, input_shape):
    cfg = ModelConfig(name="cnn", channels=[8, 16], norm=norm)
    model = build_model(cfg, input_shape, 10)
    assert model(torch.randn(2, *input_shape)).shape == (2, 10)
    kinds = {type(m) for m in model.modules()}
    assert (nn.BatchNorm2d in kinds) == (norm == "batch")
    assert (nn.GroupNorm in kinds) == (norm == "group")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == (norm == "none") for c in convs)


def test_cnn_group_norm_with_channels_not_divisible_by_8():
    cfg = ModelConfig(name="cnn", channels=[12, 6], norm="group")
    model = build_model(cfg, (1, 8, 8), 10)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    groups = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert all(g.num_channels % g.num_groups == 0 for g in groups)


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
@pytest.mark.parametrize("depth", [20, 18])
def test_resnet_shapes(depth, norm):
    model = build_model(ModelConfig(name="resnet", depth=depth, norm=norm), (3, 32, 32), 10)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        model.eval()
        assert model(x).shape == (2, 10)
    kinds = {type(m) for m in model.modules()}
    assert (nn.BatchNorm2d in kinds) == (norm == "batch")
    assert (nn.GroupNorm in kinds) == (norm == "group")


@pytest.mark.parametrize("depth,params", [(20, 272_474), (18, 11_173_962)])
def test_resnet_parameter_counts(depth, params):
    # 18: the common CIFAR ResNet-18 (3x3 stem, no max-pool, 1x1-conv shortcuts), 11.17M parameters
    model = build_model(ModelConfig(name="resnet", depth=depth, norm="batch"), (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == params


def test_resnet_grey_small_images():
    model = build_model(ModelConfig(name="resnet", depth=20, norm="group"), (1, 8, 8), 10)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_resnet_refuses_flat_inputs():
    with pytest.raises(ConfigError, match="model.name=resnet needs image inputs") as info:
        build_model(ModelConfig(name="resnet"), (40,), 10)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("input_shape", [(40,), (1, 2, 8, 8)])
def test_cnn_refuses_flat_features_and_four_dimensional_inputs(input_shape):
    with pytest.raises(ConfigError, match=r"model.name=cnn needs image inputs \(C, H, W\) or signals") as info:
        build_model(ModelConfig(name="cnn"), input_shape, 10)
    assert "\n" not in str(info.value)


# ---- 1-D CNN (signals such as mnist1d) ------------------------------------------------------------

def _conv1d_layers(model):
    return [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])
            for m in model.modules() if isinstance(m, nn.Conv1d)]


@pytest.mark.parametrize("input_shape", [(1, 40), (1, 37)])
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_cnn1d_shapes_and_layers(input_shape, norm):
    model = build_model(ModelConfig(name="cnn", norm=norm), input_shape, 10)
    assert model(torch.randn(3, *input_shape)).shape == (3, 10)
    assert _conv1d_layers(model) == [(1, 32, 5, 1), (32, 32, 3, 2), (32, 32, 3, 2)]
    kinds = {type(m) for m in model.modules()}
    assert (nn.BatchNorm1d in kinds) == (norm == "batch")
    assert nn.BatchNorm2d not in kinds and nn.Conv2d not in kinds
    assert (nn.GroupNorm in kinds) == (norm == "group")
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 3
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *input_shape)).shape == (2, 10)


def test_cnn1d_parameter_count():
    # lengths 40 -> 40 (k5, pad 2) -> 20 -> 10 (k3 s2, pad 1): convs 32*5+32, 2 x (32*32*3+32), linear 320*10+10
    model = build_model(ModelConfig(name="cnn", norm="none"), (1, 40), 10)
    expected = (32 * 5 + 32) + 2 * (32 * 32 * 3 + 32) + (32 * 10 * 10 + 10)
    assert expected == 9610
    assert sum(p.numel() for p in model.parameters()) == expected
    batch_norm = build_model(ModelConfig(name="cnn", norm="batch"), (1, 40), 10)
    assert sum(p.numel() for p in batch_norm.parameters()) == expected - 3 * 32 + 3 * 64   # bias -> scale + shift


def test_cnn1d_uses_channels_the_user_set():
    model = build_model(ModelConfig(name="cnn", channels=[8, 4], norm="none"), (2, 9), 3)
    assert _conv1d_layers(model) == [(2, 8, 5, 1), (8, 4, 3, 2)]
    assert model(torch.randn(5, 2, 9)).shape == (5, 3)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    assert linear.in_features == 4 * 5            # length 9 -> 9 -> 5


@pytest.mark.parametrize("norm", ["group", "none"])
def test_cnn1d_gradient_matches_finite_differences(norm):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn", channels=[4, 3], norm=norm, activation="tanh"), (1, 12), 3).double()
    x, y = torch.randn(4, 1, 12, dtype=torch.float64), torch.tensor([0, 2, 1, 2])
    assert torch.autograd.gradcheck(lambda inputs: model(inputs), (x.requires_grad_(),))
    params = list(model.parameters())

    def loss_of(*values):
        named = {name: v for (name, _), v in zip(model.named_parameters(), values)}
        return nn.functional.cross_entropy(torch.func.functional_call(model, named, (x.detach(),)), y)
    assert torch.autograd.gradcheck(loss_of, tuple(p.detach().clone().requires_grad_() for p in params))


def test_cnn_on_images_unchanged_by_the_1d_branch():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="cnn", norm="none"), (1, 8, 8), 10)
    convs = [(m.in_channels, m.out_channels, m.kernel_size) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(1, 16, (3, 3)), (16, 32, (3, 3))]
    assert not any(isinstance(m, nn.Conv1d) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == (9 * 16 + 16) + (16 * 9 * 32 + 32) + (32 * 10 + 10)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown"):
        build_model(ModelConfig(name="transformer"), (40,), 10)
