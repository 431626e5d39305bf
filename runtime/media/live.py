"""The live loop: camera / video file / stream -> translate -> window and/or recording.

The capture thread keeps only the newest frame (:class:`LatestFrameGrabber`), so the picture
is never more than one frame behind the camera however slow the model is. With ``temporal``,
each translated frame is steadied against the previous one (:mod:`runtime.media.temporal`);
frames the grabber skipped only mean a longer step for the flow. Recordings are H.264 (by
extension, as for files) through :class:`runtime.media.video.AtomicVideoWriter`.
Keys in the window: q or Esc quits, s saves a snapshot, space cycles translated / side by side /
original.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.media.manifest import OutputManifest
from runtime.media.sinks import (
    OutputWriteError,
    draw_fps,
    remove_stale_parts,
    side_by_side,
    write_image_atomic,
)
from runtime.media.sources import LatestFrameGrabber, parse_live_source
from runtime.media.temporal import TemporalStabilizer
from runtime.media.video import AtomicVideoWriter
from runtime.reasons import first_line, why_no_file
from runtime.translator import Translator

VIEWS = ("translated", "side by side", "original")
SIDE_STEP = 32            # working sizes move in steps of this many pixels (longer side)
START_SIDE = 320          # the first working size, before any frame was timed
FPS_HEADROOM = 0.9        # aim at this share of the frame budget, for the window and jitter
WINDOW = "cyclegan-run"


class LiveError(RuntimeError):
    """The live source or display cannot be used; one line says why."""


@dataclass
class LiveStats:
    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0          # time inside Translator.translate
    temporal_seconds: float = 0.0       # time in the temporal stabiliser (part of the overhead)
    wait_seconds: float = 0.0           # time waiting for the source's next frame
    frames_captured: int = 0
    snapshots: list[Path] = field(default_factory=list)
    recording: Path | None = None
    ended_by: str = ""
    error: str | None = None  # the source failed (a dropped stream), or translating a frame
    warnings: list[str] = field(default_factory=list)  # e.g. a snapshot that was not written
    working_size: tuple[int, int] | None = None  # (W, H) translated at last; None: frame's own
    removed_parts: list[Path] = field(default_factory=list)  # an earlier recording's temp files

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def overhead_fraction(self) -> float:
        """Loop work outside the model (not waiting for the camera) over the model's time."""
        if self.model_seconds <= 0:
            return 0.0
        return max(0.0, self.seconds - self.model_seconds - self.wait_seconds) / self.model_seconds

    def line(self) -> str:
        text = (f"{self.frames} frame(s) in {self.seconds:.1f} s ({self.fps:.1f} FPS; model "
                f"{self.model_seconds / max(self.frames, 1) * 1000:.1f} ms/frame, loop overhead "
                f"{self.overhead_fraction:.1%} of model time")
        if self.temporal_seconds:
            text += (f"; --temporal {self.temporal_seconds / max(self.frames, 1) * 1000:.1f} "
                     "ms/frame of it")
        text += ")"
        if self.working_size is not None:
            text += f"; working size {self.working_size[0]}x{self.working_size[1]}"
        text += f"; {self.ended_by}"
        if self.recording:
            text += f"; recorded {self.recording}"
        if self.removed_parts:
            text += (f"; removed {len(self.removed_parts)} stale temp file(s) of an interrupted "
                     "recording")
        return text


class WorkingSize:
    """Picks the translator's working size (``max_side``) to hold ``target_fps``.

    The model's time grows with the pixels, about the square of the longer side, so after each
    frame the side that would fit the budget is ``side * sqrt(budget / busy_time)``; the side
    moves halfway there, in steps of :data:`SIDE_STEP`, and never below ``min_side`` (the
    model's size rule) nor above ``frame_side`` (the frame's own size).
    """

    def __init__(self, target_fps: float, frame_side: int, min_side: int) -> None:
        self.budget = FPS_HEADROOM / target_fps
        self.frame_side = frame_side
        self.min_side = min(min_side, frame_side)
        self.side = self._clamp(START_SIDE)

    def _clamp(self, side: float) -> int:
        stepped = int(side) // SIDE_STEP * SIDE_STEP
        return max(self.min_side, min(self.frame_side, stepped))

    @property
    def max_side(self) -> int | None:
        """What to give ``Translator.max_side``: None at the frame's own size."""
        return None if self.side >= self.frame_side else self.side

    def update(self, busy_seconds: float) -> int:
        """Feed the last frame's time outside waiting for the source; returns the new side."""
        if busy_seconds <= 0:
            return self.side
        ideal = self.side * math.sqrt(self.budget / busy_seconds)
        target = self._clamp(self.side + 0.5 * (ideal - self.side))
        if abs(target - self.side) >= SIDE_STEP or target in (self.min_side, self.frame_side):
            self.side = target
        return self.side


def display_available() -> bool:
    """Can a window open? On Linux: a Wayland socket, or an X display that answers.

    Checked before OpenCV's Qt backend tries, because Qt aborts the whole process (no
    exception) when the display named in DISPLAY is not there.
    """
    if not sys.platform.startswith("linux"):
        return True
    if os.environ.get("WAYLAND_DISPLAY"):
        return True
    display = os.environ.get("DISPLAY", "")
    if not display:
        return False
    host, _, number = display.rpartition(":")
    if host not in ("", "unix"):
        return True  # a remote display (e.g. ssh -X): trust it
    socket_path = f"/tmp/.X11-unix/X{number.split('.')[0]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(socket_path)
        except OSError:
            return False
    return True


NO_DISPLAY = ("no display available (DISPLAY is not set or does not answer); use --no-display, "
              "optionally with -o FILE.mp4 to record")


def check_live_source(source: str) -> int | str:
    """``source`` parsed (:func:`parse_live_source`: a camera index, a file or a URL); raises
    :class:`LiveError` for a file that is not there or is no file, before any work."""
    parsed = parse_live_source(source)
    if isinstance(parsed, str) and "://" not in parsed:
        path = Path(parsed)
        if not path.is_file() and not path.is_char_device():  # /dev/video0 is a camera
            raise LiveError(f"{parsed}: {why_no_file(path)} (give a camera index, a video file "
                            "or a stream URL)")
    return parsed


def run_live(translator: Translator, source: str = "0", *, display: bool = True,
             record: Path | None = None, max_frames: int | None = None,
             snapshot_dir: Path = Path("."), reconnects: int = 5,
             retry_delay: float = 0.5, codec: str | None = None, crf: int | None = None,
             preset: str | None = None, temporal: bool = False,
             target_fps: float = 0.0) -> LiveStats:
    """Translate a live source until it ends, the user quits, or ``max_frames`` frames.

    A dropped stream is reopened up to ``reconnects`` times, waiting ``retry_delay`` seconds
    times the attempt number before each. ``codec`` / ``crf`` / ``preset``: of the recording
    (:func:`runtime.media.video.choose_codec`); ``temporal``: steady the translation over time.
    ``target_fps`` > 0: the working size is chosen and adapted (:class:`WorkingSize`) to hold
    that rate; the translator's ``max_side`` is restored at the end. 0: as ``translator`` is.
    """
    if display and not display_available():
        raise LiveError(NO_DISPLAY)
    parsed = check_live_source(source)
    try:
        grabber = LatestFrameGrabber(parsed, reconnects=reconnects, retry_delay=retry_delay)
    except Exception as exc:  # noqa: BLE001 - OpenCV/InputError: one line for the user
        if isinstance(parsed, int):
            raise LiveError(f"camera {parsed}: cannot open it (no such camera, or another "
                            "program is using it)") from None
        raise LiveError(f"cannot open {source!r} ({exc})") from None
    stats = LiveStats()
    if record is not None:  # a recording killed outright (SIGKILL, power loss) left its temp
        stats.removed_parts = remove_stale_parts([record.parent])
    stabilizer = TemporalStabilizer() if temporal else None
    writer: AtomicVideoWriter | None = None
    pending: list[np.ndarray] = []
    made_at: list[float] = []  # when each recorded frame was made: the recording's rate
    view = 0
    smoothed_fps = 0.0
    last_index = 0
    started = time.perf_counter()
    last_frame_time = started
    cv2 = None
    given_side = translator.max_side
    sizer: WorkingSize | None = None
    adaptive = target_fps > 0 and translator.metadata.static_size is None
    meta = translator.metadata
    write_error: OutputWriteError | None = None
    loop_error: str | None = None
    record_size: tuple[int, ...] | None = None  # (H, W) of the recording's frames
    number = 0
    try:
        if display:
            import cv2 as _cv2

            cv2 = _cv2
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        while max_frames is None or stats.frames < max_frames:
            waited = time.perf_counter()
            item = grabber.read(last_index)
            got = time.perf_counter()
            stats.wait_seconds += got - waited
            if item is None:
                stats.ended_by = grabber.error or "source ended"
                break
            last_index, frame = item
            number = stats.frames + 1  # this frame's, for a failure to name
            if adaptive and sizer is None:
                sizer = WorkingSize(target_fps, max(frame.shape[:2]),
                                    max(meta.min_size, meta.size_multiple))
            if sizer is not None or stats.working_size is None:  # fixed: said once
                if sizer is not None:
                    translator.max_side = sizer.max_side
                work_height, work_width = translator.working_size(*frame.shape[:2])
                stats.working_size = (work_width, work_height)
            t0 = time.perf_counter()
            translated = translator.translate(frame)
            stats.model_seconds += time.perf_counter() - t0
            if stabilizer is not None:
                t1 = time.perf_counter()
                translated = stabilizer(frame, translated)
                stats.temporal_seconds += time.perf_counter() - t1
            stats.frames += 1
            now = time.perf_counter()
            if sizer is not None:
                # the whole loop's time for this frame (window, recording included), less the
                # wait for the source: what the working size can change
                sizer.update((now - last_frame_time) - (got - waited))
            instant = 1.0 / max(now - last_frame_time, 1e-6)
            smoothed_fps = instant if stats.frames == 1 else 0.9 * smoothed_fps + 0.1 * instant
            last_frame_time = now
            shown = _compose(frame, translated, VIEWS[view])
            if record is not None:
                # The recording holds the translated frames whatever the window shows, at the
                # rate they were made (measured over the first frames), so it plays in real
                # time rather than fast-forward when the model is slower than the source.
                if record_size is None:
                    record_size = translated.shape[:2]
                elif translated.shape[:2] != record_size:  # a stream back at another size
                    stats.ended_by = "failed"
                    loop_error = (f"frame {number}: the source changed size from "
                                  f"{record_size[1]}x{record_size[0]} to {translated.shape[1]}x"
                                  f"{translated.shape[0]}; the recording holds the frames before")
                    break
                pending.append(translated)
                made_at.append(now)
                try:
                    if writer is None and (len(pending) >= RECORD_RATE_FRAMES):
                        writer = _open_recording(record, pending, made_at, grabber.info.fps,
                                                 codec, crf, preset)
                    if writer is not None:
                        for kept in pending:
                            writer.write(kept)
                        pending.clear()
                except OutputWriteError as exc:  # the recording cannot be written: run fails
                    write_error = exc
                    break
            if cv2 is not None:
                size = (f" {stats.working_size[0]}x{stats.working_size[1]}"
                        if stats.working_size else "")
                cv2.imshow(WINDOW, draw_fps(shown, smoothed_fps, VIEWS[view] + size))
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27):
                    stats.ended_by = "quit by user"
                    break
                if key == ord("s"):
                    path = snapshot_dir / f"snapshot_{time.strftime('%Y%m%d_%H%M%S')}_" \
                                          f"{stats.frames:06d}.png"
                    try:
                        stats.snapshots.append(write_image_atomic(path, shown))
                    except OutputWriteError as exc:  # a lost snapshot does not end the run
                        stats.warnings.append(f"snapshot not saved: {first_line(exc)}")
                if key == ord(" "):
                    view = (view + 1) % len(VIEWS)
        else:
            stats.ended_by = f"reached --max-frames {max_frames}"
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (runtime.console.Terminated)
        stats.ended_by = "interrupted"
    except Exception as exc:  # noqa: BLE001 - the model, the stabiliser or the window failed
        # on a frame: the recording keeps the frames before it, as when the source drops
        stats.ended_by = "failed"
        loop_error = (f"frame {number}: " if number else "") + first_line(exc)
    finally:
        stats.seconds = time.perf_counter() - started
        translator.max_side = given_side
        stats.frames_captured = grabber.frames_read
        grabber.stop()
        if cv2 is not None:
            cv2.destroyWindow(WINDOW)
    if record is not None and write_error is None:
        try:
            stats.recording = _finish_recording(writer, record, pending, made_at,
                                                grabber.info.fps, codec, crf, preset)
        except OutputWriteError as exc:
            write_error = exc
    if write_error is not None:
        if writer is not None:
            writer.abort()  # its temp file goes (again is harmless); nothing is recorded
        raise write_error
    if grabber.error and stats.frames == 0:
        raise LiveError(grabber.error)
    stats.error = loop_error or grabber.error
    if stats.frames == 0 and stats.error is None and stats.ended_by == "source ended":
        raise LiveError(f"{source}: no frame could be read (not a video, or damaged)")
    return stats


def _finish_recording(writer: AtomicVideoWriter | None, record: Path,
                      pending: list[np.ndarray], made_at: list[float], source_fps: float,
                      codec: str | None, crf: int | None, preset: str | None) -> Path | None:
    """Write the frames still ``pending`` and commit the recording (recorded in its folder's
    manifest); None when there was no frame to record. Raises :class:`OutputWriteError`, the
    temp file removed."""
    if writer is None and pending:
        writer = _open_recording(record, pending, made_at, source_fps, codec, crf, preset)
    if writer is None:
        return None
    try:
        for kept in pending:
            writer.write(kept)
    except BaseException:  # a full disk, or Ctrl-C: no temp file stays
        writer.abort()
        raise
    pending.clear()
    if not writer.frames:
        writer.abort()
        return None
    # removes its temp file itself when it fails
    return writer.commit(OutputManifest(writer.path.parent).claimer("video"))


RECORD_RATE_FRAMES = 10  # frames measured before the recording's frame rate is fixed


def _open_recording(path: Path, frames: list[np.ndarray], made_at: list[float],
                    source_fps: float, codec: str | None = None, crf: int | None = None,
                    preset: str | None = None) -> AtomicVideoWriter:
    """A writer at the rate the frames were made (from their timestamps), never faster than
    the source; with a single frame, the source's rate (or 30 when the source has none)."""
    if len(made_at) >= 2 and made_at[-1] > made_at[0]:
        made = (len(made_at) - 1) / (made_at[-1] - made_at[0])
        fps = min(source_fps, made) if source_fps > 0 else made
    else:
        fps = source_fps if source_fps > 0 else 30.0
    height, width = frames[0].shape[:2]
    return AtomicVideoWriter(path, max(0.5, round(fps, 2)), (width, height), codec=codec,
                             crf=crf, preset=preset)


def _compose(frame: np.ndarray, translated: np.ndarray, view: str) -> np.ndarray:
    if view == "side by side":
        return side_by_side(frame, translated)
    if view == "original":
        return frame
    return translated
