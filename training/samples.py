"""Sample grids: what the generators currently make of a fixed set of images.

One row per image: real A | G_AB(A) | G_BA(G_AB(A)) || real B | G_BA(B) | G_AB(G_BA(B)).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from training.checkpoint import current_umask, temp_affixes
from training.data import center_view, read_image


def load_fixed_views(files: list[Path], count: int, size: int) -> torch.Tensor:
    """The first ``count`` readable files as centred ``size`` crops, ``(N, 3, size, size)``."""
    views: list[torch.Tensor] = []
    for path in files:
        if len(views) == count:
            break
        try:
            views.append(center_view(read_image(path), size))
        except (OSError, ValueError, SyntaxError):
            continue
    return torch.stack(views)


@torch.no_grad()
def sample_grid(g_ab: nn.Module, g_ba: nn.Module, real_a: torch.Tensor,
                real_b: torch.Tensor) -> torch.Tensor:
    """Return the grid as a ``(3, H, W)`` uint8 RGB tensor; networks are run in eval mode."""
    was_training = g_ab.training
    g_ab.eval()
    g_ba.eval()
    try:
        fake_b = g_ab(real_a)
        rec_a = g_ba(fake_b)
        fake_a = g_ba(real_b)
        rec_b = g_ab(fake_a)
    finally:
        g_ab.train(was_training)
        g_ba.train(was_training)
    rows = min(len(real_a), len(real_b))
    tiles = []
    for i in range(rows):
        tiles += [real_a[i], fake_b[i], rec_a[i], real_b[i], fake_a[i], rec_b[i]]
    grid = make_grid(torch.stack(tiles).float().cpu(), nrow=6, padding=2, normalize=True,
                     value_range=(-1, 1))
    return grid.mul(255).round().clamp(0, 255).to(torch.uint8)


def save_png_atomic(image: torch.Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` uint8 RGB tensor as PNG via a temp file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = temp_affixes(path.name)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 -> the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
