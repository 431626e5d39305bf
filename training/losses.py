"""The CycleGAN objective, term by term as in the paper (Zhu et al. 2017, eq. 1-3).

Names: G_AB is the paper's G (X -> Y), G_BA its F (Y -> X); D_B judges domain B (paper D_Y),
D_A judges domain A (paper D_X). In the official code these are netG_A, netG_B, netD_A (judges
B!) and netD_B (judges A).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class GANLoss(nn.Module):
    """Adversarial loss against a constant target: 1 for "real", 0 for "fake".

    ``lsgan``: mean squared error on raw scores (Mao et al.), the CycleGAN default.
    ``vanilla``: binary cross-entropy on logits (the original GAN objective).
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {mode!r}; choose from {', '.join(GAN_MODES)}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        prediction = prediction.float()  # losses in fp32 even under bf16 autocast
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        return GAN_MODES[self.mode](prediction, target)


GAN_MODES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "lsgan": F.mse_loss,
    "vanilla": F.binary_cross_entropy_with_logits,
}


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor, weight: float) -> torch.Tensor:
    """Cycle consistency ``weight * |F(G(x)) - x|_1`` (mean over pixels)."""
    return F.l1_loss(reconstructed.float(), original.float()) * weight


def identity_loss(same: torch.Tensor, original: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity mapping ``weight * |G(y) - y|_1``; weight is lambda_identity * lambda."""
    return F.l1_loss(same.float(), original.float()) * weight
