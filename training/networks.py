"""CycleGAN networks with the official state_dict layout.

The module trees below mirror junyanz/pytorch-CycleGAN-and-pix2pix (``models/networks.py``)
index for index, so that the published pretrained files (``latest_net_G.pth``) load with
``load_state_dict(strict=True)`` after only the clean-up in :mod:`training.pretrained`.
Generators map NCHW float images in [-1, 1] (RGB) to the same shape and range.

Networks are plain ``nn.Module``s: no device moves, no DDP wrapping and no weight init inside;
the trainer does those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]


def _instance_norm(channels: int) -> nn.Module:
    # Official CycleGAN: affine=False, track_running_stats=False, so no parameters or buffers.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)


def _no_norm(channels: int) -> nn.Module:
    return nn.Identity()


# name -> (norm layer factory, whether convolutions carry a bias). The official code only
# turns conv biases on with InstanceNorm (BatchNorm has its own shift; "none" copies that rule).
NORMS: dict[str, tuple[NormFactory, bool]] = {
    "instance": (_instance_norm, True),
    "batch": (_batch_norm, False),
    "none": (_no_norm, False),
}


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to rebuild a generator; stored in checkpoints and ONNX metadata.

    ``family`` is ``"resnet"`` (``n_blocks`` residual blocks at 1/4 resolution) or ``"unet"``
    (``num_downs`` stride-2 levels, so inputs must be a multiple of ``2 ** num_downs``).
    """

    family: str = "resnet"
    ngf: int = 64
    n_blocks: int = 9
    num_downs: int = 8
    norm: str = "instance"
    dropout: bool = False
    input_nc: int = 3
    output_nc: int = 3

    @property
    def name(self) -> str:
        """Generator name (``resnet_9blocks``, ``unet_256``, ``mobile_resnet_9blocks``...)."""
        if self.family in RESNET_FAMILIES:
            return f"{self.family}_{self.n_blocks}blocks"
        return f"unet_{2 ** self.num_downs}"

    @property
    def size_multiple(self) -> int:
        """Input height and width must be a multiple of this."""
        return 4 if self.family in RESNET_FAMILIES else 2**self.num_downs

    @property
    def min_size(self) -> int:
        """Smallest input height/width: a ResNet's 1/4-size bottleneck must be >= 2 pixels for
        its reflection padding; a U-Net needs one full multiple."""
        return 8 if self.family in RESNET_FAMILIES else self.size_multiple

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GeneratorSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown generator option(s): {', '.join(unknown)}")
        return cls(**values)


# Families with the ResNet layout (stem, two downsamplings, blocks, two upsamplings).
RESNET_FAMILIES = frozenset({"resnet", "mobile_resnet"})

# Generator names -> the spec fields they fix. A dict, not an if/elif chain. The first four
# are the official ones; the mobile ResNets are the distillation students (GAN Compression's
# mobile generator: residual blocks of depthwise-separable convolutions).
GENERATORS: dict[str, dict[str, Any]] = {
    "resnet_9blocks": {"family": "resnet", "n_blocks": 9},
    "resnet_6blocks": {"family": "resnet", "n_blocks": 6},
    "unet_256": {"family": "unet", "num_downs": 8},
    "unet_128": {"family": "unet", "num_downs": 7},
    "mobile_resnet_9blocks": {"family": "mobile_resnet", "n_blocks": 9},
    "mobile_resnet_6blocks": {"family": "mobile_resnet", "n_blocks": 6},
}


def generator_spec(name: str, **options: Any) -> GeneratorSpec:
    """Spec for an official generator name, with ``ngf``, ``norm``, ``dropout``... overrides."""
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose from {', '.join(GENERATORS)}")
    return replace(GeneratorSpec(), **{**GENERATORS[name], **options})


ConvFactory = Callable[[int, NormFactory, bool], nn.Module]  # (dim, norm, bias) -> 3x3 conv


def _plain_conv3x3(dim: int, norm: NormFactory, use_bias: bool) -> nn.Module:
    return nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias)


class SeparableConv2d(nn.Module):
    """A 3x3 depthwise convolution, a norm, then a 1x1 pointwise convolution (GAN Compression's
    ``SeparableConv2d``): about ``9 / dim + 1`` of a dense 3x3 convolution's cost.

    Keys: ``conv.0`` depthwise, ``conv.1`` norm, ``conv.2`` pointwise.
    """

    def __init__(self, dim: int, norm: NormFactory, use_bias: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, groups=dim, bias=use_bias),
            norm(dim),
            nn.Conv2d(dim, dim, kernel_size=1, bias=use_bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResnetBlock(nn.Module):
    """Two 3x3 convolutions with reflection padding and a residual connection.

    Key layout (``conv_block.N``): 0 pad, 1 conv, 2 norm, 3 relu, [4 dropout], pad, conv, norm;
    dropout therefore shifts the second convolution from index 5 to 6, as in the official code.
    ``conv`` builds the 3x3 convolutions: dense (official) or :class:`SeparableConv2d` (mobile).
    """

    def __init__(self, dim: int, norm: NormFactory, use_bias: bool, use_dropout: bool,
                 conv: ConvFactory = _plain_conv3x3) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            conv(dim, norm, use_bias),
            norm(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            conv(dim, norm, use_bias),
            norm(dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Johnson et al. ResNet generator: c7s1-ngf, two stride-2 downsamplings, ``n_blocks``
    residual blocks, two transposed-conv upsamplings, c7s1-output, tanh.

    Input ``(N, input_nc, H, W)`` float in [-1, 1] with H, W multiples of 4; output the same
    size with ``output_nc`` channels in [-1, 1].
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__()
        if spec.n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {spec.n_blocks}")
        norm, use_bias = NORMS[spec.norm]
        ngf = spec.ngf
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(spec.input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias),
                norm(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 2**n_downsampling
        conv = SeparableConv2d if spec.family == "mobile_resnet" else _plain_conv3x3
        for _ in range(spec.n_blocks):
            layers.append(ResnetBlock(ngf * mult, norm, use_bias, spec.dropout, conv))
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                    bias=use_bias,
                ),
                norm(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, spec.output_nc, kernel_size=7, padding=0),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down, ``submodule``, up, concatenated with its input (except outermost).

    Key layout of ``model.N``: outermost 0 downconv, 1 submodule, 2 relu, 3 upconv, 4 tanh;
    middle 0 lrelu, 1 downconv, 2 norm, 3 submodule, 4 relu, 5 upconv, 6 norm, [7 dropout];
    innermost 0 lrelu, 1 downconv, 2 relu, 3 upconv, 4 norm.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        norm: NormFactory,
        use_bias: bool,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        layers: list[nn.Module]
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm(outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias
            )
            layers = [downrelu, downconv, norm(inner_nc), submodule, uprelu, upconv,
                      norm(outer_nc)]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net with ``num_downs`` levels (8 for 256x256 inputs, 7 for 128x128).

    Input ``(N, input_nc, H, W)`` float in [-1, 1], H and W multiples of ``2 ** num_downs``;
    output the same size with ``output_nc`` channels in [-1, 1].
    """

    def __init__(self, spec: GeneratorSpec) -> None:
        super().__init__()
        if spec.num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {spec.num_downs}")
        norm, use_bias = NORMS[spec.norm]
        ngf = spec.ngf
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm, use_bias, innermost=True)
        for _ in range(spec.num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, norm, use_bias, submodule=block, use_dropout=spec.dropout
            )
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, norm, use_bias, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, norm, use_bias, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, norm, use_bias, submodule=block)
        self.model = UnetSkipConnectionBlock(
            spec.output_nc, ngf, norm, use_bias, input_nc=spec.input_nc, submodule=block,
            outermost=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


GENERATOR_FAMILIES: dict[str, Callable[[GeneratorSpec], nn.Module]] = {
    "resnet": ResnetGenerator,
    "mobile_resnet": ResnetGenerator,  # same layout, separable convolutions in the blocks
    "unet": UnetGenerator,
}


def build_generator(spec: GeneratorSpec) -> nn.Module:
    """Build an uninitialised generator (PyTorch default init) on the CPU."""
    if spec.family not in GENERATOR_FAMILIES:
        raise ValueError(f"unknown generator family {spec.family!r}")
    if spec.norm not in NORMS:
        raise ValueError(f"unknown norm {spec.norm!r}; choose from {', '.join(NORMS)}")
    return GENERATOR_FAMILIES[spec.family](spec)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator; ``n_layers=3`` gives the 70x70 receptive field of the paper.

    Input ``(N, input_nc, H, W)`` in [-1, 1]; output ``(N, 1, H', W')`` raw scores (logits).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3,
                 norm: str = "instance") -> None:
        super().__init__()
        norm_layer, use_bias = NORMS[norm]
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, stride=2, padding=padw,
                          bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kw, stride=1, padding=padw,
                      bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN ("pixelGAN"): judges every pixel on its own; output ``(N, 1, H, W)``."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        norm_layer, use_bias = NORMS[norm]
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=use_bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _basic(input_nc: int, ndf: int, n_layers: int, norm: str) -> nn.Module:
    return NLayerDiscriminator(input_nc, ndf, 3, norm)


def _n_layers(input_nc: int, ndf: int, n_layers: int, norm: str) -> nn.Module:
    return NLayerDiscriminator(input_nc, ndf, n_layers, norm)


def _pixel(input_nc: int, ndf: int, n_layers: int, norm: str) -> nn.Module:
    return PixelDiscriminator(input_nc, ndf, norm)


# Official discriminator names (--netD) -> builders.
DISCRIMINATORS: dict[str, Callable[[int, int, int, str], nn.Module]] = {
    "basic": _basic,
    "n_layers": _n_layers,
    "pixel": _pixel,
}


def discriminator_min_size(name: str = "basic", n_layers: int = 3) -> int:
    """The smallest image side a discriminator trains on: a PatchGAN halves its input once per
    strided layer (3 for ``basic``), then two 4x4 convolutions take a pixel each, and instance
    norm needs more than one value per map, so 3 * 2**layers (24 for the 70x70); ``pixel``: 2.
    Checked against the networks themselves in the tests."""
    if name == "pixel":
        return 2
    return 3 * 2 ** (3 if name == "basic" else n_layers)


def build_discriminator(
    name: str = "basic", input_nc: int = 3, ndf: int = 64, n_layers: int = 3,
    norm: str = "instance",
) -> nn.Module:
    """Build a discriminator by its official name: ``basic`` (70x70), ``n_layers``, ``pixel``."""
    if name not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {name!r}; choose from {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](input_nc, ndf, n_layers, norm)


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The paper's init: conv weights ~ N(0, gain), biases 0; BatchNorm scale ~ N(1, gain)."""

    def init(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)

    net.apply(init)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_macs(net: nn.Module, height: int = 256, width: int = 256) -> int:
    """Multiply-accumulates of one ``(1, 3, height, width)`` forward pass, counted from the
    convolutions (which are all but a fraction of a percent of a generator's work)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
        kernel = module.weight.shape[2] * module.weight.shape[3]
        if isinstance(module, nn.Conv2d):
            per_output = kernel * module.in_channels // module.groups
            total += int(output.numel() * per_output)
        else:  # each input pixel is spread over kernel x out_channels outputs
            total += int(inputs[0].numel() * kernel * module.out_channels // module.groups)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return total
