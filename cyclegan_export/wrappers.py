"""Export-only wrappers: graph changes that exist for deployment, not for training.

- :class:`Uint8IO` moves pre/post-processing into the graph, so a camera frame goes in and a
  displayable frame comes out without Python arithmetic.
- :class:`PortableReflectionPad2d` is reflect padding built from Slice + Concat only, for
  TensorRT / CoreML / OpenCV builds whose ``Pad`` lacks ``mode="reflect"``; numerically identical.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class Uint8IO(nn.Module):
    """Wrap a float generator: uint8 ``(N, H, W, 3)`` in ``color_order`` -> same layout out.

    Inside: ``x / 127.5 - 1`` to NCHW RGB, the generator, then ``round((y + 1) * 127.5)``
    clipped to 0..255 back to NHWC uint8: exactly :mod:`runtime.transforms`, in the graph.
    """

    def __init__(self, generator: nn.Module, color_order: str = "BGR") -> None:
        super().__init__()
        if color_order not in ("BGR", "RGB"):
            raise ValueError(f"color_order must be BGR or RGB, got {color_order!r}")
        self.generator = generator
        self.swap = color_order == "BGR"

    def _swap_channels(self, x: torch.Tensor) -> torch.Tensor:
        # Three single-channel slices and a concat: portable everywhere, unlike a negative step.
        return torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1) if self.swap else x

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        y = self.generator(self._swap_channels(x))
        y = torch.clamp(torch.round((y + 1.0) * 127.5), 0.0, 255.0)
        return self._swap_channels(y).permute(0, 2, 3, 1).to(torch.uint8)


class PortableReflectionPad2d(nn.Module):
    """``nn.ReflectionPad2d`` from single-row/column slices and ``Concat`` (no reflect ``Pad``).

    Reflect padding of width p mirrors the p rows (columns) next to the edge, excluding the
    edge itself: left = x[..., p], ..., x[..., 1]; right = x[..., W-2], ..., x[..., W-1-p].
    """

    def __init__(self, padding: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.left, self.right, self.top, self.bottom = padding

    @staticmethod
    def _pad_dim(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
        if before == 0 and after == 0:
            return x
        size = x.shape[dim]
        head = [x.narrow(dim, i, 1) for i in range(before, 0, -1)]
        tail = [x.narrow(dim, size - 1 - i, 1) for i in range(1, after + 1)]
        return torch.cat([*head, x, *tail], dim=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pad_dim(x, self.left, self.right, dim=3)
        return self._pad_dim(x, self.top, self.bottom, dim=2)


def with_portable_padding(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every ``ReflectionPad2d`` replaced by the portable version."""
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReflectionPad2d):
                left, right, top, bottom = child.padding
                setattr(parent, name, PortableReflectionPad2d((left, right, top, bottom)))
    return net
