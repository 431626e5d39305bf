"""Video files in and out through PyAV (FFmpeg's own libraries, in a wheel).

Reading (:class:`VideoReader`): any file FFmpeg reads. Frames come out as HWC uint8 BGR, turned
upright when the stream carries a rotation (its display matrix, as phones write it), each with
its presentation timestamp, so variable frame rates survive. The packets of the other streams
(audio, subtitles) come out alongside, untouched, to be copied.

Writing (:class:`AtomicVideoWriter`): by extension, H.264 (yuv420p, BT.601 tags) in .mp4 / .m4v
/ .mov / .mkv (``+faststart`` for MP4: playable while it downloads), VP9 in .webm, Motion JPEG in
.avi; ``codec`` / ``crf`` choose otherwise (:data:`VIDEO_CODECS`). Frames are written with the
timestamps they are given (the source's), copied streams packet by packet (never re-encoded),
and the output is upright with no rotation flag. The file goes through a temp file next to the
target (:func:`runtime.media.sinks.temp_path`); :meth:`AtomicVideoWriter.commit` reads it back,
insists on every frame and copied packet, and only then renames it into place. Any write error
(a full disk) deletes the temp file and raises :class:`OutputWriteError` naming the user's path.

Cameras and network streams are read with OpenCV instead (:class:`runtime.media.sources.
LatestFrameGrabber`): see there why.
"""

from __future__ import annotations

import io
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from runtime.cpu import usable_cores
from runtime.media.sinks import (
    VIDEO_CONTAINERS,
    VIDEO_WRITE_EXTENSIONS,
    Claim,
    OutputWriteError,
    discard,
    publish,
    temp_path,
)
from runtime.media.sources import InputError


@dataclass(frozen=True)
class VideoCodec:
    """One ``--codec`` choice: the FFmpeg encoder, the codec's name in containers (what
    ``supported_codecs`` lists), its pixel format and its constant-quality scale."""

    encoder: str
    name: str
    pix_fmt: str
    crf_range: tuple[int, int]
    default_crf: int
    options: dict[str, str] = field(default_factory=dict)
    even_size: bool = True          # 4:2:0 encoders that refuse odd widths and heights
    codec_tag: str | None = None    # e.g. hvc1: the tag Apple players want for HEVC in MP4
    presets: tuple[str, ...] = ()   # the encoder's speed presets, fastest first (--preset)


# Speed presets are chosen so that encoding stays a few percent of a CPU model's time (x264
# veryfast at 640x480: ~11 ms/frame on one core here); CRF 20 / 32 look clean on translated
# video. MJPEG (AVI) takes a JPEG quantiser (2 best .. 31) in place of a CRF. --preset trades
# size for speed where the encoder bounds a run (a fast accelerator on few cores): x264
# ultrafast at 1280x720 took a third of veryfast's CPU here, for files 3.7-4.6x bigger at the
# same CRF (the README's pipeline ceiling).
_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                 "slower", "veryslow", "placebo")
VIDEO_CODECS: dict[str, VideoCodec] = {
    "h264": VideoCodec("libx264", "h264", "yuv420p", (0, 51), 20, {"preset": "veryfast"},
                       presets=_X26X_PRESETS),
    "h265": VideoCodec("libx265", "hevc", "yuv420p", (0, 51), 24,
                       {"preset": "veryfast", "x265-params": "log-level=error"},
                       codec_tag="hvc1", presets=_X26X_PRESETS),
    "vp9": VideoCodec("libvpx-vp9", "vp9", "yuv420p", (0, 63), 32,
                      {"b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"},
                      even_size=False),
    # SVT-AV1's presets are numbers, 13 the fastest (SVT-AV1 4, in PyAV 18's wheel, runs 12
    # and 13 as 11; older versions do not).
    "av1": VideoCodec("libsvtav1", "av1", "yuv420p", (0, 63), 35, {"preset": "10"},
                      presets=tuple(str(n) for n in range(13, -1, -1))),
    "mjpeg": VideoCodec("mjpeg", "mjpeg", "yuvj420p", (2, 31), 3, even_size=False),
}
_FASTSTART_FORMATS = frozenset({"mp4", "mov"})
_CFR_FORMATS = frozenset({"avi"})  # one tick per frame: source timestamps cannot be kept
_COPIED_KINDS = ("audio", "subtitle")
_AVCOL_BT709 = 1      # AVColorPrimaries / AVColorTransferCharacteristic BT.709 (as sRGB's)
_AVCOL_RANGE_MPEG = 1  # limited ("TV") range
_AVCOL_SMPTE170M = 6  # AVColorSpace BT.601 (525-line), the matrix of OpenCV's I420 conversion
# swscale flags where swscale converts RGB -> YUV (odd sizes, JPEG range): rounded, not
# truncated, so a flat colour survives within a level where the defaults drift by 2-3. Decoding
# keeps swscale's defaults: with ACCURATE_RND it shifts chroma at sharp colour edges (7.5 mean
# error on ffmpeg's testsrc2 against 1.3), and a file should read as ffmpeg reads it.
_SWS_FLAGS = int(Interpolation.BICUBIC) | int(Interpolation.ACCURATE_RND)


def codec_threads(model_on_cpu: bool = True) -> int:
    """Threads for FFmpeg's decoders and encoders.

    Model on the CPU: a quarter of the usable cores, at least one. The model owns the cores;
    FFmpeg's default (all of them, and more for x264) makes its threads preempt the model's
    mid-layer, where the model's other threads then wait. On this project's 2-core machine, one
    thread each cut the video path's CPU time from 1.09-1.12x to 1.01-1.03x the model's own at
    256x256.

    Model elsewhere (a GPU, or the ceiling's null backend that stands for one): every usable
    core, as the codecs are then what bounds a video. x264 veryfast at 1280x720 takes 22-30 ms a
    frame on one core of this machine, more than decoding (5-6 ms) and the runtime's own work
    together (see the README's pipeline ceiling).
    """
    usable = usable_cores()
    # Off the CPU at most 16: FFmpeg warns above that, and each frame thread holds a frame.
    return max(1, usable // 4) if model_on_cpu else min(usable, 16)


def _set_threads(context: av.codec.context.CodecContext, model_on_cpu: bool) -> None:
    """Give a decoder or encoder :func:`codec_threads`; with the model off the CPU, frame
    threads as well as slice threads (FFmpeg's own default; PyAV's is slices alone).

    Slices alone gain little on the one-slice frames x264 writes by default (decoding at
    1280x720: 6.1 ms a frame with one thread, 5.0 with two slice threads, 2.7 with two frame
    threads), and x264 encoding in slices made the file 7.5 % bigger at the same CPU time (1.23
    against 1.15 MB, 60 frames at crf 20). With the model on the CPU, slices stay: frame threads
    cost more CPU per frame on cores shared with the model (0.96 against 0.79 ms at 256x256).
    """
    context.thread_count = codec_threads(model_on_cpu)
    if not model_on_cpu:
        context.thread_type = "AUTO"


class VideoCodecError(ValueError):
    """A --codec / --crf / --preset that the output cannot take; the message names the path
    or the option (exit 2)."""


# Other names people give the codecs (FFmpeg's own among them).
_CODEC_ALIASES = {"hevc": "h265", "avc": "h264", "x264": "h264", "x265": "h265",
                  "libx264": "h264", "libx265": "h265", "vp09": "vp9", "libvpx-vp9": "vp9",
                  "libsvtav1": "av1", "mjpg": "mjpeg"}


def choose_codec(path: Path, codec: str | None = None, crf: int | None = None,
                 preset: str | None = None) -> tuple[VideoCodec, int]:
    """The encoder and CRF for a video written to ``path`` (by extension, unless ``codec``);
    the returned codec carries ``preset`` (None: its default, e.g. x264's veryfast).

    Raises :class:`VideoCodecError` for an extension that cannot be written, an unknown codec,
    one this PyAV build lacks, one the container cannot hold, a CRF outside its scale, or a
    preset the encoder does not have.
    """
    suffix = path.suffix.lower()
    if suffix not in VIDEO_CONTAINERS:
        raise VideoCodecError(f"{path}: cannot write {suffix or 'extension-less'} videos "
                              f"(writable: {', '.join(sorted(VIDEO_WRITE_EXTENSIONS))})")
    container, default = VIDEO_CONTAINERS[suffix]
    name = (codec or default).lower()
    name = _CODEC_ALIASES.get(name, name)
    if name not in VIDEO_CODECS:
        raise VideoCodecError(f"--codec {codec}: unknown; choose one of "
                              f"{', '.join(sorted(VIDEO_CODECS))}")
    spec = VIDEO_CODECS[name]
    if spec.encoder not in av.codecs_available:
        raise VideoCodecError(f"--codec {name}: this PyAV build has no {spec.encoder} encoder")
    if spec.name not in _container_codecs(container):
        raise VideoCodecError(f"{path}: a {suffix} file cannot hold {name} video; use "
                              f"--codec {default} or another extension")
    low, high = spec.crf_range
    chosen = spec.default_crf if crf is None else crf
    if not low <= chosen <= high:
        raise VideoCodecError(f"--crf {crf}: {name} takes {low} (best) to {high}")
    if preset is not None:
        if not spec.presets:
            takes = ", ".join(sorted(n for n, c in VIDEO_CODECS.items() if c.presets))
            raise VideoCodecError(f"--preset {preset}: {name} has no speed presets (those "
                                  f"of {takes} do)")
        if preset.lower() not in spec.presets:
            raise VideoCodecError(f"--preset {preset}: {name} takes {', '.join(spec.presets)} "
                                  "(fastest first)")
        spec = replace(spec, options={**spec.options, "preset": preset.lower()})
    return spec, chosen


# FFmpeg's mov muxer lists VP9 and AV1 among its codecs but refuses to write them ("Invalid
# argument", found by writing every container with every codec); MP4 and MKV take them.
_UNWRITABLE = {"mov": frozenset({"vp9", "av1"})}


@cache
def _container_codecs(container: str) -> frozenset[str]:
    with av.open(os.devnull, "w", format=container) as probe:
        return frozenset(probe.supported_codecs) - _UNWRITABLE.get(container, frozenset())


def _header_refusal(container: str, stream: av.stream.Stream) -> str | None:
    """Why a ``container`` file cannot start with a copy of ``stream`` (None: it can). Muxers
    list codecs they then refuse in the header (FLAC, Opus or TrueHD in MOV: "Invalid
    argument"; TrueHD in MP4: "Experimental feature"), which would fail the whole video
    after it was translated: a header in memory finds out first."""
    try:
        with av.open(io.BytesIO(), "w", format=container) as probe:
            probe.add_stream_from_template(stream)
            probe.start_encoding()
    except (av.FFmpegError, ValueError, OSError) as exc:
        return _reason(exc)
    return None


def _rarely_played(codec: str, suffix: str) -> bool:
    """Audio the muxer writes but players commonly cannot read back: PCM in MP4 (an ISO
    "ipcm" track; Debian's FFmpeg 5.1 read 24-bit PCM there as 16-bit noise and float PCM not
    at all) and FLAC in AVI (no standard tag; the same FFmpeg failed on every packet)."""
    return (suffix == ".mp4" and codec.startswith("pcm_")) or (suffix == ".avi"
                                                               and codec == "flac")


def codec_name(stream: av.stream.Stream) -> str:
    """The format's name of a stream's codec ("mp3"), not its decoder's ("mp3float")."""
    context = stream.codec_context
    if context is None:
        return "unknown codec"
    codec = context.codec
    return str(getattr(codec, "canonical_name", None) or codec.name)


# Tags not carried to the output: what the muxer writes itself (Matroska's statistics, MP4's
# brands), what re-encoding makes wrong (encoder, bitrate, duration, frame counts) and the
# rotation (the frames are written upright).
_DROPPED_TAGS = frozenset({"encoder", "rotate", "duration", "number_of_frames",
                           "number_of_bytes", "bps", "major_brand", "minor_version",
                           "compatible_brands"})


def kept_tags(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` (a container's or a stream's metadata) less :data:`_DROPPED_TAGS`, in any
    language (Matroska's statistics come as ``BPS-eng``, ``DURATION-eng``...)."""
    return {key: value for key, value in tags.items()
            if key.lower().split("-", 1)[0] not in _DROPPED_TAGS
            and not key.lower().startswith("_statistics")}


# ---- reading ----------------------------------------------------------------------------------

@dataclass
class DecodedFrame:
    """One picture of a video: ``image`` HWC uint8 BGR, upright; ``pts`` its presentation time
    in units of ``time_base`` (None when the file has none); ``packets``: packets of the copied
    streams that the file holds before this picture, to be written before it."""

    image: np.ndarray
    pts: int | None
    time_base: Fraction
    packets: list[av.Packet] = field(default_factory=list)


@dataclass(frozen=True)
class VideoFileInfo:
    """What the container says about its first video stream (sizes as stored, before any
    rotation; ``frame_count`` 0 when the container does not say, e.g. Matroska)."""

    width: int
    height: int
    fps: float
    frame_count: int
    time_base: Fraction
    duration: float | None  # seconds
    # whether ``duration`` is the video stream's own (else the container's: its longest
    # stream's, which a video shorter than its sound falls short of without loss)
    own_duration: bool = True


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        if path.stat().st_size == 0:
            raise InputError(path, "empty file")
        container = av.open(str(path), "r")
    except InputError:
        raise
    except OSError as exc:  # av's errors are OSError / ValueError subclasses
        raise InputError(path, f"cannot open as video ({_reason(exc)})") from None
    except (av.FFmpegError, ValueError) as exc:
        raise InputError(path, f"cannot open as video ({_reason(exc)})") from None
    if not _video_stream(container):
        container.close()
        raise InputError(path, "no video stream")
    return container


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The first video stream that is a picture sequence (not cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _info(stream: av.video.stream.VideoStream, container: av.container.InputContainer
          ) -> VideoFileInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    time_base = stream.time_base or Fraction(1, 90000)
    duration, own = None, True
    if (tagged := _tag_seconds(stream.metadata.get("DURATION"))) is not None:
        # Matroska's per-stream tag: the video's own end time (PyAV may give the segment's
        # duration, its longest stream's, as the stream's), less where it starts
        start = float(stream.start_time * time_base) if stream.start_time else 0.0
        duration = max(0.0, tagged - start)
    elif stream.duration is not None:
        duration = float(stream.duration * time_base)
    elif container.duration is not None:
        duration, own = container.duration / av.time_base, False
    count = stream.frames or 0
    return VideoFileInfo(stream.codec_context.width, stream.codec_context.height, fps or 30.0,
                         count, Fraction(time_base), duration, own)


def _tag_seconds(value: str | None) -> float | None:
    """``"HH:MM:SS.fraction"`` (Matroska's DURATION tag) in seconds; None if absent or not so."""
    try:
        hours, minutes, seconds = (value or "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def probe_video(path: Path) -> VideoFileInfo:
    """The container's account of ``path``'s video (no decoding); :class:`InputError` if it
    cannot be opened."""
    container = _open_input(path)
    try:
        stream = _video_stream(container)
        assert stream is not None
        return _info(stream, container)
    finally:
        container.close()


def rotation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Degrees counter-clockwise the picture must turn to be upright: 0, 90, 180 or 270.

    From the frame's display matrix (FFmpeg attaches the stream's to every frame), else the
    legacy ``rotate`` tag, which counts clockwise.
    """
    degrees = float(frame.rotation or 0)
    if not degrees:
        try:
            degrees = -float(stream.metadata.get("rotate", 0))
        except ValueError:
            degrees = 0.0
    return int(round(degrees / 90.0)) % 4 * 90


_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180,
           270: cv2.ROTATE_90_CLOCKWISE}


class VideoReader:
    """Decode a video file: upright BGR frames with their timestamps, and the packets of the
    streams worth copying (audio, subtitles), in file order.

    ``frames()`` can be iterated once (in any one thread); the copied streams' packets after
    the last picture are in :attr:`leftover` once it is exhausted. A packet that does not decode
    is skipped and counted (:attr:`corrupt_packets`); a container that breaks off ends the
    frames, with :attr:`error` saying why. Close it (or use ``with``) when done with the
    packets: they may refer to the container's streams. ``model_on_cpu``: whether the model
    that the frames are for runs on the CPU's cores (see :func:`codec_threads`).
    """

    def __init__(self, path: Path, *, model_on_cpu: bool = True) -> None:
        self.path = path
        self.container = _open_input(path)
        stream = _video_stream(self.container)
        assert stream is not None
        self.stream = stream
        _set_threads(self.stream.codec_context, model_on_cpu)
        self.info = _info(stream, self.container)
        self.copy_streams = [s for s in self.container.streams
                             if s.type in _COPIED_KINDS]
        # Other picture streams (a second camera angle): neither translated nor copied.
        self.other_video = [s.index for s in self.container.streams.video
                            if s is not stream and not
                            s.disposition & av.stream.Disposition.attached_pic]
        # Cover art (a picture stream marked attached): not carried over, and said so.
        self.cover_art = [s.index for s in self.container.streams.video
                          if s.disposition & av.stream.Disposition.attached_pic]
        # Streams of no kind that is copied (attachments such as fonts, data such as a
        # QuickTime timecode): left out, and said so.
        self.not_copied = [f"#{s.index} ({s.type})" for s in self.container.streams
                           if s.type not in ("video", *_COPIED_KINDS)]
        self.rotation = 0
        self.interlaced = False  # a picture came flagged interlaced
        self.corrupt_packets = 0
        self.leftover: list[av.Packet] = []
        self.error: str | None = None
        self._rotation_known = False
        # first and last picture times, seconds: what was read, against the container's duration
        self.span: tuple[float, float] | None = None
        # containers of one tick per frame (AVI): pictures numbered in display order
        self._numbered = (self.container.format.name in _CFR_FORMATS
                          and self.stream.time_base is not None and self.info.fps > 0
                          and abs(float(self.stream.time_base) * self.info.fps - 1) < 1e-6)
        self._decoded = 0
        self._slots = 0  # frame slots the AVI's own timing spans (its skipped ones included)

    def frames(self) -> Iterator[DecodedFrame]:
        carried: list[av.Packet] = []
        try:
            for packet in self.container.demux(self.stream, *self.copy_streams):
                if packet.stream.index != self.stream.index:
                    if packet.size:  # not a demuxer's end-of-stream marker
                        carried.append(packet)
                    continue
                try:
                    decoded = packet.decode()
                except (av.FFmpegError, ValueError):
                    self.corrupt_packets += 1
                    continue
                for frame in decoded:
                    assert isinstance(frame, av.VideoFrame)  # a packet of the video stream
                    pts = frame.pts
                    if self._numbered:
                        # AVI keeps no presentation times: with B-frames PyAV's run 1, 3, 4,
                        # 2...; the file is one tick per frame, so count the frames instead
                        if pts is not None:
                            self._slots = max(self._slots, pts + 1)
                        pts, self._decoded = self._decoded, self._decoded + 1
                    if pts is not None and frame.time_base:
                        at = float(pts * frame.time_base)
                        self.span = (self.span[0] if self.span else at, at)
                    yield DecodedFrame(self._image(frame), pts,
                                       Fraction(frame.time_base or self.info.time_base),
                                       carried)
                    carried = []
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.error = _reason(exc)
        self.leftover = carried

    def shortfalls(self, frames_read: int) -> list[str]:
        """What went missing once :meth:`frames` has given ``frames_read`` pictures: fewer
        than the container announces, packets that did not decode (warnings for the user)."""
        missing = []
        fps, duration, announced = self.info.fps, self.info.duration, self.info.frame_count
        if self.span and duration and fps > 0:
            # The time read against the announced duration: short by more than two frames (or,
            # against the container's duration, its longest stream's, by 10 % and two frames)
            # is a real loss, not rounding. Counts mislead: a stream-copied cut's count
            # includes the pre-roll its edit list hides (read 39 of 57, and rightly so), and
            # Matroska/WebM count no frames.
            read = self.span[1] - self.span[0] + 1.0 / fps
            expected = duration if self.info.own_duration else duration * 0.9
            if read < expected - 2.0 / fps:
                missing.append(
                    f"{self.path}: read {frames_read} of the {announced} frames its container "
                    f"announces ({read:.2f} s of {duration:.2f} s; truncated?)"
                    if announced > frames_read else
                    f"{self.path}: read {frames_read} frames, {read:.2f} s of the "
                    f"{duration:.2f} s its container announces (truncated?)")
        elif announced > frames_read and (not duration or not fps
                                          or frames_read < duration * fps - 1.5):
            missing.append(f"{self.path}: read {frames_read} of the {announced} frames its "
                           "container announces (truncated?)")
        if self.corrupt_packets:
            missing.append(f"{self.path}: skipped {self.corrupt_packets} undecodable packet(s)")
        if self._numbered and self._slots > frames_read + 2:
            missing.append(f"{self.path}: its timing skips {self._slots - frames_read} frame "
                           "slot(s) (dropped-frame chunks); written one slot per frame")
        if self.error and frames_read:
            missing.append(f"{self.path}: reading stopped after {frames_read} frames "
                           f"({self.error})")
        return missing

    def _image(self, frame: av.VideoFrame) -> np.ndarray:
        if not self._rotation_known:
            self.rotation = rotation_of(frame, self.stream)
            self._rotation_known = True
        self.interlaced = self.interlaced or bool(frame.interlaced_frame)
        image: np.ndarray = frame.to_ndarray(format="bgr24")
        if self.rotation:
            image = cv2.rotate(image, _ROTATE[self.rotation])
        return image

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_video_frames(path: Path) -> list[DecodedFrame]:
    """Every frame of a (short) video file, decoded: for tests and small tools."""
    with VideoReader(path) as reader:
        return list(reader.frames())


# ---- writing ----------------------------------------------------------------------------------

def _before_zero(packet: av.Packet) -> bool:
    """Make a subtitle packet that starts before 0 (a cut's hidden lead-in, a late start moved
    to 0) start at 0, shortened to end where it did; True when it ends by 0 and so never shows
    (MP4's muxer drops such packets, which the written file's check would then miss)."""
    if packet.pts is None or packet.pts >= 0:
        return False
    if packet.duration:  # else it shows until the next one (bitmap subtitles): from 0 on
        end = packet.pts + packet.duration
        if end <= 0:
            return True
        packet.duration = end
    packet.pts = 0
    if packet.dts is not None and packet.dts < 0:
        packet.dts = 0
    return False


def _rate(fps: float) -> Fraction:
    """A frame rate as a fraction FFmpeg likes (29.97 -> 30000/1001)."""
    return Fraction(max(fps, 0.01)).limit_denominator(1001)


class AtomicVideoWriter:
    """Encode frames into a temp file; :meth:`commit` checks it and renames it into place.

    Args:
        path: the final name; its extension picks the container and default codec.
        fps: nominal frame rate (the encoder's rate control; the timestamps when ``write``
            gets none).
        size: ``(width, height)`` of every frame.
        codec, crf, preset: see :func:`choose_codec` (None: the container's default).
        time_base: unit of the timestamps given to :meth:`write` (the source stream's); None:
            ``1 / fps``, one tick per frame.
        copy_streams: input streams whose packets :meth:`copy` may receive; those the container
            cannot hold are left out, with a line in :attr:`notes`.
        model_on_cpu: whether the model whose frames these are runs on the CPU's cores (the
            encoder's threads: :func:`codec_threads`).
        source_video: the input's video stream, when the video is made from one: its
            container's tags (title, creation time, place) and chapters, its own and the
            copied streams' tags (language, title) and dispositions (default, forced) are
            carried over, and an input that starts late (an MPEG-TS at 1.4 s, a cut) is
            shifted to start at 0, as ffmpeg does, instead of opening on a gap.

    ``frames`` counts what :meth:`write` took; :meth:`abort` (or leaving a ``with`` block by
    an exception) deletes the temp file.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int], *,
                 codec: str | None = None, crf: int | None = None,
                 preset: str | None = None, time_base: Fraction | None = None,
                 copy_streams: Sequence[av.stream.Stream] = (),
                 model_on_cpu: bool = True,
                 source_video: av.video.stream.VideoStream | None = None) -> None:
        self.path = path
        self._model_on_cpu = model_on_cpu
        self.spec, self.crf = choose_codec(path, codec, crf, preset)
        container_format = VIDEO_CONTAINERS[path.suffix.lower()][0]
        self.size = size
        self.notes: list[str] = []
        self.frames = 0
        self.copied = 0
        self._rate = _rate(fps)
        self._cfr = time_base is None or container_format in _CFR_FORMATS
        self._time_base = Fraction(1, 1) / self._rate if time_base is None or self._cfr \
            else Fraction(time_base)
        self._last_pts: int | None = None
        # Where the container drops the source's timestamps, how far apart they should be (in
        # the source's ticks), to say so when they are not: a variable frame rate is lost.
        self._nominal_step = (None if time_base is None or not self._cfr
                              else 1 / (self._rate * Fraction(time_base)))
        self._given_pts: int | None = None
        # Seconds every timestamp moves back: the input's start, when positive (a negative one
        # is codec priming, which the muxers handle).
        start = getattr(getattr(source_video, "container", None), "start_time", None)
        self._shift = Fraction(start, 1_000_000) if start and start > 0 else Fraction(0)
        # Audio packets held back one, to give one without a duration (Matroska's) the gap to
        # the next: MP4 otherwise drops a last packet of no duration.
        self._held: dict[int, av.Packet] = {}
        self._gaps: dict[int, int] = {}  # each held stream's last gap, for its last packet
        self._subtitles = 0  # of ``copied``: subtitle (and other non-audio) packets
        width, height = size
        if self.spec.even_size and (width % 2 or height % 2):
            self._pad = (height % 2, width % 2)
            self.notes.append(f"{path}: {width}x{height} padded to {width + width % 2}x"
                              f"{height + height % 2} ({self.spec.name} in 4:2:0 needs even "
                              "sizes)")
        else:
            self._pad = (0, 0)
        self.tmp = temp_path(path, keep_suffix=True)
        options = {"movflags": "+faststart"} if container_format in _FASTSTART_FORMATS else {}
        source_tags = getattr(getattr(source_video, "container", None), "metadata", None) or {}
        if any(key.startswith("com.apple.quicktime.") for key in source_tags):
            if container_format == "mov":
                # A phone's place, date and model are QuickTime metadata keys ("mdta"), which
                # the muxer writes only when asked. (In MP4 asking would write every tag so,
                # title and artist included, where players read the iTunes list instead.)
                options["movflags"] += "+use_metadata_tags"
            else:
                self.notes.append(f"{path}: the source's QuickTime metadata (place, date, "
                                  f"model) is kept in .mov and .mkv, not in {path.suffix}")
        if container_format in _CFR_FORMATS:
            # AVI counts frames, it has no timestamps: shifting every stream to make copied
            # audio's negative start (AAC priming) zero would open a one-frame gap at frame 1.
            options["avoid_negative_ts"] = "disabled"
        try:
            self.container = av.open(str(self.tmp), "w", format=container_format,
                                     options=options)
            self.stream = self._add_video_stream(width + self._pad[1], height + self._pad[0])
            self._copies = self._add_copy_streams(copy_streams, container_format)
            if source_video is not None:
                self._carry_tags(source_video)
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise OutputWriteError(f"{path}: cannot open a {self.spec.name} writer "
                                   f"({_reason(exc)})") from None
        except BaseException:  # anything else, Ctrl-C included: no temp file nor its lock
            self._discard()
            raise
        # A writer dropped without commit() or abort() (an app's error path): its temp file
        # goes, and its lock with it, when the writer is collected or at exit.
        self._finalizer = weakref.finalize(self, discard, self.tmp)

    def _add_video_stream(self, width: int, height: int) -> av.video.stream.VideoStream:
        spec = self.spec
        if spec.encoder == "libsvtav1":
            # SVT-AV1 prints a 20-line banner per encoder at its default "info" level: errors
            # only (it reads SVT_LOG when an encoder opens), unless the user chose a level.
            os.environ.setdefault("SVT_LOG", "1")
        stream = self.container.add_stream(spec.encoder, rate=self._rate)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height = width, height
        stream.pix_fmt = spec.pix_fmt
        stream.time_base = self._time_base
        stream.codec_context.time_base = self._time_base
        _set_threads(stream.codec_context, self._model_on_cpu)
        if spec.codec_tag:
            stream.codec_tag = spec.codec_tag
        options: dict[str, object] = dict(spec.options)
        if spec.name == "mjpeg":
            # A fixed JPEG quantiser (ffmpeg's -q:v). FFmpeg's command line also stamps the
            # quantiser on every frame, which PyAV cannot: its frames carry quality 0, which
            # the encoder clamps into [qmin, qmax], so the range is pinned to the one value
            # (without it every --crf wrote the same file).
            quantiser = str(self.crf)
            options.update({"flags": "+qscale", "global_quality": str(self.crf * 118),
                            "qmin": quantiser, "qmax": quantiser})
        else:
            options["crf"] = str(self.crf)
            # Frames are converted with OpenCV's BT.601 matrix (limited range) and tagged so:
            # players guess BT.709 for HD frames without the tag. Primaries and transfer are
            # those of sRGB, which BT.709 shares.
            context = stream.codec_context
            context.colorspace = _AVCOL_SMPTE170M
            context.color_primaries = context.color_trc = _AVCOL_BT709
            context.color_range = _AVCOL_RANGE_MPEG
        stream.options = options
        return stream

    def _add_copy_streams(self, streams: Sequence[av.stream.Stream], container_format: str
                          ) -> dict[int, av.stream.Stream]:
        copies: dict[int, av.stream.Stream] = {}
        allowed = _container_codecs(container_format)
        suffix = self.path.suffix.lower()
        for stream in streams:
            name = codec_name(stream)
            # "": the muxer does not list the codec; else what its header said, if it failed
            refusal = "" if name not in allowed else _header_refusal(container_format, stream)
            if refusal is not None:
                self.notes.append(f"{self.path}: {stream.type} stream #{stream.index} "
                                  f"({name}) not copied: a {suffix} file cannot hold it "
                                  "without re-encoding" + (f" ({refusal})" if refusal else ""))
                continue
            copies[stream.index] = self.container.add_stream_from_template(stream)
            if _rarely_played(name, suffix):
                self.notes.append(f"{self.path}: {stream.type} stream #{stream.index} ({name}) "
                                  f"copied, but few players read it in a {suffix} file (older "
                                  "FFmpeg, browsers); .mov or .mkv carry it everywhere")
        return copies

    def _carry_tags(self, source_video: av.video.stream.VideoStream) -> None:
        """The source's tags, dispositions and chapters (see ``source_video``)."""
        source = source_video.container
        self.container.metadata.update(kept_tags(dict(source.metadata)))
        self.stream.metadata.update(kept_tags(dict(source_video.metadata)))
        copies = [(copy, source.streams[index]) for index, copy in self._copies.items()]
        for written, original in copies:
            written.metadata.update(kept_tags(dict(original.metadata)))
        default = av.stream.Disposition.default
        try:  # a settable disposition (read-only in older PyAV)
            for written, original in [(self.stream, source_video), *copies]:
                written.disposition = original.disposition & ~av.stream.Disposition.attached_pic
            # Players pick the default picture and sound tracks: there is one of each (the
            # source's may be one this container could not take, or it marks none, as MPEG-TS
            # does).
            sound = [written for written, _ in copies if written.type == "audio"]
            for track in ([self.stream], sound):
                if track and not any(written.disposition & default for written in track):
                    track[0].disposition = track[0].disposition | default
        except (AttributeError, TypeError):
            pass  # an older PyAV: the muxer's default tracks
        # Chapters where this PyAV can write them (older ones write the video without).
        chapters = (source.chapters() if hasattr(source, "chapters")
                    and hasattr(self.container, "set_chapters") else [])
        if chapters and self._shift:
            for chapter in chapters:
                if not chapter["time_base"]:
                    continue
                back = round(self._shift / chapter["time_base"])
                chapter["start"] = max(0, chapter["start"] - back)
                chapter["end"] = max(0, chapter["end"] - back)
        if chapters:
            self.container.set_chapters(chapters)

    def write(self, frame: np.ndarray, pts: int | None = None) -> None:
        """Encode one HWC uint8 BGR(A) frame of ``size``; ``pts`` in the writer's time base
        (ignored for constant-rate containers), None for the next frame slot."""
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"frame of {frame.shape[1]}x{frame.shape[0]} in a "
                             f"{self.size[0]}x{self.size[1]} video")
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = frame[:, :, :3]
        if self._pad != (0, 0):
            frame = cv2.copyMakeBorder(frame, 0, self._pad[0], 0, self._pad[1],
                                       cv2.BORDER_REPLICATE)
        video_frame = self._to_yuv(np.ascontiguousarray(frame))
        if self._nominal_step is not None and pts is not None:
            self._note_uneven(pts)
        if pts is not None and self._shift:
            pts -= round(self._shift / self._time_base)
        video_frame.pts = self._next_pts(None if self._cfr else pts)
        video_frame.time_base = self._time_base
        self._mux(self.stream.encode(video_frame))
        self.frames += 1

    def _to_yuv(self, frame: np.ndarray) -> av.VideoFrame:
        """HWC uint8 BGR -> a frame in the encoder's pixel format, BT.601."""
        height, width = frame.shape[:2]
        if self.spec.pix_fmt == "yuv420p" and not (width % 2 or height % 2):
            # OpenCV's SIMD conversion: rounded, and a tenth of swscale's time (0.1 ms against
            # 1.2 ms at 256x256 here), which counts where the model is small.
            i420: np.ndarray = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420)  # (H*3/2, W)
            return av.VideoFrame.from_ndarray(i420, format="yuv420p")
        jpeg = self.spec.name == "mjpeg"  # JPEG's own convention: full range
        return av.VideoFrame.from_ndarray(frame, format="bgr24").reformat(
            format=self.spec.pix_fmt, dst_colorspace=Colorspace.ITU601,
            dst_color_range=ColorRange.JPEG if jpeg else ColorRange.MPEG,
            interpolation=_SWS_FLAGS)

    def _note_uneven(self, pts: int) -> None:
        """Note once that source timestamps more than a quarter of a frame off the even
        spacing (a variable frame rate, a gap) are evened out by a container without them."""
        assert self._nominal_step is not None
        if self._given_pts is not None and \
                abs((pts - self._given_pts) - self._nominal_step) > self._nominal_step / 4:
            self.notes.append(f"{self.path}: the source's frames are unevenly timed (a variable "
                              f"frame rate); a {self.path.suffix.lower()} file has no "
                              f"timestamps, so they play evenly at {float(self._rate):g} fps "
                              "(.mp4, .mkv or .webm keep the timing)")
            self._nominal_step = None  # said once
        self._given_pts = pts

    def _next_pts(self, pts: int | None) -> int:
        """The given timestamp, kept strictly increasing (encoders refuse repeats); the next
        slot at ``fps`` when there is none."""
        if pts is None:
            step = max(1, round(1 / (self._rate * self._time_base)))
            pts = 0 if self._last_pts is None else self._last_pts + step
        elif self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def copy(self, packet: av.Packet) -> None:
        """Write a packet of one of ``copy_streams`` as it is (left out if not kept; moved
        back with the video when the input starts late)."""
        index = packet.stream.index
        target = self._copies.get(index)
        if target is None or not packet.size:
            return
        if self._shift:
            back = round(self._shift / packet.time_base)
            if packet.pts is not None:
                packet.pts -= back
            if packet.dts is not None:
                packet.dts -= back
        packet.stream = target
        if target.type != "audio":  # a subtitle's duration is its own: never guessed
            if _before_zero(packet):
                return
            self._mux([packet])
            self.copied += 1
            self._subtitles += 1
            return
        held = self._held.pop(index, None)
        if held is not None:
            if held.dts is not None and packet.dts is not None:
                self._gaps[index] = max(0, packet.dts - held.dts)
                if not held.duration:
                    held.duration = self._gaps[index]
            self._mux([held])
            self.copied += 1
        self._held[index] = packet

    def _release_held(self) -> None:
        """The last audio packet of each stream; one without a duration gets the one before."""
        for index, packet in self._held.items():
            if not packet.duration:
                packet.duration = self._gaps.get(index, 0)
            self._mux([packet])
            self.copied += 1
        self._held.clear()

    def _mux(self, packets: Sequence[av.Packet]) -> None:
        try:
            for packet in packets:
                self.container.mux(packet)
        except (av.FFmpegError, OSError) as exc:
            raise OutputWriteError(f"{self.path}: cannot write ({_reason(exc)})") from None

    def commit(self, claim: Claim | None = None) -> Path:
        """Finish the file, check that every frame and copied packet is in it, rename it to
        ``path`` (``claim``: see :func:`runtime.media.sinks.publish`); :class:`OutputWriteError`
        (temp file deleted) otherwise."""
        try:
            try:
                self._release_held()
                self._mux(self.stream.encode(None))
                self.container.close()
            except (av.FFmpegError, OSError) as exc:
                raise OutputWriteError(f"{self.path}: cannot write ({_reason(exc)})") from None
            self._check_complete()
            publish(self.tmp, self.path, claim)
            self._finalizer.detach()  # the temp file is the output now
        except BaseException:
            self._discard()
            raise
        return self.path

    def _check_complete(self) -> None:
        """Raise :class:`OutputWriteError` unless the temp file holds all it was given."""
        try:
            with av.open(str(self.tmp), "r") as written:
                video = written.streams.video[0].index
                audio = {stream.index for stream in written.streams.audio}
                counts = {video: 0}
                for packet in written.demux():
                    if packet.size:
                        counts[packet.stream.index] = counts.get(packet.stream.index, 0) + 1
        except (av.FFmpegError, OSError, ValueError, IndexError):
            raise OutputWriteError(f"{self.path}: the written video is unreadable (disk full "
                                   "or a write error?)") from None
        frames = counts.pop(video)
        if frames < self.frames:
            raise OutputWriteError(f"{self.path}: only {frames} of {self.frames} frames reached "
                                   "the file (disk full or a write error?)")
        sound = sum(n for index, n in counts.items() if index in audio)
        if sound < self.copied - self._subtitles:
            raise OutputWriteError(f"{self.path}: only {sound} of {self.copied - self._subtitles}"
                                   " copied audio packets reached the file")
        other = sum(counts.values()) - sound
        if other < self._subtitles:  # a muxer's choice (timing it cannot store): said, no loss
            self.notes.append(f"{self.path}: {self._subtitles - other} of {self._subtitles} "
                              "copied subtitle packet(s) were left out by the muxer")

    def abort(self) -> None:
        self._discard()

    def _discard(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            try:
                container.close()
            except (av.FFmpegError, OSError, ValueError):
                pass  # a half-written file is deleted next anyway
        discard(self.tmp)

    def __enter__(self) -> AtomicVideoWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without PyAV's errno prefix and file name."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
