"""Shared fixtures: tiny synthetic unpaired data sets built on the fly (no downloads)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A natural-looking (smooth, low-frequency) ``(H, W, 3)`` uint8 RGB image."""
    coarse = rng.uniform(0, 255, size=(4, 4, 3))
    ys = np.linspace(0, 3, height)
    xs = np.linspace(0, 3, width)
    y0 = np.floor(ys).astype(int).clip(0, 2)
    x0 = np.floor(xs).astype(int).clip(0, 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    image = top * (1 - fy) + bottom * fy + rng.normal(0, 4, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_domain(folder: Path, count: int, rng: np.random.Generator,
                 size: tuple[int, int] = (40, 48), suffix: str = ".png") -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:03d}{suffix}"
        Image.fromarray(smooth_image(rng, *size)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def dataroot(tmp_path: Path) -> Path:
    """DATAROOT with 5 images in trainA and 3 in trainB (different counts: unpaired)."""
    rng = np.random.default_rng(1234)
    root = tmp_path / "data"
    write_domain(root / "trainA", 5, rng)
    write_domain(root / "trainB", 3, rng, suffix=".jpg")
    return root


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    """A tiny seeded resnet_6blocks (ngf 8) in eval mode, N(0, 0.02) init."""
    from training.networks import build_generator, generator_spec, init_weights

    torch.manual_seed(0)
    net = build_generator(generator_spec("resnet_6blocks", ngf=8))
    init_weights(net)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real training checkpoint (2 steps of resnet_6blocks, ngf 8) with named domains."""
    from training.config import from_dict
    from training.trainer import train

    root = tmp_path_factory.mktemp("export_data")
    rng = np.random.default_rng(5)
    write_domain(root / "trainA", 3, rng)
    write_domain(root / "trainB", 3, rng)
    config = from_dict(dict(dataroot=str(root), generator="resnet_6blocks", ngf=8, ndf=8,
                            load_size=36, crop_size=32, num_workers=0, max_steps=2,
                            sample_every=0, checkpoint_every=0, domain_a="horse",
                            domain_b="zebra"))
    result = train(config, root / "run", progress=False)
    assert result.checkpoint is not None
    return result.checkpoint


def signal_inside_import(module: str, signal_name: str, package: str, call: str) -> str:
    """A Python script that imports ``package``'s ``main`` and runs ``call`` (e.g.
    ``"main(['x'])"``) while a real ``signal_name`` lands inside the import of ``module`` and
    comes out as another error, as onnxruntime's pybind module turns it into "ImportError:
    initialization failed"."""
    return textwrap.dedent(f"""
        import os, signal, sys
        class Signal:
            def find_spec(self, name, path=None, target=None):
                if name == {module!r}:
                    try:
                        os.kill(os.getpid(), signal.{signal_name})
                        for _ in range(10**6):  # the handler runs between bytecodes
                            pass
                    except KeyboardInterrupt:
                        raise ImportError("initialization failed") from None
        sys.meta_path.insert(0, Signal())
        from {package} import main
        {call}
    """)

