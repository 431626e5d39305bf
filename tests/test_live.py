"""Live mode: video files as a webcam, streams served by ffmpeg, dropped streams, the window.

Streams are served on 127.0.0.1 by an ffmpeg process the test starts (HTTP ``-listen 1`` or a
listening TCP socket, MPEG-TS over both); the window runs under an Xvfb the test starts.
Without ffmpeg or Xvfb those tests skip (``.ci/run`` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result

import runtime.media.live as live_module
from runtime.cli import main as run_cli
from runtime.media.live import LiveError, run_live
from runtime.media.sources import LatestFrameGrabber
from runtime.translator import Translator

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT, FPS, FRAMES = 64, 48, 15.0, 30
GRAY_STEP = 8  # frame i of the test video is gray level GRAY_STEP * i (plus a moving bar)
FAST_RETRY = 0.02  # seconds between reconnect attempts (the runtime's default is 0.5 s)

Serve = Callable[[str], tuple[str, subprocess.Popen[bytes]]]


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported generator (resnet_6blocks, ngf 8, random weights)."""
    import torch

    from cyclegan_export import export_onnx
    from training.networks import build_generator, generator_spec, init_weights

    folder = tmp_path_factory.mktemp("live_model")
    torch.manual_seed(0)
    net = build_generator(generator_spec("resnet_6blocks", ngf=8))
    init_weights(net)
    torch.save(net.state_dict(), folder / "g.pth")
    report = export_onnx(folder / "g.pth", folder / "g.onnx", opencv_check=False)
    assert report.ok
    return folder / "g.onnx"


@pytest.fixture(scope="module")
def translator(model: Path) -> Translator:
    return Translator(model, providers="cpu", threads=1)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x48, 30 frames at 15 fps; frame i is gray ``GRAY_STEP * i`` with a white bar moving."""
    path = tmp_path_factory.mktemp("live_video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(FRAMES):
        frame = np.full((HEIGHT, WIDTH, 3), GRAY_STEP * i, np.uint8)
        frame[:8, 2 * i:2 * i + 4] = 255
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnect attempts ``FAST_RETRY`` s apart (the CLI keeps run_live's 0.5 s default)."""
    defaults = live_module.run_live.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "retry_delay", FAST_RETRY)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Wait until ``process`` listens on 127.0.0.1:``port`` without connecting to it.

    (A probe connection would use up the ffmpeg server's only client.)
    """
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ffmpeg exited with {process.returncode} before serving")
        table = Path("/proc/net/tcp")
        if not table.exists():  # not Linux: give it a moment
            time.sleep(1.0)
            return
        for row in table.read_text().splitlines()[1:]:
            fields = row.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
                return
        time.sleep(0.05)
    pytest.fail(f"ffmpeg did not listen on port {port} within {timeout:.0f} s")


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(protocol)`` starts ffmpeg serving a 64x48 30 fps MPEG-TS test pattern in real
    time on a free port of 127.0.0.1 and returns ``(url, process)``; all are killed at the end.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not installed: needed to serve a live stream (apt-get install ffmpeg)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(protocol: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        url = f"{protocol}://127.0.0.1:{port}"
        output = {"http": ["-listen", "1", "-f", "mpegts", url],
                  "tcp": ["-f", "mpegts", f"{url}?listen=1"]}[protocol]
        command = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                   "-f", "lavfi", "-i", f"testsrc=size={WIDTH}x{HEIGHT}:rate=30",
                   "-c:v", "mpeg2video", "-g", "5", *output]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        processes.append(process)
        wait_listening(port, process)
        return url, process

    try:
        yield start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def xvfb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private X server (Xvfb picks a free display number); DISPLAY points at it."""
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("Xvfb not installed: needed for the window test (apt-get install xvfb)")
    process = subprocess.Popen([binary, "-displayfd", "1", "-nolisten", "tcp",
                                "-screen", "0", "320x240x24"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        number = process.stdout.readline().decode().strip()  # written once it accepts clients
        if not number.isdigit():
            pytest.skip(f"Xvfb did not start (exit code {process.poll()})")
        monkeypatch.setenv("DISPLAY", f":{number}")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        yield f":{number}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---- helpers ----------------------------------------------------------------------------------

def video_summary(path: Path) -> tuple[int, int, int]:
    """``(width, height, frames decoded)`` of a video file."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return size[0], size[1], frames


def assert_complete_recording(path: Path, frames: int) -> None:
    assert path.is_file()
    assert video_summary(path) == (WIDTH, HEIGHT, frames)
    assert not [p.name for p in path.parent.iterdir() if ".part" in p.name]


def cli(*args: str) -> Result:
    return CliRunner().invoke(run_cli, [*args, "--providers", "cpu", "--threads", "1"])


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def kill_after(calls: int, process: subprocess.Popen[bytes],
               translate: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """``translate`` that kills the stream's server (SIGKILL) once it has run ``calls`` times."""
    count = [0]

    def wrapped(*args: object, **kwargs: object) -> np.ndarray:
        count[0] += 1
        if count[0] == calls:
            process.send_signal(signal.SIGKILL)
        return translate(*args, **kwargs)

    return wrapped


# ---- a video file as the webcam ---------------------------------------------------------------

@pytest.mark.parametrize("suffix, max_frames, want", [(".mp4", 8, 8), (".avi", None, FRAMES)])
def test_video_file_as_webcam_is_recorded(translator: Translator, video: Path, tmp_path: Path,
                                          suffix: str, max_frames: int | None,
                                          want: int) -> None:
    record = tmp_path / f"rec{suffix}"
    stats = run_live(translator, str(video), display=False, max_frames=max_frames,
                     record=record)

    assert stats.frames == want and stats.error is None
    assert stats.frames_captured >= want and stats.model_seconds > 0
    assert stats.ended_by == ("source ended" if max_frames is None
                              else f"reached --max-frames {max_frames}")
    assert stats.recording == record
    assert_complete_recording(record, want)
    if max_frames is None:  # paced at the file's 15 fps, as a camera would deliver it
        assert stats.seconds >= (FRAMES - 1) / FPS * 0.8


def test_a_killed_recordings_temp_file_is_cleared_by_the_next(translator: Translator,
                                                               video: Path,
                                                               tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    left = tmp_path / f".rec.mp4.{dead}-abcd1234.part.mp4"  # SIGKILL mid-recording
    left.write_bytes(b"half a recording")
    stats = run_live(translator, str(video), display=False, max_frames=2,
                     record=tmp_path / "rec.mp4")
    assert stats.removed_parts == [left] and not left.exists()
    assert "removed 1 stale temp file(s) of an interrupted recording" in stats.line()


@pytest.mark.parametrize("record", [True, False])
def test_cli_webcam_video_file(model: Path, video: Path, tmp_path: Path, record: bool) -> None:
    output = tmp_path / "rec.mp4"
    result = cli(str(model), "--webcam", str(video), "--no-display", "--max-frames", "6",
                 *(["-o", str(output)] if record else []))

    assert result.exit_code == 0, result.output
    assert "6 frame(s)" in result.stdout and "reached --max-frames 6" in result.stdout
    assert not error_lines(result)
    if record:
        assert f"recorded {output}" in result.stdout
        assert_complete_recording(output, 6)
    else:
        assert not list(tmp_path.iterdir())


def test_ctrl_c_ends_live_mode_with_130_and_keeps_the_recording(model: Path,
                                                                 tmp_path: Path) -> None:
    clip = tmp_path / "long.mp4"  # 10 s at 15 fps: Ctrl-C comes long before its end
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for i in range(150):
        writer.write(np.full((HEIGHT, WIDTH, 3), i, np.uint8))
    writer.release()
    output = tmp_path / "rec.mp4"
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime", str(model), "--webcam", str(clip), "--no-display",
         "-o", str(output), "--backend", "onnxruntime", "--providers", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # the model is loaded and the loop starts
        if line.startswith("live:"):
            break
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, (out, err)
    assert "; interrupted; recorded" in out and "Traceback" not in err
    frames = video_summary(output)[2]
    assert 1 <= frames < 150
    assert not [p.name for p in tmp_path.iterdir() if ".part" in p.name]


# ---- a live stream served by ffmpeg -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_stream_is_read_and_translated(translator: Translator, serve: Serve, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    url, _ = serve(protocol)
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    translate = translator.translate

    def spy(image: np.ndarray) -> np.ndarray:
        out = translate(image)
        shapes.append((image.shape, out.shape))
        return out

    monkeypatch.setattr(translator, "translate", spy)
    record = tmp_path / "stream.avi"
    stats = run_live(translator, url, display=False, max_frames=10, record=record)

    assert stats.frames == 10 and stats.error is None
    assert stats.ended_by == "reached --max-frames 10"
    assert shapes == [((HEIGHT, WIDTH, 3), (HEIGHT, WIDTH, 3))] * 10
    assert_complete_recording(record, 10)


@pytest.mark.slow
def test_cli_reads_a_stream(model: Path, serve: Serve) -> None:
    url, _ = serve("http")
    result = cli(str(model), "--webcam", url, "--no-display", "--max-frames", "5")

    assert result.exit_code == 0, result.output
    assert "5 frame(s)" in result.stdout and not error_lines(result)


# ---- a stream that drops ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("reconnects", [0, 2])
def test_dropped_stream_gives_up_after_reconnects(translator: Translator, serve: Serve,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  fast_retry: None, reconnects: int) -> None:
    url, server = serve("tcp")
    monkeypatch.setattr(translator, "translate", kill_after(3, server, translator.translate))
    started = time.perf_counter()
    stats = run_live(translator, url, display=False, reconnects=reconnects)

    message = f"{url}: stream dropped; gave up after {reconnects} reconnect attempt(s)"
    assert stats.error == message and stats.ended_by == message
    assert stats.frames >= 3
    assert time.perf_counter() - started < 8


@pytest.mark.slow
def test_cli_dropped_stream_exits_nonzero(model: Path, serve: Serve,
                                          monkeypatch: pytest.MonkeyPatch,
                                          fast_retry: None) -> None:
    url, server = serve("http")
    monkeypatch.setattr(Translator, "translate", kill_after(3, server, Translator.translate))
    started = time.perf_counter()
    result = cli(str(model), "--webcam", url, "--no-display")

    assert result.exit_code == 1, result.output
    message = f"{url}: stream dropped; gave up after 5 reconnect attempt(s)"
    assert error_lines(result) == [f"error: {message}"]
    assert "frame(s) in" in result.stdout and message in result.stdout
    assert time.perf_counter() - started < 8


@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_nothing_served_is_one_error_line(model: Path, protocol: str) -> None:
    url = f"{protocol}://127.0.0.1:{free_port()}"
    result = cli(str(model), "--webcam", url, "--no-display", "--max-frames", "3")

    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot open {url!r} (")
    assert lines[0].endswith("cannot open as video)")


# ---- the window ------------------------------------------------------------------------------

# Runs in its own process: Qt stays bound to the X server it first connected to, and a later
# loss of that server would end the pytest process.
WINDOW_SCRIPT = """
import json, sys
from pathlib import Path
import cv2
from runtime.media.live import WINDOW, run_live
from runtime.translator import Translator

model, video, snapshots = sys.argv[1:4]
shown = []
keys = {2: ord("s"), 3: ord(" "), 5: ord("q")}  # after frame N: snapshot, next view, quit
real_imshow, real_wait_key = cv2.imshow, cv2.waitKey

def imshow(name, image):
    real_imshow(name, image)
    shown.append([name, list(image.shape), cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE)])

def wait_key(delay):
    pressed = real_wait_key(delay)
    return keys.get(len(shown), pressed)

cv2.imshow, cv2.waitKey = imshow, wait_key
stats = run_live(Translator(model, providers="cpu", threads=1), video, display=True,
                 max_frames=20, snapshot_dir=Path(snapshots))
print(json.dumps(dict(window=WINDOW, shown=shown, frames=stats.frames, ended_by=stats.ended_by,
                      snapshots=[str(p) for p in stats.snapshots])))
"""


@pytest.mark.slow
def test_window_under_xvfb(model: Path, video: Path, tmp_path: Path, xvfb: str) -> None:
    done = subprocess.run([sys.executable, "-c", WINDOW_SCRIPT, str(model), str(video),
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, QT_QPA_PLATFORM="xcb"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])

    assert report["frames"] == 5 and report["ended_by"] == "quit by user"
    assert [name for name, _, _ in report["shown"]] == [report["window"]] * 5
    assert all(visible > 0 for _, _, visible in report["shown"])  # a real, visible window
    # translated for frames 1-3, side by side after the space key
    assert [shape for _, shape, _ in report["shown"]] == (
        [[HEIGHT, WIDTH, 3]] * 3 + [[HEIGHT, 2 * WIDTH, 3]] * 2)
    assert len(report["snapshots"]) == 1
    snapshot = cv2.imread(report["snapshots"][0])
    assert snapshot is not None and snapshot.shape == (HEIGHT, WIDTH, 3)


@pytest.mark.parametrize("source", ["video", "0"])
def test_no_display_is_one_clear_error(model: Path, translator: Translator, video: Path,
                                       monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli(str(model), "--webcam", str(video) if source == "video" else source)

    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and "no display available" in lines[0]
    assert "use --no-display" in lines[0]
    assert "live: backend" not in result.output  # said before a backend was chosen
    with pytest.raises(LiveError, match="no display available"):
        run_live(translator, "0", display=True)


def test_a_live_source_that_is_neither_file_nor_camera_is_named(translator: Translator,
                                                                tmp_path: Path) -> None:
    with pytest.raises(LiveError, match=r"nope\.mp4: no such file \(give a camera index"):
        run_live(translator, str(tmp_path / "nope.mp4"), display=False)
    with pytest.raises(LiveError, match="camera 97: cannot open it"):
        run_live(translator, "97", display=False, reconnects=0)


def test_display_that_does_not_answer_is_one_clear_error(model: Path, video: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Qt would abort the whole process on an X display that is set but not there.
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":987")
    result = cli(str(model), "--webcam", str(video))
    assert result.exit_code == 2, result.output
    assert "no display available" in result.output and "does not answer" in result.output


# ---- latency ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pause", [0.2, 0.4])
def test_slow_consumer_gets_the_newest_frame(video: Path, pause: float) -> None:
    grabber = LatestFrameGrabber(str(video))
    indices: list[int] = []
    lags: list[int] = []
    started = time.perf_counter()
    try:
        while (item := grabber.read(indices[-1] if indices else 0)) is not None:
            index, frame = item
            lags.append(grabber.frames_read - index)  # frames captured since: 0 or 1, never more
            indices.append(index)
            gray = float(np.median(frame))
            assert abs(gray - GRAY_STEP * (index - 1)) <= 6, (index, gray)  # it is that frame
            time.sleep(pause)  # the slow consumer
    finally:
        grabber.stop()
    elapsed = time.perf_counter() - started

    jumps = np.diff(indices)
    assert indices[-1] == FRAMES and (jumps >= 1).all()
    assert jumps.max() >= 2 and len(indices) <= FRAMES * 0.8  # frames were skipped, not queued
    assert max(lags) <= 1
    # the file's pace (2 s), not one read per frame (FRAMES * pause)
    assert (FRAMES - 1) / FPS * 0.8 <= elapsed < FRAMES * pause * 0.7


# ---- adaptive working size (issue 12) -----------------------------------------------------------

def test_working_size_shrinks_under_load_grows_when_light_and_keeps_its_bounds() -> None:
    from runtime.media.live import START_SIDE, WorkingSize

    sizer = WorkingSize(target_fps=10, frame_side=1280, min_side=64)
    assert sizer.side == START_SIDE and sizer.max_side == START_SIDE
    for _ in range(10):  # 4x over budget: time ~ side^2, so the side halves (or less)
        sizer.update(4 * 0.09 * (sizer.side / START_SIDE) ** 2)
    assert 64 <= sizer.side <= START_SIDE // 2 + 32
    for _ in range(30):  # nearly free: grows to the frame's own size and no further
        sizer.update(0.001)
    assert sizer.side == 1280 and sizer.max_side is None
    for _ in range(30):  # hopeless: never below the model's size rule
        sizer.update(10.0)
    assert sizer.side == 64
    small = WorkingSize(target_fps=10, frame_side=48, min_side=64)
    assert small.side == 48 and small.max_side is None  # never above the frame's own size


class SlowBackend:
    """Returns its input after a sleep proportional to the pixels (a model whose cost grows
    with the working size): 1 us per pixel."""

    providers = ["SlowBackend"]

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def run(self, feed: np.ndarray) -> np.ndarray:
        self.shapes.append(feed.shape)
        time.sleep(feed.shape[2] * feed.shape[3] * 1e-6)
        return feed


def test_live_loop_adapts_the_working_size_to_the_target(model: Path, tmp_path: Path) -> None:
    from runtime.media.video import AtomicVideoWriter

    clip = tmp_path / "big.mp4"
    with AtomicVideoWriter(clip, 30.0, (320, 240)) as writer:
        for index in range(90):
            writer.write(np.full((240, 320, 3), index % 255, np.uint8))
    translator = Translator(model, providers="cpu", threads=1)
    slow = SlowBackend()
    translator.backend = slow  # type: ignore[assignment]
    stats = run_live(translator, str(clip), display=False, max_frames=15, target_fps=40)
    # 320x240 costs 77 ms here: far over 40 FPS, so the working size must have come down
    assert slow.shapes[0][2:] == (240, 320)
    assert max(slow.shapes[-1][2:]) < 320 and stats.working_size is not None
    assert max(stats.working_size) < 320 and "working size" in stats.line()
    assert translator.max_side is None  # restored
    fixed = run_live(translator, str(clip), display=False, max_frames=3)  # target 0: as given
    assert fixed.working_size == (320, 240) and slow.shapes[-1][2:] == (240, 320)  # said too


# ---- failures while recording -------------------------------------------------------------------

class FailingBackend:
    """Returns its input, and raises on call ``fail_on`` (a model that breaks mid-run)."""

    providers = ["FailingBackend"]

    def __init__(self, fail_on: int) -> None:
        self.calls, self.fail_on = 0, fail_on

    def run(self, feed: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("the device went away\nsecond line")
        return feed


def test_a_model_failure_keeps_the_recording_and_reports_the_frame(model: Path, video: Path,
                                                                   tmp_path: Path) -> None:
    translator = Translator(model, providers="cpu", threads=1)
    translator.backend = FailingBackend(fail_on=5)  # type: ignore[assignment]
    record = tmp_path / "rec.mp4"
    stats = run_live(translator, str(video), display=False, record=record)
    assert stats.error == "frame 5: the device went away" and stats.ended_by == "failed"
    assert stats.recording == record
    assert_complete_recording(record, 4)  # the frames before the failure, a complete file


def test_a_recording_that_cannot_be_written_fails_and_leaves_no_temp_file(
        translator: Translator, video: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.media.sinks import OutputWriteError
    from runtime.media.video import AtomicVideoWriter

    real_write = AtomicVideoWriter.write

    def disk_full_after_12(self: AtomicVideoWriter, frame: np.ndarray,
                           pts: int | None = None) -> None:
        if self.frames == 12:
            raise OutputWriteError(f"{self.path}: cannot write (No space left on device)")
        real_write(self, frame, pts)

    monkeypatch.setattr(AtomicVideoWriter, "write", disk_full_after_12)
    record = tmp_path / "rec.mp4"
    with pytest.raises(OutputWriteError, match="No space left on device"):
        run_live(translator, str(video), display=False, record=record)
    assert list(tmp_path.iterdir()) == []  # no recording, no temp file, no record of one


def test_options_of_the_other_mode_are_named_not_ignored(model: Path, video: Path,
                                                         tmp_path: Path) -> None:
    both = cli(str(model), "--webcam", str(video), str(tmp_path), "--no-display")
    assert both.exit_code == 2 and "give INPUTS or --webcam, not both" in both.output
    assert "model:" not in both.output  # refused before loading
    side = cli(str(model), "--webcam", str(video), "--no-display", "--max-frames", "2",
               "--side-by-side")
    assert side.exit_code == 0 and "warning: --side-by-side: live mode shows and records the " \
        "translation alone" in side.stderr
    fixed = cli(str(model), "--webcam", str(video), "--no-display", "--max-frames", "2",
                "--target-fps", "0")  # no adapting: the working size is said all the same
    assert fixed.exit_code == 0 and f"working size {WIDTH}x{HEIGHT}" in fixed.stdout, \
        fixed.stdout
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), np.zeros((16, 16, 3), np.uint8))
    files = cli(str(model), str(image), "-o", str(tmp_path / "out"), "--max-frames", "3",
                "--target-fps", "10")
    assert files.exit_code == 0, files.output
    assert "warning: --max-frames, --target-fps: for --webcam only, so they change nothing " \
        "here" in files.stderr


def test_live_options_and_sources_are_checked_before_the_model_loads(model: Path,
                                                                     video: Path,
                                                                     tmp_path: Path) -> None:
    for args, message in [
            (["--max-frames", "0"], "--max-frames must be >= 1, got 0"),
            (["--reconnects", "-1"], "--reconnects must be >= 0, got -1"),
            (["--webcam", str(tmp_path)], f"{tmp_path}: is a folder"),
            (["--webcam", str(tmp_path / "no.mp4")], f"{tmp_path / 'no.mp4'}: no such file")]:
        source = [] if "--webcam" in args else ["--webcam", str(video)]
        result = cli(str(model), *source, *args, "--no-display")
        assert result.exit_code == 2, result.output
        lines = error_lines(result)
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output
        assert "model:" not in result.output  # refused before loading


def test_a_source_that_yields_no_frame_is_an_error(translator: Translator, video: Path,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # a file that opens but decodes to nothing (as a damaged one can): never "0 frames, done"
    monkeypatch.setattr(LatestFrameGrabber, "read", lambda self, last: None)
    with pytest.raises(LiveError, match="no frame could be read"):
        run_live(translator, str(video), display=False)



def test_a_source_that_changes_size_ends_the_recording_cleanly(model: Path, video: Path,
                                                              tmp_path: Path) -> None:
    # a stream back at another resolution: the recording cannot hold both sizes
    translator = Translator(model, providers="cpu", threads=1)
    real, calls = translator.translate, []

    def translate(frame: np.ndarray, **options: object) -> np.ndarray:
        calls.append(1)
        out = real(frame)
        return cv2.resize(out, (80, 60)) if len(calls) > 12 else out

    translator.translate = translate  # type: ignore[method-assign]
    record = tmp_path / "rec.mp4"
    stats = run_live(translator, str(video), display=False, record=record)
    assert stats.error == ("frame 13: the source changed size from 64x48 to 80x60; the "
                           "recording holds the frames before")
    assert stats.recording == record
    assert_complete_recording(record, 12)  # and no temp file left
