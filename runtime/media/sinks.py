"""Frame sinks: image files written atomically, the rules every output follows, and a preview
window (videos: :mod:`runtime.media.video`, on the same rules).

Every file appears under its final name only when complete: it is written to a hidden temp file
in the same folder (``.NAME.<pid>-<random>.part[.ext]``, see :func:`temp_path`), checked, then
renamed. An interrupted run leaves only complete outputs; a run killed outright (SIGKILL,
power loss) may leave temp files, which :func:`remove_stale_parts` clears at the next start.
While a temp file is written, its writer holds an advisory lock on it (``flock``), which tells
a live writer in another container or PID namespace, whose pid means nothing here, from a dead
one.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from runtime.media.sources import IMAGE_EXTENSIONS

try:
    import fcntl
except ImportError:  # Windows: no flock; a temp file's pid alone tells whether it is stale
    fcntl = None  # type: ignore[assignment]

# Video extension -> (FFmpeg container, default codec of :data:`runtime.media.video.VIDEO_CODECS`).
# H.264 plays in every browser and phone; WebM holds only VP8/VP9/AV1; AVI keeps Motion JPEG,
# as it cannot carry the timestamps that H.264's reordered frames need.
VIDEO_CONTAINERS = {".mp4": ("mp4", "h264"), ".m4v": ("mp4", "h264"), ".mov": ("mov", "h264"),
                    ".mkv": ("matroska", "h264"), ".webm": ("webm", "vp9"),
                    ".avi": ("avi", "mjpeg")}
VIDEO_WRITE_EXTENSIONS = frozenset(VIDEO_CONTAINERS)
# Image formats that cannot hold a colour picture (OpenCV writes them from gray only) or that
# this OpenCV build cannot encode: their outputs are written as PNG under "NAME.EXT.png".
_GRAY_ONLY_FORMATS = frozenset({".pgm", ".pbm"})
# Animated images: written frame by frame with OpenCV's animation codecs.
ANIMATION_EXTENSIONS = frozenset({".gif", ".webp", ".png"})
# What outputs are named: their temp files carry these names (see _our_temp_name).
_OUTPUT_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_WRITE_EXTENSIONS | ANIMATION_EXTENSIONS

# Our temp files: ".NAME.<pid>-<random>.part" plus, for videos, the container's extension;
# <random> is tempfile.mkstemp's (8 of a-z, 0-9, _). NAME is an output's name, so it ends in
# a media extension (checked by _our_temp_name) unless it was cut to fit the 255-byte limit.
_PART_PATTERN = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>\d+)-[a-z0-9_]{8}\.part(?P<suffix>\.[A-Za-z0-9]+)?$")
# The same without the pid, as versions before 0.2 named them (".photo.jpg.k3j9x0qa.part",
# ".clip.mp4.k3j9x0qa.part.mp4"): only for names of the media we write, so that a user's
# ".thesis.chapter1.part.docx" is never taken for one. Stale once older than this.
_LEGACY_PART_PATTERN = re.compile(
    r"^\..+(?P<ext>\.(?:jpe?g|png|bmp|webp|tiff?|gif|mp4|m4v|mov|mkv|webm|avi))"
    r"\.[A-Za-z0-9_]{8}\.part(?:(?P=ext))?$", re.IGNORECASE)
LEGACY_PART_MAX_AGE_S = 3600.0
# An unlocked temp file whose pid is alive: a dead writer whose pid was reused (or is 1, as in
# containers), or a live writer of a version before the locks, which keeps the file's time
# fresh. Stale once untouched for this long.
UNLOCKED_PART_MAX_AGE_S = 600.0
# Where locks cannot be taken (Windows, NFS without lock support), a temp file whose pid is
# gone here may be a live writer's on another host or in another container: spared while this
# fresh.
NO_LOCKS_MIN_AGE_S = 60.0
# The locks this process holds on the temp files it writes: path -> file descriptor.
_HELD: dict[str, int] = {}
_HELD_GUARD = threading.Lock()
# Held while a temp file is created and locked, so that a scan in this process never sees
# one of its own between the two.
_CREATING = threading.Lock()
# Writers of an output call this just before its rename (size and time as the output will
# have them), to record it as theirs: see runtime.media.manifest.
Claim = Callable[[Path, os.stat_result], None]
_NAME_MAX = 255  # bytes in a file name: ext4, XFS, btrfs, APFS, NTFS (in UTF-16 units)


class OutputWriteError(OSError):
    """An output could not be written completely; the message names the user's path."""


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe, and
# images are written from several threads.
_UMASK = _read_umask()


def _current_umask() -> int:
    return _UMASK


def image_output_path(path: Path) -> Path:
    """The name an image output for ``path`` is actually written under.

    ``path`` itself when OpenCV can encode a colour picture in its format, else ``NAME.EXT.png``
    (e.g. ``.pgm``, ``.exr`` here). The output planner uses this, so collisions and
    overwrites are judged on the final name.
    """
    ext = path.suffix.lower()
    if not ext:
        return path.with_name(path.name + ".png")
    if ext in _GRAY_ONLY_FORMATS or not cv2.haveImageWriter("x" + ext):
        return path.with_name(path.name + ".png")
    return path


def temp_path(path: Path, keep_suffix: bool = False) -> Path:
    """A new, empty temp file next to ``path`` in our naming (see the module docstring).

    ``keep_suffix``: end the name with ``path``'s extension (video writers pick the container
    from it). Raises :class:`OutputWriteError` naming ``path`` when the folder is not writable.
    """
    suffix = ".part" + (path.suffix.lower() if keep_suffix else "")
    # A name near the file system's limit (255 bytes) is legal; its temp name must fit too, so
    # the temp name keeps only as much of it as fits (the rename restores the whole name).
    room = _NAME_MAX - len(f"..{os.getpid()}-{'x' * 8}{suffix}".encode())
    name = path.name.encode()[:room].decode(errors="ignore")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _CREATING:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}-", suffix=suffix,
                                       dir=path.parent)
            _hold(fd, tmp)
    except OSError as exc:
        raise OutputWriteError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    return Path(tmp)


def _hold(fd: int, tmp: str) -> None:
    """Keep ``fd`` open with an exclusive lock on the temp file until :func:`publish` or
    :func:`discard` (a file system without locks: closed, the pid tells). Blocking: a scan
    that is testing the lock holds it only for a moment."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with _HELD_GUARD:
                _HELD[os.path.abspath(tmp)] = fd
            return
        except OSError:
            pass  # ENOLCK, EOPNOTSUPP...: no locks on this file system
    os.close(fd)


def _release(tmp: Path) -> None:
    with _HELD_GUARD:
        fd = _HELD.pop(os.path.abspath(tmp), None)
    if fd is not None:
        os.close(fd)


def publish(tmp: Path, path: Path, claim: Claim | None = None) -> None:
    """Give ``tmp`` the usual permissions and rename it to ``path`` (atomic on one file
    system); ``claim(path, stat)`` first records it as ours, from the temp file's stat."""
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())
        if claim is not None:
            try:
                claim(path, os.stat(tmp))
            except OSError as exc:
                where = f" {exc.filename}" if exc.filename else ""
                raise OutputWriteError(f"{path}: not written: the record of what this tool "
                                       f"wrote there{where} cannot be updated "
                                       f"({exc.strerror or exc})") from None
        os.replace(tmp, path)
    finally:
        _release(tmp)


def discard(tmp: Path) -> None:
    """Delete the temp file ``tmp`` of a write that failed or was abandoned."""
    try:
        tmp.unlink(missing_ok=True)
    finally:
        _release(tmp)


def write_bytes_atomic(path: Path, data: bytes, claim: Claim | None = None) -> Path:
    """Write ``data`` to ``path`` through a temp file; a failed write leaves nothing behind.
    ``claim``: see :func:`publish`."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        publish(tmp, path, claim)
    except OutputWriteError:
        discard(tmp)
        raise
    except OSError as exc:
        discard(tmp)
        raise OutputWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        discard(tmp)
        raise
    return path


def write_image_atomic(path: Path, image: np.ndarray, claim: Claim | None = None) -> Path:
    """Encode ``image`` (HWC BGR(A) uint8) in ``path``'s format and write it atomically.

    Formats OpenCV cannot encode in colour are written as PNG under
    :func:`image_output_path`'s name. Returns the path actually written.
    """
    path = image_output_path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix.lower(), image)
    except cv2.error:
        ok = False
    if not ok:
        raise OutputWriteError(f"{path}: cannot encode the image as {path.suffix}")
    return write_bytes_atomic(path, encoded.tobytes(), claim)


def write_animation_atomic(path: Path, frames: list[np.ndarray], durations_ms: list[int],
                           loop_count: int = 0, claim: Claim | None = None) -> Path:
    """Write an animated GIF/WebP/PNG (``frames``: HWC BGR(A) uint8) atomically."""
    animation = cv2.Animation()
    animation.frames = frames
    animation.durations = [int(d) for d in durations_ms]
    animation.loop_count = loop_count
    try:
        ok, encoded = cv2.imencodeanimation(path.suffix.lower(), animation)
    except cv2.error:
        ok = False
    if not ok:
        raise OutputWriteError(f"{path}: cannot encode an animation as {path.suffix}")
    return write_bytes_atomic(path, np.asarray(encoded).tobytes(), claim)


def remove_stale_parts(folders: Iterable[Path], recursive: bool = False) -> list[Path]:
    """Delete temp files of our own naming that no running process is writing.

    A temp file being written is locked by its writer (see the module docstring) and is never
    touched, nor is one this process is writing. An unlocked one is stale when
    its writer's pid (in its name) is gone or is this process's own, or once untouched for
    :data:`UNLOCKED_PART_MAX_AGE_S` (its pid alive: reused, or a writer of a version before the
    locks). Where locks cannot be taken, a gone pid counts once the file is
    :data:`NO_LOCKS_MIN_AGE_S` old. Names without a pid (older versions) are stale after
    :data:`LEGACY_PART_MAX_AGE_S`. Only regular files of our naming are touched. Returns the
    files removed.
    """
    removed: list[Path] = []
    now = time.time()
    for folder in folders:
        if not folder.is_dir():
            continue
        candidates = folder.rglob(".*.part*") if recursive else folder.glob(".*.part*")
        for path in candidates:
            try:
                if _stale(path, now):
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue  # gone meanwhile, or not ours to delete
    return removed


def _stale(path: Path, now: float) -> bool:
    """Is ``path`` a temp file of our naming that nobody writes any more?"""
    match = _PART_PATTERN.match(path.name)
    legacy = match is None and _LEGACY_PART_PATTERN.match(path.name) is not None
    if not legacy and not (match and _our_temp_name(path.name, match)):
        return False
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):  # a link, a pipe: never ours, never opened
        return False
    age = now - info.st_mtime
    lock = _lock_state(path)
    if lock == "held":
        return False
    if legacy:
        return age > LEGACY_PART_MAX_AGE_S
    assert match is not None
    pid = int(match["pid"])
    if age > UNLOCKED_PART_MAX_AGE_S:
        return True
    if pid == os.getpid():
        with _CREATING:  # not one this process is creating and about to lock
            with _HELD_GUARD:
                if os.path.abspath(path) in _HELD:
                    return False
    if lock == "free":  # this version writes nothing unlocked
        return pid == os.getpid() or not process_alive(pid)
    return age > NO_LOCKS_MIN_AGE_S and not process_alive(pid)


def _our_temp_name(name: str, match: re.Match[str]) -> bool:
    """Does ``name``, which matches :data:`_PART_PATTERN`, have what :func:`temp_path` gives
    an output: a media name (image, animation or video), a video's own extension after
    ``.part``, or a name cut to fit the file-name limit?"""
    if len(name.encode()) >= _NAME_MAX - 3:  # cut to fit (a UTF-8 char may have gone too)
        return True
    extension = Path(match["name"]).suffix.lower()
    suffix = (match["suffix"] or "").lower()
    return extension in _OUTPUT_EXTENSIONS and suffix in ("", extension)


def _lock_state(path: Path) -> str:
    """"held" when a writer holds ``path`` locked, "free" when nobody does, "unknown" where
    locks cannot be taken (Windows, some network file systems). The test takes a shared lock,
    which a read-only descriptor may hold on NFS too, and which a writer's exclusive one
    refuses."""
    if fcntl is None:
        return "unknown"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return "unknown"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return "free"
    except BlockingIOError:
        return "held"
    except OSError:
        return "unknown"
    finally:
        os.close(fd)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists here. On Windows always True: there ``os.kill(pid, 0)``
    would send CTRL_C_EVENT, so only a temp file's age can tell."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, belongs to someone else (EPERM)
    return True


def side_by_side(original: np.ndarray, translated: np.ndarray) -> np.ndarray:
    """``original | translated`` as one BGR image (alpha dropped, gray expanded)."""
    def as_bgr(image: np.ndarray) -> np.ndarray:
        if image.dtype == np.uint16:
            image = (image // 257).astype(np.uint8)
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.shape[2] == 4:
            return image[:, :, :3]
        return image

    return np.ascontiguousarray(np.hstack([as_bgr(original), as_bgr(translated)]))


def draw_fps(frame: np.ndarray, fps: float, label: str = "") -> np.ndarray:
    """Write ``"12.3 FPS label"`` in the top-left corner (on a copy)."""
    frame = frame.copy()
    text = f"{fps:5.1f} FPS {label}".rstrip()
    cv2.putText(frame, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(frame, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2,
                cv2.LINE_AA)
    return frame
