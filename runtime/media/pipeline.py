"""Threaded translation of files and live sources.

Decoding and encoding run in worker threads (OpenCV and PyAV release the GIL while they work)
and overlap inference in the calling thread, so a folder or a video is bound by the model, not by
I/O. Failures are collected with their reasons; they never stop the run.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from runtime.cpu import usable_cores
from runtime.media.outputs import Job, OutputPlan
from runtime.media.sinks import (
    OutputWriteError,
    discard,
    remove_stale_parts,
    side_by_side,
    write_animation_atomic,
    write_image_atomic,
)
from runtime.media.sources import InputError, InputSet, read_animation, read_image
from runtime.media.stream import StreamError, pipelined, submit
from runtime.media.video import AtomicVideoWriter, DecodedFrame, VideoReader, probe_video
from runtime.reasons import first_line, typed_first_line
from runtime.translator import Translator

T = TypeVar("T")
# After Ctrl-C lands while a video is being finished: how long the encoder thread gets to stop
# at its next frame before its writer is aborted under it.
ENCODER_STOP_WAIT_S = 5.0

Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass
class RunSummary:
    translated: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[InputError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)       # e.g. a video shorter than announced
    notes: list[str] = field(default_factory=list)          # e.g. a rotation applied
    not_media: list[Path] = field(default_factory=list)     # hidden / non-media files passed over
    earlier_outputs: list[Path] = field(default_factory=list)  # never read as inputs
    in_output: list[Path] = field(default_factory=list)  # other media in the output folder
    removed_parts: list[Path] = field(default_factory=list)    # stale temp files cleared
    destination: Path | None = None
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    planned: int = 0  # inputs the run set out to translate (an interrupted run did fewer)

    @classmethod
    def for_plan(cls, plan: OutputPlan) -> RunSummary:
        """The summary a run of ``plan`` starts from: its refusals and skips already in."""
        return cls(destination=plan.destination, failed=list(plan.failed),
                   skipped=list(plan.skipped), planned=len(plan.jobs) + len(plan.failed))

    def passed_over(self, found: InputSet) -> None:
        """Count what gathering the inputs passed over on purpose (never failures)."""
        self.not_media = found.skipped
        self.earlier_outputs = found.earlier_outputs
        self.in_output = found.in_output

    def lines(self) -> list[str]:
        total = max(len(self.translated) + len(self.failed), self.planned)
        rate = f", {self.frames / self.seconds:.1f} frames/s" if self.seconds > 0 else ""
        head = (f"translated {len(self.translated)} of {total} input(s) "
                f"({self.frames} frame(s) in {self.seconds:.1f} s{rate})")
        if self.skipped:
            head += f"; {len(self.skipped)} skipped (output exists)"
        if self.interrupted:
            head += "; interrupted, finished files are complete"
        out = [head]
        passed = []
        if self.not_media:
            passed.append(f"skipped {len(self.not_media)} non-media file(s)")
        if self.earlier_outputs:
            passed.append(f"skipped {len(self.earlier_outputs)} earlier output(s) of "
                          "cyclegan-run")
        if self.in_output:
            passed.append(f"passed over {len(self.in_output)} other image(s)/video(s) inside "
                          "the output folder (never read as inputs)")
        if self.removed_parts:
            passed.append(f"removed {len(self.removed_parts)} stale temp file(s) of an "
                          "interrupted run")
        if passed:
            out.append("; ".join(passed))
        out += [f"note: {text}" for text in self.notes]
        out += [f"warning: {text}" for text in self.warnings]
        if self.translated and self.destination is not None:
            out.append(f"results in {self.destination}")
        if self.failed:
            out.append(f"{len(self.failed)} failed:")
            out += [f"  {err.path}: {err.reason}" for err in self.failed]
        return out


class ImagePipeline:
    """Decode (threads) -> translate in batches (model threads: :attr:`Translator.in_flight`
    batches at once, 2 on a GPU) -> encode + write (threads)."""

    def __init__(self, translator: Translator, plan: OutputPlan, batch_size: int = 1,
                 side: bool = False, io_threads: int | None = None) -> None:
        self.translator = translator
        self.plan = plan
        self.batch_size = max(1, batch_size)
        self.side = side
        self.io_threads = io_threads or image_io_threads(translator.on_cpu)
        self.in_flight = max(1, translator.in_flight)
        # Batches being translated, oldest first, with the jobs and images they hold.
        self._translating: deque[tuple[list[tuple[Job, np.ndarray]],
                                       Future[list[np.ndarray]]]] = deque()

    def run(self, jobs: list[Job], summary: RunSummary, progress: Progress) -> None:
        self._progress = progress
        lookahead = self.batch_size * (1 + self.in_flight) + self.io_threads
        with ThreadPoolExecutor(self.io_threads, thread_name_prefix="decode") as readers, \
                ThreadPoolExecutor(self.io_threads, thread_name_prefix="encode") as writers, \
                ThreadPoolExecutor(self.in_flight, thread_name_prefix="model") as self._model:
            pending: deque[tuple[Job, Future[np.ndarray]]] = deque()
            writes: list[tuple[Job, Future[Path]]] = []
            batch: list[tuple[Job, np.ndarray]] = []
            todo = iter(jobs)
            try:
                for job in todo:
                    pending.append((job, readers.submit(read_image, job.source)))
                    if len(pending) < lookahead:
                        continue
                    self._take(pending.popleft(), batch, writes, writers, summary, progress)
                while pending:
                    self._take(pending.popleft(), batch, writes, writers, summary, progress)
                self._flush(batch, writes, writers, summary)
                while self._translating:
                    self._finish_oldest(writes, writers, summary)
            except KeyboardInterrupt:
                summary.interrupted = True
                for _, future in pending:
                    future.cancel()
                for _, translation in self._translating:
                    translation.cancel()  # started ones finish; their outputs are not written
                self._translating.clear()
                for _, write in writes:
                    write.cancel()  # not started: nothing half-written; started: finishes
            finally:
                for job, write in writes:
                    self._collect(job, write, summary, progress)

    def _take(self, item: tuple[Job, Future[np.ndarray]], batch: list[tuple[Job, np.ndarray]],
              writes: list[tuple[Job, Future[Path]]], writers: ThreadPoolExecutor,
              summary: RunSummary, progress: Progress) -> None:
        job, future = item
        try:
            image = future.result()
        except InputError as err:
            summary.failed.append(err)
            progress(1)
            return
        if batch and batch[0][1].shape != image.shape:
            self._flush(batch, writes, writers, summary)
        batch.append((job, image))
        if len(batch) >= self.batch_size:
            self._flush(batch, writes, writers, summary)
        # collect finished writes so the list stays short and progress is timely
        while writes and writes[0][1].done():
            done_job, write = writes.pop(0)
            self._collect(done_job, write, summary, progress)

    def _flush(self, batch: list[tuple[Job, np.ndarray]], writes: list[tuple[Job, Future[Path]]],
               writers: ThreadPoolExecutor, summary: RunSummary) -> None:
        """Send ``batch`` to the model; with :attr:`in_flight` batches already there, first
        finish the oldest (its outputs go to the writers)."""
        if not batch:
            return
        held = list(batch)
        batch.clear()
        while len(self._translating) >= self.in_flight:
            self._finish_oldest(writes, writers, summary)
        images = [image for _, image in held]
        self._translating.append((held, submit(self._model, self.in_flight,
                                               self.translator.translate_batch, images)))
        if self.in_flight == 1:  # nothing to overlap with: finish it now, as it always did
            self._finish_oldest(writes, writers, summary)

    def _finish_oldest(self, writes: list[tuple[Job, Future[Path]]],
                       writers: ThreadPoolExecutor, summary: RunSummary) -> None:
        """Wait for the oldest batch being translated and hand its outputs to the writers."""
        held, translation = self._translating.popleft()
        try:
            outputs = translation.result()
        except Exception as exc:  # noqa: BLE001 - e.g. a layout it cannot take, out of memory
            for job, _ in held:
                summary.failed.append(InputError(job.source, typed_first_line(exc)))
                self._progress(1)
            return
        for (job, image), out in zip(held, outputs, strict=True):
            frame = side_by_side(image, out) if self.side else out
            writes.append((job, writers.submit(self._write, job, frame)))
            summary.frames += 1
        # Bound the frames waiting for the encoders: wait for the oldest write when too many.
        while len(writes) > self.batch_size + 2 * self.io_threads:
            done_job, write = writes.pop(0)
            self._collect(done_job, write, summary, self._progress)

    def _write(self, job: Job, frame: np.ndarray) -> Path:
        # the manifest goes by folder: the name the image is written under may differ
        return write_image_atomic(job.target, frame,
                                  self.plan.manifest_for(job.target).claimer(job.kind))

    @staticmethod
    def _collect(job: Job, write: Future[Path], summary: RunSummary, progress: Progress) -> None:
        try:
            summary.translated.append(write.result())
        except CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a format OpenCV cannot encode
            summary.failed.append(InputError(job.source,
                                             f"cannot write output ({typed_first_line(exc)})"))
        progress(1)


def image_io_threads(model_on_cpu: bool) -> int:
    """Decoding (and as many encoding) threads for a folder of images: 2 when the model owns
    the CPU's cores (more would only take them from it); with the model elsewhere, half the
    usable cores, 2 to 8, since reading and writing images is then what bounds a folder (a
    512x512 JPEG takes a few ms each way on one core; on an H200 the folder path ran at 33
    images/s with 2 threads while the model alone did about 4x that)."""
    if model_on_cpu:
        return 2
    return max(2, min(8, usable_cores() // 2))



def translate_video(translator: Translator, job: Job, plan: OutputPlan, batch_size: int,
                    side: bool, progress: Progress, summary: RunSummary,
                    queue_size: int = 8, *, codec: str | None = None, crf: int | None = None,
                    preset: str | None = None, temporal: bool = False) -> None:
    """Same size, timestamps and frame count out, the audio copied; decoding (PyAV) and
    encoding in their own threads.

    A rotated source is translated upright and written upright (a note says so). Audio and
    subtitle packets travel with the frame they precede, so the writer interleaves them as the
    source did. ``codec`` / ``crf`` / ``preset``: see :func:`runtime.media.video.choose_codec`;
    ``temporal``: each output passes through a :class:`TemporalStabilizer` before it is written.

    Every blocking queue operation wakes up regularly to check ``stop``, so a failing encoder,
    a failing model or Ctrl-C ends all three threads; the partial file is then deleted. A video
    that yields fewer frames than its container announces is translated as far as it reads, with
    a warning naming the shortfall.
    """
    on_cpu = translator.on_cpu
    try:
        reader = VideoReader(job.source, model_on_cpu=on_cpu)
    except InputError as err:
        summary.failed.append(err)
        return
    stop = threading.Event()
    frames_out: queue.Queue[tuple[np.ndarray, DecodedFrame] | None] = queue.Queue(queue_size)
    errors: list[str] = []
    writers: list[AtomicVideoWriter] = []

    def put(target: queue.Queue[Any], item: Any) -> bool:
        while not stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def encode() -> None:
        resized = False  # frames scaled to the first size: the video changed size
        try:
            while (item := _get(frames_out, stop)) is not None:
                image, frame = item
                if not writers:  # sized from the first real frame, not container metadata
                    writers.append(AtomicVideoWriter(
                        job.target, reader.info.fps, (image.shape[1], image.shape[0]),
                        codec=codec, crf=crf, preset=preset, time_base=reader.info.time_base,
                        copy_streams=reader.copy_streams, model_on_cpu=on_cpu,
                        source_video=reader.stream))
                for packet in frame.packets:
                    writers[0].copy(packet)
                size = writers[0].size
                if (image.shape[1], image.shape[0]) != size:
                    # the video changes size mid-stream (joined clips, an adaptive stream):
                    # scaled to its first size, as ffmpeg does, and said once
                    if not resized:
                        writers[0].notes.append(
                            f"{job.source}: frames from {writers[0].frames + 1} on are "
                            f"{image.shape[1]}x{image.shape[0]}; scaled to the first frames' "
                            f"{size[0]}x{size[1]}")
                    resized = True
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                writers[0].write(image, _rescale(frame.pts, frame.time_base,
                                                 reader.info.time_base))
            if writers and not stop.is_set():
                for packet in reader.leftover:  # complete: the decoder ended before the marker
                    writers[0].copy(packet)
        except Exception as exc:  # noqa: BLE001 - becomes this input's failure reason
            errors.append(_write_failure(exc))
            stop.set()

    # Decoding (its thread) and translation (this thread): the streaming API's machinery.
    translated = pipelined(translator, reader.frames(), _image_of, name=str(job.source),
                           batch_size=batch_size, temporal=temporal, queue_size=queue_size)
    encoder = threading.Thread(target=encode, name="video-encode", daemon=True)
    encoder.start()
    count = 0
    interrupted = False
    try:
        try:
            for frame, out in translated:
                if not put(frames_out, (side_by_side(frame.image, out) if side else out,
                                        frame)):
                    break  # the encoder failed
                count += 1
                progress(1)
        except StreamError as err:  # e.g. out of memory on one video
            errors.append(err.reason)
        if not errors:
            put(frames_out, None)
    except BaseException:
        interrupted = True
        raise
    finally:
        try:
            if errors or interrupted:
                stop.set()
            translated.close()  # stops and joins the decode thread
            encoder.join()
        except KeyboardInterrupt:  # the signal landed while the video was being finished
            interrupted = True
            stop.set()
            encoder.join(ENCODER_STOP_WAIT_S)  # it stops at its next frame: not mid-write
            if encoder.is_alive():  # still in a write: its container is not ours to close
                for writer in writers:
                    discard(writer.tmp)
                writers = []
            raise
        finally:
            stop.set()
            _finish_video(job, plan, summary, reader, writers, count,
                          errors[0] if errors else None, interrupted)
        reader.close()  # the threads are joined (an interrupt above leaves it to exit)


def _image_of(frame: DecodedFrame) -> np.ndarray:
    return frame.image


def _write_failure(exc: BaseException) -> str:
    """The reason a video output failed (our writer's own message, naming the path, needs no
    exception class before it)."""
    if isinstance(exc, OutputWriteError):
        return f"cannot write video ({first_line(exc)})"
    return f"cannot write video ({typed_first_line(exc)})"


def _rescale(pts: int | None, source: Fraction, target: Fraction) -> int | None:
    """``pts`` from time base ``source`` to ``target`` (frames normally carry the stream's)."""
    if pts is None or source == target:
        return pts
    return round(pts * source / target)


def _finish_video(job: Job, plan: OutputPlan, summary: RunSummary, reader: VideoReader,
                  writers: list[AtomicVideoWriter], count: int, error: str | None,
                  interrupted: bool) -> None:
    """Commit (and record) the output of a finished video, or delete it; say what happened."""
    if error is not None or interrupted or count == 0 or not writers:
        for writer in writers:
            writer.abort()
        if interrupted:
            summary.notes.append(f"{job.source}: interrupted after {count} translated "
                                 "frame(s); its output was not written")
        else:
            announced = (f" of the {reader.info.frame_count} it announces"
                         if reader.info.frame_count else "")
            reason = error or (f"no frames ({reader.error})" if reader.error else
                               f"no frame could be decoded{announced} (damaged?)")
            summary.failed.append(InputError(job.source, reason))
        return
    writer = writers[0]
    try:
        written = writer.commit(plan.manifest_for(writer.path).claimer(job.kind))
    except KeyboardInterrupt:  # in the encoder's last frames: commit deleted the temp file
        summary.notes.append(f"{job.source}: interrupted while its output was being finished; "
                             "its output was not written")
        raise
    except OSError as exc:
        writer.abort()
        summary.failed.append(InputError(job.source, _write_failure(exc)))
        return
    summary.translated.append(written)
    summary.frames += count
    summary.notes += writer.notes
    if reader.rotation:
        summary.notes.append(f"{job.source}: turned {reader.rotation} degrees as its rotation "
                             "flag asks; translated and written upright (no flag)")
    if reader.other_video:
        streams = ", ".join(f"#{index}" for index in reader.other_video)
        summary.notes.append(f"{job.source}: only its first video stream is translated; video "
                             f"stream(s) {streams} left out")
    if reader.cover_art:
        streams = ", ".join(f"#{index}" for index in reader.cover_art)
        summary.notes.append(f"{job.source}: its cover art (stream {streams}) is not carried "
                             "over")
    if reader.not_copied:
        summary.notes.append(f"{job.source}: stream(s) {', '.join(reader.not_copied)} not "
                             "copied (only audio and subtitles are)")
    if reader.interlaced:
        summary.notes.append(f"{job.source}: interlaced; each frame was translated as one "
                             "picture, fields together, and written progressive (deinterlace "
                             "it first for clean motion, e.g. ffmpeg -vf bwdif)")
    summary.warnings += reader.shortfalls(count)


def _get(source: queue.Queue[T | None], stop: threading.Event) -> T | None:
    """Next item, or None at the end marker or once ``stop`` is set."""
    while not stop.is_set():
        try:
            return source.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


def translate_animation(translator: Translator, job: Job, plan: OutputPlan, batch_size: int,
                        side: bool, progress: Progress, summary: RunSummary) -> None:
    """An animated GIF/WebP/PNG: every frame translated, written with the same durations and
    loop count."""
    try:
        frames, durations, loops = read_animation(job.source)
        outputs: list[np.ndarray] = []
        for start in range(0, len(frames), batch_size):
            chunk = frames[start:start + batch_size]
            translated = translator.translate_batch(chunk)
            outputs += [side_by_side(i, o) if side else o
                        for i, o in zip(chunk, translated, strict=True)]
            progress(len(chunk))
        written = write_animation_atomic(job.target, outputs, durations, loop_count=loops,
                                         claim=plan.manifest_for(job.target).claimer(job.kind))
    except InputError as err:
        summary.failed.append(err)
        return
    except Exception as exc:  # noqa: BLE001 - a model or encoder error fails this input only
        summary.failed.append(InputError(job.source, typed_first_line(exc)))
        return
    summary.translated.append(written)
    summary.frames += len(frames)


def count_work(jobs: list[Job]) -> int:
    """Progress units: one per image, one per frame of animations and videos (as the
    container reports it)."""
    total = 0
    for job in jobs:
        if job.kind == "video":
            try:
                info = probe_video(job.source)
            except InputError:
                total += 1
                continue
            estimate = info.frame_count or round((info.duration or 0.0) * info.fps)
            total += max(estimate, 1)
        else:
            total += max(job.frames, 1)
    return total


def translate_files(translator: Translator, plan: OutputPlan, *, batch_size: int = 1,
                    side: bool = False, progress: Progress | None = None,
                    codec: str | None = None, crf: int | None = None,
                    preset: str | None = None, temporal: bool = False) -> RunSummary:
    """Translate the jobs of ``plan`` (see :func:`runtime.media.outputs.plan_outputs`);
    returns what was written, what was skipped and what failed, and why.

    ``codec`` / ``crf`` / ``preset``: for the videos (:func:`runtime.media.video.choose_codec`;
    None: by extension). ``temporal``: stabilise videos over time (:mod:`runtime.media.temporal`).

    Stale temp files of an earlier, killed run in the output folders are removed first.
    """
    summary = RunSummary.for_plan(plan)
    progress = progress or (lambda n: None)
    summary.removed_parts = remove_stale_parts(plan.folders, recursive=not plan.single)
    started = time.perf_counter()
    try:
        translate_jobs(translator, plan, plan.jobs, summary, progress, batch_size=batch_size,
                       side=side, codec=codec, crf=crf, preset=preset, temporal=temporal)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.perf_counter() - started
    return summary


def translate_jobs(translator: Translator, plan: OutputPlan, jobs: list[Job],
                   summary: RunSummary, progress: Progress, *, batch_size: int = 1,
                   side: bool = False, codec: str | None = None, crf: int | None = None,
                   preset: str | None = None, temporal: bool = False) -> None:
    """Translate ``jobs`` of ``plan`` into ``summary``: the images through one
    :class:`ImagePipeline`, then each video and animation; stops after the images when they
    were interrupted. What :func:`translate_files` and a Ray worker's task both run."""
    batch_size = max(1, batch_size)
    images = [job for job in jobs if job.kind == "image"]
    if images:
        ImagePipeline(translator, plan, batch_size, side).run(images, summary, progress)
    if summary.interrupted:
        return
    for job in jobs:
        if job.kind == "video":
            translate_video(translator, job, plan, batch_size, side, progress, summary,
                            codec=codec, crf=crf, preset=preset, temporal=temporal)
        elif job.kind != "image":
            translate_animation(translator, job, plan, batch_size, side, progress, summary)
