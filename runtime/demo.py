"""The demo model that ships inside the package: photos -> "blue hour" dusk.

Trained with ``training/recipes/demo.yaml`` on the offline demo data set
(``training/demo_data.py``); its quality against the true styled targets is measured by
``benchmarks/demo_quality.py``. Files live in ``runtime/demo/``.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_MODEL = DEMO_DIR / "demo.onnx"            # photo -> blue hour (AtoB)
DEMO_MODEL_REVERSE = DEMO_DIR / "demo_BtoA.onnx"  # blue hour -> photo
DEMO_SAMPLES = DEMO_DIR / "samples"


class DemoMissingError(FileNotFoundError):
    """The installed package lacks its demo files (e.g. a source tree without them)."""


def demo_model_path(reverse: bool = False) -> Path:
    path = DEMO_MODEL_REVERSE if reverse else DEMO_MODEL
    if not path.is_file():
        raise DemoMissingError(f"{path}: demo model not found; reinstall cyclegan-toolkit")
    return path


def demo_inputs() -> list[Path]:
    """The bundled sample photos and video, sorted."""
    files = sorted(p for p in DEMO_SAMPLES.glob("*") if p.is_file())
    if not files:
        raise DemoMissingError(f"{DEMO_SAMPLES}: demo samples not found; reinstall "
                               "cyclegan-toolkit")
    return files
