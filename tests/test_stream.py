"""The streaming API, PIL / path inputs, batch splitting and --batch-size auto (issue 12)."""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import runtime.translator as translator_module
from cyclegan_export import export_onnx
from runtime import Translator
from runtime.cli import main as run_cli
from runtime.media.outputs import plan_outputs
from runtime.media.pipeline import image_io_threads, translate_files
from runtime.media.sources import InputError, expand_inputs
from runtime.media.stream import StreamError, StreamWarning, pipelined
from runtime.media.video import AtomicVideoWriter
from runtime.synthetic import natural_images


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, generator: torch.nn.Module) -> Path:
    folder = tmp_path_factory.mktemp("stream_model")
    weights = folder / "g.pth"
    torch.save(generator.state_dict(), weights)
    path = folder / "float.onnx"
    export_onnx(weights, path, opencv_check=False)
    return path


@pytest.fixture(scope="module")
def translator(model: Path) -> Translator:
    return Translator(model, providers="cpu")


def frames(count: int, height: int = 32, width: int = 32) -> list[np.ndarray]:
    return [np.ascontiguousarray(natural_images(1, height, width, seed=i)[0])
            for i in range(count)]


def decode_threads() -> list[threading.Thread]:
    """The stream's own threads still alive: its decoder and its model workers."""
    return [t for t in threading.enumerate()
            if t.name.startswith(("stream-decode", "stream-model"))]


# ---- streaming -------------------------------------------------------------------------------

@pytest.mark.parametrize(("batch_size", "in_flight"), [(1, None), (3, None), (1, 2), (2, 3)])
def test_stream_yields_every_frame_in_order(translator: Translator, batch_size: int,
                                            in_flight: int | None) -> None:
    given = frames(7)
    got = list(translator.stream(iter(given), batch_size=batch_size, in_flight=in_flight))
    assert len(got) == 7
    assert not decode_threads()
    for image, out in zip(given, got, strict=True):
        assert np.abs(out.astype(int) - translator(image).astype(int)).max() <= 1


def test_stream_takes_an_array_of_frames_but_not_one_image(translator: Translator) -> None:
    given = np.stack(frames(3))
    got = list(translator.stream(given))
    assert len(got) == 3
    for image, out in zip(given, got, strict=True):
        assert np.array_equal(out, translator(image))
    with pytest.raises(StreamError, match=r"shape \(32, 32, 3\) is not a sequence of frames"):
        next(translator.stream(given[0]))


@pytest.mark.parametrize("options", [{"batch_size": 0}, {"batch_size": -1},
                                     {"batch_size": "auto"}, {"in_flight": 0},
                                     {"queue_size": 0}])
def test_stream_refuses_bad_sizes_at_once(translator: Translator, options: dict) -> None:
    with pytest.raises(ValueError, match="must be a whole number >= 1"):
        translator.stream(frames(1), **options)  # before any frame is asked for


def test_stream_reads_a_video_path(translator: Translator, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    with AtomicVideoWriter(clip, 10.0, (32, 24)) as writer:
        for image in frames(5, 24, 32):
            writer.write(image)
    got = list(translator.stream(clip, batch_size=2))
    assert len(got) == 5 and all(out.shape == (24, 32, 3) for out in got)
    assert not decode_threads()


def test_stream_errors_name_the_source(translator: Translator, tmp_path: Path) -> None:
    def broken() -> Iterator[np.ndarray]:
        yield from frames(2)
        raise OSError("camera unplugged")

    seen = []
    with pytest.raises(StreamError, match=r"cannot read after frame 1 \(OSError: camera "
                                          "unplugged") as info:
        for out in translator.stream(broken()):
            seen.append(out)
    assert len(seen) == 2 and str(info.value.path) == "frames"
    with pytest.raises(StreamError, match="no such file") as missing:
        next(translator.stream(tmp_path / "missing.mp4"))
    assert "missing.mp4" in str(missing.value.path)
    with pytest.raises(StreamError, match="frame 1: translation failed"):
        list(translator.stream([frames(1)[0], np.zeros((8, 8, 3), np.float32)]))  # not uint8
    with pytest.raises(StreamError, match="frames 2-3: translation failed"):
        list(translator.stream([*frames(3), np.zeros((8, 8, 3), np.float32)], batch_size=2))
    assert not decode_threads()


def test_stream_keeps_rgb_frames_rgb(translator: Translator, tmp_path: Path) -> None:
    bgr = frames(3)
    rgb = [np.ascontiguousarray(image[..., ::-1]) for image in bgr]
    got = list(translator.stream(rgb, color_order="RGB"))
    for image, out in zip(rgb, got, strict=True):
        assert np.array_equal(out, translator(image, color_order="RGB"))
    clip = tmp_path / "clip.mkv"  # a decoded source comes in the order asked for
    with AtomicVideoWriter(clip, 10.0, (32, 32)) as writer:
        for image in bgr:
            writer.write(image)
    as_bgr = list(translator.stream(clip))
    as_rgb = list(translator.stream(clip, color_order="RGB"))
    assert all(np.array_equal(a[..., ::-1], b) for a, b in zip(as_bgr, as_rgb, strict=True))
    from runtime.bench.e2e import pan_clip

    pan = pan_clip(6, 48, 64, seed=5)  # a pan, so the stabiliser blends (no scene cut)
    steady_bgr = list(translator.stream(pan, temporal=True))
    steady_rgb = list(translator.stream(np.ascontiguousarray(pan[..., ::-1]), temporal=True,
                                        color_order="RGB"))
    assert all(np.array_equal(a[..., ::-1], b)  # the stabiliser reads the gray of each order
               for a, b in zip(steady_bgr, steady_rgb, strict=True))
    with pytest.raises(ValueError, match="color_order must be"):
        translator.stream(rgb, color_order="rgb")
    with pytest.raises(TypeError, match="temporal must be True or False"):
        translator.stream(rgb, temporal="no")


def test_a_source_that_refills_one_buffer_gets_each_frame_translated(
        translator: Translator) -> None:
    buffer = np.zeros((32, 32, 3), np.uint8)
    levels = list(range(0, 250, 25))

    def camera() -> Iterator[np.ndarray]:  # as cap.read(image=buffer) and many camera SDKs do
        for level in levels:
            buffer[:] = level
            yield buffer

    got = list(translator.stream(camera(), queue_size=8))
    for level, out in zip(levels, got, strict=True):
        assert np.array_equal(out, translator(np.full((32, 32, 3), level, np.uint8)))


def test_the_sources_close_is_called_once(translator: Translator) -> None:
    class Camera:
        def __init__(self) -> None:
            self.left, self.closes = 3, 0

        def __iter__(self) -> Camera:
            return self

        def __next__(self) -> np.ndarray:
            if not self.left:
                raise StopIteration
            self.left -= 1
            return frames(1)[0]

        def close(self) -> None:
            self.closes += 1
            if self.closes > 1:
                raise RuntimeError("released twice")

    camera = Camera()
    assert len(list(translator.stream(camera))) == 3 and camera.closes == 1
    early = Camera()
    outputs = translator.stream(early)
    next(outputs)
    outputs.close()
    assert early.closes == 1 and not decode_threads()


def test_an_interrupt_from_the_source_is_not_a_stream_error(translator: Translator) -> None:
    def interrupted(error: BaseException) -> Iterator[np.ndarray]:
        yield frames(1)[0]
        raise error

    with pytest.raises(KeyboardInterrupt):
        list(translator.stream(interrupted(KeyboardInterrupt())))
    with pytest.raises(SystemExit):
        list(translator.stream(interrupted(SystemExit(3))))
    assert not decode_threads()


def test_a_stream_closed_on_its_own_decode_thread_does_not_wait_for_itself(
        translator: Translator) -> None:
    # The garbage collector can close a stream caught in a reference cycle on any thread,
    # its decode thread included; that thread must not try to join itself.
    held: dict[str, Any] = {}
    got_first, closed = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def source() -> Iterator[np.ndarray]:
        yield frames(1)[0]
        got_first.wait(10)
        try:
            held["outputs"].close()  # on the decode thread, as a collection there would
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)
        closed.set()
        yield frames(1)[0]

    held["outputs"] = translator.stream(source())
    next(held["outputs"])
    got_first.set()
    assert closed.wait(10)
    assert errors == []
    for thread in decode_threads():
        thread.join(5)
    assert not decode_threads()


def test_stream_takes_any_path_like(translator: Translator, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    with AtomicVideoWriter(clip, 10.0, (32, 24)) as writer:
        for image in frames(2, 24, 32):
            writer.write(image)

    class Where:
        def __fspath__(self) -> str:
            return str(clip)

    assert len(list(translator.stream(Where()))) == 2



def test_a_video_that_gives_nothing_or_too_little_is_said(translator: Translator,
                                                          tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    with AtomicVideoWriter(clip, 10.0, (32, 24)) as writer:  # moov first (faststart)
        for image in frames(30, 24, 32):
            writer.write(image)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"  # the index announces 30 frames; the data holds some of them
    cut.write_bytes(data[:len(data) // 2])
    with pytest.warns(StreamWarning) as caught:
        got = list(translator.stream(cut))
    assert any(re.search(r"cut\.mp4: read \d+ of the 30 frames", str(w.message))
               for w in caught), [str(w.message) for w in caught]
    assert 0 < len(got) < 30
    empty = tmp_path / "empty.mp4"  # the index and no picture at all
    empty.write_bytes(data[:data.find(b"mdat") + 8])
    with pytest.raises(StreamError, match="no frame could be decoded"):
        list(translator.stream(empty))
    with pytest.raises(StreamError, match="is a folder"):
        next(translator.stream(tmp_path))
    assert not decode_threads()


@pytest.mark.parametrize(("items", "message"), [
    (["photo"], "temporal=True takes numpy frames"),
    (np.zeros((2, 16, 16, 3), np.uint16), r"takes \(H, W, 3\) uint8 frames, not uint16"),
    (np.zeros((2, 16, 16, 1), np.uint8), r"not uint8 of shape \(16, 16, 1\)")])
def test_temporal_names_what_it_cannot_steady(translator: Translator, tmp_path: Path,
                                              items: object, message: str) -> None:
    if isinstance(items, list):
        path = tmp_path / "photo.png"
        cv2.imwrite(str(path), frames(1)[0])
        items = [str(path)]
    with pytest.raises(StreamError, match=message):
        list(translator.stream(items, temporal=True))
    assert not decode_threads()


class SlowTranslator:
    """Stands for a GPU translator: each batch takes 50 ms and says how many ran at once."""

    in_flight = 2

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def translate_batch(self, images: list[np.ndarray], *,
                        color_order: str = "BGR") -> list[np.ndarray]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return [255 - image for image in images]


@pytest.mark.parametrize(("in_flight", "expected"), [(None, 2), (1, 1), (3, 3)])
def test_batches_in_flight_overlap_and_keep_their_order(in_flight: int | None,
                                                        expected: int) -> None:
    slow = SlowTranslator()
    given = frames(16)  # 8 batches: room for the most to overlap on a busy machine too
    got = [out for _, out in pipelined(slow, given, lambda image: image,  # type: ignore[arg-type]
                                       batch_size=2, in_flight=in_flight)]
    assert slow.most == expected
    assert all(np.array_equal(out, 255 - image) for out, image in zip(got, given, strict=True))
    assert not decode_threads()


class AcceleratorStandIn:
    """Wraps a CPU backend as a GPU would look to the pipeline (not on the CPU: two batches in
    flight): each call takes 50 ms more, records how many overlap, and fails on a 40 px input."""

    on_cpu = False

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.providers = ["AcceleratorStandIn"]
        self.running = self.most = 0
        self.lock = threading.Lock()

    def run(self, feed: np.ndarray) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)
            if 40 in feed.shape:
                raise RuntimeError("the accelerator refused this size")
            return self.inner.run(feed)  # type: ignore[attr-defined]
        finally:
            with self.lock:
                self.running -= 1


def test_folder_keeps_two_batches_in_flight_off_the_cpu(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    given = {f"{i}.png": image for i, image in enumerate(frames(6, 32, 48))}
    given["odd.png"] = frames(1, 40, 48)[0]  # a batch of its own, which the model refuses
    for name, image in given.items():
        cv2.imwrite(str(folder / name), image)
    plain = Translator(model, providers="cpu")
    stand_in = Translator(model, providers="cpu")
    accelerator = AcceleratorStandIn(stand_in.backend)
    stand_in.backend = accelerator  # type: ignore[assignment]
    assert stand_in.in_flight == 2
    assert image_io_threads(True) == 2 and 2 <= image_io_threads(False) <= 8
    plan = plan_outputs(expand_inputs([str(folder)]).files, tmp_path / "out")
    summary = translate_files(stand_in, plan, batch_size=2)
    assert accelerator.most == 2
    assert [err.path.name for err in summary.failed] == ["odd.png"]
    assert "refused this size" in summary.failed[0].reason
    assert len(summary.translated) == 6
    for name, image in given.items():
        if name != "odd.png":
            np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / name)),
                                          plain(image))


def test_a_source_waiting_for_each_result_is_served_with_batches_in_flight() -> None:
    """A source whose next frame depends on the last result (a feedback loop, or a camera read
    only when the display is free) must get each result before it gives another frame."""
    slow = SlowTranslator()
    results: list[np.ndarray] = []

    def feedback() -> Iterator[np.ndarray]:
        frame = frames(1)[0]
        for _ in range(3):
            yield frame
            deadline = time.monotonic() + 10
            while len(results) < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert results, "no result while the source waited for it"
            frame = results.pop()

    for _, out in pipelined(slow, feedback(), lambda image: image,  # type: ignore[arg-type]
                            in_flight=2):
        results.append(out)
    assert not decode_threads()


@pytest.mark.parametrize("in_flight", [1, 2])
def test_early_exit_closes_the_source_and_stops_the_thread(translator: Translator,
                                                           in_flight: int) -> None:
    state: dict[str, object] = {"read": 0, "closed": False}

    def endless() -> Iterator[np.ndarray]:
        image = frames(1)[0]
        try:
            while True:
                state["read"] += 1  # type: ignore[operator]
                yield image
        finally:
            state["closed"] = True
            state["closed_in"] = threading.current_thread().name

    stream = translator.stream(endless(), queue_size=2, in_flight=in_flight)
    for count, _ in enumerate(stream, 1):
        if count == 3:
            break
    stream.close()
    assert state["closed"] is True
    # by the thread that was reading it, not later by the garbage collector on another
    assert str(state["closed_in"]).startswith("stream-decode")
    assert not decode_threads()
    # bounded read-ahead: the batches in flight, the queue and one in the reader's hand
    assert int(state["read"]) <= 3 + in_flight + 2 + 1  # type: ignore[call-overload]


def test_closing_does_not_wait_for_a_source_stuck_in_a_read(translator: Translator) -> None:
    """A stalled camera or network stream: close() returns after CLOSE_WAIT_S; the decode
    thread closes the source as soon as its read returns."""
    release, closed = threading.Event(), threading.Event()

    def stalls() -> Iterator[np.ndarray]:
        try:
            yield frames(1)[0]
            release.wait(20)  # stuck in the next read until the test lets it go
            yield frames(1)[0]
        finally:
            closed.set()

    stream = translator.stream(stalls(), queue_size=1)
    next(stream)
    started = time.perf_counter()
    stream.close()
    waited = time.perf_counter() - started
    assert waited < 10, f"close() waited {waited:.1f} s for a stuck source"
    assert not closed.is_set()  # still in its read: not closed under its feet
    release.set()
    assert closed.wait(10), "the source was never closed"
    deadline = time.perf_counter() + 10
    while decode_threads() and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not decode_threads()


@pytest.mark.parametrize("source", [-1, np.int64(-2), True, np.bool_(False)])
def test_negative_or_boolean_camera_is_refused(translator: Translator, source: object) -> None:
    # cv2.VideoCapture(-1) crashes some OpenCV builds outright (SIGSEGV)
    with pytest.raises(StreamError, match="camera index is 0 or more|not a video path"):
        next(translator.stream(source))


def test_a_missing_camera_and_a_silent_url_are_named(translator: Translator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import runtime.media.sources as sources

    with pytest.raises(StreamError, match="cannot open this camera") as missing:
        next(translator.stream(63))
    assert str(missing.value.path) == "63"
    monkeypatch.setattr(sources, "URL_OPEN_TIMEOUT_S", 1)
    with socket.socket() as server:  # accepts, and never says a word
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        url = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        started = time.perf_counter()
        with pytest.raises(StreamError, match=r"no answer within 1 s"):
            next(translator.stream(url))
        assert time.perf_counter() - started < 8  # not OpenCV's default 30 s


class _FakeCapture:
    """An OpenCV capture that opened and gives ``count`` frames."""

    def __init__(self, count: int) -> None:
        self.left, self.released = count, False

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.left -= 1
        return (True, frames(1)[0]) if self.left >= 0 else (False, None)

    def release(self) -> None:
        self.released = True


@pytest.mark.parametrize(("gives", "announces"), [(0, 0), (0, 40), (3, 40), (39, 40)])
def test_a_url_or_camera_that_gives_nothing_or_breaks_off_is_said(
        translator: Translator, monkeypatch: pytest.MonkeyPatch, gives: int,
        announces: int) -> None:
    import runtime.media.stream as stream_module
    from runtime.media.sources import VideoInfo

    capture = _FakeCapture(gives)
    monkeypatch.setattr(stream_module, "open_video",
                        lambda source: (capture, VideoInfo(32, 32, 25.0, announces)))
    url = "http://camera.local/live"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if gives == 0:
            with pytest.raises(StreamError, match=f"{url}: opened, but gave no frame"):
                list(translator.stream(url))
        else:
            assert len(list(translator.stream(url))) == gives
    short = [str(w.message) for w in caught if issubclass(w.category, StreamWarning)]
    assert short == ([f"{url}: ended after 3 of the 40 frames it announces (the connection "
                      "dropped?)"] if gives == 3 else [])  # 39 of 40: within a count's error
    assert capture.released


def test_temporal_stream_smooths_but_keeps_the_first_frame(translator: Translator) -> None:
    image = frames(1)[0]
    noisy = [np.clip(image.astype(int) + np.random.default_rng(i).integers(-6, 7, image.shape),
                     0, 255).astype(np.uint8) for i in range(4)]
    plain = list(translator.stream(noisy))
    steady = list(translator.stream(noisy, temporal=True))
    assert np.array_equal(plain[0], steady[0])
    assert len(steady) == 4 and any(not np.array_equal(a, b)
                                    for a, b in zip(plain[1:], steady[1:], strict=True))


# ---- PIL and path inputs ---------------------------------------------------------------------

def test_pil_in_pil_out(translator: Translator) -> None:
    image_module = pytest.importorskip("PIL.Image")
    rgb = frames(1)[0]
    out = translator(image_module.fromarray(rgb))
    assert isinstance(out, image_module.Image) and out.mode == "RGB"
    expected = translator(rgb, color_order="RGB")
    assert np.array_equal(np.asarray(out), expected)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    out_rgba = translator(image_module.fromarray(rgba))
    assert out_rgba.mode == "RGBA" and (np.asarray(out_rgba)[..., 3] == 77).all()
    palette = image_module.fromarray(rgb).quantize(8)
    palette.info["transparency"] = 0  # entry 0 transparent: the alpha comes along
    out_palette = translator(palette)
    alpha = np.asarray(palette.convert("RGBA"))[..., 3]
    assert out_palette.mode == "RGBA" and np.array_equal(np.asarray(out_palette)[..., 3], alpha)
    assert 0 < (alpha == 0).sum() < alpha.size


def test_pil_16_bit_gray_is_scaled_not_clipped(translator: Translator) -> None:
    image_module = pytest.importorskip("PIL.Image")
    gray8 = cv2.cvtColor(frames(1)[0], cv2.COLOR_BGR2GRAY)
    gray16 = gray8.astype(np.uint16) * 257  # the same picture in 16 bits
    opened = image_module.fromarray(gray16)
    if not opened.mode.startswith("I"):
        pytest.skip(f"this Pillow makes mode {opened.mode} from uint16")
    expected = translator(gray8, color_order="RGB")
    assert np.array_equal(np.asarray(translator(opened)), expected)
    as_float = image_module.fromarray(gray8.astype(np.float32) / 255.0)  # mode F, in [0, 1]
    assert np.array_equal(np.asarray(translator(as_float)), expected)


def test_pil_modes_of_another_range_warn(translator: Translator) -> None:
    image_module = pytest.importorskip("PIL.Image")
    gray8 = cv2.cvtColor(frames(1)[0], cv2.COLOR_BGR2GRAY)
    eight_bit_i = image_module.fromarray(gray8).convert("I")  # 0-255 values in mode I
    with pytest.warns(UserWarning, match=r"mode 'I' image is taken as 16-bit .*convert\('L'\)"):
        translator(eight_bit_i)
    eight_bit_f = image_module.fromarray(gray8).convert("F")  # 0-255 values in mode F
    with pytest.warns(UserWarning, match="mode 'F' image is taken as \\[0, 1\\], but its "
                      "values reach 2"):
        translator(eight_bit_f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in range: no warning
        translator(image_module.fromarray(gray8.astype(np.float32) / 255.0))
        translator(image_module.fromarray(gray8).convert("L"))


def test_premultiplied_pil_modes_keep_their_alpha(translator: Translator) -> None:
    image_module = pytest.importorskip("PIL.Image")
    rgb = frames(1)[0]
    rgba = image_module.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    for mode in ("RGBa", "La"):
        out = translator(rgba.convert(mode))
        assert out.mode == "RGBA" and (np.asarray(out)[..., 3] == 255).all(), mode


def test_other_objects_are_a_type_error(translator: Translator) -> None:
    for value in (None, object(), {"image": 1}):
        with pytest.raises(TypeError, match="expected an image \\(a numpy array, a PIL image "
                           "or a path\\), got"):
            translator(value)
    with pytest.raises(ValueError, match=r"empty image of shape \(0, 5\)$"):
        translator(np.zeros((0, 5), np.uint8))


def test_image_path_in_numpy_bgr_out(translator: Translator, tmp_path: Path) -> None:
    bgr = frames(1)[0]
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), bgr)
    expected = translator(bgr)
    assert np.array_equal(translator(str(path)), expected)
    assert np.array_equal(translator(path), expected)
    assert np.array_equal(translator(path.read_bytes()), expected)  # encoded, as rembg takes
    assert np.array_equal(translator(bytearray(path.read_bytes())), expected)
    with pytest.raises(InputError, match="image bytes: not an image"):
        translator(b"not an image at all")

    class Located:  # any os.PathLike
        def __fspath__(self) -> str:
            return str(path)

    assert np.array_equal(translator(Located()), expected)
    with pytest.raises(Exception, match="no such file|unreadable"):
        translator(tmp_path / "nope.png")


# ---- batches ----------------------------------------------------------------------------------

def test_translate_batch_splits_into_chunks_of_max_batch(model: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    translator = Translator(model, providers="cpu", max_batch=2)
    sizes: list[int] = []
    original = Translator._translate_same_size

    def spy(self: Translator, batch: np.ndarray, color_order: str) -> np.ndarray:
        sizes.append(len(batch))
        return original(self, batch, color_order)

    monkeypatch.setattr(Translator, "_translate_same_size", spy)
    given = frames(5)
    got = translator.translate_batch(given)
    assert sizes == [2, 2, 1]
    for image, out in zip(given, got, strict=True):
        assert np.abs(out.astype(int) - translator(image).astype(int)).max() <= 1


def test_translate_batch_takes_any_iterable_but_not_one_image(translator: Translator) -> None:
    given = frames(3)
    expected = translator.translate_batch(given)
    for same in (iter(given), (image for image in given), np.stack(given), tuple(given)):
        got = translator.translate_batch(same)
        assert isinstance(got, list) and len(got) == 3
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    for one in ("photo.png", Path("photo.png"), given[0]):
        with pytest.raises(TypeError, match="not one .*; translate\\(\\) takes one"):
            translator.translate_batch(one)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="an iterable of images, not int"):
        translator.translate_batch(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 2.5, "4", True])
def test_max_batch_max_side_and_threads_are_whole_numbers(model: Path, translator: Translator,
                                                  value: object) -> None:
    with pytest.raises(ValueError, match="max_batch must be a whole number >= 1, got"):
        Translator(model, providers="cpu", max_batch=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch must be a whole number"):
        translator.max_batch = value  # type: ignore[assignment]
    if value != 0:  # 0 is below the size multiple: refused with that reason
        with pytest.raises(ValueError, match="max_side must be a whole number"):
            Translator(model, providers="cpu", max_side=value)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_side must be a whole number"):
            translator.max_side = value  # type: ignore[assignment]
    with pytest.raises(ValueError, match="threads must be a whole number >= 1, got"):
        Translator(model, providers="cpu", threads=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_side 2 is smaller than the model's size multiple"):
        translator.max_side = 2
    assert translator.max_side is None
    translator.max_batch = np.int64(3)  # numpy's integers are whole numbers too
    assert translator.max_batch == 3
    translator.max_batch = None


def test_opencv_threads_stay_the_backends_own(model: Path) -> None:
    """OpenCV's thread count is process-wide: a Translator's ``threads`` must not change it for
    the app's own cv2 calls, even when backend="auto" merely tries OpenCV."""
    before = cv2.getNumThreads()
    try:
        translator = Translator(model, providers="cpu", backend="opencv", threads=1)
    except Exception as exc:  # noqa: BLE001 - this OpenCV cannot load the model
        pytest.skip(f"OpenCV DNN cannot run the model here: {exc}")
    translator(frames(1)[0])
    assert cv2.getNumThreads() == before
    Translator(model, providers="cpu", backend="auto", threads=1)
    assert cv2.getNumThreads() == before


def test_default_chunk_is_one_on_a_cpu_and_memory_caps_max_batch(
        model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Translator(model, providers="cpu").chunk_size(720, 1280) == 1
    capped = Translator(model, providers="cpu", max_batch=8)
    one = translator_module.frame_bytes(capped.metadata, 720, 1280)
    monkeypatch.setattr(translator_module, "available_bytes", lambda: int(one * 3 / 0.8) + 1)
    assert capped.chunk_size(720, 1280) == 3
    with pytest.raises(ValueError, match="max_batch"):
        Translator(model, providers="cpu", max_batch=0)


def test_pick_batch_size_measures_each_candidate(translator: Translator) -> None:
    chosen, lines = translator.pick_batch_size(24, 32, candidates=(1, 2), rounds=1)
    assert chosen in (1, 2) and len(lines) == 2 and "ms per frame" in lines[0]


def test_pick_batch_size_skips_a_size_the_engine_fails(model: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    class EngineFail(Exception):  # as onnxruntime's Fail / EPFail: not a RuntimeError
        pass

    translator = Translator(model, providers="cpu")
    run = translator._translate_same_size

    def out_of_memory_at_4(frames: np.ndarray, color_order: str) -> np.ndarray:
        if len(frames) == 4:
            raise EngineFail("CUDA failure 2: out of memory")
        return run(frames, color_order)

    monkeypatch.setattr(translator, "_translate_same_size", out_of_memory_at_4)
    chosen, lines = translator.pick_batch_size(24, 32, candidates=(1, 4), rounds=1)
    assert chosen == 1 and lines[1] == "batch 4: skipped (CUDA failure 2: out of memory)"


def test_cli_batch_size_auto_says_what_it_chose(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for index, image in enumerate(frames(3, 24, 32)):
        cv2.imwrite(str(folder / f"{index}.png"), image)
    result = CliRunner().invoke(run_cli, [str(model), str(folder), "-o", str(tmp_path / "out"),
                                          "--batch-size", "auto"])
    assert result.exit_code == 0, result.output
    assert "--batch-size auto: chose" in result.output and "at 32x24" in result.output
    quiet = CliRunner().invoke(run_cli, [str(model), str(folder), "-o", str(tmp_path / "out"),
                                         "--batch-size", "auto", "-q"])
    assert quiet.exit_code == 0 and "chose" not in quiet.output, quiet.output
    one = CliRunner().invoke(run_cli, [str(model), str(folder / "0.png"), "-o",
                                       str(tmp_path / "one.png"), "--batch-size", "auto"])
    assert one.exit_code == 0 and "auto: 1 (one image, nothing to batch)" in one.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    bad = CliRunner().invoke(run_cli, [str(model), str(folder), "-o", str(tmp_path / "o2"),
                                       "--batch-size", "many"])
    assert bad.exit_code == 2 and "--batch-size must be a number or auto" in bad.output


# ---- GPU only ---------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_batches_default_to_chunks_of_eight(model: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider")
    translator = Translator(model, providers="cuda")
    assert translator.chunk_size(720, 1280) == translator_module.DEFAULT_MAX_BATCH
    got = list(translator.stream(frames(9), batch_size=9))
    assert len(got) == 9
