"""Build the demo data set offline from photos that installed packages ship.

Domain A: photos. Domain B: photos in a "blue hour" dusk style made by a deterministic
transform (:func:`stylize`). Every source photo lands in exactly one of trainA, trainB and the
held-out test set, so training is genuinely unpaired, while on the held-out photos the true
target (``stylize(photo)``) is known and the model can be scored against it.

    python -m training.demo_data datasets/demo      # needs scikit-image and scikit-learn

Sources: ``skimage.data`` (astronaut, rocket, coffee, chelsea, stereo_motorcycle) and
scikit-learn's ``load_sample_images`` (china, flower).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

# source name -> split. No photo is used in two splits.
# Held out: three natural photos of different content (a cat, flowers, a motorbike).
SPLITS: dict[str, str] = {
    "astronaut": "trainA", "rocket": "trainA",
    "china": "trainB", "coffee": "trainB",
    "chelsea": "test", "flower": "test", "motorcycle": "test",
}
PATCH_SIZE = 143      # saved patch size; training crops 128 from it (the load/crop recipe)
PATCHES_PER_PHOTO = 90


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo pair: left view

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"), "rocket": _skimage("rocket"),
    "coffee": _skimage("coffee"), "chelsea": _skimage("chelsea"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn("china.jpg"), "flower": _sklearn("flower.jpg"),
}


def stylize(image_rgb: np.ndarray) -> np.ndarray:
    """The target style: "blue hour", a day-to-dusk grade with a soft watercolour smoothing.

    ``(H, W, 3)`` uint8 RGB -> same. Deterministic: 55% desaturation, darker tones
    (gamma 1.5), a cool blue-violet cast, then an edge-preserving bilateral smoothing.
    """
    x = image_rgb.astype(np.float32) / 255.0
    gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
    muted = 0.45 * x + 0.55 * gray[..., None]
    dark = muted ** 1.5
    graded = np.stack([dark[..., 0] * 0.70 + 0.02, dark[..., 1] * 0.80 + 0.04,
                       dark[..., 2] * 1.05 + 0.10], axis=-1)
    out8 = np.clip(np.rint(graded * 255), 0, 255).astype(np.uint8)
    return cv2.bilateralFilter(out8, d=7, sigmaColor=40, sigmaSpace=5)


def random_patches(image: np.ndarray, count: int, size: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` square crops at random scales (0.45-1.0 of the short side), resized to size."""
    height, width = image.shape[:2]
    patches = []
    for _ in range(count):
        side = int(min(height, width) * rng.uniform(0.45, 1.0))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = image[top:top + side, left:left + side]
        patches.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return patches


def build(out: Path, seed: int = 0) -> dict[str, int]:
    """Write trainA/, trainB/ and test/A + test/B (true targets); returns counts per folder."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for name, split in SPLITS.items():
        photo = SOURCES[name]()
        if split == "test":
            _write(out / "test" / "A" / f"{name}.png", photo)
            _write(out / "test" / "B" / f"{name}.png", stylize(photo))
            counts["test"] = counts.get("test", 0) + 1
            continue
        for i, patch in enumerate(random_patches(photo, PATCHES_PER_PHOTO, PATCH_SIZE, rng)):
            image = stylize(patch) if split == "trainB" else patch
            _write(out / split / f"{name}_{i:03d}.png", image)
        counts[split] = counts.get(split, 0) + PATCHES_PER_PHOTO
    return counts


def write_samples(out: Path, width: int = 320, frames: int = 48, fps: float = 12.0) -> list[Path]:
    """The files shipped with the demo model: the held-out photos as JPEGs and a short video.

    The video pans and zooms slowly across a held-out photo (``chelsea``), so it is made of
    pixels the model never trained on. Returns the written paths.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, split in SPLITS.items():
        if split != "test":
            continue
        photo = SOURCES[name]()
        height = round(photo.shape[0] * width / photo.shape[1] / 4) * 4
        small = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        path = out / f"{name}.jpg"
        cv2.imwrite(str(path), small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        written.append(path)
    photo = SOURCES["chelsea"]()[..., ::-1]
    size = (256, 192)
    video = out / "chelsea_pan.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    height, width_full = photo.shape[:2]
    for i in range(frames):
        t = i / max(frames - 1, 1)
        zoom = 1.0 - 0.25 * t                       # window shrinks to 75 %
        win_w, win_h = int(width_full * zoom), int(width_full * zoom * size[1] / size[0])
        win_h = min(win_h, height)
        left = int((width_full - win_w) * t)
        top = int((height - win_h) * 0.5)
        frame = cv2.resize(photo[top:top + win_h, left:left + win_w], size,
                           interpolation=cv2.INTER_AREA)
        writer.write(np.ascontiguousarray(frame))
    writer.release()
    written.append(video)
    return written


def _write(path: Path, image_rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image_rgb[..., ::-1])):
        raise OSError(f"cannot write {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to create (trainA/, trainB/, test/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=Path,
                        help="also write the shipped sample photos and video to this folder")
    args = parser.parse_args()
    counts = build(args.out, args.seed)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()), "->", args.out)
    if args.samples:
        for path in write_samples(args.samples):
            print("sample:", path)


if __name__ == "__main__":
    main()
