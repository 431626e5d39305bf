"""A short fit that makes a freshly initialised generator behave like a trained one.

No pretrained weights can be downloaded here, and a randomly initialised network's activations
look nothing like a trained one's (which matters for int8 and fp16 quality, not for speed), so
the benchmarks fit their generator briefly to a colour grade first. Kept apart from
``run_all.py`` (which imports the media stack, and with it PyAV) so that ``gpu_check.py`` can
use it on a host without PyAV.
"""

from __future__ import annotations

from typing import Any


def fit_colour_transform(net: Any, steps: int, seed: int = 0, device: str = "cpu") -> float:
    """Train ``net`` (a ``torch.nn.Module`` on ``device``) for ``steps`` Adam steps (64x64,
    batch 2) to map natural-looking images to a warm colour grade with channel mixing; returns
    the final L1 (in [-1, 1] units). Leaves ``net`` in eval mode."""
    import torch

    from runtime.synthetic import natural_images

    torch.set_flush_denormal(True)  # see training/trainer.py: denormals stall x86 CPUs
    assert isinstance(net, torch.nn.Module)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    mix = torch.tensor([[0.9, 0.2, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.6]], device=device)
    loss = torch.zeros(())
    net.train()
    for step in range(steps):
        images = natural_images(2, 64, 64, seed=seed * 100_000 + step)
        x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        target = torch.clamp(torch.einsum("ij,njhw->nihw", mix, x) + 0.08, -1, 1)
        loss = torch.nn.functional.l1_loss(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return float(loss.detach())
