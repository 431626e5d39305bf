"""Streaming translation: frames in, translated frames out, in order, pipelined.

    for out in translator.stream("clip.mp4"):      # or a camera index, a URL, any iterable
        ...

A decode thread reads the source into a bounded queue while translation runs in worker
threads (the model releases the GIL), so decoding overlaps inference as in ``cyclegan-run``;
on a GPU two batches are in flight, so one is copied and prepared while the other computes. The
generator owns the thread and the source: when the consumer stops iterating (``break``,
``close()``, garbage collection) or anything fails, the thread is stopped and the source closed.
A failure reaches the consumer as a :class:`StreamError` naming the source.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import cv2
import numpy as np

from runtime.media.sources import InputError, open_video, video_frames
from runtime.media.temporal import TemporalStabilizer
from runtime.reasons import typed_first_line, why_no_file

if TYPE_CHECKING:
    from runtime.translator import Translator

T = TypeVar("T")

_POLL_S = 0.1  # blocking queue operations wake this often to check for a stop
# While a batch is in flight, waiting for input wakes this often to see whether it is done: a
# finished frame is yielded at once, not after the next batch has been read (a source that
# waits for a result before giving its next frame would otherwise never get one).
_IN_FLIGHT_POLL_S = 0.005
_WAITING = object()  # get(): a result is ready while no input had come
_STREAM_SERIALS = itertools.count(1)  # names each stream's worker threads apart
# Closing a stream waits this long for its decode thread to close the source: a source stuck
# in a read is closed by that thread when the read returns, not by the consumer's close().
CLOSE_WAIT_S = 1.0


class StreamError(InputError):
    """A source that failed while streaming (it could not be opened or read, or the model
    failed on its frames); ``path`` names the source, ``reason`` says why."""


class StreamWarning(UserWarning):
    """A video source gave fewer frames than it announces, or skipped undecodable packets."""


class _Ended(Generic[T]):
    """The decode thread's last item: the end of the source, with its error (if any)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error



def open_source(source: Any, *, model_on_cpu: bool = True, color_order: str = "BGR",
                ) -> tuple[Iterator[np.ndarray], Callable[[], None], str]:
    """``source`` -> (frames, close, name). Frames are HWC uint8 numpy arrays in
    ``color_order`` ("BGR" or "RGB"). ``model_on_cpu``: whether the model the frames are for
    runs on the CPU (a video file's decoder threads: :func:`runtime.media.video.codec_threads`).

    A video file path (str or any ``os.PathLike``) is decoded with PyAV (upright, as
    ``cyclegan-run``); an ``int`` is a camera index and a string with ``://`` a stream URL
    (OpenCV, as live mode); the frames these decoders give are converted to ``color_order``.
    An ``(N, H, W, 3)`` array gives its N frames; anything else iterable is taken as it is, in
    the caller's channel order, each numpy frame copied as it is read (a camera API that
    refills one buffer would otherwise change frames waiting in the queue); ``close`` then
    closes the caller's iterator (its ``close()``, if it has one). Raises
    :class:`StreamError` when the source cannot be opened, or is one image (an array of
    another rank: iterating it would give rows).
    """
    if isinstance(source, np.ndarray):
        if source.ndim != 4:
            raise StreamError("frames", f"an array of shape {source.shape} is not a sequence of "
                              "frames; give (N, H, W, 3) frames, or translate one image")
        return iter(source), (lambda: None), "frames"
    if isinstance(source, (bool, np.bool_)):
        raise StreamError(repr(source), "not a video path, camera index, URL or iterable of "
                          "frames")
    if isinstance(source, (int, np.integer)) and source < 0:
        # OpenCV's "any camera" index -1 crashes some builds outright (SIGSEGV)
        raise StreamError(str(source), "a camera index is 0 or more")
    if isinstance(source, (int, np.integer)) or (isinstance(source, str) and "://" in source):
        source = int(source) if isinstance(source, np.integer) else source
        try:
            capture, info = open_video(source)
        except InputError as err:
            raise StreamError(err.path, err.reason) from None
        frames = _capture_images(capture, str(source), info.frame_count)
        return _in_order(frames, color_order), capture.release, str(source)
    if isinstance(source, (str, os.PathLike)):
        from runtime.media.video import VideoReader

        path = Path(os.fsdecode(source))
        if not path.is_file():
            raise StreamError(path, why_no_file(path))
        try:
            reader = VideoReader(path, model_on_cpu=model_on_cpu)
        except InputError as err:
            raise StreamError(err.path, err.reason) from None
        return _in_order(_video_images(reader), color_order), reader.close, str(path)
    try:
        iterator = iter(source)
    except TypeError:
        raise StreamError(repr(source)[:60], "not a video path, camera index, URL or "
                          "iterable of frames") from None
    close = getattr(iterator, "close", None)
    # The copies are read by the pipeline's reader, which closes them (a generator); the
    # caller's iterator is closed once, as the source.
    return _copies(iterator), (close if callable(close) else (lambda: None)), "frames"


def _copies(frames: Iterator[Any]) -> Iterator[Any]:
    """Each numpy frame of ``frames`` copied; anything else as it is."""
    for frame in frames:
        yield frame.copy() if isinstance(frame, np.ndarray) else frame


def _in_order(frames: Iterator[np.ndarray], color_order: str) -> Iterator[np.ndarray]:
    """Decoded BGR ``frames`` in ``color_order``."""
    if color_order == "BGR":
        yield from frames
        return
    for frame in frames:
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def pipelined(translator: Translator, items: Iterable[T], image_of: Callable[[T], np.ndarray],
              *, name: str = "frames", batch_size: int = 1, temporal: bool = False,
              queue_size: int = 8, in_flight: int | None = None,
              close_source: Callable[[], None] | None = None, color_order: str = "BGR",
              ) -> Generator[tuple[T, np.ndarray], None, None]:
    """Yield ``(item, translated image)`` for every item of ``items``, in order.

    ``items`` is read in a daemon thread into a queue of ``queue_size``; ``batch_size`` items
    are translated together (:meth:`Translator.translate_batch`), ``in_flight`` batches at a
    time in worker threads (default: the translator's :attr:`~Translator.in_flight`, 2 on a
    GPU, 1 on a CPU); ``temporal``: each output passes a :class:`TemporalStabilizer`, in
    order; ``color_order``: the images' channel order, kept in the outputs. Errors in reading
    or translating raise :class:`StreamError` naming ``name`` (and the frames, counted from
    0, that failed); a ``KeyboardInterrupt`` or ``SystemExit`` from the items arrives as it is.
    Closing the generator stops the threads; the decode thread closes the items' iterator
    (a generator's ``close()``) when it stops reading. Without ``close_source`` the threads
    are joined before the generator returns, so the caller may close the items' source
    afterwards. With it, the decode thread then calls it too (at the end, on an error or on a
    stop, once this generator has started: one closed before its first item never touches
    the source), and closing waits at most :data:`CLOSE_WAIT_S` for that: a source stuck in
    a read (a stalled camera or network stream) is closed as soon as the read returns,
    without holding up the consumer.
    """
    stop = threading.Event()
    buffer: queue.Queue[Any] = queue.Queue(max(1, queue_size))
    given = [0]  # items the reader took from the source (its thread counts, this one reads)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        error: BaseException | None = None
        iterator: Iterator[T] | None = None
        try:
            iterator = iter(items)
            for item in iterator:
                if not put(item):
                    return  # stopped: nobody waits for the end marker
                given[0] += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            error = exc
        finally:
            # The items' generator first (a decoder's, stopped early: closed here, not later
            # by the garbage collector on another thread), then their source.
            for close in (getattr(iterator, "close", None), close_source):
                try:
                    if callable(close):
                        close()
                except BaseException as exc:  # noqa: BLE001 - as a read error
                    error = error or exc
        put(_Ended(error))

    def get(ready: Callable[[], bool] | None = None) -> Any:
        """The next item; :data:`_WAITING` as soon as ``ready()`` holds while none has come."""
        while True:
            try:
                return buffer.get(timeout=_POLL_S if ready is None else _IN_FLIGHT_POLL_S)
            except queue.Empty:
                if ready is not None and ready():
                    return _WAITING
                if not thread.is_alive() and buffer.empty():
                    return _Ended(RuntimeError("the reader thread ended without a word"))

    def next_batch(ready: Callable[[], bool] | None) -> tuple[list[T], _Ended[T] | None]:
        """Up to ``size`` items (fewer when the source ends, or when ``ready()`` holds while
        waiting for one) and the end marker, if reached."""
        batch: list[T] = []
        while len(batch) < size:
            item = get(ready)
            if item is _WAITING:
                return batch, None
            if isinstance(item, _Ended):
                return batch, item
            batch.append(item)
        return batch, None

    def translate(batch: list[T]) -> list[np.ndarray]:
        return list(translator.translate_batch([image_of(item) for item in batch],
                                               color_order=color_order))

    thread = threading.Thread(target=read, name=f"stream-decode[{name}]", daemon=True)
    # This stream's own worker threads, told apart from other streams' by a serial number
    # (ThreadPoolExecutor names them PREFIX_N).
    worker_prefix = f"stream-model[{name}]#{next(_STREAM_SERIALS)}_"
    stabilizer = TemporalStabilizer(color_order=color_order) if temporal else None
    size = max(1, batch_size)
    depth = max(1, in_flight if in_flight is not None else translator.in_flight)
    workers = ThreadPoolExecutor(depth, thread_name_prefix=worker_prefix[:-1])
    # (first frame's index, items, their translation)
    pending: deque[tuple[int, list[T], Future[list[np.ndarray]]]] = deque()
    read_count = 0
    try:
        thread.start()
        ended: _Ended[T] | None = None
        while True:
            while ended is None and len(pending) < depth:
                oldest_done = pending[0][2].done if pending else None
                batch, ended = next_batch(oldest_done)
                if batch:
                    pending.append((read_count, batch,
                                    submit(workers, depth, translate, batch)))
                    read_count += len(batch)
                if oldest_done is not None and oldest_done():
                    break  # yield the finished frames before waiting for more input
            if not pending:
                break
            first, batch, future = pending.popleft()
            try:
                outputs = future.result()
            except Exception as exc:  # noqa: BLE001 - re-raised naming the source
                frames = (f"frame {first}" if len(batch) == 1
                          else f"frames {first}-{first + len(batch) - 1}")
                raise StreamError(name, f"{frames}: translation failed "
                                        f"({typed_first_line(exc)})") from exc
            for item, out in zip(batch, outputs, strict=True):
                if stabilizer is not None:
                    out = _stabilised(stabilizer, image_of(item), out, name)
                yield item, out
        assert ended is not None
        if ended.error is not None:
            error = ended.error
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: not a read
                raise error                        # error, and no `except Exception` of the app's
            if isinstance(error, InputError):
                raise StreamError(error.path, error.reason) from error
            raise StreamError(name, f"cannot read after frame {given[0] - 1} "
                                    f"({typed_first_line(error)})" if given[0] else
                              f"cannot read ({typed_first_line(error)})") from error
    finally:
        stop.set()
        for _, _, future in pending:
            future.cancel()
        # The garbage collector may close this generator on one of its own threads (a stream
        # in a reference cycle): that thread cannot wait for itself.
        here = threading.current_thread()
        own = here is thread or here.name.startswith(worker_prefix)
        workers.shutdown(wait=not own)  # a batch being translated finishes; none starts
        if thread.ident is None:  # never started: the source is still ours to close
            if close_source is not None:
                close_source()
        elif not own:
            thread.join(None if close_source is None else CLOSE_WAIT_S)


def _stabilised(stabilizer: TemporalStabilizer, frame: Any, out: Any, name: str) -> np.ndarray:
    """``stabilizer(frame, out)``; a frame it cannot take raises :class:`StreamError`."""
    if not isinstance(frame, np.ndarray) or not isinstance(out, np.ndarray):
        raise StreamError(name, "temporal=True takes numpy frames ((H, W, 3) uint8), not "
                                f"{type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise StreamError(name, "temporal=True takes (H, W, 3) uint8 frames, not "
                                f"{frame.dtype} of shape {frame.shape}")
    return stabilizer(frame, out)


def submit(pool: ThreadPoolExecutor, depth: int, function: Callable[..., T],
           *args: Any) -> Future[T]:
    """``pool.submit(function, *args)``, or with ``depth`` 1 (nothing to overlap: a model on the
    CPU) a call in this thread, as a finished future: no hop to a worker thread per batch."""
    if depth > 1:
        return pool.submit(function, *args)
    done: Future[T] = Future()
    try:
        done.set_result(function(*args))
    except Exception as exc:  # noqa: BLE001 - delivered through the future, as from a pool
        done.set_exception(exc)
    return done


def stream(translator: Translator, source: Any, *, temporal: bool = False, batch_size: int = 1,
           queue_size: int = 8, in_flight: int | None = None, color_order: str = "BGR",
           ) -> Generator[np.ndarray, None, None]:
    """Translated frames of ``source`` (see :func:`open_source`), in order: HWC uint8 in
    ``color_order`` ("BGR" or "RGB": the order of the frames given, and of those returned;
    decoded videos, cameras and URLs are converted to it), each the size of its input.

    The source is closed when the frames run out, on an error, or when the consumer closes
    the generator early; a source stuck in a read then is closed when that read returns, and
    ``close()`` waits for it at most :data:`CLOSE_WAIT_S`.
    """
    frames, close, name = open_source(source, model_on_cpu=translator.on_cpu,
                                      color_order=color_order)
    with contextlib.closing(pipelined(translator, frames, _identity, name=name,
                                      batch_size=batch_size, temporal=temporal,
                                      queue_size=queue_size, in_flight=in_flight,
                                      close_source=close, color_order=color_order)) as outputs:
        for _, out in outputs:
            yield out


def _capture_images(capture: Any, name: str, announced: int) -> Iterator[np.ndarray]:
    """The frames of an OpenCV capture (a camera or a URL). One that opened but gives no frame
    raises (OpenCV would just end); one that ends well short of the frames it announces (a
    URL of a file whose connection dropped) is a :class:`StreamWarning`."""
    count = 0
    for frame in video_frames(capture):
        count += 1
        yield frame
    if count == 0:
        raise InputError(name, "opened, but gave no frame (the stream ended or could not be "
                         "read)")
    if announced > 0 and count < announced - 1:  # the count may be an estimate: off by one
        warnings.warn(f"{name}: ended after {count} of the {announced} frames it announces "
                      "(the connection dropped?)", StreamWarning, stacklevel=2)


def _video_images(reader: Any) -> Iterator[np.ndarray]:
    """The pictures of a :class:`~runtime.media.video.VideoReader`; a container that breaks
    off, or gives no picture at all, raises (after the frames it gave) instead of ending
    quietly; frames that went missing on the way are a :class:`StreamWarning`."""
    count = 0
    for frame in reader.frames():
        count += 1
        yield frame.image
    if reader.error:
        raise InputError(reader.path, reader.error)
    if count == 0:
        raise InputError(reader.path, "no frame could be decoded (damaged?)")
    for line in reader.shortfalls(count):
        warnings.warn(line, StreamWarning, stacklevel=2)


def _identity(image: np.ndarray) -> np.ndarray:
    return image
