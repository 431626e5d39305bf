from __future__ import annotations

import copy
import gc
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cyclegan_export import export_onnx
from runtime import Translator
from runtime.backends import (
    OPENVINO_PRECISION_NEEDS,
    BackendError,
    ProviderFallbackWarning,
    openvino_precision_name,
    openvino_precisions,
    resolve_providers,
)
from runtime.cli import main as run_cli
from runtime.media.sinks import OutputWriteError
from runtime.media.sources import InputError, exif_orientation, read_image
from runtime.metadata import MetadataError
from runtime.metrics import psnr
from runtime.synthetic import natural_images
from runtime.transforms import (
    crop_to,
    from_model_output,
    merge_alpha,
    pad_to_multiple,
    split_alpha,
    to_model_input,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, generator: torch.nn.Module) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    weights = folder / "g.pth"
    torch.save(generator.state_dict(), weights)
    out = {"float": folder / "float.onnx", "uint8": folder / "uint8.onnx",
           "static": folder / "static.onnx", "batch2": folder / "batch2.onnx"}
    export_onnx(weights, out["float"], opencv_check=False)
    export_onnx(weights, out["uint8"], io_kind="uint8", verify=False)
    export_onnx(weights, out["static"], static_size=(32, 32), batch=1, verify=False)
    export_onnx(weights, out["batch2"], batch=2, verify=False)
    return out


def torch_translate(net: torch.nn.Module, image_bgr: np.ndarray) -> np.ndarray:
    """PyTorch reference: BGR uint8 (H, W, 3) with H, W multiples of 4 -> BGR uint8."""
    with torch.no_grad():
        out = net(torch.from_numpy(to_model_input(image_bgr, "BGR"))).numpy()
    return from_model_output(out, "BGR")[0]


# ---- pure pre/post-processing --------------------------------------------------------------

def test_model_input_range_layout_and_colour_order() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    x = to_model_input(image, "BGR")
    assert x.shape == (1, 3, 2, 3) and x.dtype == np.float32
    assert np.all(x[0, 2] == 1.0) and np.all(x[0, 0] == -1.0)  # RGB order inside
    assert np.array_equal(from_model_output(x, "BGR")[0], image)


@pytest.mark.parametrize("value", [-1.0, -0.5, 0.0, 0.999, 1.0, 1.7, -3.0])
def test_output_rounds_and_clips(value: float) -> None:
    out = from_model_output(np.full((1, 3, 1, 1), value, np.float32), "RGB")
    assert out[0, 0, 0, 0] == int(np.clip(np.rint((value + 1) * 127.5), 0, 255))



def test_output_conversion_is_exactly_the_graphs_add_mul_round_clip() -> None:
    # what the uint8-IO graph computes: float32 (y + 1) * 127.5, Round (half to even), Clip
    rng = np.random.default_rng(3)
    ties = (np.arange(255, dtype=np.float32) + 0.5) / 127.5 - 1  # y whose scaled value ends in .5
    values = np.concatenate([np.tanh(rng.normal(0, 1.5, 3 * 64 * 64 - 255)).astype(np.float32),
                             ties]).reshape(1, 3, 64, 64)
    scaled = (values + np.float32(1)) * np.float32(127.5)
    expected = np.clip(np.rint(scaled), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(from_model_output(values, "RGB"), expected)
    assert from_model_output(np.full((1, 3, 1, 1), np.nan, np.float32))[0, 0, 0, 0] == 0
    # out of [-1, 1] (an int8 model's dequantised output can be), saturated as a clip does
    extremes = np.array([-np.inf, -3e7, 1.01, -1.01, 1e6, 2.0**23], np.float32)
    got = from_model_output(np.tile(extremes, (1, 3, 1, 1)), "RGB")[0, 0, :, 0]
    assert got.tolist() == [0, 0, 255, 0, 255, 255]


@pytest.mark.parametrize("color_order", ["BGR", "RGB"])
def test_input_conversion_is_exactly_the_formula(color_order: str) -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    images[0, 0, :, 0] = np.arange(16) * 17  # 0 and 255 among them
    rgb = images if color_order == "RGB" else images[..., ::-1]
    expected = (rgb.astype(np.float32) / np.float32(127.5) - np.float32(1)).transpose(0, 3, 1, 2)
    strided = np.repeat(images, 2, axis=2)[:, :, ::2]  # the same pixels, not contiguous
    assert not strided.flags.c_contiguous
    got = to_model_input(strided, color_order)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert got.min() == -1.0 and got.max() == 1.0
    with pytest.raises(ValueError, match="expected uint8 images, got dtype uint16"):
        to_model_input(images.astype(np.uint16))


@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 9, 3), (13, 1, 3), (4, 4, 3), (2, 2, 3)])
def test_pad_and_crop_round_trip(shape: tuple[int, int, int]) -> None:
    batch = np.random.default_rng(0).integers(0, 255, (2, *shape), dtype=np.uint8)
    padded = pad_to_multiple(batch, 4)
    assert padded.shape[1] % 4 == 0 and padded.shape[2] % 4 == 0
    assert np.array_equal(crop_to(padded, *shape[:2]), batch)


def test_reflect_padding_mirrors_without_repeating_the_edge() -> None:
    row = np.arange(6, dtype=np.uint8).reshape(1, 1, 6, 1)
    assert pad_to_multiple(row, 4)[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4, 5, 4, 3]


@pytest.mark.parametrize(
    ("image", "alpha"),
    [
        (np.full((4, 5), 7, np.uint8), None),
        (np.full((4, 5, 1), 7, np.uint8), None),
        (np.full((4, 5, 4), 7, np.uint8), 7),
        (np.full((4, 5, 3), 7 * 257, np.uint16), None),
    ],
)
def test_split_alpha_normalises_layouts(image: np.ndarray, alpha: int | None) -> None:
    colour, plane = split_alpha(image)
    assert colour.shape == (4, 5, 3) and colour.dtype == np.uint8 and np.all(colour == 7)
    assert (plane is None) == (alpha is None)
    if plane is not None:
        assert merge_alpha(colour, plane).shape == (4, 5, 4)


@pytest.mark.parametrize("bad", [np.zeros((4, 5, 2), np.uint8), np.zeros((4, 5, 3), np.float32),
                                 np.zeros((0, 5, 3), np.uint8)])
def test_split_alpha_rejects_what_it_cannot_translate(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        split_alpha(bad)


# ---- Translator ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_translator_matches_pytorch_within_one_level(models: dict[str, Path],
                                                     generator: torch.nn.Module,
                                                     kind: str) -> None:
    image = natural_images(1, 48, 64, seed=1)[0][..., ::-1].copy()
    got = Translator(models[kind])(image)
    want = torch_translate(generator, image)
    assert got.shape == image.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.mark.parametrize("size", [(37, 53), (5, 3), (64, 1), (33, 32)])
def test_odd_sizes_come_back_at_the_same_size_padded_not_squashed(
        models: dict[str, Path], generator: torch.nn.Module, size: tuple[int, int]) -> None:
    height, width = size
    image = natural_images(1, height, width, seed=2)[0]
    got = Translator(models["float"]).translate(image, color_order="RGB")
    assert got.shape == (height, width, 3)
    if height >= 8 and width >= 8:  # the padded region must not leak into the kept one
        padded = pad_to_multiple(image[None, ..., ::-1], 4)[0]
        want = torch_translate(generator, np.ascontiguousarray(padded))[:height, :width, ::-1]
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_colour_order_rgb_and_bgr_agree(models: dict[str, Path]) -> None:
    translator = Translator(models["uint8"])
    bgr = natural_images(1, 32, 40, seed=3)[0]
    from_bgr = translator(bgr)
    from_rgb = translator.translate(np.ascontiguousarray(bgr[..., ::-1]), color_order="RGB")
    assert np.array_equal(from_bgr, from_rgb[..., ::-1])


def test_grayscale_rgba_and_16_bit_inputs(models: dict[str, Path]) -> None:
    translator = Translator(models["float"])
    base = natural_images(1, 24, 28, seed=4)[0]
    gray = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    assert translator(gray).shape == (24, 28, 3)
    rgba = np.dstack([base, np.arange(24 * 28, dtype=np.uint8).reshape(24, 28)])
    out = translator(rgba)
    assert out.shape == (24, 28, 4) and np.array_equal(out[..., 3], rgba[..., 3])
    sixteen = base.astype(np.uint16) * 257
    assert np.array_equal(translator(sixteen), translator(base))


def test_signed_integer_images_are_refused_not_guessed(tmp_path: Path) -> None:
    path = tmp_path / "counts.tif"
    assert cv2.imwrite(str(path), np.full((8, 8, 3), 100, np.int32))
    with pytest.raises(InputError, match=r"counts\.tif: int32 samples \(only 8 or 16-bit"):
        read_image(path)
    floats = tmp_path / "floats.tif"  # float samples are [0, 1]
    assert cv2.imwrite(str(floats), np.full((8, 8, 3), 0.5, np.float32))
    assert read_image(floats).dtype == np.uint8 and read_image(floats)[0, 0, 0] == 128  # rounded


def test_batch_groups_sizes_and_matches_single_images(models: dict[str, Path]) -> None:
    translator = Translator(models["float"])
    images = [natural_images(1, h, w, seed=i)[0] for i, (h, w) in
              enumerate([(32, 32), (20, 28), (32, 32), (20, 28), (32, 32)])]
    batched = translator.translate_batch(images)
    for image, out in zip(images, batched, strict=True):
        assert np.abs(out.astype(int) - translator(image).astype(int)).max() <= 1


def test_fixed_batch_and_static_models_adapt(models: dict[str, Path]) -> None:
    images = [natural_images(1, 24, 32, seed=i)[0] for i in range(3)]
    outs = Translator(models["batch2"]).translate_batch(images)  # 3 images, batch of 2
    assert [o.shape for o in outs] == [(24, 32, 3)] * 3
    static = Translator(models["static"])
    assert static(natural_images(1, 50, 70, seed=9)[0]).shape == (50, 70, 3)


def test_max_side_runs_smaller_and_scales_back(models: dict[str, Path]) -> None:
    translator = Translator(models["float"], max_side=32)
    image = natural_images(1, 60, 100, seed=5)[0]
    out = translator(image)
    assert out.shape == image.shape
    full = Translator(models["float"])(image)
    assert np.abs(out.astype(int) - full.astype(int)).mean() < 40  # same picture, less detail


def test_opencv_backend_agrees_with_onnxruntime(models: dict[str, Path]) -> None:
    image = natural_images(1, 32, 48, seed=6)[0]
    ort_out = Translator(models["float"])(image)
    cv_translator = Translator(models["float"], backend="opencv")
    assert cv_translator.providers[0].startswith("OpenCV DNN")
    assert np.abs(cv_translator(image).astype(int) - ort_out.astype(int)).max() <= 1


def test_one_translator_serves_several_threads(models: dict[str, Path]) -> None:
    translator = Translator(models["float"])
    images = [natural_images(1, 32, 32, seed=i)[0] for i in range(8)]
    expected = [translator(image) for image in images]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = translator(images[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(results[i], expected[i]) for i in range(8))


def test_close_releases_the_session_and_later_calls_say_so(models: dict[str, Path]) -> None:
    image = natural_images(1, 32, 32, seed=0)[0]
    with Translator(models["float"]) as translator:
        expected = translator(image)
        session = weakref.ref(translator.backend.session)
    assert translator.closed and "closed" in repr(translator)
    gc.collect()
    assert session() is None  # nothing else kept the onnxruntime session alive
    with pytest.raises(BackendError, match=r"float\.onnx: this Translator was closed"):
        translator(image)
    translator.close()  # a second close does nothing
    assert translator.providers == ["CPUExecutionProvider"]
    assert np.array_equal(Translator(models["float"])(image), expected)


def test_a_translator_pickles_as_its_path_and_options(models: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    image = natural_images(1, 48, 48, seed=3)[0]
    monkeypatch.chdir(models["float"].parent)  # a relative path, as an app may give
    translator = Translator(models["float"].name, providers="cpu", threads=1)
    translator.max_side = 32
    copy_ = pickle.loads(pickle.dumps(translator))  # as a worker process would get it
    assert copy_.backend is not translator.backend
    assert (copy_.max_side, copy_.model_path) == (32, models["float"])
    assert copy_._gpu == translator._gpu  # a GPU's TensorRT profile as constructed: no rebuild
    assert copy_.model_path.is_absolute()  # a worker may run in another working directory
    assert np.array_equal(copy_(image), translator(image))
    translator.close()
    with pytest.raises(TypeError, match="closed Translator cannot be pickled"):
        pickle.dumps(translator)


@pytest.mark.filterwarnings("ignore")  # the plain torch export's tracer notes
def test_model_without_metadata_is_refused(tmp_path: Path, generator: torch.nn.Module) -> None:
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(generator, (torch.zeros(1, 3, 32, 32),), str(plain), dynamo=False,
                      input_names=["input"], output_names=["output"])
    with pytest.raises(MetadataError, match="not a cyclegan-toolkit model"):
        Translator(plain)


# ---- providers -----------------------------------------------------------------------------

def test_auto_prefers_tensorrt_then_cuda_then_cpu() -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", everything, tensorrt_present=True) == everything
    assert resolve_providers("auto", everything[1:]) == everything[1:]


def test_auto_warns_when_it_falls_back_to_cpu() -> None:
    with pytest.warns(ProviderFallbackWarning, match="running on the CPU"):
        assert resolve_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_explicit_provider_that_is_missing_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="CUDAExecutionProvider is not available.*available: "
                                           "CPUExecutionProvider"):
        resolve_providers("cuda", ["CPUExecutionProvider"])
    assert resolve_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_translator_reports_what_runs(models: dict[str, Path]) -> None:
    assert Translator(models["float"], providers="cpu").providers == ["CPUExecutionProvider"]


def test_import_runtime_leaves_torch_unimported() -> None:
    code = ("import sys, runtime, runtime.cli, runtime.media.pipeline, runtime.media.live, "
            "runtime.bench.benchmark, "
            "runtime.bench.cli, runtime.bench.e2e; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'onnx' not in sys.modules, 'onnx imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- cyclegan-run on files ---------------------------------------------------------------------

def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def exif_block(orientation: int, byte_order: str) -> bytes:
    """A minimal EXIF block (TIFF header, one IFD entry: Orientation) in ``byte_order``."""
    head = (b"II*\0" if byte_order == "<" else b"MM\0*") + struct.pack(f"{byte_order}I", 8)
    entry = struct.pack(f"{byte_order}HHIH2x", 0x0112, 3, 1, orientation)
    return head + struct.pack(f"{byte_order}H", 1) + entry + struct.pack(f"{byte_order}I", 0)


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_photos_are_read_upright_as_their_exif_orientation_says(tmp_path: Path,
                                                               byte_order: str) -> None:
    image = natural_images(1, 30, 50, seed=8)[0]
    for orientation in range(1, 9):
        ok, data = cv2.imencodeWithMetadata(
            ".jpg", image, [cv2.IMAGE_METADATA_EXIF],
            [np.frombuffer(exif_block(orientation, byte_order), np.uint8)])
        path = tmp_path / f"orientation_{orientation}.jpg"
        data.tofile(str(path))
        upright = read_image(path)
        # OpenCV's colour decoding applies the orientation itself: the same pixels, turned
        assert np.array_equal(upright, cv2.imread(str(path), cv2.IMREAD_COLOR)), orientation
        assert upright.shape[:2] == ((30, 50) if orientation <= 4 else (50, 30))
    assert exif_orientation(b"Exif\0\0II*\0") == 1  # truncated: as stored


def test_a_sideways_phone_photo_is_written_upright(models: dict[str, Path],
                                                   tmp_path: Path) -> None:
    image = natural_images(1, 32, 48, seed=9)[0]
    ok, data = cv2.imencodeWithMetadata(".jpg", image, [cv2.IMAGE_METADATA_EXIF],
                                        [np.frombuffer(exif_block(6, "<"), np.uint8)])
    data.tofile(str(tmp_path / "phone.jpg"))
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(tmp_path / "phone.jpg"), "-o",
                                          str(tmp_path / "out.jpg"), "-q"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "out.jpg"), cv2.IMREAD_UNCHANGED).shape[:2] == (48, 32)


def test_folder_tree_with_broken_files(models: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "in"
    images = natural_images(3, 36, 44, seed=7)
    write_image(src / "a.png", images[0])
    write_image(src / "sub" / "b.jpg", images[1])
    write_image(src / "sub" / "deeper" / "c.bmp", images[2])
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("hello")
    good = (src / "a.png").read_bytes()
    (src / "sub" / "cut.png").write_bytes(good[: len(good) // 3])

    result = CliRunner().invoke(run_cli, [str(models["float"]), str(src), "-o",
                                          str(tmp_path / "out"), "--batch-size", "2"])

    assert result.exit_code == 1
    written = sorted(p.relative_to(tmp_path / "out").as_posix()
                     for p in (tmp_path / "out").rglob("[!.]*") if p.is_file())
    assert written == ["a.png", "sub/b.jpg", "sub/deeper/c.bmp"]
    assert "translated 3 of 5 input(s)" in result.output and "2 failed:" in result.output
    assert "empty.png: empty file" in result.output
    assert "skipped 1 non-media file(s)" in result.output  # notes.txt: not a failure
    assert "cut.png: corrupt or truncated image" in result.output
    assert cv2.imread(str(tmp_path / "out" / "sub" / "b.jpg")).shape == (36, 44, 3)


def test_single_image_side_by_side_and_skip_existing(models: dict[str, Path],
                                                     tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    write_image(src, natural_images(1, 20, 24, seed=8)[0])
    out = tmp_path / "result.png"
    first = CliRunner().invoke(run_cli, [str(models["uint8"]), str(src), "-o", str(out),
                                         "--side-by-side"])
    assert first.exit_code == 0, first.output
    assert cv2.imread(str(out)).shape == (20, 48, 3)
    stamp = out.stat().st_mtime_ns
    again = CliRunner().invoke(run_cli, [str(models["uint8"]), str(src), "-o", str(out),
                                         "--skip-existing"])
    assert again.exit_code == 0 and "1 skipped" in again.output
    assert out.stat().st_mtime_ns == stamp


def test_quiet_keeps_the_summary_and_warnings(models: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    write_image(src, natural_images(1, 20, 24, seed=8)[0])
    loud = CliRunner().invoke(run_cli, [str(models["float"]), str(src), "-o",
                                        str(tmp_path / "loud.png")])
    assert loud.exit_code == 0 and "model: Translator(" in loud.stderr, loud.output
    quiet = CliRunner().invoke(run_cli, [str(models["float"]), str(src), "-o",
                                         str(tmp_path / "quiet.png"), "-q", "--preset", "fast"])
    assert quiet.exit_code == 0, quiet.output
    assert "translated 1 of 1" in quiet.stdout
    # the start-up lines go; a CPU-only onnxruntime is not worth a warning when asked for quiet
    assert "model:" not in quiet.stderr and "no GPU execution provider" not in quiet.stderr
    assert quiet.stderr.strip() == "warning: --preset: no video output in this run, so it " \
                                   "changes nothing"


def test_an_output_name_that_is_no_media_file_is_said_to_be_a_folder(
        models: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "photo.png"
    write_image(src, natural_images(1, 20, 24, seed=8)[0])
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(src), "-o",
                                          str(tmp_path / "result.jpeg2")])
    assert result.exit_code == 0, result.output
    assert "result.jpeg2: .jpeg2 is no image or video extension" in result.stderr
    assert (tmp_path / "result.jpeg2" / "photo.png").is_file()


def test_glob_input(models: dict[str, Path], tmp_path: Path) -> None:
    for i, image in enumerate(natural_images(2, 16, 16, seed=9)):
        write_image(tmp_path / "shots" / f"{i}.png", image)
    write_image(tmp_path / "shots" / "skip.jpg", natural_images(1, 16, 16)[0])
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(tmp_path / "shots" / "*.png"),
                                          "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").glob("[!.]*")) == ["0.png", "1.png"]


def test_video_keeps_size_fps_and_frame_count(models: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"mp4v"), 15.0, (50, 38))
    for frame in natural_images(17, 38, 50, seed=10):
        writer.write(frame)
    writer.release()
    out = tmp_path / "out" / "clip_translated.mp4"
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(src), "-o", str(out),
                                          "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 17
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
        50, 38)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    # no temp files: only the output and the record of what cyclegan-run wrote
    assert sorted(p.name for p in out.parent.iterdir()) == [".cyclegan-run.jsonl",
                                                            "clip_translated.mp4"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.onnx", "x.png", "-o", "o"], "missing.onnx: no such file"),
        (["{model}", "x.png", "-o", "o", "--providers", "cuda"],
         "CUDAExecutionProvider is not available"),
        (["{model}", "x.png", "-o", "o", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(models: dict[str, Path], args: list[str],
                                            message: str) -> None:
    args = [a.replace("{model}", str(models["float"])) for a in args]
    result = CliRunner().invoke(run_cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_missing_input_is_counted_as_failure(models: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(tmp_path / "nope.png"),
                                          "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "nope.png: no such file or folder" in result.output
    # a single output file named for a missing input: the input is named, not -o
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(tmp_path / "nope.png"),
                                          "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: {tmp_path / 'nope.png'}: no such file or folder"


# ---- OpenVINO and backend="auto" ---------------------------------------------------------------

# Least agreement with onnxruntime fp32 (uint8 images), by the precision the backend REPORTS.
# fp32 is the same arithmetic in another order. bf16 / fp16: the tiny generator run wholly in
# that precision (PyTorch, a pessimistic stand-in for OpenVINO, which keeps some layers fp32)
# measured 46.7-48.0 dB / 58.0-58.3 dB on these images; the floors keep ~12 dB of margin and
# still reject a visibly wrong picture (30 dB of noise).
MAX_LEVELS_FP32 = 2
MIN_PSNR_DB = {"bf16": 35.0, "fp16": 45.0}


def assert_agrees(got: np.ndarray, want: np.ndarray, precision: str) -> None:
    """``got`` (uint8) is as close to the fp32 ``want`` as ``precision`` allows."""
    if precision == "fp32":
        worst = int(np.abs(got.astype(int) - want.astype(int)).max())
        assert worst <= MAX_LEVELS_FP32, f"fp32: {worst} levels off"
        return
    assert precision in MIN_PSNR_DB, f"no tolerance for precision {precision!r}"
    quality = psnr(want, got, 255.0)
    assert quality >= MIN_PSNR_DB[precision], f"{precision}: {quality:.1f} dB"


def skip_unless_openvino_offers(precision: str) -> None:
    pytest.importorskip("openvino")
    if precision != "auto" and precision not in openvino_precisions():
        pytest.skip(f"this CPU offers no {precision.upper()} in OpenVINO (needs "
                    f"{OPENVINO_PRECISION_NEEDS[precision]})")


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_translate_in(net: torch.nn.Module, image_bgr: np.ndarray, precision: str) -> np.ndarray:
    """:func:`torch_translate` with weights and activations in ``precision`` throughout."""
    dtype = TORCH_DTYPES[precision]
    low = copy.deepcopy(net).to(dtype)
    with torch.no_grad():
        out = low(torch.from_numpy(to_model_input(image_bgr, "BGR")).to(dtype)).float().numpy()
    return from_model_output(out, "BGR")[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_tolerance_follows_the_reported_precision(models: dict[str, Path],
                                                  generator: torch.nn.Module,
                                                  precision: str) -> None:
    """The table the OpenVINO and auto tests use, driven with each precision a backend can
    report, on any CPU: output computed in that precision passes its own rule, and the rules
    still fail what they must (bf16 output under the fp32 rule, a noisy picture under any)."""
    image = natural_images(1, 32, 48, seed=11)[0]
    want = Translator(models["float"], precision="fp32")(image)
    assert_agrees(torch_translate_in(generator, image, precision), want, precision)
    if precision == "fp32":  # reduced-precision output is not exact: the fp32 rule sees it
        with pytest.raises(AssertionError, match="levels off"):
            assert_agrees(torch_translate_in(generator, image, "bf16"), want, "fp32")
    noise = np.random.default_rng(0).normal(0, 8, want.shape)  # ~30 dB
    noisy = np.clip(np.rint(want + noise), 0, 255).astype(np.uint8)
    with pytest.raises(AssertionError):
        assert_agrees(noisy, want, precision)


@pytest.mark.parametrize(("reported", "precision"), [
    ("<Type: 'bfloat16'>", "bf16"), ("bf16", "bf16"), ("BF16", "bf16"), ("bfloat16", "bf16"),
    ("<Type: 'float32'>", "fp32"), ("f32", "fp32"), ("float32", "fp32"), ("FP32", "fp32"),
    ("<Type: 'float16'>", "fp16"), ("f16", "fp16"), ("float16", "fp16"), ("fp16", "fp16"),
])
def test_openvino_precision_names(reported: str, precision: str) -> None:
    assert openvino_precision_name(reported) == precision


@pytest.mark.parametrize("reported", ["<Type: 'int8'>", "undefined", "", "f64"])
def test_unknown_openvino_precision_is_not_guessed(reported: str) -> None:
    with pytest.raises(ValueError, match="unknown OpenVINO precision"):
        openvino_precision_name(reported)


def test_openvino_type_objects_are_named() -> None:
    ov = pytest.importorskip("openvino")
    assert [openvino_precision_name(t) for t in (ov.Type.f32, ov.Type.bf16, ov.Type.f16)] == \
        ["fp32", "bf16", "fp16"]


@pytest.mark.parametrize(("reported", "precision"), [("bf16", "bf16"), ("f16", "fp16"),
                                                     ("f32", "fp32")])
def test_openvino_reports_what_the_compiled_model_says(models: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       reported: str, precision: str) -> None:
    """What a bf16/fp16 CPU's compiled model answers, faked so the labelling runs anywhere
    (the old code called bfloat16 "fp16")."""
    ov = pytest.importorskip("openvino")
    from runtime import backends as backends_module

    as_type = {"bf16": ov.Type.bf16, "f16": ov.Type.f16, "f32": ov.Type.f32}[reported]
    monkeypatch.setattr(backends_module, "_read_inference_precision", lambda compiled: as_type)
    translator = Translator(models["float"], backend="openvino")
    assert translator.precision == precision
    assert translator.providers[0].endswith(f"CPU ({precision})")


def test_openvino_refuses_a_precision_it_did_not_compile(models: dict[str, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenVINO falls back to fp32 silently where the CPU lacks bf16: an explicit request
    must not. Faked (the compiled model says f32 whatever was asked) to run on any CPU."""
    pytest.importorskip("openvino")
    from runtime import backends as backends_module

    monkeypatch.setattr(backends_module, "_read_inference_precision", lambda compiled: "f32")
    with pytest.raises(BackendError, match=r"OpenVINO runs fp32, not the requested bf16, on "
                                           r"this CPU \(available: .*bf16 needs AVX-512 BF16"):
        Translator(models["float"], backend="openvino", precision="bf16")
    assert Translator(models["float"], backend="openvino", precision="fp32").precision == "fp32"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_openvino_precision_this_cpu_lacks_is_refused(models: dict[str, Path],
                                                     precision: str) -> None:
    pytest.importorskip("openvino")
    if precision in openvino_precisions():
        pytest.skip(f"this CPU offers {precision.upper()} in OpenVINO: nothing to refuse here "
                    "(the faked refusal runs everywhere)")
    with pytest.raises(BackendError, match=f"not the requested {precision}.*available: fp32"):
        Translator(models["float"], backend="openvino", precision=precision)


def test_openvino_backend_agrees_and_says_its_precision(models: dict[str, Path]) -> None:
    pytest.importorskip("openvino")
    image = natural_images(1, 32, 48, seed=11)[0]
    reference = Translator(models["float"])(image)
    translator = Translator(models["float"], backend="openvino", precision="fp32")
    assert translator.precision == "fp32"
    assert translator.providers[0].startswith("OpenVINO")
    assert translator.providers[0].endswith("CPU (fp32)")
    assert_agrees(translator(image), reference, "fp32")
    uint8 = Translator(models["uint8"], backend="openvino", precision="fp32")
    assert_agrees(uint8(image), reference, "fp32")


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16"])
def test_openvino_reduced_precision_meets_its_floor(models: dict[str, Path],
                                                   precision: str) -> None:
    """Where the CPU has it: each precision OpenVINO runs, held to the floor of the precision
    it reports ("auto": whatever it picks, fp32 on AVX2-only CPUs)."""
    skip_unless_openvino_offers(precision)
    image = natural_images(1, 32, 48, seed=11)[0]
    reference = Translator(models["float"], precision="fp32")(image)
    translator = Translator(models["float"], backend="openvino", precision=precision)
    assert precision == "auto" or translator.precision == precision
    assert translator.providers[0].endswith(f"CPU ({translator.precision})")
    assert_agrees(translator(image), reference, translator.precision)


def test_auto_backend_measures_candidates_and_names_its_choice(models: dict[str, Path]) -> None:
    translator = Translator(models["float"], backend="auto")
    assert translator.selection[0].startswith("onnxruntime CPU:")
    assert translator.selection[-1] == f"chosen: {translator.providers[0]}"
    assert any("PSNR" in line for line in translator.selection)
    image = natural_images(1, 40, 40, seed=12)[0]
    reference = Translator(models["float"], precision="fp32")(image)
    # OpenVINO's automatic precision may have won (bf16 on CPUs with bf16 units).
    assert_agrees(translator(image), reference, translator.precision)


def test_auto_backend_holds_candidates_to_fp32(models: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime import backends as backends_module

    asked: list[tuple[str, object]] = []
    for name, build in list(backends_module.BACKENDS.items()):
        def spy(*args: object, _name: str = name, _build: object = build,
                **kwargs: object) -> object:
            asked.append((_name, kwargs.get("precision")))
            return _build(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setitem(backends_module.BACKENDS, name, spy)
    translator = Translator(models["float"], backend="auto", precision="fp32")
    assert asked and all(precision == "fp32" for _, precision in asked)
    assert translator.precision == "fp32"
    assert all("(bf16)" not in line and "(fp16)" not in line for line in translator.selection)
    image = natural_images(1, 40, 40, seed=12)[0]
    assert_agrees(translator(image), Translator(models["float"])(image), "fp32")


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv", "auto"])
def test_onnxruntime_and_opencv_run_the_models_own_precision(models: dict[str, Path],
                                                             backend: str) -> None:
    fp32 = Translator(models["float"], backend=backend, precision="fp32")
    assert fp32.precision == "fp32"
    for precision in ("bf16", "fp16"):
        with pytest.raises(BackendError, match=r"runs the model's own precision \(export with "
                                               r"`cyclegan-export --precision fp16`, or use "
                                               r"`--backend openvino`\)"):
            Translator(models["float"], backend=backend, precision=precision)
    with pytest.raises(BackendError, match="unknown precision 'fp8'; choose from auto, fp32"):
        Translator(models["float"], backend=backend, precision="fp8")


def test_auto_rejects_a_backend_that_loses_quality(models: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime import backends as backends_module

    class Fast:
        providers = ["fast but wrong"]

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def run(self, batch: np.ndarray) -> np.ndarray:
            return np.zeros_like(batch)  # instant, and useless

    monkeypatch.setitem(backends_module.BACKENDS, "opencv", Fast)
    translator = Translator(models["float"], backend="auto")
    assert translator.providers != ["fast but wrong"]
    assert any(line.startswith("fast but wrong") and "rejected: quality" in line
               for line in translator.selection)


def test_missing_openvino_is_a_clear_error(models: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(BackendError, match="pip install 'cyclegan-toolkit\\[openvino\\]'"):
        Translator(models["float"], backend="openvino")


def test_two_inputs_that_map_to_one_output_are_not_overwritten(models: dict[str, Path],
                                                             tmp_path: Path) -> None:
    first, second = natural_images(2, 16, 16, seed=13)
    write_image(tmp_path / "a" / "imgs" / "x.png", first)
    write_image(tmp_path / "b" / "imgs" / "x.png", second)
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(tmp_path / "a" / "imgs"),
                                          str(tmp_path / "b" / "imgs"), "-o",
                                          str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "translated 1 of 2" in result.output and "already taken by" in result.output


def test_video_that_cannot_be_written_fails_with_a_reason(models: dict[str, Path],
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (32, 24))
    for frame in natural_images(5, 24, 32, seed=14):
        writer.write(frame)
    writer.release()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(src), "-o",
                                          str(blocker / "out.mp4")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output  # up front

    class Unwritable:  # a writer that cannot open its file (as root, chmod would not stop it)
        def __init__(self, path: Path, *args: object, **kwargs: object) -> None:
            raise OutputWriteError(f"{path}: cannot open a h264 writer (Permission denied)")

    monkeypatch.setattr("runtime.media.pipeline.AtomicVideoWriter", Unwritable)
    result = CliRunner().invoke(run_cli, [str(models["float"]), str(src), "-o",
                                          str(tmp_path / "out.mp4")])
    assert result.exit_code == 1 and "cannot write video" in result.output, result.output
    assert "Permission denied" in result.output and "Traceback" not in result.output


# Two OpenVINO backends freed in the order they were made, then a child's exit while a Python
# SIGCHLD handler is installed (torch's DataLoader installs one). With one OpenVINO Core per
# backend this left the thread's alternate signal stack unmapped and the process died with
# SIGSEGV at the signal (exit -11, nothing printed).
_OPENVINO_LIFETIMES = """
import gc, signal, subprocess, sys
from runtime.backends import OpenVINOBackend, openvino_precisions
from runtime.demo import demo_model_path
openvino_precisions()
first = OpenVINOBackend(demo_model_path())
second = OpenVINOBackend(demo_model_path())
del first; gc.collect()
del second; gc.collect()
signal.signal(signal.SIGCHLD, lambda *args: None)
subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
print("survived")
"""


def test_openvino_backends_freed_in_any_order_leave_signals_deliverable() -> None:
    pytest.importorskip("openvino")
    done = subprocess.run([sys.executable, "-c", _OPENVINO_LIFETIMES], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr)


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pytorch_file_given_as_the_model_says_to_export_it(tmp_path: Path,
                                                             zip_format: bool) -> None:
    from runtime.metadata import read_metadata

    weights = tmp_path / "latest_net_G.pth"
    torch.save({"w": torch.zeros(2)}, weights, _use_new_zipfile_serialization=zip_format)
    advice = (f"latest_net_G.pth: is a PyTorch file, not an ONNX model: export it first "
              f"\\(cyclegan-export {weights} latest_net_G.onnx\\)")
    with pytest.raises(BackendError, match=advice):
        Translator(weights)
    with pytest.raises(MetadataError, match=advice):
        read_metadata(weights)
    result = CliRunner().invoke(run_cli, [str(weights), str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is a PyTorch file, not an ONNX model" in result.output
    # the one line, with no provider warning before it (pytest would swallow the warning:
    # a process of its own)
    done = subprocess.run([sys.executable, "-m", "runtime", str(weights), str(tmp_path), "-o",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    not_torch = tmp_path / "notes.onnx"
    not_torch.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BackendError, match="notes.onnx: onnxruntime cannot load it"):
        Translator(not_torch)


def test_float_images_round_the_same_read_from_a_file_or_given_as_pil(tmp_path: Path) -> None:
    """[0, 1] floats to 8 bits: rounded (truncation took a level off half the values), NaN to
    0, the rest saturated, whether a float TIFF is read by path or opened with Pillow."""
    values = np.array([[0.5, 0.2, 1.0, np.nan, 2.0, -1.0, 0.999, 0.001]], np.float32)
    path = tmp_path / "float.tiff"
    assert cv2.imwrite(str(path), values)
    expected = np.array([[128, 51, 255, 0, 255, 0, 255, 0]], np.uint8)
    assert np.array_equal(read_image(path), expected)
    image_module = pytest.importorskip("PIL.Image")
    from runtime.translator import _pil_array

    with pytest.warns(UserWarning, match="values reach 2"):  # the 2.0 above
        given = _pil_array(image_module.fromarray(np.nan_to_num(values)), "BGR")
    assert np.array_equal(given, expected)
