from __future__ import annotations

import pytest
import torch

from training.networks import (
    GENERATORS,
    GeneratorSpec,
    build_discriminator,
    build_generator,
    count_parameters,
    generator_spec,
    init_weights,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet_9blocks", 11_378_179), ("unet_256", 54_409_603), ("resnet_6blocks", 7_837_699)],
)
def test_official_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(build_generator(generator_spec(name))) == expected


def test_patchgan_parameter_count_matches_official() -> None:
    assert count_parameters(build_discriminator("basic")) == 2_764_737


def test_resnet_keys_follow_official_layout() -> None:
    keys = list(build_generator(generator_spec("resnet_9blocks")).state_dict())
    assert keys[:2] == ["model.1.weight", "model.1.bias"]
    assert "model.10.conv_block.1.weight" in keys and "model.10.conv_block.5.weight" in keys
    assert "model.18.conv_block.5.bias" in keys
    assert keys[-2:] == ["model.26.weight", "model.26.bias"]
    # InstanceNorm without affine parameters or running statistics: no norm entries at all.
    assert not any("running" in k or k.startswith("model.2.") for k in keys)


def test_resnet_dropout_shifts_second_conv_like_the_official_code() -> None:
    keys = build_generator(generator_spec("resnet_6blocks", ngf=8, dropout=True)).state_dict()
    assert "model.10.conv_block.6.weight" in keys
    assert "model.10.conv_block.5.weight" not in keys


def test_unet_keys_nest_like_the_official_code() -> None:
    keys = list(build_generator(generator_spec("unet_256", ngf=8)).state_dict())
    assert keys[0] == "model.model.0.weight"
    assert "model.model.1.model.1.weight" in keys
    assert "model.model.3.weight" in keys  # outermost upconv
    innermost = "model.model.1" + ".model.3" * 6 + ".model.1.weight"
    assert innermost in keys
    assert "model.model.1" + ".model.3" * 7 + ".model.1.weight" not in keys  # 8 levels, no 9th


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_shapes_range_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    spec = generator_spec(name, ngf=8)
    net = build_generator(spec)
    init_weights(net)
    size = spec.size_multiple * (1 if spec.family == "unet" else 12)  # 256/128 or 48
    x = torch.rand(2, 3, size, size) * 2 - 1
    y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all() and y.abs().max() <= 1
    y.mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_resnet_accepts_non_square_multiples_of_four() -> None:
    net = build_generator(GeneratorSpec(ngf=8, n_blocks=2))
    assert net(torch.zeros(1, 3, 36, 52)).shape == (1, 3, 36, 52)


@pytest.mark.parametrize(("name", "out_size"), [("basic", 6), ("pixel", 64), ("n_layers", 6)])
def test_discriminator_shapes_and_gradients(name: str, out_size: int) -> None:
    net = build_discriminator(name, ndf=8)
    init_weights(net)
    out = net(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert out.shape == (2, 1, out_size, out_size)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_init_weights_uses_normal_0_002() -> None:
    torch.manual_seed(0)
    net = build_generator(generator_spec("resnet_9blocks", ngf=16))
    init_weights(net, 0.02)
    weights = torch.cat([p.flatten() for n, p in net.named_parameters() if n.endswith("weight")])
    biases = torch.cat([p.flatten() for n, p in net.named_parameters() if n.endswith("bias")])
    assert abs(weights.std().item() - 0.02) < 1e-3
    assert biases.abs().max().item() == 0


@pytest.mark.parametrize("bad", [{"family": "vgg"}, {"norm": "group"}])
def test_unknown_family_or_norm_is_an_error(bad: dict) -> None:
    with pytest.raises(ValueError):
        build_generator(GeneratorSpec(**bad))


def test_unknown_generator_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="resnet_9blocks"):
        generator_spec("resnet_12")
