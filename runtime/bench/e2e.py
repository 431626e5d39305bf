"""End-to-end figures: what ``cyclegan-run`` delivers against what the model alone could.

- A folder of images and a video file through :func:`runtime.media.pipeline.translate_files` (what
  ``cyclegan-run`` runs: decode and encode threads around batched inference), as images per
  second over the model-only rate at the same size and batch. Target: >= 90 %.
- The live loop (:func:`.live.run_live`, no window) fed from a video file, as the loop's
  time outside the model and outside waiting for frames over the model's time
  (``LiveStats.overhead_fraction``). Target: <= 10 %.

The live source paces a video file at its own frame rate, as a camera would. The test video is
written at twice the model-only rate, so a frame is nearly always waiting when the loop asks
(the waits it does have are counted apart, not as overhead), and long enough to outlast the run.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from runtime.bench.engines import short_provider, time_calls
from runtime.bench.report import BenchError, EndToEndResult
from runtime.media.live import run_live
from runtime.media.outputs import plan_outputs
from runtime.media.pipeline import translate_files
from runtime.media.sinks import AtomicVideoWriter, write_image_atomic
from runtime.media.sources import expand_inputs
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
                   seed: int = 0) -> EndToEndResult:
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

    Returns:
        :class:`EndToEndResult` with rates in images (frames) per second.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if min(images, video_frames, live_frames, batch) < 1:
        raise BenchError("images, video_frames, live_frames and batch must be >= 1")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="cyclegan-bench-") as tmp:
            return _run(Path(model), (height, width), batch, images, video_frames, live_frames,
                        backend, providers, threads, warmup, iterations, image_suffix,
                        Path(tmp), seed)
    return _run(Path(model), (height, width), batch, images, video_frames, live_frames, backend,
                providers, threads, warmup, iterations, image_suffix, Path(workdir), seed)


def _run(model: Path, size: tuple[int, int], batch: int, images: int, video_frames: int,
         live_frames: int, backend: str, providers: str, threads: int | None, warmup: int,
         iterations: int, image_suffix: str, workdir: Path, seed: int) -> EndToEndResult:
    if not model.is_file():
        raise BenchError(f"{model}: no such file")
    translator = Translator(model, providers=providers, backend=backend, threads=threads)
    height, width = size
    model_ips = model_only_rate(translator, size, batch, warmup, iterations, seed)
    frame_ips = model_ips if batch == 1 else model_only_rate(translator, size, 1, warmup,
                                                             iterations, seed)

    folder = workdir / "images"
    for index, image in enumerate(natural_images(images, height, width, seed + 10)):
        write_image_atomic(folder / f"image_{index:04d}{image_suffix}", image[..., ::-1])
    found = expand_inputs([str(folder)])
    if found.errors:
        raise BenchError(f"cannot read the generated images: {found.errors[0]}")
    folder_plan = plan_outputs(found.files, workdir / "images_out")
    folder_run = translate_files(translator, folder_plan, batch_size=batch)

    clip = natural_images(video_frames, height, width, seed + 20)[..., ::-1]
    video = _write_video(workdir / "clip.mp4", clip, 30.0)
    video_plan = plan_outputs(expand_inputs([str(video)]).files, workdir / "clip_out.mp4")
    video_run = translate_files(translator, video_plan, batch_size=batch)
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
    stats = run_live(translator, str(live_video), display=False, max_frames=live_frames)
    if stats.frames == 0:
        raise BenchError(f"the live loop translated no frame ({stats.ended_by})")
    return EndToEndResult(
        model=model.name, engine=backend, provider=short_provider(translator.providers[0]),
        batch=batch, height=height, width=width, model_only_ips=model_ips,
        folder_images=folder_run.frames, folder_ips=folder_run.frames / folder_run.seconds,
        video_frames=video_run.frames, video_ips=video_run.frames / video_run.seconds,
        live_frames=stats.frames, live_fps=stats.fps,
        live_model_ms=stats.model_seconds / stats.frames * 1000.0,
        live_overhead_fraction=stats.overhead_fraction,
        live_wait_fraction=stats.wait_seconds / stats.seconds if stats.seconds > 0 else 0.0,
        live_source_fps=fps)
