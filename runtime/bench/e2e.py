"""End-to-end figures: what ``cyclegan-run`` delivers against what the model alone could.

- A folder of images and a video file through :func:`runtime.media.pipeline.translate_files` (what
  ``cyclegan-run`` runs: decode and encode threads around batched inference), as images per
  second over the model-only rate at the same size and batch. Target: >= 90 %.
- The live loop (:func:`.live.run_live`, no window) fed from a video file, as the loop's
  time outside the model and outside waiting for frames over the model's time
  (``LiveStats.overhead_fraction``), without and with ``--temporal``. Target: <= 10 %.
- ``--temporal`` (:mod:`runtime.media.temporal`) on a 640x480 pan across a photo-like scene with
  per-frame sensor noise (:func:`pan_clip`): the temporal warping error of the per-frame and the
  stabilised translations (target: >= 40 % less), the per-frame PSNR of the stabilised output
  against the per-frame one (target: >= 28 dB, so that a blur hiding everything cannot pass),
  and the stabiliser's time per frame over the model's own (target: <= 25 %).

The live source paces a video file at its own frame rate, as a camera would. The test video is
written at twice the model-only rate, so a frame is nearly always waiting when the loop asks
(the waits it does have are counted apart, not as overhead), and long enough to outlast the run.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from runtime.bench.engines import short_provider, time_calls
from runtime.bench.report import BenchError, CeilingResult, EndToEndResult
from runtime.media.live import run_live
from runtime.media.outputs import plan_outputs
from runtime.media.pipeline import translate_files
from runtime.media.sinks import write_image_atomic
from runtime.media.sources import expand_inputs
from runtime.media.temporal import TemporalStabilizer, warping_errors
from runtime.media.video import AtomicVideoWriter, VideoCodecError, VideoReader, choose_codec
from runtime.metrics import psnr
from runtime.reasons import not_a_file
from runtime.synthetic import natural_images
from runtime.transforms import to_model_input
from runtime.translator import Translator

MAX_SOURCE_FPS = 1000  # the live test video's frame rate is capped here (container limits)


def _write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """``(N, H, W, 3)`` uint8 BGR frames -> a video file at ``fps``."""
    with AtomicVideoWriter(path, fps, (frames.shape[2], frames.shape[1])) as writer:
        for frame in frames:
            writer.write(frame)
    return path


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A seeded photo-like scene ``(H, W, 3)`` uint8 BGR: a "dead leaves" image (overlapping
    discs of muted colours with power-law sizes, a classic model of natural images' edges and
    scale statistics) under smooth shading and fine texture."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 128, np.uint8)
    side = max(height, width)
    radii = np.minimum(side / 100 * (1 - rng.random(300)) ** (-1 / 1.5), side / 6)
    for radius in np.sort(radii)[::-1]:  # large first, so the small ones stay visible
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = np.clip(rng.uniform(30, 220) + rng.normal(0, 25, 3), 0, 255)
        cv2.circle(image, centre, int(radius), tuple(int(c) for c in colour), -1,
                   lineType=cv2.LINE_AA)
    shade = cv2.resize(rng.normal(0, 1, (side // 64 + 2, side // 64 + 2)).astype(np.float32),
                       (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 1, (max(1, height // 4), max(1, width // 4)))
                      .astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    out = image.astype(np.float32) * (1 + 0.15 * shade[..., None]) + 8 * fine[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def pan_clip(frames: int, height: int, width: int, seed: int = 0, noise: float = 6.0,
             step: tuple[int, int] = (3, 1)) -> np.ndarray:
    """A camera panning across :func:`photo_like`: ``(N, H, W, 3)`` uint8 BGR.

    The window moves ``step`` = (dx, dy) whole pixels per frame (exact crops: no resampling
    that would flicker by itself); each frame gets its own Gaussian noise of ``noise`` gray
    levels, as a camera sensor's.
    """
    dx, dy = step
    scene = photo_like(height + abs(dy) * frames + 8, width + abs(dx) * frames + 8, seed)
    x0 = 4 if dx >= 0 else 4 + abs(dx) * frames
    y0 = 4 if dy >= 0 else 4 + abs(dy) * frames
    rng = np.random.default_rng(seed + 1)
    clip = np.empty((frames, height, width, 3), np.uint8)
    for index in range(frames):
        x, y = x0 + dx * index, y0 + dy * index
        crop = scene[y:y + height, x:x + width].astype(np.float32)
        clip[index] = np.clip(crop + rng.normal(0, noise, crop.shape), 0, 255)
    return clip


@dataclass
class TemporalFigures:
    """What :func:`measure_temporal` found (see :class:`EndToEndResult` for the meanings)."""

    frames: int
    warp_error: float
    warp_error_temporal: float
    psnr_mean_db: float
    psnr_min_db: float
    temporal_ms: float
    model_ms: float


def measure_temporal(translator: Translator, clip: np.ndarray) -> TemporalFigures:
    """Translate ``clip`` (N, H, W, 3) BGR frame by frame, steady it with a
    :class:`TemporalStabilizer`, and compare: warping errors, PSNR of the stabilised frames
    against the per-frame ones, mean times per frame of the model and of the stabiliser (the
    first frame, which it passes through untouched, left out)."""
    if len(clip) < 3:
        raise BenchError("the temporal measurement needs at least 3 frames")
    outputs: list[np.ndarray] = []
    model_seconds = 0.0
    for frame in clip:
        started = time.perf_counter()
        outputs.append(translator.translate(frame))
        model_seconds += time.perf_counter() - started
    stabilizer = TemporalStabilizer()
    steady = [stabilizer(clip[0], outputs[0])]
    temporal_seconds = 0.0
    for frame, out in zip(clip[1:], outputs[1:], strict=True):
        started = time.perf_counter()
        steady.append(stabilizer(frame, out))
        temporal_seconds += time.perf_counter() - started
    plain, stable = warping_errors(list(clip), [outputs, steady])
    psnrs = [psnr(a, b, 255.0) for a, b in zip(outputs[1:], steady[1:], strict=True)]
    finite = [value for value in psnrs if math.isfinite(value)] or [math.inf]
    return TemporalFigures(len(clip), plain, stable, float(np.mean(finite)), min(psnrs),
                           temporal_seconds / (len(clip) - 1) * 1000.0,
                           model_seconds / len(clip) * 1000.0)


def model_only_rate(translator: Translator, size: tuple[int, int], batch: int, warmup: int = 3,
                    iterations: int = 20, seed: int = 0) -> float:
    """Images per second of ``translator``'s engine call alone on a prepared ``batch`` of
    ``size`` (H, W) natural images: the ceiling the pipeline is measured against."""
    images_bgr = natural_images(batch, *size, seed=seed)[..., ::-1]
    meta = translator.metadata
    if meta.io == "uint8":
        feed = np.ascontiguousarray(images_bgr if meta.color_order == "BGR"
                                    else images_bgr[..., ::-1])
    else:
        feed = to_model_input(images_bgr, "BGR")
    times = time_calls(lambda: translator.backend.run(feed), warmup, iterations, None)
    return batch / float(np.mean(times))


def run_end_to_end(model: str | Path, *, size: int | tuple[int, int] = 256, batch: int = 1,
                   images: int = 32, video_frames: int = 48, live_frames: int = 40,
                   backend: str = "onnxruntime", providers: str = "cpu",
                   threads: int | None = None, warmup: int = 3, iterations: int = 20,
                   image_suffix: str = ".jpg", workdir: str | Path | None = None,
                   seed: int = 0, temporal_size: tuple[int, int] = (480, 640),
                   temporal_frames: int = 16,
                   progress: Callable[[str], None] | None = None) -> EndToEndResult:
    """Measure the folder, video and live paths of ``model`` at ``size`` and ``batch``.

    Args:
        model: an exported .onnx.
        size: frame size, ``256`` or ``(H, W)``; frames are natural-looking synthetic images.
        batch: the pipeline's batch size (``cyclegan-run --batch-size``); the live loop always
            translates one frame at a time, as it does for a camera.
        images, video_frames, live_frames: how many images in the folder, frames in the
            video, frames through the live loop.
        backend, providers, threads: as for :class:`runtime.Translator`.
        warmup, iterations: of the model-only measurement.
        image_suffix: format of the folder's images (".jpg" as most photos are).
        workdir: where the inputs and outputs go (a temporary folder, removed, when None).
        temporal_size, temporal_frames: (H, W) and length of the ``--temporal`` pan clip
            (0 frames: not measured).
        progress: called with a one-line description as each phase starts.

    Returns:
        :class:`EndToEndResult` with rates in images (frames) per second.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if min(images, video_frames, live_frames, batch) < 1:
        raise BenchError("images, video_frames, live_frames and batch must be >= 1")
    if temporal_frames and temporal_frames < 3:
        raise BenchError("temporal_frames must be 0 (skip) or >= 3")
    temporal = (temporal_size, temporal_frames)
    say = progress or (lambda line: None)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="cyclegan-bench-") as tmp:
            return _run(Path(model), (height, width), batch, images, video_frames, live_frames,
                        backend, providers, threads, warmup, iterations, image_suffix,
                        Path(tmp), seed, temporal, say)
    return _run(Path(model), (height, width), batch, images, video_frames, live_frames, backend,
                providers, threads, warmup, iterations, image_suffix, Path(workdir), seed,
                temporal, say)


def _run(model: Path, size: tuple[int, int], batch: int, images: int, video_frames: int,
         live_frames: int, backend: str, providers: str, threads: int | None, warmup: int,
         iterations: int, image_suffix: str, workdir: Path, seed: int,
         temporal: tuple[tuple[int, int], int], say: Callable[[str], None]) -> EndToEndResult:
    if not model.is_file():
        raise BenchError(not_a_file(model))
    translator = Translator(model, providers=providers, backend=backend, threads=threads)
    height, width = size
    say(f"end to end [1/5]: model only, {width}x{height}, batch {batch}")
    # Model-only rounds alternate with the end-to-end runs (before, between, after) and the
    # median is kept, so a machine that gets busier or quieter mid-run skews both alike.
    model_rounds = [model_only_rate(translator, size, batch, warmup, iterations, seed)]
    model_ips = model_rounds[0]
    frame_ips = model_ips if batch == 1 else model_only_rate(translator, size, 1, warmup,
                                                             iterations, seed)

    say(f"end to end [2/5]: a folder of {images} images")
    folder = workdir / "images"
    for index, image in enumerate(natural_images(images, height, width, seed + 10)):
        write_image_atomic(folder / f"image_{index:04d}{image_suffix}", image[..., ::-1])
    found = expand_inputs([str(folder)])
    if found.errors:
        raise BenchError(f"cannot read the generated images: {found.errors[0]}")
    folder_plan = plan_outputs(found.files, workdir / "images_out")
    folder_run = translate_files(translator, folder_plan, batch_size=batch)
    model_rounds.append(model_only_rate(translator, size, batch, 1, iterations, seed))

    say(f"end to end [3/5]: a video of {video_frames} frames")
    clip = natural_images(video_frames, height, width, seed + 20)[..., ::-1]
    video = _write_video(workdir / "clip.mp4", clip, 30.0)
    video_plan = plan_outputs(expand_inputs([str(video)]).files, workdir / "clip_out.mp4")
    video_run = translate_files(translator, video_plan, batch_size=batch)
    model_rounds.append(model_only_rate(translator, size, batch, 1, iterations, seed))
    model_ips = float(np.median(model_rounds))
    for summary, what in ((folder_run, "folder"), (video_run, "video")):
        if summary.failed or summary.frames == 0:
            reason = summary.failed[0].reason if summary.failed else "no frames"
            raise BenchError(f"the {what} run failed: {reason}")

    # Twice the model's pace (see the module docstring), long enough for twice the run; whole
    # frames per second, as MPEG-4 time bases cannot express arbitrary rates.
    fps = float(min(MAX_SOURCE_FPS, max(1, round(2.0 * frame_ips))))
    count = math.ceil(2.0 * live_frames * fps / frame_ips) + 10
    live_clip = np.concatenate([clip] * math.ceil(count / len(clip)))[:count]
    live_video = _write_video(workdir / "live.mp4", live_clip, fps)
    say(f"end to end [4/5]: the live loop, {live_frames} frames, plain and --temporal")
    stats = run_live(translator, str(live_video), display=False, max_frames=live_frames)
    steady = run_live(translator, str(live_video), display=False, max_frames=live_frames,
                      temporal=True)
    for run, what in ((stats, ""), (steady, " with --temporal")):
        if run.frames == 0:
            raise BenchError(f"the live loop{what} translated no frame ({run.ended_by})")
    (temporal_height, temporal_width), temporal_frames = temporal
    if temporal_frames:
        say(f"end to end [5/5]: --temporal on a {temporal_width}x{temporal_height} pan, "
            f"{temporal_frames} frames")
    figures = (measure_temporal(translator, pan_clip(temporal_frames, temporal_height,
                                                     temporal_width, seed + 30))
               if temporal_frames else None)
    result = EndToEndResult(
        model=model.name, engine=backend, provider=short_provider(translator.providers[0]),
        batch=batch, height=height, width=width, model_only_ips=model_ips,
        folder_images=folder_run.frames, folder_ips=folder_run.frames / folder_run.seconds,
        video_frames=video_run.frames, video_ips=video_run.frames / video_run.seconds,
        live_frames=stats.frames, live_fps=stats.fps,
        live_model_ms=stats.model_seconds / stats.frames * 1000.0,
        live_overhead_fraction=stats.overhead_fraction,
        live_wait_fraction=stats.wait_seconds / stats.seconds if stats.seconds > 0 else 0.0,
        live_source_fps=fps, live_temporal_frames=steady.frames,
        live_temporal_overhead_fraction=steady.overhead_fraction,
        live_temporal_ms=steady.temporal_seconds / steady.frames * 1000.0,
        live_temporal_fps=steady.fps,
        live_temporal_model_ms=steady.model_seconds / steady.frames * 1000.0)
    if figures is not None:
        result.temporal_height, result.temporal_width = temporal_height, temporal_width
        result.temporal_frames = figures.frames
        result.warp_error, result.warp_error_temporal = (figures.warp_error,
                                                         figures.warp_error_temporal)
        result.temporal_psnr_db, result.temporal_psnr_min_db = (figures.psnr_mean_db,
                                                                figures.psnr_min_db)
        result.temporal_ms, result.temporal_model_ms = figures.temporal_ms, figures.model_ms
    return result


class NullBackend:
    """A backend that returns its input at once (a float model's input is a valid output:
    NCHW in [-1, 1]; a uint8 model's, NHWC uint8), so only the runtime's own work is timed.

    It stands for an infinitely fast accelerator, and says so (``on_cpu = False``): the video
    path then gives the codecs every core, as it does for a model on a GPU
    (:attr:`runtime.translator.Translator.on_cpu`).
    """

    providers = ["NullBackend"]
    on_cpu = False

    def run(self, feed: np.ndarray) -> np.ndarray:
        return feed


def measure_pipeline_ceiling(model: str | Path, *,
                             sizes: tuple[tuple[int, int], ...] = ((480, 640), (720, 1280)),
                             frames: int = 30, rounds: int = 2, preset: str | None = None,
                             workdir: str | Path | None = None,
                             progress: Callable[[str], None] | None = None,
                             ) -> list[CeilingResult]:
    """The pipeline ceiling at each (H, W) of ``sizes``: :class:`CeilingResult` per size.

    ``model`` only supplies the metadata (size rule, IO kind); its backend is replaced by a
    :class:`NullBackend`. ``Translator.translate`` is timed on the float model as it is (the
    numpy pre/post-processing a CPU provider pays); the folder and video paths run as on a GPU,
    where a float model is wrapped in uint8 BGR IO at load (:func:`runtime.gpu.prepare_for_gpu`)
    so that conversion happens on the device. The Translator, folder, video, decode-alone and
    encode-alone rounds alternate ``rounds`` times and the best of each is kept, so a busy
    machine lowers all alike rather than one. The clip and the folder's JPEGs cycle through 8
    unrelated synthetic photos: each frame is a scene cut, a hard case for the encoder.
    ``preset``: the H.264 encoder's (None: the default, veryfast). ``progress``: called with
    a one-line description as each round starts.
    """
    if frames < 1 or rounds < 1:
        raise BenchError("frames and rounds must be >= 1")
    try:
        spec, _ = choose_codec(Path("ceiling.mp4"), preset=preset)
    except VideoCodecError as exc:
        raise BenchError(str(exc)) from None
    say = progress or (lambda line: None)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="cyclegan-ceiling-") as tmp:
            return _ceilings(Path(model), sizes, frames, rounds, spec.options["preset"],
                             Path(tmp), say)
    return _ceilings(Path(model), sizes, frames, rounds, spec.options["preset"], Path(workdir),
                     say)


def _null_translators(model: Path, workdir: Path) -> tuple[Translator, Translator]:
    """The model's Translator as it is, and as a GPU run presents it (a float model inside
    :func:`runtime.graph_edit.with_uint8_io`), both on a :class:`NullBackend`."""
    import onnx

    from runtime.graph_edit import with_uint8_io

    as_is = Translator(model, providers="cpu")
    on_device = as_is
    if as_is.metadata.io == "float":
        wrapped = workdir / f"{model.stem}_device_io.onnx"
        onnx.save(with_uint8_io(onnx.load(str(model)), "BGR"), str(wrapped))
        on_device = Translator(wrapped, providers="cpu")
    for translator in (as_is, on_device):
        translator.backend = NullBackend()  # type: ignore[assignment]
    return as_is, on_device


def _ceilings(model: Path, sizes: tuple[tuple[int, int], ...], frames: int, rounds: int,
              preset: str, workdir: Path, say: Callable[[str], None]) -> list[CeilingResult]:
    translator, on_device = _null_translators(model, workdir)
    results = []
    for height, width in sizes:
        clip = natural_images(min(frames, 8), height, width, seed=5)[..., ::-1]
        long_clip = np.concatenate([clip] * math.ceil(frames / len(clip)))[:frames]
        video = _write_video(workdir / f"ceiling_{width}x{height}.mp4", long_clip, 30.0)
        folder = workdir / f"ceiling_{width}x{height}"
        for index, image in enumerate(long_clip):
            write_image_atomic(folder / f"frame_{index:04d}.jpg", image)
        frame = np.ascontiguousarray(clip[0])
        translator.translate(frame)  # warm-up
        best = {"translate": 0.0, "folder": 0.0, "video": 0.0, "decode": 0.0, "encode": 0.0}
        least_cpu = math.inf
        for index in range(rounds):
            say(f"pipeline ceiling {width}x{height}: round {index + 1} of {rounds} "
                f"(Translator, folder, video, decode, encode; {frames} frames each)")
            started = time.perf_counter()
            for _ in range(frames):
                translator.translate(frame)
            best["translate"] = max(best["translate"],
                                    frames / (time.perf_counter() - started))
            best["folder"] = max(best["folder"], _files_round(
                on_device, folder, workdir / f"ceiling_out_{index}_{width}x{height}")[0])
            video_fps, cpu_ms = _files_round(on_device, video, workdir /
                                             f"ceiling_out_{index}_{width}x{height}.mp4",
                                             preset)
            best["video"] = max(best["video"], video_fps)
            least_cpu = min(least_cpu, cpu_ms)
            best["decode"] = max(best["decode"], _decode_rate(video))
            best["encode"] = max(best["encode"], _encode_rate(
                long_clip, workdir / f"ceiling_enc_{index}_{width}x{height}.mp4", preset))
        results.append(CeilingResult(height, width, best["translate"], frames, best["video"],
                                     best["decode"], best["encode"], least_cpu, preset,
                                     folder_fps=best["folder"], device_io=True))
    return results


def _files_round(translator: Translator, source: Path, target: Path,
                 preset: str | None = None) -> tuple[float, float]:
    """``source`` (a video, or a folder of images) through ``translate_files``: frames per
    second and the process's CPU milliseconds per frame (every thread's: decode, translate,
    encode)."""
    plan = plan_outputs(expand_inputs([str(source)]).files, target)
    cpu_before = _cpu_seconds()
    summary = translate_files(translator, plan, preset=preset)
    cpu = _cpu_seconds() - cpu_before
    if summary.failed or summary.frames == 0:
        reason = summary.failed[0].reason if summary.failed else "no frames"
        raise BenchError(f"the ceiling's run of {source.name} failed: {reason}")
    return summary.frames / summary.seconds, cpu / summary.frames * 1000.0


def _cpu_seconds() -> float:
    """This process's CPU seconds, every thread's (nanosecond clock: ``os.times`` counts 10 ms
    ticks, which a few small frames fall under)."""
    return time.process_time()


def _decode_rate(video: Path) -> float:
    """Frames per second of reading ``video`` into HWC uint8 BGR frames alone, with the
    decoder threads the video path gives an accelerator's model."""
    started = time.perf_counter()
    with VideoReader(video, model_on_cpu=False) as reader:
        count = sum(1 for _ in reader.frames())
    return count / (time.perf_counter() - started)


def _encode_rate(frames: np.ndarray, target: Path, preset: str) -> float:
    """Frames per second of writing ``(N, H, W, 3)`` uint8 BGR ``frames`` as H.264 alone
    (conversion, encoding, the checked commit), with the encoder threads the video path gives
    an accelerator's model."""
    started = time.perf_counter()
    with AtomicVideoWriter(target, 30.0, (frames.shape[2], frames.shape[1]), preset=preset,
                           model_on_cpu=False) as writer:
        for frame in frames:
            writer.write(frame)
    target.unlink()
    return len(frames) / (time.perf_counter() - started)
