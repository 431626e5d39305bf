"""The video tests (tests/video_cases.py), run in a pytest process of their own.

Run after the rest of the suite in one process, PyAV's first decode crashed that process with a
segmentation fault (twice in CI, at the same test; the file passes on its own and after the
stream and training tests). Until the clash is found (two FFmpeg builds in one process, PyAV's
and OpenCV's, are the first suspect), a child process keeps it from taking the suite down; its
report is passed on when it fails.
"""

from __future__ import annotations

from pathlib import Path

from isolated import run_cases_in_own_process

CASES = Path(__file__).with_name("video_cases.py")


def test_video_cases_in_their_own_process() -> None:
    run_cases_in_own_process(CASES)
