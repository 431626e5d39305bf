"""The teacher: any CycleGAN generator file, frozen, plus what it knows about its domains.

- a training checkpoint of ours: ``direction`` picks G_AB or G_BA; its discriminator for the
  target domain (D_B for A->B, D_A for B->A) comes along for the optional adversarial term;
- a generator-only file: a raw state_dict in the official layout (the published pretrained
  ``latest_net_G*.pth`` files included), its architecture read from the weights;
- a distillation checkpoint of ours (a student can teach a smaller one).

Everything is read with ``torch.load(weights_only=True)`` (:func:`load_torch_file`). A file that
holds no generator (a discriminator, an optimiser, an ONNX model...) is refused with the
reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from training.checkpoint import (
    CheckpointError,
    file_sha256,
    is_training_checkpoint,
    load_torch_file,
)
from training.networks import GeneratorSpec, build_discriminator, discriminator_min_size
from training.pretrained import (
    generator_from_checkpoint,
    generator_from_state,
    require_colour,
    student_direction,
    unwrap_state_dict,
)

GENERATOR_KEYS = {"AtoB": ("G_AB", "D_B", "domain_a", "domain_b"),
                  "BtoA": ("G_BA", "D_A", "domain_b", "domain_a")}


@dataclass
class Teacher:
    """A frozen eval-mode generator on the CPU and what came with it."""

    net: nn.Module
    spec: GeneratorSpec
    path: Path
    sha256: str
    source_domain: str
    target_domain: str
    discriminator: nn.Module | None   # the target domain's D, when the checkpoint holds one
    description: str
    direction: str = "AtoB"  # which way it translates: the data's domain follows it
    # the smallest image side ``discriminator`` trains on (a new 70x70 PatchGAN's without one)
    discriminator_min_size: int = field(default_factory=discriminator_min_size)

    def record(self) -> dict[str, Any]:
        """What a student's checkpoint says about its teacher."""
        return {"path": str(self.path), "sha256": self.sha256, "spec": self.spec.to_dict(),
                "source_domain": self.source_domain, "target_domain": self.target_domain}


def load_teacher(path: str | Path, direction: str | None = None) -> Teacher:
    """Load the teacher generator; raises :class:`CheckpointError` naming the file and why.

    ``direction``: which generator of a training checkpoint (None: AtoB). A distilled student
    has one, translating in its own run's direction, which the returned teacher carries (and
    another one given is refused: its input domain is fixed)."""
    path = Path(path)
    data = load_torch_file(path)
    discriminator, min_size = None, discriminator_min_size()
    if is_training_checkpoint(data):
        generators = data.get("generators", {})
        if not generators and "discriminators" not in data:
            raise CheckpointError(f"{path}: a checkpoint without generators")
        config = data.get("config", {})
        student = data.get("kind") == "distill"
        if student:  # one generator, stored as G_AB from its source to its target
            direction, source, target = student_direction(data, path, direction)
        direction = direction or "AtoB"
        key, d_key, source_field, target_field = GENERATOR_KEYS[direction]
        net, spec = generator_from_checkpoint(data, "G_AB" if student else key, path,
                                              direction)
        if not student:
            source = str(config.get(source_field, direction[0]))
            target = str(config.get(target_field, direction[-1]))
        discriminator, min_size = _discriminator(data, d_key, config)
        kind = "distilled student" if student else "training checkpoint"
    else:
        data = unwrap_state_dict(data)
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{path}: not a generator file (it holds a "
                                  f"{type(data).__name__})")
        net, spec = generator_from_state(data, None, str(path))
        direction = direction or "AtoB"
        source, target = ("A", "B") if direction == "AtoB" else ("B", "A")
        kind = "generator file"
    require_colour(spec, str(path))
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    description = f"{kind} {path.name}: {spec.name} ngf {spec.ngf}, {source} -> {target}"
    return Teacher(net, spec, path, file_sha256(path), source, target, discriminator, description,
                   direction, min_size)


def _discriminator(data: Mapping[str, Any], key: str,
                   config: Mapping[str, Any]) -> tuple[nn.Module | None, int]:
    """The checkpoint's discriminator for the target domain, rebuilt from its config, and the
    smallest image side it trains on; (None, a new 70x70 PatchGAN's) without one."""
    state = data.get("discriminators", {}).get(key)
    if not isinstance(state, Mapping):
        return None, discriminator_min_size()
    name, n_layers = str(config.get("discriminator", "basic")), int(config.get("n_layers_d", 3))
    net = build_discriminator(name, ndf=int(config.get("ndf", 64)), n_layers=n_layers,
                              norm=str(config.get("norm", "instance")))
    try:
        net.load_state_dict(state)
    except RuntimeError:
        # a layout we cannot rebuild: the GAN term starts from a fresh D
        return None, discriminator_min_size()
    return net, discriminator_min_size(name, n_layers)
