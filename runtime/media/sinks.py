"""Frame sinks: image files and videos written atomically, and a preview window.

Every file appears under its final name only when complete (written to a hidden temp file in
the same folder, then renamed), so an interrupted run leaves no half-written outputs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

# Containers -> codec OpenCV's bundled FFmpeg can write without extra licences.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe, and
# images are written from several threads.
_UMASK = _read_umask()


def _current_umask() -> int:
    return _UMASK


def write_image_atomic(path: Path, image: np.ndarray) -> Path:
    """Encode ``image`` (HWC BGR(A) uint8) in ``path``'s format and write it atomically.

    Formats OpenCV cannot encode here (e.g. ``.gif``) are written as PNG (``name.gif.png``).
    Returns the path actually written.
    """
    ext = path.suffix.lower() or ".png"
    try:
        ok, encoded = cv2.imencode(ext, image)
    except cv2.error:
        ok = False
    if not ok:
        # e.g. .gif, or a gray-only format such as .pgm: keep the name, add .png (a distinct
        # name, so it cannot overwrite another input's output).
        path = path.with_name(path.name + ".png")
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise OSError(f"cannot encode image for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encoded.tobytes())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class AtomicVideoWriter:
    """``cv2.VideoWriter`` into a temp file; :meth:`commit` renames it into place.

    :meth:`abort` (or leaving a ``with`` block by an exception) deletes the partial file.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        fourcc = cv2.VideoWriter.fourcc(*FOURCC.get(suffix, "mp4v"))
        # The temp name keeps the extension: OpenCV picks the container from it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{suffix}",
                                   dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.size = size
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps, size)
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise OSError(f"{path}: cannot open a video writer for {suffix or 'this'} files")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame of {frame.shape[1]}x{frame.shape[0]} in a "
                             f"{self.size[0]}x{self.size[1]} video")
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = frame[:, :, :3]
        self.writer.write(np.ascontiguousarray(frame))
        self.frames += 1

    def commit(self) -> Path:
        self.writer.release()
        os.chmod(self.tmp, 0o666 & ~_current_umask())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicVideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


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
