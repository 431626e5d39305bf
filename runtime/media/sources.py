"""Frame sources: image files (decoded with a reason on failure), video files, live captures.

Images are returned as OpenCV delivers them: HWC uint8/uint16, BGR(A) or gray.
"""

from __future__ import annotations

import glob
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtime.media.manifest import listed_outputs
from runtime.reasons import why_no_file
from runtime.transforms import unit_float_to_uint8

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg",
                              ".wmv", ".flv", ".ts", ".m2ts", ".mts", ".3gp", ".ogv", ".mxf",
                              ".vob", ".asf", ".divx", ".f4v"})


class InputError(Exception):
    """An input that cannot be translated; ``reason`` is short ("corrupt", "empty file")."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


URL_OPEN_TIMEOUT_S = 10  # a stream URL that gives no video in this long is refused
# Formats that may hold several frames (animated GIF, WebP, APNG).
ANIMATED_EXTENSIONS = frozenset({".gif", ".webp", ".png"})


def animation_frames(path: Path) -> int:
    """How many frames an image file holds (1 for a still or a format without animation)."""
    suffix = path.suffix.lower()
    if suffix not in ANIMATED_EXTENSIONS:
        return 1
    if suffix in (".png", ".webp"):
        # Cheap signature checks first: an animated PNG has an acTL chunk before its image
        # data, an animated WebP an ANIM chunk near the start; stills skip the decoder.
        try:
            with open(path, "rb") as handle:
                head = handle.read(1 << 16)
        except OSError:
            return 1
        if (b"acTL" if suffix == ".png" else b"ANIM") not in head:
            return 1
    try:
        return max(1, int(cv2.imcount(str(path))))
    except cv2.error:
        return 1  # undecodable: read_image names the reason


def read_animation(path: Path) -> tuple[list[np.ndarray], list[int], int]:
    """All frames of an animated image (HWC uint8 BGR(A)), their durations in ms and its loop
    count (0: forever)."""
    try:
        ok, animation = cv2.imreadanimation(str(path))
    except cv2.error:
        ok = False
    if not ok or not animation.frames:
        raise InputError(path, "corrupt or truncated animation")
    durations = [int(d) for d in np.asarray(animation.durations).ravel()]
    if path.suffix.lower() == ".gif":
        # OpenCV reads a 0 delay on the first frame of some GIFs (Pillow's) as 1000 ms; the
        # file's own delays are what viewers show.
        own = gif_delays_ms(path.read_bytes())
        if own is not None and len(own) == len(durations):
            durations = own
    return list(animation.frames), durations, int(animation.loop_count)


def gif_delays_ms(data: bytes) -> list[int] | None:
    """Each image's delay in a GIF file, in ms (its Graphic Control Extension's hundredths of
    a second; 0 where it has none), or None when ``data`` is not a well-formed GIF.

    A walk over the GIF89a block structure (no pixel data is decoded): Pillow is not a
    runtime dependency and OpenCV's reader does not give the file's own delays (above)."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return None

    def after_sub_blocks(at: int) -> int:
        while at < len(data) and data[at]:
            at += data[at] + 1
        return at + 1

    def colour_table_bytes(packed: int) -> int:
        return 3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0

    at = 13 + colour_table_bytes(data[10])
    delays: list[int] = []
    pending = 0  # the delay of the next image, from the extension before it
    while at < len(data):
        block = data[at]
        if block == 0x3B:  # trailer
            return delays
        if block == 0x21 and at + 1 < len(data):  # an extension
            if data[at + 1] == 0xF9 and at + 6 < len(data) and data[at + 2] == 4:
                pending = 10 * int.from_bytes(data[at + 4:at + 6], "little")
            at = after_sub_blocks(at + 2)
        elif block == 0x2C and at + 10 < len(data):  # an image: descriptor, table, LZW data
            delays.append(pending)
            pending = 0
            at = after_sub_blocks(at + 10 + colour_table_bytes(data[at + 9]) + 1)
        else:
            return None
    return delays or None  # no trailer (cut short): the images found


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` keeping depth and alpha, upright (its EXIF orientation applied, as a
    photo viewer shows it); raises :class:`InputError` with the reason."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(path, f"unreadable ({exc.strerror or exc})") from None
    if data.size == 0:
        raise InputError(path, "empty file")
    return decode_image(data, path, known=path.suffix.lower() in IMAGE_EXTENSIONS)


def decode_image(data: np.ndarray, source: Path | str, known: bool = True) -> np.ndarray:
    """Decode an encoded image (``data``: its bytes as uint8) as :func:`read_image` does;
    :class:`InputError` naming ``source`` otherwise (``known``: it was said to be an image, so
    a failure means damaged rather than something else)."""
    # IMREAD_UNCHANGED keeps alpha and 16 bits but, alone among OpenCV's modes, ignores the
    # EXIF orientation of phone photos: the metadata comes along and is applied below.
    image, kinds, chunks = cv2.imdecodeWithMetadata(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError(source, "corrupt or truncated image" if known else "not an image")
    if np.issubdtype(image.dtype, np.floating):
        image = unit_float_to_uint8(image)  # e.g. float EXR/HDR/TIFF: [0, 1] to 8 bits
    elif image.dtype not in (np.uint8, np.uint16):
        # signed samples (a 32-bit integer TIFF) have no one range to map from: not guessed
        raise InputError(source, f"{image.dtype} samples (only 8 or 16-bit unsigned and "
                                 "float images are translated)")
    for kind, chunk in zip(kinds, chunks, strict=False):
        if kind == cv2.IMAGE_METADATA_EXIF:
            image = upright(image, exif_orientation(np.asarray(chunk, np.uint8).tobytes()))
    return image


def exif_orientation(exif: bytes) -> int:
    """The Orientation tag (1-8) of an EXIF block (a TIFF header and its first IFD, with or
    without the ``Exif\\0\\0`` prefix); 1 (as stored) when absent or unreadable."""
    start = exif.find(b"II*\0")
    if start < 0:
        start = exif.find(b"MM\0*")
    if start < 0:
        return 1
    tiff = exif[start:]
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(f"{order}I", tiff, 4)
        (count,) = struct.unpack_from(f"{order}H", tiff, ifd)
        for index in range(count):
            tag, kind, _, value = struct.unpack_from(f"{order}HHI4s", tiff, ifd + 2 + 12 * index)
            if tag == 0x0112 and kind == 3:  # Orientation, a SHORT
                (orientation,) = struct.unpack_from(f"{order}H", value)
                return orientation if 1 <= orientation <= 8 else 1
    except struct.error:
        pass  # a truncated block: as stored
    return 1


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """``image`` turned and mirrored as EXIF ``orientation`` (1-8) says to show it (the mapping
    of OpenCV's own ``IMREAD_COLOR`` decoding, which a test checks it against)."""
    if orientation == 2:
        return cv2.flip(image, 1)
    if orientation == 3:
        return cv2.rotate(image, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(image, 0)
    if orientation == 5:
        return cv2.transpose(image)
    if orientation == 6:
        return cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.flip(cv2.transpose(image), -1)
    if orientation == 8:
        return cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return image


@dataclass(frozen=True)
class FileInput:
    """One input file and where its output goes, relative to the output root."""

    path: Path
    relative: Path


@dataclass
class InputSet:
    """What :func:`expand_inputs` found: the inputs, the inputs that cannot be, and what it
    passed over on purpose (never failures)."""

    files: list[FileInput] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)          # hidden or not media
    earlier_outputs: list[Path] = field(default_factory=list)  # our own earlier outputs
    in_output: list[Path] = field(default_factory=list)  # other media inside this run's output


def is_media(path: Path) -> bool:
    """An image or video by its extension."""
    return path.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def expand_inputs(inputs: list[str], exclude: Path | None = None) -> InputSet:
    """Files, folders (recursive) and globs -> ordered inputs with output-relative paths.

    A single folder maps its tree directly under the output root; with several inputs each
    folder keeps its own name. Missing paths and empty globs come back as errors. In folders
    and glob matches, hidden files and folders and files that are neither images nor videos
    by extension are skipped (counted, not failures); so are the files that an earlier
    ``cyclegan-run`` wrote there (its record, :mod:`runtime.media.manifest`) and everything
    under ``exclude`` (this run's output folder; its media files that are not earlier outputs
    are counted in ``in_output``): outputs are never read as inputs. A file named directly is
    always an input.
    """
    found = InputSet()
    single = len(inputs) == 1
    excluded = Path(os.path.abspath(exclude)) if exclude is not None else None
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            passed_over, named = _passed_over(found), len(found.errors)
            files = _walk(path, _strictly_below(excluded, path), found)
            base = Path() if single else Path(path.resolve().name)
            found.files += [FileInput(p, base / p.relative_to(path)) for p in files]
            if not files and len(found.errors) == named:  # else its failures say it
                nothing_else = passed_over == _passed_over(found)
                found.errors.append(InputError(path, "empty folder" if nothing_else else
                                               "no images or videos in this folder"))
        elif path.is_file():
            found.files.append(FileInput(path, Path(path.name)))
        elif path.exists() or path.is_symlink():
            found.errors.append(InputError(path, why_no_file(path)))
        elif glob.has_magic(raw):
            # everything but folders: pipes and broken links are then named by _filter
            matches = sorted(Path(p) for p in glob.glob(raw, recursive=True)
                             if not Path(p).is_dir())
            if not matches:
                found.errors.append(InputError(path, "pattern matches no files"))
            root = _glob_root(raw)
            kept = _filter(matches, _strictly_below(excluded, root), found)
            found.files += [FileInput(p, p.relative_to(root) if p.is_relative_to(root) else
                                      Path(p.name)) for p in kept]
        else:
            found.errors.append(InputError(path, "no such file or folder"))
    # The same file named twice for the same output (a.jpg a.jpg, or overlapping globs) is
    # one input, not a collision with itself.
    unique: dict[tuple[Path, Path], FileInput] = {}
    for item in found.files:
        unique.setdefault((item.path.resolve(), item.relative), item)
    found.files = list(unique.values())
    return found


def _walk(root: Path, excluded: Path | None, found: InputSet) -> list[Path]:
    """Media files under ``root``, sorted, skipping what :func:`expand_inputs` says."""
    files: list[Path] = []

    def unlistable(error: OSError) -> None:  # os.walk would pass over it without a word
        where = Path(error.filename) if error.filename else root
        found.errors.append(InputError(where, f"cannot list this folder "
                                              f"({error.strerror or error})"))

    for folder, subfolders, names in os.walk(root, onerror=unlistable):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        files += _filter([here / name for name in sorted(names)], excluded, found)
    return sorted(files)


def _filter(paths: list[Path], excluded: Path | None, found: InputSet) -> list[Path]:
    kept: list[Path] = []
    listed: dict[Path, set[Path]] = {}
    for path in paths:
        media = is_media(path) and not path.name.startswith(".")
        if excluded is not None and _inside(path, excluded):
            # this run's output folder: never inputs; its media are counted as passed over
            if media:
                (found.earlier_outputs if _listed(path, listed) else found.in_output).append(path)
        elif not media:
            found.skipped.append(path)
        elif not path.is_file():  # a pipe would block its reader for good: never opened
            found.errors.append(InputError(path, why_no_file(path)))
        elif _listed(path, listed):
            found.earlier_outputs.append(path)
        else:
            kept.append(path)
    return kept


def _listed(path: Path, listed: dict[Path, set[Path]]) -> bool:
    """Is ``path`` in the record of an earlier run? A folder output's record sits at its root
    and lists its subfolders' files too. ``listed``: the records read so far, by folder."""
    absolute = Path(os.path.abspath(path))
    for folder in absolute.parents:
        if folder not in listed:
            listed[folder] = listed_outputs(folder)
        if absolute in listed[folder]:
            return True
    return False


def _passed_over(found: InputSet) -> int:
    return len(found.skipped) + len(found.earlier_outputs) + len(found.in_output)


def _strictly_below(excluded: Path | None, root: Path) -> Path | None:
    """``excluded`` when it lies inside ``root`` (an output folder within the inputs), else
    None: an output folder that is the input folder itself is the planner's to refuse."""
    if excluded is None:
        return None
    base = Path(os.path.abspath(root))
    return excluded if excluded != base and excluded.is_relative_to(base) else None


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(folder)


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


# ---- videos and live sources ------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int  # as the container reports it; may be 0 or approximate


def open_video(path: Path | str | int) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file, camera index or stream URL; :class:`InputError` if it cannot."""
    if isinstance(path, int) and path < 0:  # -1 ("any camera") crashes some OpenCV builds
        raise InputError(str(path), "a camera index is 0 or more")
    started = time.monotonic()
    if isinstance(path, int):
        capture = cv2.VideoCapture(path)
    elif "://" in str(path):
        # A server that accepts but never answers would hold the caller OpenCV's default 30 s
        # (FFmpeg's), with no word of why; this bounds it and names it.
        capture = cv2.VideoCapture(str(path), cv2.CAP_ANY,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, URL_OPEN_TIMEOUT_S * 1000])
    else:
        capture = cv2.VideoCapture(str(path))  # str: Path would mangle "//"
    if not capture.isOpened():
        capture.release()
        if isinstance(path, int):
            raise InputError(str(path), "cannot open this camera (none with this index, or "
                             "busy, or not permitted)")
        if "://" in str(path) and time.monotonic() - started >= 0.9 * URL_OPEN_TIMEOUT_S:
            raise InputError(str(path), f"cannot open as video (no answer within "
                             f"{URL_OPEN_TIMEOUT_S} s)")
        raise InputError(str(path), "cannot open as video")
    info = VideoInfo(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     float(capture.get(cv2.CAP_PROP_FPS)) or 30.0,
                     int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    return capture, info


def video_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def parse_live_source(source: str) -> int | str:
    """``"0"`` -> camera index 0; anything else (file, rtsp://, http://) as given."""
    return int(source) if source.isdigit() else source


class LatestFrameGrabber:
    """Reads a capture in its own thread and keeps only the newest frame.

    A consumer slower than the camera therefore always gets the latest picture (latency one
    frame, not a growing queue). Video files are paced at their own frame rate, as a camera
    would deliver them. A live stream that drops is reopened up to ``reconnects`` times.

    Live sources stay on OpenCV, while video files for translation go through PyAV
    (:mod:`runtime.media.video`): ``cv2.VideoCapture(0)`` opens a camera by its index on every
    OS (V4L2, Media Foundation, AVFoundation), where PyAV needs each platform's device format
    and name; the driver's buffer can be held to one frame (``CAP_PROP_BUFFERSIZE``); and live
    mode needs only the newest picture, none of what PyAV adds for files (timestamps, audio,
    packets to copy).
    """

    def __init__(self, source: int | str, reconnects: int = 5, retry_delay: float = 0.5) -> None:
        self.source = source
        self.reconnects = reconnects
        self.retry_delay = retry_delay
        self.is_file = isinstance(source, str) and Path(source).is_file()
        self.capture, self.info = self._open()
        self._frame: np.ndarray | None = None
        self._index = 0
        self._condition = threading.Condition()
        self._stopped = False
        self.error: str | None = None
        self.frames_read = 0
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()

    def _open(self) -> tuple[cv2.VideoCapture, VideoInfo]:
        capture, info = open_video(self.source)
        if isinstance(self.source, int) or not self.is_file:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's queue short as well
        return capture, info

    def _loop(self) -> None:
        attempts = 0
        interval = 1.0 / self.info.fps if self.is_file and self.info.fps > 0 else 0.0
        next_due = time.perf_counter()
        while not self._stopped:
            ok, frame = self.capture.read()
            if not ok:
                if self.is_file:
                    break  # end of the video
                if attempts >= self.reconnects:
                    self.error = (f"{self.source}: stream dropped; gave up after "
                                  f"{self.reconnects} reconnect attempt(s)")
                    break
                attempts += 1
                self.capture.release()
                time.sleep(self.retry_delay * attempts)
                try:
                    self.capture, _ = self._open()
                except InputError:
                    continue
                continue
            attempts = 0
            with self._condition:
                self._frame = frame
                self._index += 1
                self.frames_read += 1
                self._condition.notify_all()
            if interval:
                next_due += interval
                delay = next_due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        self.capture.release()  # here, in the thread that reads it, never while it reads
        with self._condition:
            self._stopped = True
            self._condition.notify_all()

    def read(self, after: int, timeout: float | None = None) -> tuple[int, np.ndarray] | None:
        """Wait for a frame newer than index ``after``; None when the source has ended.

        The default timeout covers the whole reconnect budget plus 10 s, so a stream that is
        being reopened is not given up on early.
        """
        if timeout is None:
            timeout = 10.0 + sum(self.retry_delay * i + 5.0 for i in range(1, self.reconnects + 1))
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._index <= after and not self._stopped:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.error = self.error or f"{self.source}: no frame for {timeout:.0f} s"
                    return None
                self._condition.wait(remaining)
            if self._index <= after or self._frame is None:
                return None
            return self._index, self._frame

    def stop(self) -> None:
        """Ask the capture thread to end; it releases the capture itself."""
        self._stopped = True
        self._thread.join(timeout=10)
