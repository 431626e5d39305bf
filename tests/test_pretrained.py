from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.checkpoint import CheckpointError
from training.networks import build_generator, generator_spec, init_weights
from training.pretrained import infer_generator_spec, load_pretrained_generator, resolve_generator


def official_layout_file(net: torch.nn.Module, path: Path, prefix: str = "module.") -> Path:
    """Save ``net`` the way old official files look: stray InstanceNorm stats, a prefix."""
    state = {}
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.zeros(module.num_features)
            state[f"{name}.running_var"] = torch.ones(module.num_features)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    state.update(net.state_dict())
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return path


@pytest.mark.parametrize(
    ("name", "options", "size"),
    [
        ("resnet_9blocks", {}, 32),
        ("resnet_6blocks", {"dropout": True}, 32),
        ("unet_128", {}, 128),
        ("unet_256", {"norm": "batch"}, 256),
    ],
)
def test_official_layout_file_loads_and_matches(tmp_path: Path, name: str, options: dict,
                                                size: int) -> None:
    torch.manual_seed(0)
    spec = generator_spec(name, ngf=8, **options)
    net = build_generator(spec)
    init_weights(net)
    net.eval()
    path = official_layout_file(net, tmp_path / "latest_net_G.pth")

    loaded, found = load_pretrained_generator(path)

    assert found == spec
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_file_without_prefix_also_loads(tmp_path: Path) -> None:
    net = build_generator(generator_spec("resnet_6blocks", ngf=8))
    path = official_layout_file(net, tmp_path / "latest_net_G_A.pth", prefix="")
    _, spec = load_pretrained_generator(path)
    assert spec.name == "resnet_6blocks" and spec.ngf == 8


def test_inference_reads_channels_and_block_count() -> None:
    spec = generator_spec("resnet_9blocks", ngf=8, input_nc=1, output_nc=3)
    found = infer_generator_spec(build_generator(spec).state_dict())
    assert (found.input_nc, found.output_nc, found.n_blocks, found.ngf) == (1, 3, 9, 8)


def test_explicit_options_override_inference() -> None:
    state = build_generator(generator_spec("unet_128", ngf=8)).state_dict()
    spec, _ = resolve_generator(state, {"dropout": True})
    assert spec.dropout is True and spec.num_downs == 7


def test_override_that_contradicts_the_weights_is_a_clear_error() -> None:
    state = build_generator(generator_spec("resnet_6blocks", ngf=8)).state_dict()
    with pytest.raises(ValueError, match=r"do not fit resnet_6blocks \(ngf 16\).*shape"):
        resolve_generator(state, {"ngf": 16})


def test_foreign_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(CheckpointError, match=r"classifier\.pth: not a CycleGAN ResNet or U-Net"):
        load_pretrained_generator(path)


def test_truncated_state_dict_is_refused(tmp_path: Path) -> None:
    state = build_generator(generator_spec("resnet_6blocks", ngf=8)).state_dict()
    del state["model.13.conv_block.5.weight"]
    path = tmp_path / "g.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing key"):
        load_pretrained_generator(path)


def test_non_tensor_entries_are_refused() -> None:
    with pytest.raises(ValueError, match="not a tensor"):
        resolve_generator({"model.1.weight": [1, 2, 3]})


def test_batchnorm_resnet_without_dropout_is_not_mistaken_for_dropout() -> None:
    spec = generator_spec("resnet_6blocks", ngf=8, norm="batch")
    found = infer_generator_spec(build_generator(spec).state_dict())
    assert found == spec


@pytest.mark.parametrize(("name", "unreadable"), [("unet_128", {"dropout"}),
                                                  ("resnet_6blocks", set())])
def test_unet_dropout_cannot_be_read_from_weights(name: str, unreadable: set) -> None:
    from training.pretrained import unreadable_fields

    with_dropout = build_generator(generator_spec(name, ngf=8, dropout=True)).state_dict()
    without = build_generator(generator_spec(name, ngf=8)).state_dict()
    same_weights = with_dropout.keys() == without.keys()
    assert same_weights == (name.startswith("unet"))  # why it cannot be read: no trace
    assert unreadable_fields(infer_generator_spec(without)) == unreadable


def _batchnorm_net(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_generator(generator_spec(name, ngf=8, norm="batch"))
    init_weights(net)
    for module in net.modules():  # statistics that are not the defaults
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize(("name", "size"), [("resnet_6blocks", 32), ("unet_128", 128)])
def test_batchnorm_file_from_before_pytorch_0_4_1_loads(tmp_path: Path, name: str,
                                                        size: int) -> None:
    """BatchNorm saved before PyTorch 0.4.1 has no num_batches_tracked (pix2pix files)."""
    net = _batchnorm_net(name)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    loaded, spec = load_pretrained_generator(path)
    assert spec.norm == "batch"
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_wrapped_state_dict_loads_and_a_training_checkpoint_is_pointed_elsewhere(
        tmp_path: Path, tiny_checkpoint: Path) -> None:
    net = build_generator(generator_spec("resnet_6blocks", ngf=8))
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)
    assert load_pretrained_generator(path)[1].name == "resnet_6blocks"
    with pytest.raises(CheckpointError, match="is a cyclegan-train checkpoint with two "
                       "generators; load one with generator_from_checkpoint"):
        load_pretrained_generator(tiny_checkpoint)


@pytest.mark.parametrize(("input_nc", "output_nc"), [(1, 2), (1, 3), (3, 1)])
def test_generators_that_are_not_colour_to_colour_are_refused(tmp_path: Path, input_nc: int,
                                                              output_nc: int) -> None:
    from cyclegan_export.source import load_generator
    from training.distill.teacher import load_teacher

    net = build_generator(generator_spec("resnet_6blocks", ngf=8, input_nc=input_nc,
                                         output_nc=output_nc))
    path = tmp_path / "colorization.pth"
    torch.save(net.state_dict(), path)
    message = (f"colorization.pth: the generator takes {input_nc} channel\\(s\\) and gives "
               f"{output_nc}; this toolkit translates colour images")
    for load in (load_generator, load_teacher):
        with pytest.raises(CheckpointError, match=message):
            load(path)
