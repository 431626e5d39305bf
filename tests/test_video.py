"""The video tests (tests/video_cases.py), run in a pytest process of their own.

They were moved here when the single-process suite crashed with a segmentation fault near
them; the cause turned out to be elsewhere (OpenVINO Cores freed out of order left the signal
stack unmapped: see runtime.backends.openvino_core). The child process stays: it costs a few
seconds and keeps PyAV's and OpenCV's two FFmpeg builds out of the suite's process.
"""

from __future__ import annotations

from pathlib import Path

from isolated import run_cases_in_own_process

CASES = Path(__file__).with_name("video_cases.py")


def test_video_cases_in_their_own_process() -> None:
    run_cases_in_own_process(CASES)
