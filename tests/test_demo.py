"""The demo model in the box: data set rules, bundled files, --demo and Translator.demo()."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from runtime import Translator
from runtime.cli import main as run_cli
from runtime.demo import DEMO_MODEL, DEMO_MODEL_REVERSE, demo_inputs, demo_model_path
from runtime.metadata import read_metadata
from runtime.synthetic import natural_images
from training.demo_data import SPLITS, stylize


def test_splits_never_share_a_source_photo() -> None:
    assert set(SPLITS.values()) == {"trainA", "trainB", "test"}
    assert len(SPLITS) == len(set(SPLITS))  # a dict: each photo has exactly one split


def test_stylize_is_deterministic_and_changes_the_picture() -> None:
    image = natural_images(1, 40, 48, seed=0)[0]
    first, second = stylize(image), stylize(image)
    assert np.array_equal(first, second) and first.shape == image.shape
    assert np.abs(first.astype(int) - image.astype(int)).mean() > 5
    # dusk: darker and bluer than the photo
    assert first.mean() < image.mean()
    assert (first[..., 2].astype(int) - first[..., 0]).mean() > (
        image[..., 2].astype(int) - image[..., 0]).mean()


def test_bundled_demo_models_are_small_and_self_describing() -> None:
    for path, direction in ((DEMO_MODEL, "AtoB"), (DEMO_MODEL_REVERSE, "BtoA")):
        assert path.stat().st_size <= 10 * 1024 * 1024
        meta = read_metadata(path)
        assert meta.direction == direction and meta.precision == "fp32"
    assert read_metadata(DEMO_MODEL).target_domain == "blue_hour"


def test_translator_demo_translates_a_photo() -> None:
    translator = Translator.demo(providers="cpu")
    photo = cv2.imread(str(next(p for p in demo_inputs() if p.suffix == ".jpg")))
    out = translator(photo)
    assert out.shape == photo.shape
    assert np.abs(out.astype(int) - photo.astype(int)).mean() > 2  # it does something


def test_cyclegan_run_demo_translates_the_bundled_samples(tmp_path: Path) -> None:
    result = CliRunner().invoke(run_cli, ["--demo", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.glob("[!.]*"))
    assert written == sorted(p.name for p in demo_inputs())
    video = cv2.VideoCapture(str(tmp_path / "chelsea_pan.mp4"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 48

    both = CliRunner().invoke(run_cli, ["--demo", str(demo_model_path()), "-o", str(tmp_path)])
    assert both.exit_code == 2 and "--demo runs the bundled demo model; give a MODEL or " \
        "--demo, not both" in both.output


def test_cyclegan_run_demo_live_from_the_sample_video(tmp_path: Path) -> None:
    video = next(p for p in demo_inputs() if p.suffix == ".mp4")
    result = CliRunner().invoke(run_cli, ["--demo", "--webcam", str(video), "--no-display",
                                          "--max-frames", "5"])
    assert result.exit_code == 0, result.output
    assert "5 frame(s)" in result.output


@pytest.mark.slow
def test_wheel_ships_the_demo_files(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, cwd=Path(__file__).parents[1])
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"runtime/demo/demo.onnx", "runtime/demo/demo_BtoA.onnx",
            "runtime/demo/samples/chelsea_pan.mp4"} <= names
