"""History of generated images (Shrivastava et al. 2017), as used by CycleGAN.

The discriminator sees a fake either from the current step or, with probability 1/2 once the
pool is full, one of the last ``size`` fakes (which the new one then replaces). This damps
oscillation between G and D.
"""

from __future__ import annotations

import random
from typing import Any

import torch


class ImagePool:
    """A pool of up to ``size`` images ``(C, H, W)``; ``size == 0`` passes images through.

    The pool owns its random generator so that its state can be checkpointed and a resumed run
    makes the same choices as an uninterrupted one.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch the same shape as ``images`` (N, C, H, W), detached."""
        if self.size == 0:
            return images.detach()
        chosen = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                chosen.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                index = self.rng.randint(0, self.size - 1)
                chosen.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                chosen.append(image)
        return torch.cat(chosen, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"images": [img.cpu() for img in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.images = [img.to(device) for img in state["images"]]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
