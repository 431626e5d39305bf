"""What the student learns from: the teacher's output, its features, and optionally the target
domain itself.

    L_student = lambda_l1 * |S(x) - T(x)|_1                        (output, same augmented crop)
              + lambda_feat * mean_k MSE(M_k(S_k(x)), T_k(x))      (intermediate features)
              + lambda_gan * (D(S(x)) - 1)^2                       (LSGAN, target domain)
    L_D       = 0.5 * ((D(y) - 1)^2 + D(S(x))^2)                   (y: target-domain images)

S_k / T_k: outputs of evenly spaced residual blocks of student and teacher (both at 1/4 of
the input's size); M_k: learned 1x1 convolutions from the student's width to the teacher's, as
in GAN Compression (Li et al., CVPR 2020, Sec. 3.2). Feature distillation needs a ResNet-family
teacher and student; otherwise the term is off and the run says so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from training.networks import RESNET_FAMILIES, GeneratorSpec, ResnetBlock


def residual_blocks(net: nn.Module) -> list[nn.Module]:
    """The residual blocks of a (mobile) ResNet generator, in order."""
    return [m for m in net.modules() if isinstance(m, ResnetBlock)]


def tap_pairs(student_blocks: int, teacher_blocks: int, taps: int) -> list[tuple[int, int]]:
    """``taps`` (student block, teacher block) index pairs at matching relative depths.

    >>> tap_pairs(9, 6, 3)
    [(2, 2), (4, 3), (7, 4)]
    """
    if taps <= 0 or not student_blocks or not teacher_blocks:
        return []
    pairs = []
    for k in range(1, taps + 1):
        depth = k / (taps + 1)
        pair = (min(student_blocks - 1, round(depth * student_blocks)),
                min(teacher_blocks - 1, round(depth * teacher_blocks)))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


class FeatureCapture:
    """Forward hooks that keep the outputs of chosen modules of ``net`` from its last call."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.features: list[torch.Tensor | None] = [None] * len(modules)
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(modules)]

    def _hook(self, index: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def keep(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            self.features[index] = output
        return keep

    def take(self) -> list[torch.Tensor]:
        out = [f for f in self.features if f is not None]
        self.features = [None] * len(self.features)
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class StudentWithMappings(nn.Module):
    """The student and its 1x1 feature mappings as one module (one DDP wrapper, one optimiser).

    ``forward(x)`` returns ``(S(x), [M_k(S_k(x))])``; x: ``(N, 3, H, W)`` float in [-1, 1].
    """

    def __init__(self, student: nn.Module, student_spec: GeneratorSpec,
                 teacher_spec: GeneratorSpec | None, pairs: list[tuple[int, int]]) -> None:
        super().__init__()
        self.student = student
        self.pairs = pairs
        width_s = 4 * student_spec.ngf
        width_t = 4 * teacher_spec.ngf if teacher_spec is not None else width_s
        self.mappings = nn.ModuleList(nn.Conv2d(width_s, width_t, kernel_size=1)
                                      for _ in pairs)
        blocks = residual_blocks(student)
        self._capture = FeatureCapture([blocks[s] for s, _ in pairs])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.student(x)
        features = self._capture.take()
        return out, [mapping(f) for mapping, f in zip(self.mappings, features, strict=True)]


def feature_pairs(student_spec: GeneratorSpec, teacher_spec: GeneratorSpec,
                  taps: int) -> list[tuple[int, int]]:
    """Tap pairs, or none when either network is not a ResNet-family generator."""
    if student_spec.family not in RESNET_FAMILIES or teacher_spec.family not in RESNET_FAMILIES:
        return []
    return tap_pairs(student_spec.n_blocks, teacher_spec.n_blocks, taps)


def student_losses(out: torch.Tensor, mapped: list[torch.Tensor], teacher_out: torch.Tensor,
                   teacher_features: list[torch.Tensor], fake_score: torch.Tensor | None,
                   lambda_l1: float, lambda_feat: float,
                   lambda_gan: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The student's total loss and its terms (unweighted), as in the module docstring."""
    terms: dict[str, torch.Tensor] = {"l1": F.l1_loss(out.float(), teacher_out.float())}
    total = lambda_l1 * terms["l1"]
    if mapped and lambda_feat > 0:
        feat = torch.stack([F.mse_loss(m.float(), t.float())
                            for m, t in zip(mapped, teacher_features, strict=True)]).mean()
        terms["feat"] = feat
        total = total + lambda_feat * feat
    if fake_score is not None and lambda_gan > 0:
        score = fake_score.float()
        terms["gan"] = F.mse_loss(score, torch.ones_like(score))
        total = total + lambda_gan * terms["gan"]
    return total, terms


def discriminator_loss(real_score: torch.Tensor, fake_score: torch.Tensor) -> torch.Tensor:
    """LSGAN, halved as in the official code: real -> 1, fake -> 0."""
    real = F.mse_loss(real_score.float(), torch.ones_like(real_score, dtype=torch.float))
    fake = F.mse_loss(fake_score.float(), torch.zeros_like(fake_score, dtype=torch.float))
    return 0.5 * (real + fake)
