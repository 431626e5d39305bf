"""Nothing lost: cyclegan-run never replaces inputs or foreign files, never reads its outputs as
inputs, never reports a partial output as a success, and cleans up after a killed run.

Uses the bundled demo model (no torch) on tiny images and clips.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import signal_inside_import

from runtime.cli import main as run_cli
from runtime.demo import demo_model_path
from runtime.media.manifest import MANIFEST_NAME, OutputManifest
from runtime.media.outputs import OutputPlanError, plan_outputs
from runtime.media.sinks import OutputWriteError, remove_stale_parts
from runtime.media.sources import expand_inputs
from runtime.media.video import AtomicVideoWriter
from runtime.synthetic import natural_images

MODEL = str(demo_model_path())


def write_image(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def write_video(path: Path, frames: int, size: tuple[int, int] = (48, 32), fps: float = 10.0,
                fourcc: str = "mp4v") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    for frame in natural_images(frames, size[1], size[0], seed=3):
        writer.write(frame)
    writer.release()
    return path


def run(*args: str | Path) -> object:
    return CliRunner().invoke(run_cli, [str(a) for a in args])


def visible(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in
                                              p.relative_to(folder).parts))


# ---- outputs never replace inputs or files the tool did not write -----------------------------

def test_single_image_onto_itself_is_refused_before_any_work(tmp_path: Path) -> None:
    src = write_image(tmp_path / "x.jpg", natural_images(1, 24, 32, seed=1)[0])
    before = src.read_bytes()
    result = run(MODEL, src, "-o", src)
    assert result.exit_code == 2, result.output
    assert "would replace the input" in result.output and "Traceback" not in result.output
    assert src.read_bytes() == before
    assert "model:" not in result.output  # refused before the model was even loaded


def test_folder_onto_itself_is_refused(tmp_path: Path) -> None:
    images = natural_images(2, 24, 32, seed=2)
    a = write_image(tmp_path / "in" / "a.png", images[0])
    write_image(tmp_path / "in" / "b.png", images[1])
    before = a.read_bytes()
    result = run(MODEL, tmp_path / "in", "-o", tmp_path / "in")
    assert result.exit_code == 2 and "would replace inputs" in result.output, result.output
    assert a.read_bytes() == before


def test_video_onto_itself_is_refused(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", 3)
    before = clip.read_bytes()
    result = run(MODEL, clip, "-o", clip)
    assert result.exit_code == 2 and "would replace the input" in result.output
    assert clip.read_bytes() == before


def test_a_foreign_file_is_never_replaced_but_our_own_output_is(tmp_path: Path) -> None:
    src = write_image(tmp_path / "in" / "a.png", natural_images(1, 24, 32, seed=3)[0])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"the user's own file")
    refused = run(MODEL, src.parent, "-o", out)
    assert refused.exit_code == 2, refused.output
    assert "exists and was not written by cyclegan-run" in refused.output
    assert (out / "a.png").read_bytes() == b"the user's own file"

    (out / "a.png").unlink()
    assert run(MODEL, src.parent, "-o", out).exit_code == 0
    again = run(MODEL, src.parent, "-o", out)  # our own earlier output: replaced
    assert again.exit_code == 0, again.output
    # an output the user changed since is theirs now
    (out / "a.png").write_bytes(b"edited by the user")
    assert run(MODEL, src.parent, "-o", out).exit_code == 2
    assert (out / "a.png").read_bytes() == b"edited by the user"


def test_output_inside_the_input_folder_is_never_read_back(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for i, image in enumerate(natural_images(2, 24, 32, seed=4)):
        write_image(photos / f"{i}.png", image)
    for _ in range(3):  # reruns must not translate the outputs again, nor nest them
        result = run(MODEL, photos, "-o", photos / "out")
        assert result.exit_code == 0, result.output
        assert "translated 2 of 2" in result.output
    assert visible(photos) == ["0.png", "1.png", "out/0.png", "out/1.png"]
    assert "skipped 2 earlier output(s)" in result.output
    # an earlier output folder elsewhere inside the inputs is recognised by its record
    other = run(MODEL, photos, "-o", tmp_path / "elsewhere")
    assert "translated 2 of 2" in other.output and "skipped 2 earlier output(s)" in other.output
    # a file of the user's own inside the output folder is not read either, and is counted
    write_image(photos / "out" / "mine.png", natural_images(1, 24, 32, seed=5)[0])
    result = run(MODEL, photos, "-o", photos / "out")
    assert result.exit_code == 0 and "translated 2 of 2" in result.output, result.output
    assert "passed over 1 other image(s)/video(s) inside the output folder" in result.output
    assert "out/out" not in " ".join(visible(photos))


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.media.outputs as outputs_module

    src = write_image(tmp_path / "in" / "a.png", natural_images(1, 24, 32, seed=4)[0])
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # as a read-only mount answers (root passes permission bits, so they cannot stand for it)
    monkeypatch.setattr(outputs_module.os, "access", lambda path, mode: Path(path) != locked
                        and real_access(path, mode))
    result = run(MODEL, src, "-o", locked / "out")
    assert result.exit_code == 2, result.output
    assert f"cannot write in {locked} (a read-only file system, or no permission)" in result.output
    assert "model:" not in result.output and list(locked.iterdir()) == []


def release_readers(pipe: Path, after_s: float = 20.0) -> None:
    """Open ``pipe`` for writing once, ``after_s`` from now: a reader blocked on it gets EOF."""
    time.sleep(after_s)
    try:
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting (ENXIO), or the test is over and the pipe gone


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_pipes_and_broken_links_are_named_failures_never_opened(tmp_path: Path) -> None:
    # opening a pipe blocks until a writer comes: one in a folder used to hang the run for good
    photos = tmp_path / "photos"
    write_image(photos / "a.png", natural_images(1, 24, 32, seed=4)[0])
    os.mkfifo(photos / "pipe.jpg")
    (photos / "gone.png").symlink_to(tmp_path / "nowhere.png")
    unblocker = threading.Thread(target=release_readers, args=(photos / "pipe.jpg",), daemon=True)
    unblocker.start()  # should the run open the pipe after all, the test fails, not hangs
    result = run(MODEL, photos, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "translated 1 of 3" in result.output, result.output
    assert f"{photos / 'pipe.jpg'}: not a regular file (a pipe, socket or device)" in result.output
    assert f"{photos / 'gone.png'}: a broken link" in result.output
    direct = run(MODEL, photos / "pipe.jpg", "-o", tmp_path / "one.png")
    assert direct.exit_code == 1 and "not a regular file" in direct.output, direct.output
    matched = run(MODEL, str(photos / "*"), "-o", tmp_path / "globbed")  # a pattern names them too
    assert matched.exit_code == 1 and "translated 1 of 3" in matched.output, matched.output
    assert "not a regular file" in matched.output and "a broken link" in matched.output


def test_a_name_at_the_file_systems_limit_is_written(tmp_path: Path) -> None:
    # the temp file's extra characters must not push its name past 255 bytes
    name = "é" * 100 + "x" * 50  # 250 bytes of UTF-8, 254 with ".png"
    write_image(tmp_path / "in" / f"{name}.png", natural_images(1, 24, 32, seed=4)[0])
    write_video(tmp_path / "in" / f"{name}.mp4", 3)
    result = run(MODEL, tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 0 and "translated 2 of 2" in result.output, result.output
    assert visible(tmp_path / "out") == sorted([f"{name}.mp4", f"{name}.png"])
    # such a temp name lost its extension to the limit; left by a killed run, it still goes
    from runtime.media.sinks import discard, temp_path

    left = temp_path(tmp_path / "out" / f"{name}.mp4", keep_suffix=True)
    discard(left)
    left.write_bytes(b"half a video")  # unlocked, with this pid: an earlier process's
    assert remove_stale_parts([tmp_path / "out"]) == [left]


def test_an_earlier_output_folders_subfolders_are_not_read_back(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    first, second = natural_images(2, 24, 32, seed=6)
    write_image(photos / "a.png", first)
    write_image(photos / "sub" / "b.png", second)
    assert run(MODEL, photos, "-o", photos / "out").exit_code == 0
    assert (photos / "out" / "sub" / "b.png").is_file()  # its record sits in photos/out
    other = run(MODEL, photos, "-o", tmp_path / "elsewhere")
    assert other.exit_code == 0, other.output
    assert "translated 2 of 2" in other.output and "skipped 2 earlier output(s)" in other.output
    assert visible(tmp_path / "elsewhere") == ["a.png", "sub/b.png"]


def test_a_torn_record_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    """A killed write (or a full disk) can leave half a line; the next record starts afresh."""
    src = write_image(tmp_path / "in" / "a.png", natural_images(1, 24, 32, seed=7)[0])
    out = tmp_path / "out"
    assert run(MODEL, src.parent, "-o", out).exit_code == 0
    with (out / MANIFEST_NAME).open("a") as record:
        record.write('{"kind": "ima')
    for _ in range(2):  # each rerun must still know a.png as its own
        result = run(MODEL, src.parent, "-o", out)
        assert result.exit_code == 0, result.output


def test_collision_is_judged_on_the_final_name(tmp_path: Path) -> None:
    """x.pgm is written as x.pgm.png (no colour PGM): the input x.pgm.png claims that name too."""
    gray, colour = natural_images(2, 24, 32, seed=5)
    write_image(tmp_path / "in" / "x.pgm", cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY))
    write_image(tmp_path / "in" / "x.pgm.png", colour)
    outcomes = set()
    for attempt in range(2):
        out = tmp_path / f"out{attempt}"
        result = run(MODEL, tmp_path / "in", "-o", out)
        assert result.exit_code == 1, result.output
        assert "already taken by" in result.output and "translated 1 of 2" in result.output
        outcomes.add((out / "x.pgm.png").read_bytes())
    assert len(outcomes) == 1  # the same input wins every time


def test_one_file_name_for_several_inputs_is_refused(tmp_path: Path) -> None:
    for i, image in enumerate(natural_images(2, 24, 32, seed=6)):
        write_image(tmp_path / "in" / f"{i}.png", image)
    result = run(MODEL, tmp_path / "in" / "0.png", tmp_path / "in" / "1.png",
                 "-o", tmp_path / "two.jpg")
    assert result.exit_code == 2 and "names one output file, but there are 2" in result.output
    assert not (tmp_path / "two.jpg").exists()


def test_results_location_is_printed(tmp_path: Path) -> None:
    src = write_image(tmp_path / "a.png", natural_images(1, 24, 32, seed=7)[0])
    result = run(MODEL, src, "-o", tmp_path / "res")
    assert result.exit_code == 0 and f"results in {tmp_path / 'res'}" in result.output


@pytest.mark.parametrize(("source", "target", "message"), [
    ("clip.mp4", "out.png", "an image name, but"),
    ("clip.mp4", "out.gif", "an image name, but"),
    ("a.png", "out.mp4", "a video name, but"),
])
def test_output_kind_must_match_the_input(tmp_path: Path, source: str, target: str,
                                          message: str) -> None:
    if source.endswith(".mp4"):
        write_video(tmp_path / source, 3)
    else:
        write_image(tmp_path / source, natural_images(1, 24, 32, seed=8)[0])
    result = run(MODEL, tmp_path / source, "-o", tmp_path / target)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / target).exists() and not (tmp_path / (target + ".png")).exists()


def test_planner_refuses_in_the_library_too(tmp_path: Path) -> None:
    src = write_image(tmp_path / "a.png", natural_images(1, 16, 16)[0])
    with pytest.raises(OutputPlanError, match="would replace the input"):
        plan_outputs(expand_inputs([str(src)]).files, src)


# ---- folder walking: hidden and non-media files --------------------------------------------

def test_hidden_and_non_media_files_are_skipped_not_failed(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_image(folder / "a.png", natural_images(1, 24, 32, seed=9)[0])
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "notes.txt").write_text("hello")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = run(MODEL, folder, "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "skipped 2 non-media file(s)" in result.output
    assert "1 failed:" in result.output and "broken.jpg: corrupt or truncated" in result.output


# ---- corrupt or partial output is a failure ---------------------------------------------------

FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    from runtime.cli import main
    main({args!r})
""")


@pytest.mark.parametrize("kind", ["video", "image"])
def test_a_full_disk_fails_the_output_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    if kind == "video":
        src = write_video(tmp_path / "clip.mp4", 40, size=(96, 64))
        out = tmp_path / "out" / "clip.mp4"
    else:
        src = write_image(tmp_path / "big.png", natural_images(1, 256, 256, seed=11)[0])
        out = tmp_path / "out" / "big.png"
    code = FULL_DISK.format(limit=12_000, args=[MODEL, str(src), "-o", str(out), "-q"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{src}:" in done.stdout and "translated 0 of 1" in done.stdout
    assert "Traceback" not in done.stderr
    assert visible(out.parent) == []  # no truncated output, no temp file
    assert not [p for p in out.parent.iterdir() if ".part" in p.name]


def test_video_writer_refuses_to_commit_a_short_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    writer = AtomicVideoWriter(tmp_path / "v.mp4", 10.0, (32, 24))
    for frame in natural_images(4, 24, 32):
        writer.write(frame)
    writer.frames += 3  # as if three frames had been lost on the way to the disk
    with pytest.raises(OutputWriteError, match="only 4 of 7 frames"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


def test_truncated_video_reports_its_shortfall(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", 100, fourcc="MJPG")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 3 // 10])  # the header still promises 100 frames
    result = run(MODEL, clip, "-o", tmp_path / "out.avi")
    assert result.exit_code == 0, result.output
    assert "of the 100 frames its container announces" in result.output


def test_animated_gif_keeps_every_frame_and_its_timing(tmp_path: Path) -> None:
    animation = cv2.Animation()
    animation.frames = list(natural_images(4, 24, 32, seed=12))
    animation.durations = [80, 120, 80, 200]
    animation.loop_count = 3  # plays a set number of times, not forever
    assert cv2.imwriteanimation(str(tmp_path / "anim.gif"), animation)
    ok, given = cv2.imreadanimation(str(tmp_path / "anim.gif"))
    result = run(MODEL, tmp_path / "anim.gif", "-o", tmp_path / "out.gif")
    assert result.exit_code == 0, result.output
    ok, back = cv2.imreadanimation(str(tmp_path / "out.gif"))
    assert ok and len(back.frames) == 4
    assert [int(d) for d in np.asarray(back.durations).ravel()] == [80, 120, 80, 200]
    assert back.loop_count == given.loop_count != 0


def test_gif_delays_are_the_files_own(tmp_path: Path) -> None:
    """Pillow's GIFs with 0 delays (shown at a browser's default pace) read as 1000 ms for the
    first frame in OpenCV; the output keeps the file's own delays. Local colour tables,
    comments and the loop extension are walked over."""
    image_module = pytest.importorskip("PIL.Image")
    from runtime.media.sources import gif_delays_ms

    pictures = [image_module.fromarray(image[..., ::-1]) for image in natural_images(
        3, 24, 32, seed=13)]
    for durations in ([0, 0, 0], [30, 0, 250]):
        path = tmp_path / f"pil_{durations[-1]}.gif"
        pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations,
                         loop=0, comment=b"made by Pillow", optimize=False)
        assert gif_delays_ms(path.read_bytes()) == durations
        out = tmp_path / f"out_{durations[-1]}.gif"
        result = run(MODEL, path, "-o", out)
        assert result.exit_code == 0, result.output
        assert gif_delays_ms(out.read_bytes()) == durations
    assert gif_delays_ms(b"GIF89a" + bytes(7) + b"\x99") is None  # not a block a GIF has
    assert gif_delays_ms(b"\x89PNG\r\n\x1a\n" + bytes(20)) is None


# ---- leftovers -----------------------------------------------------------------------------

def test_stale_temp_files_of_a_dead_process_are_removed(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")  # POSIX: writers hold their temp files locked
    from runtime.media.sinks import discard, temp_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".clip.mp4.{dead}-abcd1234.part.mp4"
    # A writer of this version holds its temp file locked: never touched.
    live = temp_path(tmp_path / "clip.mp4", keep_suffix=True)
    # Our own pid but nobody's lock: an earlier process that had our pid (PID 1 in containers).
    reused_own = tmp_path / f".a.jpg.{os.getpid()}-abcd1234.part"
    # A live pid (our parent) without a lock: a writer of a version before the locks, kept
    # while its file is fresh, or a dead writer whose pid was reused, removed once it is old.
    alive_fresh = tmp_path / f".b.jpg.{os.getppid()}-abcd1234.part"
    alive_old = tmp_path / f".c.jpg.{os.getppid()}-abcd1234.part"
    # A live writer in another container: its pid means nothing here, its lock does.
    elsewhere = tmp_path / f".d.jpg.{dead}-wxyz9876.part"
    # Just left by a run killed a moment ago: removed at once (the rerun right after).
    new = tmp_path / f".e.png.{dead}-abcd1234.part"
    legacy = [tmp_path / ".photo.jpg.k3j9x0qa.part", tmp_path / ".clip.mp4.k3j9x0qa.part.mp4"]
    # A user's files that look like ours: never touched, however old.
    users = [tmp_path / ".notes.part", tmp_path / ".backup.firefox_.part",
             tmp_path / ".thesis.chapter1.part.docx", tmp_path / ".budget.20240105.part",
             tmp_path / ".report.1-final_v2.part", tmp_path / ".chapter.3-revision.part.docx",
             tmp_path / f".clip.mp4.{dead}-abcd1234.part.mov"]
    for path in (stale, reused_own, alive_fresh, alive_old, elsewhere, new, *legacy, *users):
        path.write_bytes(b"x")
    pipe = tmp_path / f".f.jpg.{dead}-abcd1234.part"
    os.mkfifo(pipe)  # opening it would block the scan for good
    now = time.time()
    for path, age in [(stale, 30), (reused_own, 30), (alive_fresh, 30), (elsewhere, 30),
                      (alive_old, 700), *((p, 3700) for p in (*legacy, *users, pipe))]:
        os.utime(path, (now - age, now - age), follow_symlinks=False)
    with open(elsewhere, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        removed = remove_stale_parts([tmp_path])
    assert sorted(removed) == sorted([stale, reused_own, alive_old, new, *legacy])
    assert all(path.exists() for path in (live, alive_fresh, elsewhere, pipe, *users))
    discard(live)
    assert not live.exists()


@pytest.mark.slow
def start_long_video_run(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    """``cyclegan-run`` on a 400-frame clip in a child process, returned once it is writing
    (its temp file exists): (process, clip, output folder)."""
    clip = write_video(tmp_path / "clip.mp4", 400, size=(256, 192), fps=25.0)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "runtime", MODEL, str(clip), "-o",
                                str(out / "clip.mp4"), "-q"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(".clip.mp4.*.part.mp4")):
        assert time.monotonic() < deadline and process.poll() is None, "no temp file appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    return process, clip, out


def test_sigkill_mid_video_leaves_no_output_and_the_rerun_cleans_up(tmp_path: Path) -> None:
    process, clip, out = start_long_video_run(tmp_path)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert visible(out) == []  # only a temp file: no half-written clip.mp4
    rerun = run(MODEL, clip, "-o", out / "clip.mp4", "--max-side", "64")
    assert rerun.exit_code == 0, rerun.output
    assert "removed 1 stale temp file(s)" in rerun.output
    assert not list(out.glob(".*.part*")) and visible(out) == ["clip.mp4"]


def test_sigterm_mid_video_is_handled_as_ctrl_c_with_status_143(tmp_path: Path) -> None:
    """docker stop and systemd send SIGTERM: the run ends as Ctrl-C ends it (the unfinished
    video's temp file removed, one line), with the status a shell gives SIGTERM."""
    process, _, out = start_long_video_run(tmp_path)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, (stdout, stderr)
    assert "interrupted" in stdout and "Traceback" not in stderr
    assert re.search(r"clip\.mp4: interrupted after \d+ translated frame\(s\); its output was "
                     r"not written", stdout), stdout  # the video cut short is named
    assert not list(out.glob(".*.part*")) and visible(out) == []


# ---- live recordings ---------------------------------------------------------------------------

def test_a_short_recording_keeps_the_source_rate(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", 20, fps=12.0)
    record = tmp_path / "rec.mp4"
    result = run(MODEL, "--webcam", clip, "--no-display", "--max-frames", "3", "-o", record)
    assert result.exit_code == 0, result.output
    fps = cv2.VideoCapture(str(record)).get(cv2.CAP_PROP_FPS)
    assert 2.0 < fps <= 12.0  # the measured rate, never the old 1 fps fallback
    # our own recording may be replaced by the next one; a foreign file may not
    assert run(MODEL, "--webcam", clip, "--no-display", "--max-frames", "2",
               "-o", record).exit_code == 0
    foreign = tmp_path / "mine.mp4"
    foreign.write_bytes(b"user data")
    refused = run(MODEL, "--webcam", clip, "--no-display", "-o", foreign)
    assert refused.exit_code == 2 and foreign.read_bytes() == b"user data"


def test_an_unwritable_recording_names_the_users_path(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.mp4", 20)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    record = blocker / "rec.mp4"
    result = run(MODEL, "--webcam", clip, "--no-display", "--max-frames", "12", "-o", record)
    assert result.exit_code == 2, result.output
    assert f"{record}: cannot write here" in result.output and ".part" not in result.output


# ---- command surface -----------------------------------------------------------------------

def test_a_folder_given_as_the_model_is_named_as_such(tmp_path: Path) -> None:
    result = run(tmp_path, "x.png", "-o", tmp_path / "o")
    assert result.exit_code == 2 and f"{tmp_path}: is a folder" in result.output


INTERRUPT_AT_IMPORT = textwrap.dedent("""
    import sys
    class Interrupt:
        def find_spec(self, name, path=None, target=None):
            if name == {module!r}:
                raise KeyboardInterrupt  # as if Ctrl-C landed during this import
    sys.meta_path.insert(0, Interrupt())
    from {package} import main
    main({args!r})
""")


@pytest.mark.parametrize(("package", "module", "args"), [
    ("runtime.cli", "numpy", [MODEL, "x.png", "-o", "o"]),
    ("runtime.bench.cli", "numpy", [MODEL]),
])
def test_ctrl_c_during_imports_is_one_line_and_exit_130(tmp_path: Path, package: str,
                                                       module: str, args: list[str]) -> None:
    write_image(tmp_path / "x.png", natural_images(1, 16, 16)[0])
    code = INTERRUPT_AT_IMPORT.format(module=module, package=package, args=args)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted"


@pytest.mark.parametrize(("signal_name", "code", "said"), [("SIGINT", 130, "interrupted"),
                                                           ("SIGTERM", 143, "terminated")])
@pytest.mark.parametrize(("package", "args"), [("runtime.cli", [MODEL, "x.png", "-o", "o"]),
                                               ("runtime.bench.cli", [MODEL])])
def test_a_signal_that_surfaces_as_an_import_error_is_still_one_line(
        tmp_path: Path, package: str, args: list[str], signal_name: str, code: int,
        said: str) -> None:
    write_image(tmp_path / "x.png", natural_images(1, 16, 16)[0])
    script = signal_inside_import("numpy", signal_name, package, f"main({args!r})")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (code, said), done.stderr


SIGNAL_THEN = textwrap.dedent("""
    import os, signal, sys, time
    import click
    from runtime.console import InterruptibleCommand
    if {ignored}:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` in a script starts it

    @click.command(cls=InterruptibleCommand)
    def main():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        except KeyboardInterrupt:
            pass  # the command handled it and carried on
        {then}
    main([])
""")


@pytest.mark.parametrize(("ignored", "then", "code", "said"), [
    (False, "raise ValueError('a real error')", 1, "ValueError: a real error"),
    (True, "print('done')", 0, ""),
])
def test_signals_do_not_mask_later_errors_nor_override_an_ignored_sigint(
        ignored: bool, then: str, code: int, said: str) -> None:
    done = subprocess.run([sys.executable, "-c", SIGNAL_THEN.format(ignored=ignored, then=then)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert said in done.stderr and "interrupted" not in done.stderr


@pytest.mark.parametrize("module", ["runtime", "runtime.bench"])
def test_version_and_python_m(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, timeout=60)
    command = "cyclegan-bench" if module == "runtime.bench" else "cyclegan-run"
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{command} ") and "version" not in done.stdout  # as export


def test_manifest_ignores_a_torn_line(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    out.write_bytes(b"png")
    manifest = OutputManifest(tmp_path)
    manifest.record(out, "image")
    with open(tmp_path / MANIFEST_NAME, "a") as handle:
        handle.write('{"path": "b.png", "si')  # killed mid-line
    again = OutputManifest(tmp_path)
    assert again.owns(out) and not again.owns(tmp_path / "b.png")
    assert json.loads((tmp_path / MANIFEST_NAME).read_text().splitlines()[0])["kind"] == "image"


def test_a_subfolder_that_cannot_be_listed_is_a_named_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000 (root reads it anyway, so the refusal is staged): os.walk alone would pass
    over the folder without a word and the run would report success."""
    source = tmp_path / "in"
    write_image(source / "ok" / "a.png", natural_images(1, 32, 32, seed=4)[0])
    write_image(source / "locked" / "b.png", natural_images(1, 32, 32, seed=5)[0])
    real_scandir = os.scandir

    def refused(path: object = ".") -> object:
        if Path(os.fsdecode(path)).name == "locked":  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", os.fsdecode(path))  # type: ignore
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", refused)
    found = expand_inputs([str(source)])
    assert [f.path.name for f in found.files] == ["a.png"]
    assert [(e.path, e.reason) for e in found.errors] == [
        (source / "locked", "cannot list this folder (Permission denied)")]
    result = run(MODEL, source, "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    assert "cannot list this folder (Permission denied)" in result.output  # type: ignore


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_kill_between_record_and_rename_never_orphans_an_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The record line is written before the rename: at the rename the output is already
    listed; a run killed in between leaves the earlier output, still ours for the rerun."""
    import runtime.media.sinks as sinks

    source = (write_image(tmp_path / "in" / "a.png", natural_images(1, 32, 48, seed=2)[0])
              if kind == "image" else write_video(tmp_path / "in" / "a.mp4", 6))
    out = tmp_path / "out"
    assert run(MODEL, source.parent, "-o", out, "-q").exit_code == 0  # type: ignore[attr-defined]
    target = out / source.name
    first = target.read_bytes()
    real_replace = os.replace
    listed_at_rename: list[int] = []

    def killed_at_the_rename(tmp: str | Path, path: str | Path) -> None:
        if Path(path) == target:
            lines = (out / MANIFEST_NAME).read_text().splitlines()
            listed_at_rename.append(sum(json.loads(line)["path"] == source.name
                                        for line in lines))
            raise KeyboardInterrupt  # the kill: the new file never takes the output's name
        real_replace(tmp, path)

    monkeypatch.setattr(sinks.os, "replace", killed_at_the_rename)
    run(MODEL, source.parent, "-o", out, "-q")
    monkeypatch.setattr(sinks.os, "replace", real_replace)
    assert listed_at_rename == [2]  # the first run's line and this one's, before the rename
    assert target.read_bytes() == first and not list(out.glob(".*.part*"))
    again = run(MODEL, source.parent, "-o", out)
    assert again.exit_code == 0, again.output  # type: ignore[attr-defined]
    assert "not written by cyclegan-run" not in again.output  # type: ignore[attr-defined]


# ---- memory, wrong reasons -----------------------------------------------------------------

def test_a_huge_frame_fails_at_once_with_a_max_side_that_fits() -> None:
    from runtime import Translator
    from runtime.memory import FrameTooLargeError

    translator = Translator(MODEL, providers="cpu")
    huge = np.zeros((12000, 12000, 3), np.uint8)  # pages untouched: cheap to allocate
    started = time.perf_counter()
    with pytest.raises(FrameTooLargeError, match=r"12000x12000 frame needs about .* GiB.*"
                                                 r"--max-side \d+") as caught:
        translator(huge)
    assert time.perf_counter() - started < 5  # not after the allocator gave up
    side = int(str(caught.value).split("--max-side ")[1].split()[0])
    from runtime.memory import available_bytes, check_fits
    check_fits(translator.metadata, side, side)  # the suggestion itself fits
    assert available_bytes() is not None


def test_a_container_limit_bounds_the_memory_a_frame_may_take(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              ) -> None:
    import runtime.memory
    from runtime import Translator
    from runtime.memory import FrameTooLargeError

    limit, usage, stat = (tmp_path / "memory.max", tmp_path / "memory.current",
                          tmp_path / "memory.stat")
    limit.write_text(f"{3 * 2**30}\n")
    usage.write_text(f"{3 * 2**30 - 2**20}\n")  # at the limit, mostly file cache
    stat.write_text(f"anon {2**30}\nfile {2 * 2**30}\ninactive_file {2 * 2**30 - 2**20}\n")
    monkeypatch.setattr(runtime.memory, "_CGROUP_FILES",
                        ((str(limit), str(usage), str(stat), "inactive_file"),))
    # the container's room, the cache it may drop counted free: 3 GiB less 1 GiB in use
    assert runtime.memory._cgroup_room() == 2 * 2**30
    limit.write_text(f"{64 * 2**20}\n")
    usage.write_text(f"{32 * 2**20}\n")
    stat.write_text("")
    assert runtime.memory.available_bytes() == 32 * 2**20  # below the machine's: it bounds
    limit.write_text("max\n")  # no limit: the machine's figure alone
    assert runtime.memory._cgroup_room() is None
    translator = Translator(MODEL)
    with pytest.raises(FrameTooLargeError) as caught:
        runtime.memory.check_fits(translator.metadata, 12000, 12000, available=10 * 2**30)
    # the share it may take, then what is available: never "more than" the larger figure
    assert "more than the 8.0 GiB it may take (80% of the 10.0 GiB available)" in str(
        caught.value)


def test_a_frame_too_large_is_a_named_failure_not_a_crash(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.memory

    monkeypatch.setattr(runtime.memory, "available_bytes", lambda: 2 * 2**20)
    src = write_image(tmp_path / "in" / "big.png", natural_images(1, 256, 256, seed=13)[0])
    write_image(tmp_path / "in" / "small.png", natural_images(1, 16, 16, seed=14)[0])
    result = run(MODEL, tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "translated 1 of 2" in result.output
    assert f"{src}: FrameTooLargeError" in result.output and "--max-side" in result.output


def test_a_corrupt_model_under_opencv_is_called_corrupt(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    data = Path(MODEL).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    write_image(tmp_path / "x.png", natural_images(1, 16, 16)[0])
    result = run(broken, tmp_path / "x.png", "-o", tmp_path / "o", "--backend", "opencv")
    assert result.exit_code == 2, result.output
    assert "not a readable ONNX model" in result.output and "portable-pad" not in result.output


def test_bench_checkpoint_without_the_pytorch_peer_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.bench.benchmark
    from runtime.bench.cli import main as bench_cli

    monkeypatch.setattr(runtime.bench.benchmark, "available_engines",
                        lambda checkpoint=None: ["onnxruntime"])
    (tmp_path / "c.pt").write_bytes(b"x")
    result = CliRunner().invoke(bench_cli, [MODEL, "--checkpoint", str(tmp_path / "c.pt")])
    assert result.exit_code == 2 and 'pip install "cyclegan-toolkit[export]"' in result.output


def test_an_interrupted_run_counts_what_it_set_out_to_do() -> None:
    from runtime.media.pipeline import RunSummary

    summary = RunSummary(translated=[Path(f"{i}.png") for i in range(6)], planned=40,
                         interrupted=True)
    assert summary.lines()[0].startswith("translated 6 of 40 input(s)")
    assert "interrupted" in summary.lines()[0]


def test_the_same_input_named_twice_is_one_input(tmp_path: Path) -> None:
    src = write_image(tmp_path / "a.png", natural_images(1, 24, 32, seed=8)[0])
    result = run(MODEL, src, src, str(tmp_path / "*.png"), "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "translated 1 of 1" in result.output and visible(tmp_path / "out") == ["a.png"]


@pytest.mark.parametrize("target", ["blocker/x.png", "blocker/sub/"])
def test_an_output_under_a_file_is_refused_before_any_work(tmp_path: Path, target: str) -> None:
    src = write_image(tmp_path / "a.png", natural_images(1, 24, 32, seed=9)[0])
    (tmp_path / "blocker").write_bytes(b"a file, not a folder")
    result = run(MODEL, src, "-o", str(tmp_path / target))
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'blocker'} is a file, not a folder" in result.output
    assert "model:" not in result.output


def test_a_record_that_cannot_be_written_names_itself_and_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.media.sinks import OutputWriteError, write_bytes_atomic

    def refused(self: OutputManifest, path: Path, kind: str, stat: object = None) -> None:
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(OutputManifest, "record", refused)
    target = tmp_path / "a.png"
    with pytest.raises(OutputWriteError, match=r"a\.png: not written: the record of what this "
                       r"tool wrote there .*\.cyclegan-run\.jsonl cannot be updated "
                       r"\(Permission denied\)"):
        write_bytes_atomic(target, b"png", OutputManifest(tmp_path).claimer("image"))
    assert list(tmp_path.iterdir()) == []


def test_a_listed_path_that_never_got_its_output_hides_nothing(tmp_path: Path) -> None:
    """A line written before a rename that never happened: the user's file later put at
    that path is an input like any other."""
    from runtime.media.manifest import listed_outputs

    ours = write_image(tmp_path / "ours.png", natural_images(1, 16, 16, seed=1)[0])
    manifest = OutputManifest(tmp_path)
    manifest.record(ours, "image")
    manifest.record(tmp_path / "never.png", "image", ours.stat())  # the killed rename's line
    write_image(tmp_path / "never.png", natural_images(1, 20, 20, seed=2)[0])  # the user's
    assert listed_outputs(tmp_path) == {Path(os.path.abspath(ours))}


def test_a_video_writer_dropped_unfinished_leaves_no_temp_file(tmp_path: Path) -> None:
    import gc

    from runtime.media.video import AtomicVideoWriter

    writer = AtomicVideoWriter(tmp_path / "clip.mp4", 10.0, (32, 24))
    writer.write(natural_images(1, 24, 32, seed=3)[0])
    assert list(tmp_path.glob(".clip.mp4.*.part.mp4"))
    del writer  # an app's error path: neither commit() nor abort()
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_without_locks_a_gone_pid_counts_once_the_file_is_a_minute_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows, or NFS without locks: a live writer elsewhere has a pid that means nothing
    here, so a fresh temp file is spared; the writers also work without locks."""
    import runtime.media.sinks as sinks

    monkeypatch.setattr(sinks, "fcntl", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    fresh = tmp_path / f".a.jpg.{dead}-abcd1234.part"
    old = tmp_path / f".b.jpg.{dead}-abcd1234.part"
    for path in (fresh, old):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 90, time.time() - 90))
    assert remove_stale_parts([tmp_path]) == [old]
    written = sinks.write_bytes_atomic(tmp_path / "c.png", b"png")  # unlocked, still atomic
    assert written.read_bytes() == b"png" and sorted(p.name for p in tmp_path.iterdir()) == [
        fresh.name, "c.png"]
