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

    def spec_record(self) -> dict[str, Any]:
        """The spec as the model's metadata records it: fields nobody could tell, and the
        other family's depth field (a U-Net has no ``n_blocks``, a ResNet no ``num_downs``),
        are None."""
        moot = "n_blocks" if self.spec.family == "unet" else "num_downs"
        return {k: (None if k in self.unknown or k == moot else v)
                for k, v in self.spec.to_dict().items()}


def _from_training_checkpoint(data: Mapping[str, Any], path: Path, direction: str,
                              overrides: Mapping[str, Any] | None) -> GeneratorSource:
    key, source_field, target_field = DIRECTIONS[direction]
    net, spec = generator_from_checkpoint(data, key, path, direction, overrides)
    config = data.get("config", {})
    return GeneratorSource(
        net, spec, "training checkpoint", direction,
        str(config.get(source_field, direction[0])), str(config.get(target_field, direction[-1])),
        config.get("crop_size"), path, file_sha256(path))


def load_generator(path: str | Path, direction: str = "AtoB",
                   overrides: Mapping[str, Any] | None = None) -> GeneratorSource:
    """Load the generator to export. ``overrides`` (ngf, norm, dropout, ...) win over the file.

    For a generator-only file, ``direction`` only labels the model (the file cannot say which
    way it translates). Raises :class:`CheckpointError` naming the file and the reason.
    """
    path = Path(path)
    if direction not in DIRECTIONS:
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
    source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
    given = {k for k, v in (overrides or {}).items() if v is not None}
    return GeneratorSource(net, spec, "generator state_dict", direction, source, target,
                           None, path, file_sha256(path), unreadable_fields(spec) - given)
