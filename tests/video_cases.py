"""Video as people expect it: H.264 / VP9 out through PyAV, the audio copied bit for bit, the
timestamps (variable frame rate included) and the duration kept, rotation flags honoured, full
disks failed cleanly; and --temporal: less flicker, no ghost across a scene cut.

Clips are made with the ffmpeg command (as a user's camera or editor would make them) or from
numpy frames; the model is the bundled demo model. Without ffmpeg the module skips (``.ci/run``
installs it).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

from runtime.bench.e2e import measure_temporal, pan_clip
from runtime.bench.report import BenchReport, EndToEndResult, MachineInfo
from runtime.cli import main as run_cli
from runtime.demo import demo_model_path
from runtime.media.outputs import plan_outputs
from runtime.media.sinks import OutputWriteError
from runtime.media.sources import expand_inputs
from runtime.media.temporal import TemporalStabilizer, warping_error, warping_errors
from runtime.media.video import (
    AtomicVideoWriter,
    VideoCodecError,
    VideoReader,
    choose_codec,
    read_video_frames,
)
from runtime.metrics import psnr
from runtime.synthetic import natural_images
from runtime.translator import Translator

MODEL = str(demo_model_path())
FFMPEG = shutil.which("ffmpeg")
pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed (apt-get install "
                                "ffmpeg): it makes the test clips")


def ffmpeg(*args: str | Path) -> None:
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    *map(str, args)], check=True, timeout=60)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(run_cli, [MODEL, *map(str, args), "--threads", "1"])


# ---- clips ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """64x48 test pattern clips, 10 fps, made by ffmpeg."""
    folder = tmp_path_factory.mktemp("clips")
    pattern = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10"]
    sine = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    out = {name: folder / name for name in
           ("audio.mp4", "opus.mkv", "plain.mp4", "rotated.mp4", "vfr.mp4", "vfr.mkv")}
    ffmpeg(*pattern, *sine, "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-shortest", out["audio.mp4"])
    ffmpeg(*pattern, "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000", "-t", "2",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-shortest",
           out["opus.mkv"])
    ffmpeg(*pattern, "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", out["plain.mp4"])
    _rotate(out["plain.mp4"], out["rotated.mp4"])
    # irregular gaps: 0.1 s steps, plus 0.05 s after every third frame and 0.025 s on odd ones
    irregular = "settb=1/1000,setpts='(N+0.5*floor(N/3)+0.25*mod(N\\,2))/10/TB'"
    for name in ("vfr.mp4", "vfr.mkv"):
        ffmpeg(*pattern, "-t", "2", "-vf", irregular, "-fps_mode", "passthrough",
               "-enc_time_base", "1/1000", "-c:v", "libx264", "-pix_fmt", "yuv420p", out[name])
    return out


def _rotate(src: Path, dst: Path) -> None:
    """Remux with a 90-degree display matrix: the stream tag in ffmpeg < 6, the
    ``-display_rotation`` input option from 6 on."""
    ffmpeg("-i", src, "-c", "copy", "-metadata:s:v:0", "rotate=90", dst)
    if _rotation(dst) == 0:
        ffmpeg("-display_rotation:v:0", "90", "-i", src, "-c", "copy", dst)
    assert _rotation(dst) != 0


def _rotation(path: Path) -> int:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return int(frame.rotation or 0)


def ffmpeg_frames(path: Path) -> np.ndarray:
    """All frames as ffmpeg itself decodes them (upright: it applies rotation flags), BGR."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
    if _rotation(path) % 180:
        width, height = height, width
    assert FFMPEG is not None
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


@dataclass
class Facts:
    """What a test wants to know of a video file."""

    codec: str
    pix_fmt: str | None
    size: tuple[int, int]
    duration: float                              # seconds, the container's
    times: list[float]                           # each decoded frame's timestamp, seconds
    audio_codec: str | None
    audio: list[tuple[bytes, float]]             # each audio packet's bytes and pts (s)


def stream_facts(path: Path) -> Facts:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        context = video.codec_context
        codec, pix_fmt, size = context.name, context.pix_fmt, (context.width, context.height)
        duration = (container.duration or 0) / av.time_base
        times = [float(frame.pts * frame.time_base) for frame in container.decode(video=0)
                 if frame.pts is not None and frame.time_base is not None]
    with av.open(str(path)) as container:
        streams = container.streams.audio
        audio = ([(bytes(packet), float(packet.pts * packet.time_base))
                  for packet in container.demux(streams[0])
                  if packet.size and packet.pts is not None and packet.time_base is not None]
                 if streams else [])
        audio_codec = streams[0].codec_context.name if streams else None
    return Facts(codec, pix_fmt, size, duration, times, audio_codec, audio)


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 file's top-level box types, in file order."""
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        boxes.append(data[offset + 4:offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


# ---- codecs, sound, timestamps ----------------------------------------------------------------

@pytest.mark.parametrize(("source", "target", "codec", "audio"), [
    ("audio.mp4", "out.mp4", "h264", "aac"),
    ("opus.mkv", "out.webm", "vp9", "opus"),
])
def test_h264_or_vp9_out_with_the_audio_copied_bit_for_bit(
        clips: dict[str, Path], tmp_path: Path, source: str, target: str, codec: str,
        audio: str) -> None:
    result = run(clips[source], "-o", tmp_path / target)
    assert result.exit_code == 0, result.output
    before, after = stream_facts(clips[source]), stream_facts(tmp_path / target)

    assert after.codec == codec and after.pix_fmt == "yuv420p" and after.size == before.size
    assert after.audio_codec == audio
    assert after.audio == before.audio  # every packet's bytes and timestamp
    assert len(after.times) == len(before.times) == 20
    assert np.allclose(after.times, before.times, atol=1e-3)
    assert abs(after.duration - before.duration) <= 0.1  # one frame at 10 fps
    if target.endswith(".mp4"):
        boxes = top_level_boxes(tmp_path / target)
        assert boxes.index("moov") < boxes.index("mdat")  # +faststart


def test_audio_that_the_container_cannot_hold_is_named(clips: dict[str, Path],
                                                        tmp_path: Path) -> None:
    result = run(clips["audio.mp4"], "-o", tmp_path / "out.webm")
    assert result.exit_code == 0, result.output
    assert "audio stream #1 (aac) not copied: a .webm file cannot hold it" in result.output
    assert stream_facts(tmp_path / "out.webm").codec == "vp9"


@pytest.mark.parametrize("target", ["out.mp4", "out.mkv"])
def test_variable_frame_rate_keeps_its_timestamps(clips: dict[str, Path], tmp_path: Path,
                                                  target: str) -> None:
    source = clips["vfr" + Path(target).suffix]
    before = stream_facts(source).times
    assert len(set(np.round(np.diff(before), 3))) > 1  # the clip really is irregular
    result = run(source, "-o", tmp_path / target)
    assert result.exit_code == 0, result.output
    assert np.allclose(stream_facts(tmp_path / target).times, before, atol=1e-3)


def test_a_container_without_timestamps_says_it_evens_out_a_variable_rate(
        clips: dict[str, Path], tmp_path: Path) -> None:
    result = run(clips["vfr.mkv"], "-o", tmp_path / "vfr.avi")
    assert result.exit_code == 0, result.output
    assert "unevenly timed" in result.output and ".avi file has no timestamps" in result.output
    steady = run(clips["plain.mp4"], "-o", tmp_path / "plain.avi")
    assert steady.exit_code == 0 and "unevenly timed" not in steady.output, steady.output


def test_a_second_video_stream_left_out_is_named(clips: dict[str, Path],
                                                 tmp_path: Path) -> None:
    two = tmp_path / "two.mkv"
    ffmpeg("-i", clips["plain.mp4"], "-i", clips["plain.mp4"], "-map", "0:v", "-map", "1:v",
           "-c", "copy", two)
    result = run(two, "-o", tmp_path / "out.mkv")
    assert result.exit_code == 0, result.output
    assert "only its first video stream is translated; video stream(s) #1 left out" in \
        result.output
    plain = run(clips["plain.mp4"], "-o", tmp_path / "plain.mkv")
    assert "first video stream" not in plain.output


def test_a_rotated_clip_is_translated_and_written_upright(clips: dict[str, Path],
                                                          tmp_path: Path) -> None:
    source = clips["rotated.mp4"]
    upright = ffmpeg_frames(source)  # ffmpeg's own reading of the flag: the reference
    assert upright.shape[1:3] == (64, 48)
    decoded = [frame.image for frame in read_video_frames(source)]
    assert all(np.abs(a.astype(int) - b).mean() < 1.0 for a, b in zip(decoded, upright,
                                                                        strict=True))
    result = run(source, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0, result.output
    assert "turned" in result.output and "written upright (no flag)" in result.output
    assert _rotation(tmp_path / "out.mp4") == 0
    written = [frame.image for frame in read_video_frames(tmp_path / "out.mp4")]
    expected = Translator(MODEL, providers="cpu", threads=1).translate_batch(list(upright))
    assert len(written) == len(expected) and written[0].shape == (64, 48, 3)
    assert min(psnr(e, w, 255.0) for e, w in zip(expected, written, strict=True)) > 30.0


def test_codec_and_crf_options(clips: dict[str, Path], tmp_path: Path) -> None:
    sizes = {}
    for crf in (10, 40):
        result = run(clips["audio.mp4"], "-o", tmp_path / f"crf{crf}.mkv", "--crf", str(crf))
        assert result.exit_code == 0, result.output
        sizes[crf] = (tmp_path / f"crf{crf}.mkv").stat().st_size
    assert sizes[40] < sizes[10]
    result = run(clips["audio.mp4"], "-o", tmp_path / "vp9.mp4", "--codec", "vp9")
    assert result.exit_code == 0, result.output
    assert stream_facts(tmp_path / "vp9.mp4").codec == "vp9"



def test_mjpeg_quantiser_is_kept(tmp_path: Path) -> None:
    # MJPEG takes a JPEG quantiser for --crf; PyAV's frames carry none of their own, and every
    # quantiser used to write the same (best-quality) file.
    frames = natural_images(3, 96, 128, seed=2)
    facts = {}
    for quantiser in (2, 12):
        target = tmp_path / f"q{quantiser}.avi"
        with AtomicVideoWriter(target, 10.0, (128, 96), crf=quantiser) as writer:
            for frame in frames:
                writer.write(frame)
        decoded = [decoded.image for decoded in read_video_frames(target)]
        facts[quantiser] = (target.stat().st_size,
                            min(psnr(f, d, 255.0) for f, d in zip(frames, decoded, strict=True)))
    assert facts[12][0] < facts[2][0] * 0.8, facts
    assert facts[2][1] > facts[12][1] + 1.0, facts

def test_preset_reaches_the_encoder(clips: dict[str, Path], tmp_path: Path) -> None:
    # x264 writes its settings into the stream: ultrafast is the preset without CABAC.
    settings = {}
    for preset in ("ultrafast", "veryfast"):
        target = tmp_path / f"{preset}.mp4"
        result = run(clips["audio.mp4"], "-o", target, "--preset", preset.upper())
        assert result.exit_code == 0, result.output
        settings[preset] = target.read_bytes()
    assert b"cabac=0" in settings["ultrafast"] and b"cabac=1" not in settings["ultrafast"]
    assert b"cabac=1" in settings["veryfast"]
    assert choose_codec(Path("x.mkv"), "av1", preset="12")[0].options["preset"] == "12"
    assert choose_codec(Path("x.mp4"))[0].options["preset"] == "veryfast"


@pytest.mark.parametrize(("args", "message"), [
    (["--codec", "h264"], "a .webm file cannot hold h264 video"),
    (["--codec", "divx"], "--codec divx: unknown"),
    (["--crf", "70"], "--crf 70: vp9 takes 0 (best) to 63"),
    (["--preset", "fast"], "--preset fast: vp9 has no speed presets (those of av1, h264, h265"),
    (["--codec", "av1", "--preset", "14"], "--preset 14: av1 takes 13, 12,"),
])
def test_a_codec_the_output_cannot_take_is_refused_up_front(
        clips: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    result = run(clips["audio.mp4"], "-o", tmp_path / "out.webm", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "model:" not in result.output  # before the model is loaded
    assert not (tmp_path / "out.webm").exists()


@pytest.mark.parametrize("codec", ["vp9", "av1"])
def test_a_mov_file_refuses_what_its_muxer_cannot_write(clips: dict[str, Path], tmp_path: Path,
                                                       codec: str) -> None:
    result = run(clips["audio.mp4"], "-o", tmp_path / "out.mov", "--codec", codec)
    assert result.exit_code == 2, result.output
    assert f"a .mov file cannot hold {codec} video" in result.output
    assert "model:" not in result.output  # before the model is loaded


def test_webm_is_a_writable_output_now(clips: dict[str, Path], tmp_path: Path) -> None:
    webm = tmp_path / "in" / "clip.webm"
    webm.parent.mkdir()
    ffmpeg("-i", clips["opus.mkv"], "-c:v", "libvpx-vp9", "-c:a", "copy", webm)
    plan = plan_outputs(expand_inputs([str(webm.parent)]).files, tmp_path / "out")
    assert [job.target.name for job in plan.jobs] == ["clip.webm"]  # not clip.webm.mp4
    assert choose_codec(Path("x.webm"))[0].name == "vp9"
    with pytest.raises(VideoCodecError, match="cannot hold h264"):
        choose_codec(Path("x.webm"), "h264")


def test_odd_sizes_are_padded_for_h264_and_said(tmp_path: Path) -> None:
    frames = natural_images(4, 47, 63, seed=9)
    with AtomicVideoWriter(tmp_path / "odd.mp4", 10.0, (63, 47), crf=12) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.notes and "63x47 padded to 64x48" in writer.notes[0]
    back = read_video_frames(tmp_path / "odd.mp4")
    assert len(back) == 4 and back[0].image.shape == (48, 64, 3)
    assert psnr(frames[0], back[0].image[:47, :63], 255.0) > 30.0


def test_live_recording_is_h264(clips: dict[str, Path], tmp_path: Path) -> None:
    record = tmp_path / "rec.mp4"
    result = run("--webcam", clips["plain.mp4"], "--no-display", "--max-frames", "5",
                 "--temporal", "-o", record)
    assert result.exit_code == 0, result.output
    assert "--temporal" in result.output and f"recorded {record}" in result.output
    facts = stream_facts(record)
    assert facts.codec == "h264" and len(facts.times) == 5


# ---- nothing lost on a full disk --------------------------------------------------------------

FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    from runtime.cli import main
    main({args!r})
""")


@pytest.mark.parametrize(("source", "target"), [("audio.mp4", "clip.mp4"),
                                                ("opus.mkv", "clip.webm")])
def test_a_full_disk_fails_the_pyav_video_and_leaves_nothing(
        clips: dict[str, Path], tmp_path: Path, source: str, target: str) -> None:
    out = tmp_path / "out" / target
    code = FULL_DISK.format(limit=8_000, args=[MODEL, str(clips[source]), "-o", str(out), "-q",
                                               "--threads", "1"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "translated 0 of 1" in done.stdout and f"{out}: cannot write" in done.stdout
    assert "Traceback" not in done.stderr
    assert [p.name for p in out.parent.iterdir() if not p.name.startswith(".cyclegan")] == []


def test_a_write_error_mid_video_deletes_the_temp_file(tmp_path: Path) -> None:
    writer = AtomicVideoWriter(tmp_path / "v.mkv", 10.0, (64, 48))
    writer.write(natural_images(1, 48, 64)[0])

    class FullDisk:
        """The writer's container, except that every packet meets a full disk."""

        def __init__(self, container: object) -> None:
            self.container = container

        def mux(self, packet: object) -> None:
            raise av.error.OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> object:
            return getattr(self.container, name)

    writer.container = FullDisk(writer.container)  # type: ignore[assignment]
    with pytest.raises(OutputWriteError, match=r"v\.mkv: cannot write \(No space left"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


# ---- --temporal -------------------------------------------------------------------------------

def flicker(frames: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """A stand-in for per-frame translation: the colours inverted, plus per-frame noise."""
    rng = np.random.default_rng(seed)
    return [np.clip(255.0 - frame + rng.normal(0, 8, frame.shape), 0, 255).astype(np.uint8)
            for frame in frames]


def test_stabilizer_is_a_plain_per_frame_object() -> None:
    frames = pan_clip(6, 96, 128, seed=3)
    outputs = flicker(frames)
    stabilizer = TemporalStabilizer()
    assert stabilizer(frames[0], outputs[0]) is outputs[0]  # nothing to steady it against
    steady = [outputs[0]] + [stabilizer(f, o) for f, o in zip(frames[1:], outputs[1:],
                                                              strict=True)]
    assert all(s.shape == o.shape and s.dtype == np.uint8 for s, o in zip(steady, outputs,
                                                                           strict=True))
    assert not np.array_equal(steady[3], outputs[3])
    stabilizer.reset()
    assert stabilizer(frames[4], outputs[4]) is outputs[4]
    with pytest.raises(ValueError, match="differ in size"):
        stabilizer(frames[0], outputs[0][:10])
    with pytest.raises(ValueError, match="weight"):
        TemporalStabilizer(1.0)


def test_warping_error_measures_flicker_not_motion() -> None:
    frames = pan_clip(6, 96, 128, seed=4, noise=0.0)
    assert warping_error(frames, frames) < 1.5  # pure motion: warps onto itself
    noisy = warping_errors(frames, [flicker(frames), flicker(frames, seed=1)])
    assert all(error > 8.0 for error in noisy)
    assert warping_error(frames[:1], frames[:1]) == 0.0


def test_no_ghost_after_a_hard_scene_cut() -> None:
    first, second = pan_clip(6, 120, 160, seed=5), pan_clip(6, 120, 160, seed=50, step=(-2, 2))
    frames = np.concatenate([first, second])
    outputs = flicker(frames)
    stabilizer = TemporalStabilizer(0.8)  # the strongest blending: the most to leak
    steady = [stabilizer(f, o) for f, o in zip(frames, outputs, strict=True)]
    assert stabilizer.cuts == 1
    assert steady[6] is outputs[6]  # the first frame of the new shot: untouched
    # and after it, nothing of the old shot: the steadied frames stay the new shot's own
    for index in range(6, 12):
        assert psnr(outputs[index], steady[index], 255.0) > 25.0
        assert psnr(steady[5], steady[index], 255.0) < 15.0


def test_temporal_through_the_cli_reduces_flicker_and_cuts_cleanly(tmp_path: Path) -> None:
    """A pan, a cut, another pan: with --temporal the written video flickers less, and the
    frame after the cut is the per-frame translation of the new shot."""
    frames = np.concatenate([pan_clip(8, 96, 128, seed=6), pan_clip(4, 96, 128, seed=60)])
    clip = tmp_path / "pan.mkv"
    with AtomicVideoWriter(clip, 10.0, (128, 96), crf=4) as writer:
        for frame in frames:
            writer.write(frame)
    decoded_in = [frame.image for frame in read_video_frames(clip)]
    outputs = {}
    for flag in ([], ["--temporal"]):
        target = tmp_path / f"out{len(flag)}.mkv"
        result = run(clip, "-o", target, "--crf", "4", *flag)
        assert result.exit_code == 0, result.output
        outputs[bool(flag)] = [frame.image for frame in read_video_frames(target)]
    plain, steady = warping_errors(decoded_in[:8], [outputs[False][:8], outputs[True][:8]])
    assert steady < 0.75 * plain
    assert psnr(outputs[False][8], outputs[True][8], 255.0) > 40.0  # the cut: untouched


@pytest.mark.slow
def test_temporal_meets_its_targets_on_a_640x480_pan_with_noise() -> None:
    """The issue's measure: warping error down >= 40 %, PSNR against per-frame >= 28 dB."""
    translator = Translator(MODEL, providers="cpu")
    figures = measure_temporal(translator, pan_clip(8, 480, 640, seed=7))
    assert figures.warp_error_temporal <= 0.6 * figures.warp_error
    assert figures.psnr_min_db >= 28.0
    assert figures.temporal_ms > 0 and figures.model_ms > 0  # the cost is the bench's to judge


def test_bench_lines_and_json_carry_the_temporal_figures(tmp_path: Path) -> None:
    result = EndToEndResult(
        model="m.onnx", engine="onnxruntime", provider="CPU", batch=1, height=64, width=64,
        model_only_ips=10.0, folder_images=4, folder_ips=9.5, video_frames=4, video_ips=9.4,
        live_frames=4, live_fps=9.0, live_model_ms=100.0, live_overhead_fraction=0.02,
        live_wait_fraction=0.1, live_source_fps=20.0, live_temporal_frames=4,
        live_temporal_overhead_fraction=0.05, live_temporal_ms=4.0, live_temporal_fps=8.6,
        live_temporal_model_ms=105.0, temporal_height=480,
        temporal_width=640, temporal_frames=8, warp_error=4.0, warp_error_temporal=1.5,
        temporal_psnr_db=39.0, temporal_psnr_min_db=math.inf, temporal_ms=16.0,
        temporal_model_ms=900.0)
    text = "\n".join(result.lines())
    assert "4.00 -> 1.50 levels = 62% less (meets target >= 40%)" in text
    assert "1.8% of the model's 900 ms (meets target <= 25%)" in text
    assert "live --temporal" in text and "(meets target >= 28 dB)" in text
    # the live --temporal line carries its own rate and model time (the overhead's base)
    assert ("8.6 img/s; loop overhead 5.0% of model time (meets target <= 10%); model 105.0 "
            "ms/frame, stabiliser 4.0 ms/frame of the overhead") in text
    machine = MachineInfo("cpu", 2, 2, [], "linux", "3.11", {}, [])
    path = BenchReport(machine, end_to_end=[result]).save_json(tmp_path / "r.json")
    assert BenchReport.load_json(path).end_to_end[0] == result


def test_reader_keeps_time_bases_and_packets(clips: dict[str, Path]) -> None:
    with VideoReader(clips["audio.mp4"]) as reader:
        frames = list(reader.frames())
        packets = sum(len(frame.packets) for frame in frames) + len(reader.leftover)
        assert reader.info.frame_count == len(frames) == 20
        assert frames[0].time_base == reader.info.time_base == Fraction(1, 10240)
        assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert packets == len(stream_facts(clips["audio.mp4"]).audio)


@pytest.mark.parametrize("name", ["a.mp4", "a.webm", "a.avi"])
def test_codecs_with_every_core_keep_every_frame(tmp_path: Path, name: str) -> None:
    """With the model off the CPU the codecs get every core, in frame threads: the file still
    holds every frame at its timestamp, and it decodes to the same pixels with one thread."""
    frames = natural_images(12, 48, 64, seed=9)
    target = tmp_path / name
    with AtomicVideoWriter(target, 25.0, (64, 48), time_base=Fraction(1, 25),
                           model_on_cpu=False) as writer:
        for index, frame in enumerate(frames):
            writer.write(frame, pts=2 * index)
    decoded = {}
    for on_cpu in (True, False):
        with VideoReader(target, model_on_cpu=on_cpu) as reader:
            decoded[on_cpu] = list(reader.frames())
    assert len(decoded[False]) == 12
    assert psnr(frames[5], decoded[False][5].image, 255.0) > 30.0
    if name != "a.avi":  # AVI counts frames: no timestamps to keep
        assert [frame.pts * frame.time_base for frame in decoded[False]
                if frame.pts is not None] == [Fraction(2 * i, 25) for i in range(12)]
    assert all(np.array_equal(one.image, many.image)
               for one, many in zip(decoded[True], decoded[False], strict=True))


def test_unreadable_video_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    result = run(bad, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 1, result.output
    assert f"{bad}: cannot open as video" in result.output and "Traceback" not in result.output


def test_ffmpeg_decodes_what_we_write(tmp_path: Path) -> None:
    """Players read our files: ffmpeg decodes every frame of an H.264 and a VP9 output."""
    frames = natural_images(5, 48, 64, seed=8)
    for name in ("a.mp4", "a.webm"):
        with AtomicVideoWriter(tmp_path / name, 25.0, (64, 48)) as writer:
            for frame in frames:
                writer.write(frame)
        decoded = ffmpeg_frames(tmp_path / name)
        assert len(decoded) == 5
        assert psnr(frames[2], decoded[2], 255.0) > 30.0
    cv2_count = cv2.VideoCapture(str(tmp_path / "a.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)
    assert cv2_count == 5


def test_matroska_shortfalls_size_changes_and_transport_streams(tmp_path: Path) -> None:
    # Matroska counts no frames: a cut file is found by its duration, a longer audio is not one
    clip = tmp_path / "clip.webm"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=15", "-t", "3", "-c:v", "libvpx-vp9",
           "-deadline", "realtime", clip)
    cut = tmp_path / "cut.webm"
    cut.write_bytes(clip.read_bytes()[:clip.stat().st_size // 2])
    result = run(cut, "-o", tmp_path / "cut.mp4")
    assert result.exit_code == 0, result.output
    assert re.search(r"cut\.webm: read \d+ frames, [\d.]+ s of the 3\.00 s its container "
                     r"announces \(truncated\?\)", result.output), result.output
    longer_audio = tmp_path / "audio.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=15:duration=1", "-f", "lavfi", "-i",
           "sine=duration=3", "-c:v", "libx264", "-c:a", "libopus", longer_audio)
    result = run(longer_audio, "-o", tmp_path / "audio_out.mkv")
    assert result.exit_code == 0 and "truncated" not in result.output, result.output
    # joined clips of two sizes: scaled to the first, said once; a .ts is a video input
    parts = []
    for index, size in enumerate(("96x64", "128x96")):
        parts.append(tmp_path / f"part{index}.ts")
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=15", "-t", "1", "-c:v",
               "libx264", parts[-1])
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    result = run(joined, "-o", tmp_path / "joined.mp4")
    assert result.exit_code == 0, result.output
    assert "joined.ts: frames from 16 on are 128x96; scaled to the first frames' 96x64" \
        in result.output
    facts = stream_facts(tmp_path / "joined.mp4")
    assert facts.size == (96, 64) and len(facts.times) == 30


def test_avi_with_b_frames_keeps_even_time(tmp_path: Path) -> None:
    # AVI holds no presentation times; with B-frames PyAV's pts come out of order (1, 3, 4, 2..)
    source = tmp_path / "bframes.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=15", "-f", "lavfi", "-i", "sine",
           "-t", "2", "-c:v", "libx264", "-bf", "2", "-c:a", "libmp3lame", source)
    for target in (tmp_path / "out.mp4", tmp_path / "out.avi"):
        result = run(source, "-o", target)
        assert result.exit_code == 0, result.output
        assert "unevenly timed" not in result.output
        facts = stream_facts(target)
        assert len(facts.times) == 30
        assert facts.times == pytest.approx([i / 15 for i in range(30)], abs=1e-3)


def test_streams_that_are_not_copied_are_named(tmp_path: Path) -> None:
    subtitle = tmp_path / "font.txt"
    subtitle.write_text("an attached file, as a font is")
    source = tmp_path / "attached.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=15", "-t", "1", "-c:v", "libx264",
           "-attach", subtitle, "-metadata:s:t", "mimetype=text/plain", source)
    result = run(source, "-o", tmp_path / "out.mkv")
    assert result.exit_code == 0, result.output
    assert "attached.mkv: stream(s) #1 (attachment) not copied (only audio and subtitles " \
        "are)" in result.output


def test_a_stream_copied_cut_is_not_called_truncated(tmp_path: Path) -> None:
    # its edit list drops the pre-roll frames its frame count includes: 27 of 40 is all of it
    source = tmp_path / "src.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "3", "-c:v", "libx264",
           "-g", "25", source)
    cut = tmp_path / "cut.mp4"
    ffmpeg("-ss", "0.5", "-i", source, "-c", "copy", "-t", "1", cut)
    result = run(cut, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0 and "truncated" not in result.output, result.output


def audio_packets(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.audio[0]) if packet.size)


def test_audio_the_muxer_refuses_in_its_header_is_left_out_not_the_video(
        tmp_path: Path) -> None:
    """The mov muxer lists FLAC, then refuses it when the file starts: the video used to fail
    after it was all translated. MP3 (decoded by "mp3float") and ALAC from Matroska (packets
    without durations) are copied whole."""
    pattern = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-f", "lavfi", "-i",
               "sine=sample_rate=44100", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    flac, mp3, alac = tmp_path / "flac.mkv", tmp_path / "mp3.mp4", tmp_path / "alac.mkv"
    ffmpeg(*pattern, "-c:a", "flac", flac)
    ffmpeg(*pattern, "-c:a", "libmp3lame", mp3)
    ffmpeg(*pattern, "-c:a", "alac", alac)
    result = run(flac, "-o", tmp_path / "flac.mov")
    assert result.exit_code == 0, result.output
    assert "audio stream #1 (flac) not copied: a .mov file cannot hold it" in result.output
    assert len(stream_facts(tmp_path / "flac.mov").times) == 10
    for source in (mp3, alac):
        target = tmp_path / f"{source.stem}_out.mp4"
        result = run(source, "-o", target)
        assert result.exit_code == 0 and "not copied" not in result.output, result.output
        assert audio_packets(target) == audio_packets(source)


def test_titles_languages_default_tracks_and_chapters_are_carried_over(tmp_path: Path) -> None:
    chapters = tmp_path / "chapters.txt"
    chapters.write_text(";FFMETADATA1\ntitle=Trip\ncreation_time=2024-05-01T10:00:00Z\n"
                        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=one\n"
                        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=two\n")
    source = tmp_path / "tagged.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-f", "lavfi", "-i", "sine",
           "-f", "lavfi", "-i", "sine=frequency=660", "-i", chapters, "-map", "0", "-map", "1",
           "-map", "2", "-map_metadata", "3", "-map_chapters", "3", "-t", "1", "-c:v",
           "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-metadata:s:a:0", "language=eng", "-metadata:s:a:0", "title=Commentary",
           "-metadata:s:a:1", "language=jpn", "-metadata:s:v:0", "BPS-eng=12345",
           "-metadata:s:a:0", "NUMBER_OF_FRAMES-eng=999", "-disposition:a:0", "0",
           "-disposition:a:1", "default+forced", source)
    for target in (tmp_path / "out.mkv", tmp_path / "out.mp4"):
        result = run(source, "-o", target)
        assert result.exit_code == 0, result.output
        with av.open(str(target)) as written:
            assert written.metadata.get("title") == "Trip"
            assert [chapter["metadata"].get("title") for chapter in written.chapters()] == \
                ["one", "two"]
            first, second = written.streams.audio[:2]
            assert (first.language, second.language) == ("eng", "jpn")
            assert not first.disposition & av.stream.Disposition.default
            assert second.disposition & av.stream.Disposition.default
            if target.suffix == ".mkv":  # MP4 has no forced flag nor track titles
                assert second.disposition & av.stream.Disposition.forced
                assert first.metadata.get("title") == "Commentary"
            assert "encoder" not in {key.lower() for key in written.streams.video[0].metadata}
            # statistics the source's muxer wrote, in any language, are not carried over
            for stream in written.streams:
                assert not {"BPS-eng", "NUMBER_OF_FRAMES-eng"} & set(stream.metadata), \
                    stream.metadata


def test_a_late_start_is_moved_to_zero_with_the_streams_in_step(tmp_path: Path) -> None:
    """An MPEG-TS starts at 1.4 s or so: the output starts at 0, as ffmpeg's own remux does,
    instead of opening on a gap; audio and video keep their offset."""
    source = tmp_path / "broadcast.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-f", "lavfi", "-i", "sine",
           "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", source)

    def starts(path: Path) -> tuple[float, float]:
        with av.open(str(path)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            return (float(video.start_time * video.time_base),
                    float(audio.start_time * audio.time_base))

    video_before, audio_before = starts(source)
    assert min(video_before, audio_before) > 1.0
    result = run(source, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0, result.output
    video_after, audio_after = starts(tmp_path / "out.mp4")
    assert min(video_after, audio_after) == pytest.approx(0.0, abs=0.03)
    assert video_after - audio_after == pytest.approx(video_before - audio_before, abs=0.03)
    assert len(stream_facts(tmp_path / "out.mp4").times) == 10


def test_cover_art_and_interlacing_are_said_and_codec_aliases_taken(
        clips: dict[str, Path], tmp_path: Path) -> None:
    cover = tmp_path / "cover.png"
    cv2.imwrite(str(cover), natural_images(1, 32, 32)[0])
    covered = tmp_path / "covered.mp4"
    ffmpeg("-i", clips["plain.mp4"], "-i", cover, "-map", "0", "-map", "1", "-c", "copy",
           "-disposition:v:1", "attached_pic", covered)
    interlaced = tmp_path / "interlaced.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-t", "1", "-c:v", "libx264",
           "-flags", "+ildct+ilme", "-pix_fmt", "yuv420p", interlaced)
    result = run(covered, "-o", tmp_path / "covered_out.mp4", "--codec", "avc")
    assert result.exit_code == 0, result.output
    assert "covered.mp4: its cover art (stream #1) is not carried over" in result.output
    result = run(interlaced, "-o", tmp_path / "interlaced_out.mp4")
    assert result.exit_code == 0, result.output
    assert "interlaced.mp4: interlaced; each frame was translated as one picture" in result.output
    assert choose_codec(Path("x.mkv"), "AVC")[0].name == "h264"  # FFmpeg's names work too


def test_a_video_whose_pictures_are_all_damaged_says_how_many_it_announced(
        clips: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(clips["plain.mp4"].read_bytes())
    start = data.index(b"mdat") + 4  # the index (moov) stays whole, the pictures are zeros
    size = int.from_bytes(data[start - 8:start - 4], "big") - 8
    data[start:start + size] = bytes(size)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    result = run(damaged, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 1, result.output
    assert f"{damaged}: no frame could be decoded of the 10 it announces (damaged?)" in \
        result.output


def test_audio_few_players_read_in_that_container_is_copied_with_a_note(tmp_path: Path) -> None:
    source = tmp_path / "pcm24.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-f", "lavfi", "-i", "sine",
           "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s24le", source)
    result = run(source, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0, result.output
    assert "audio stream #1 (pcm_s24le) copied, but few players read it in a .mp4 file" in \
        result.output
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(source)
    kept = run(source, "-o", tmp_path / "out.mkv")
    assert kept.exit_code == 0 and "few players" not in kept.output, kept.output


def test_ctrl_c_while_a_video_is_finished_names_it_and_writes_nothing(
        clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal can land in the encoder's last frames (x265 at a slow preset flushes for
    seconds): the video cut short is named, and nothing is written for it."""
    def interrupted_commit(self: AtomicVideoWriter, *args: object, **kwargs: object) -> Path:
        self.abort()
        raise KeyboardInterrupt

    monkeypatch.setattr(AtomicVideoWriter, "commit", interrupted_commit)
    result = run(clips["audio.mp4"], "-o", tmp_path / "out.mp4")
    assert result.exit_code == 130, result.output
    assert "audio.mp4: interrupted while its output was being finished; its output was not " \
        "written" in result.output
    assert not list(tmp_path.iterdir())


def test_a_cut_with_subtitles_before_its_start_is_written(tmp_path: Path) -> None:
    """A stream-copied cut keeps a subtitle sample that starts before the cut (negative time);
    MP4's muxer drops one that ends before 0, which failed the whole video once."""
    subtitles = tmp_path / "s.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:00,400\nFirst\n\n"
                         "2\n00:00:00,600 --> 00:00:02,500\nSecond\n\n")
    source, cut = tmp_path / "subs.mp4", tmp_path / "cut.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-f", "lavfi", "-i", "sine",
           "-i", subtitles, "-map", "0", "-map", "1", "-map", "2", "-t", "3", "-c:v", "libx264",
           "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "mov_text", source)
    ffmpeg("-ss", "0.5", "-i", source, "-map", "0", "-c", "copy", "-t", "2", cut)
    result = run(cut, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0, result.output
    with av.open(str(tmp_path / "out.mp4")) as written:
        assert len(written.streams.subtitles) == 1
        starts = [packet.pts for packet in written.demux(written.streams.subtitles[0])
                  if packet.size and packet.pts is not None]
    assert starts and min(starts) >= 0


def test_a_phones_quicktime_keys_and_default_tracks_survive(tmp_path: Path) -> None:
    phone = tmp_path / "phone.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-f", "lavfi", "-i", "sine",
           "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-movflags", "use_metadata_tags",
           "-metadata", "com.apple.quicktime.location.ISO6709=+35.6895+139.6917+040.000/",
           "-metadata", "com.apple.quicktime.model=iPhone 14", phone)
    for target in (tmp_path / "out.mov", tmp_path / "out.mkv"):
        assert run(phone, "-o", target).exit_code == 0
        with av.open(str(target)) as written:
            tags = {key.lower(): value for key, value in written.metadata.items()}
            assert tags.get("com.apple.quicktime.location.iso6709") == \
                "+35.6895+139.6917+040.000/"
            assert tags.get("com.apple.quicktime.model") == "iPhone 14"
    said = run(phone, "-o", tmp_path / "out.mp4")
    assert said.exit_code == 0
    assert "the source's QuickTime metadata (place, date, model) is kept in .mov and .mkv, not " \
        "in .mp4" in said.output
    broadcast = tmp_path / "broadcast.ts"  # MPEG-TS marks no default track
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-f", "lavfi", "-i", "sine",
           "-f", "lavfi", "-i", "sine=frequency=660", "-map", "0", "-map", "1", "-map", "2",
           "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", broadcast)
    assert run(broadcast, "-o", tmp_path / "ts.mkv").exit_code == 0
    with av.open(str(tmp_path / "ts.mkv")) as written:
        default = av.stream.Disposition.default
        assert written.streams.video[0].disposition & default
        assert [bool(s.disposition & default) for s in written.streams.audio] == [True, False]


def test_late_starts_and_cuts_are_not_called_truncated(tmp_path: Path) -> None:
    """Matroska's per-stream DURATION is where the stream ends, so a late start is not a
    shortfall; a cut's count includes the lead-in its edit list hides."""
    base = tmp_path / "base.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-f", "lavfi", "-i", "sine",
           "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", base)
    late = tmp_path / "late.mkv"
    ffmpeg("-i", base, "-c", "copy", "-output_ts_offset", "1.5", late)
    full = tmp_path / "full.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-f", "lavfi", "-i", "sine",
           "-t", "3", "-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", full)
    cut = tmp_path / "cut.mp4"
    ffmpeg("-ss", "0.7", "-i", full, "-c", "copy", "-t", "1.5", cut)
    for source in (late, cut):
        result = run(source, "-o", tmp_path / f"{source.stem}_out.mkv")
        assert result.exit_code == 0 and "truncated" not in result.output, result.output


def test_a_small_truncation_of_a_file_that_counts_its_frames_is_said(tmp_path: Path) -> None:
    """MP4 gives the video's own duration: a few frames missing is a loss to name, not rounding
    (the 10 % margin is for a container's duration, its longest stream's)."""
    clip = tmp_path / "clip.mp4"
    pan = pan_clip(100, 48, 64, seed=3)
    with AtomicVideoWriter(clip, 10.0, (64, 48)) as writer:  # faststart: the index first
        for frame in pan:
            writer.write(frame)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 96 // 100])  # a few frames short
    result = run(clip, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 0, result.output
    assert re.search(r"clip\.mp4: read (8\d|9[0-7]) of the 100 frames its container announces",
                     result.output), result.output
