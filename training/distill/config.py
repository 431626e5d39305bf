"""Distillation settings: one dataclass with commented defaults.

The loss weights are the defaults the ablation in ``benchmarks/results/distill_quality.json``
kept (see ``benchmarks/distill_quality.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from training.distill.students import DEFAULT_STUDENT, STUDENTS
from training.networks import GeneratorSpec


class DistillConfigError(ValueError):
    """A setting that cannot work; the message names it."""


@dataclass(frozen=True)
class DistillConfig:
    teacher: str = ""                 # training checkpoint or generator file (.pt/.pth)
    direction: str = "AtoB"           # which generator of a training checkpoint
    dataroot: str = ""                # the teacher's input domain (folder, or trainA/trainB)
    target: str = ""                  # target-domain images for the GAN term ("" = from dataroot)
    student: str = DEFAULT_STUDENT    # a name of training.distill.students.STUDENTS
    ngf: int = 0                      # 0: the student's own width
    load_size: int = 143              # resize to this, then random crop_size crops
    crop_size: int = 128
    preprocess: str = "resize_and_crop"
    no_flip: bool = False
    batch_size: int = 4
    steps: int = 3000                 # optimisation steps in total (the schedule's length)
    max_steps: int = 0                # stop early after this many steps (0: run all `steps`)
    lr: float = 2e-4                  # Adam, beta1 0.5 (as the CycleGAN recipe)
    decay_from: float = 0.5           # linear learning-rate decay over the last half of steps
    lambda_l1: float = 10.0           # L1 to the teacher's output on the same crop
    lambda_feat: float = 1.0          # feature distillation (1x1 mappings, MSE), ResNet teachers
    feature_taps: int = 3             # residual blocks tapped, evenly spaced
    lambda_gan: float = 0.0           # LSGAN against the target domain (0: off)
    cache_teacher: int = 0            # >0: teacher outputs cached for this many fixed crops
    seed: int = 0
    num_workers: int = 2
    device: str = "auto"
    bf16: bool = False                # bfloat16 autocast for the forward passes
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    num_samples: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> DistillConfig:
        return validate(replace(self, **changes))


# Settings that may change when a run is resumed (they shape neither networks nor data order;
# a new `steps` stretches the learning-rate schedule from where the run is).
RESUMABLE = frozenset({"steps", "max_steps", "num_workers", "device", "log_every", "sample_every",
                       "checkpoint_every", "keep_checkpoints", "dataroot", "target", "teacher"})


def validate(config: DistillConfig) -> DistillConfig:
    if config.student not in STUDENTS:
        raise DistillConfigError(f"unknown student {config.student!r}; choose from "
                                 f"{', '.join(STUDENTS)}")
    if config.direction not in ("AtoB", "BtoA"):
        raise DistillConfigError(f"direction must be AtoB or BtoA, got {config.direction!r}")
    positive = ("crop_size", "load_size", "batch_size", "steps")
    for name in positive:
        if getattr(config, name) < 1:
            raise DistillConfigError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.crop_size % 4 or config.crop_size < 8:
        raise DistillConfigError(f"crop_size must be a multiple of 4 and >= 8, got "
                                 f"{config.crop_size}")
    if config.preprocess == "resize_and_crop" and config.crop_size > config.load_size:
        raise DistillConfigError(f"crop_size {config.crop_size} is larger than load_size "
                                 f"{config.load_size}")  # as cyclegan-train says
    for name in ("lambda_l1", "lambda_feat", "lambda_gan", "ngf", "cache_teacher",
                 "max_steps"):
        if not 0 <= getattr(config, name) < math.inf:  # NaN fails it too
            raise DistillConfigError(f"{name} must be >= 0, got {getattr(config, name)}")
    if not math.isfinite(config.lr) or config.lr <= 0:
        raise DistillConfigError(f"lr must be a positive number, got {config.lr}")
    if not 0.0 <= config.decay_from <= 1.0:
        raise DistillConfigError(f"decay_from must be in [0, 1], got {config.decay_from}")
    if config.lambda_l1 == 0 and config.lambda_feat == 0 and config.lambda_gan == 0:
        raise DistillConfigError("every loss weight is 0: nothing to learn")
    return config


def check_teacher_fits(config: DistillConfig, teacher: GeneratorSpec) -> None:
    """Raise :class:`DistillConfigError` when the teacher's generator cannot take the crops
    (a U-Net takes only multiples of 2**depth), before any work, as cyclegan-train says it."""
    # Every mode's sample grids (and the teacher cache) are crop_size crops.
    if config.crop_size % teacher.size_multiple or config.crop_size < teacher.min_size:
        raise DistillConfigError(
            f"crop_size {config.crop_size} does not fit the teacher's {teacher.name}: use a "
            f"multiple of {teacher.size_multiple}, at least {teacher.min_size} (--crop-size, "
            "with --load-size at least as large)")


def from_dict(values: dict[str, Any]) -> DistillConfig:
    known = {f.name for f in fields(DistillConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DistillConfigError(f"unknown setting(s): {', '.join(unknown)}")
    return validate(DistillConfig(**values))
