"""The student generators on offer, and their cost, without importing torch.

Two kinds, both registered in :data:`training.networks.GENERATORS`, so a student exports and
runs like any generator:

- a plain ResNet generator with a small ``ngf`` (the official layout, narrower);
- a mobile ResNet generator: the same stem and up/down sampling, residual blocks built from
  depthwise-separable convolutions (GAN Compression's mobile generator, Li et al., CVPR 2020).

:func:`resnet_macs` counts multiply-accumulates analytically (the convolutions: all but a
fraction of a percent of the work), so ``cyclegan-distill --help`` can list costs at once; a
test holds it equal to the hook-based count of :func:`training.networks.count_macs`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Student:
    """A named student: a generator name of :data:`training.networks.GENERATORS` and a width."""

    generator: str
    ngf: int
    note: str

    @property
    def family(self) -> str:
        return "mobile_resnet" if self.generator.startswith("mobile_") else "resnet"

    @property
    def n_blocks(self) -> int:
        return int(self.generator.rsplit("_", 1)[1].removesuffix("blocks"))


# name -> student. A dict, not an if/elif chain; --student picks one, --ngf overrides the width.
STUDENTS: dict[str, Student] = {
    "mobile-4": Student("mobile_resnet_9blocks", 4, "smallest; ~1/19 of the demo model"),
    "mobile-8": Student("mobile_resnet_9blocks", 8, "mobile ResNet, 9 separable blocks"),
    "mobile-16": Student("mobile_resnet_9blocks", 16, "~1/50 of a ResNet-9 ngf 64"),
    "mobile-32": Student("mobile_resnet_9blocks", 32, "~1/15 of a ResNet-9 ngf 64"),
    "resnet-8": Student("resnet_9blocks", 8, "plain ResNet-9, ngf 8"),
    "resnet-16": Student("resnet_9blocks", 16, "plain ResNet-9, ngf 16"),
}
DEFAULT_STUDENT = "mobile-16"


def resnet_macs(family: str, ngf: int, n_blocks: int, height: int = 256, width: int = 256,
                input_nc: int = 3, output_nc: int = 3) -> int:
    """Multiply-accumulates of one forward pass of a (mobile) ResNet generator at H x W."""
    full = height * width
    half = (height // 2) * (width // 2)
    quarter = (height // 4) * (width // 4)
    dim = 4 * ngf
    macs = 49 * input_nc * ngf * full                      # c7s1-ngf stem
    macs += 9 * ngf * 2 * ngf * half                       # down to 1/2, 2 ngf
    macs += 9 * 2 * ngf * dim * quarter                    # down to 1/4, 4 ngf
    if family == "mobile_resnet":
        per_conv = (9 * dim + dim * dim) * quarter         # depthwise 3x3 + pointwise 1x1
    else:
        per_conv = 9 * dim * dim * quarter
    macs += n_blocks * 2 * per_conv
    macs += 9 * dim * 2 * ngf * quarter                    # transposed conv up to 1/2
    macs += 9 * 2 * ngf * ngf * half                       # transposed conv up to full size
    macs += 49 * ngf * output_nc * full                    # c7s1-3 head
    return macs


def student_macs(student: Student, ngf: int | None = None, size: int = 256) -> int:
    return resnet_macs(student.family, ngf or student.ngf, student.n_blocks, size, size)


def students_help() -> str:
    """One line per student with its MACs at 256x256, for ``--help``."""
    lines = []
    for name, student in STUDENTS.items():
        gmac = student_macs(student) / 1e9
        lines.append(f"{name}: {student.generator} ngf {student.ngf}, {gmac:.2f} GMAC at "
                     f"256x256 ({student.note})")
    return "\n".join(lines)
