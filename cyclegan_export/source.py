"""What can be exported: one generator, from any of the files users have.

- the project's own training checkpoints (both generators; ``direction`` picks G_AB or G_BA),
- generator-only files: a raw ``state_dict`` in the official layout, which is also what the
  official pretrained ``latest_net_G.pth`` / ``latest_net_G_A.pth`` files are.

Everything is read with ``torch.load(weights_only=True)`` through :mod:`training.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from training.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    file_sha256,
    is_training_checkpoint,
    load_torch_file,
)
from training.networks import GeneratorSpec
from training.pretrained import (
    generator_from_checkpoint,
    generator_from_state,
    require_colour,
    student_direction,
    unreadable_fields,
    unwrap_state_dict,
)

# direction -> (key in the checkpoint's "generators", source domain field, target domain field)
DIRECTIONS = {
    "AtoB": ("G_AB", "domain_a", "domain_b"),
    "BtoA": ("G_BA", "domain_b", "domain_a"),
}


@dataclass
class GeneratorSource:
    """An eval-mode generator on the CPU and what is known about where it came from."""

    net: nn.Module
    spec: GeneratorSpec
    kind: str                      # "training checkpoint" | "generator state_dict"
    direction: str
    source_domain: str
    target_domain: str
    crop_size: int | None
    path: Path
    sha256: str
    # Spec fields neither the file nor the user said (e.g. a U-Net's dropout: no weights).
    unknown: frozenset[str] = field(default_factory=frozenset)
    extra: dict[str, Any] = field(default_factory=dict)  # the model metadata's "extra"

    def spec_record(self) -> dict[str, Any]:
        """The spec as the model's metadata records it: fields nobody could tell, and the
        other family's depth field (a U-Net has no ``n_blocks``, a ResNet no ``num_downs``),
        are None."""
        moot = "n_blocks" if self.spec.family == "unet" else "num_downs"
        return {k: (None if k in self.unknown or k == moot else v)
                for k, v in self.spec.to_dict().items()}


def _from_student(data: Mapping[str, Any], path: Path, direction: str | None,
                  overrides: Mapping[str, Any] | None) -> GeneratorSource:
    """A ``cyclegan-distill`` checkpoint: one generator, stored as G_AB from its source
    (``domain_a``) to its target (``domain_b``), translating in its run's direction."""
    config = data.get("config", {})
    own, source, target = student_direction(data, path, direction)
    net, spec = generator_from_checkpoint(data, "G_AB", path, own, overrides)
    teacher = data.get("teacher", {})
    distilled_from = {"file": Path(str(teacher.get("path", ""))).name,
                      "sha256": teacher.get("sha256", ""),
                      "architecture": teacher.get("spec", {}).get("name", "")}
    return GeneratorSource(net, spec, "distilled student", own, source, target,
                           config.get("crop_size"), path, file_sha256(path),
                           extra={"distilled_from": distilled_from})


def _from_training_checkpoint(data: Mapping[str, Any], path: Path, direction: str | None,
                              overrides: Mapping[str, Any] | None) -> GeneratorSource:
    if data.get("kind") == "distill":
        return _from_student(data, path, direction, overrides)
    direction = direction or "AtoB"
    key, source_field, target_field = DIRECTIONS[direction]
    net, spec = generator_from_checkpoint(data, key, path, direction, overrides)
    config = data.get("config", {})
    return GeneratorSource(
        net, spec, "training checkpoint", direction,
        str(config.get(source_field, direction[0])), str(config.get(target_field, direction[-1])),
        config.get("crop_size"), path, file_sha256(path))


def load_generator(path: str | Path, direction: str | None = None,
                   overrides: Mapping[str, Any] | None = None) -> GeneratorSource:
    """Load the generator to export. ``overrides`` (ngf, norm, dropout, ...) win over the file.

    ``direction``: which generator of a training checkpoint (None: AtoB); a distilled student
    has one and translates in its own run's direction (another one given is refused). For a
    generator-only file it only labels the model (the file cannot say which way it
    translates). Raises :class:`CheckpointError` naming the file and the reason.
    """
    path = Path(path)
    if direction is not None and direction not in DIRECTIONS:
        raise CheckpointError(f"direction must be AtoB or BtoA, got {direction!r}")
    data = load_torch_file(path)
    if is_training_checkpoint(data):
        if data.get("version", 0) > CHECKPOINT_VERSION:
            raise CheckpointError(f"{path}: checkpoint version {data['version']} is newer than "
                                  f"this package understands ({CHECKPOINT_VERSION})")
        return _from_training_checkpoint(data, path, direction, overrides)
    data = unwrap_state_dict(data)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint or state_dict "
                              f"(it holds a {type(data).__name__})")
    net, spec = generator_from_state(data, overrides, str(path))
    require_colour(spec, str(path))
    direction = direction or "AtoB"
    source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
    given = {k for k, v in (overrides or {}).items() if v is not None}
    return GeneratorSource(net, spec, "generator state_dict", direction, source, target,
                           None, path, file_sha256(path), unreadable_fields(spec) - given)
