"""``cyclegan-run --ray``: batch translation on a Ray cluster (runtime.distributed).

One local cluster of 2 CPUs serves the whole module (Ray takes ~10 s to start on 2 cores). The
tests that need it are skipped where ray is not installed; the others run everywhere.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import cv2
import pytest
from click.testing import CliRunner

from runtime.cli import main as run_cli
from runtime.demo import demo_model_path
from runtime.distributed import DistributedError, translate, worker_shape
from runtime.media.outputs import OutputPlanError
from runtime.synthetic import natural_images

MODEL = str(demo_model_path())
needs_ray = pytest.mark.skipif(find_spec("ray") is None, reason="ray is not installed")


@pytest.fixture(scope="module")
def cluster() -> Any:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    yield ray
    ray.shutdown()


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(run_cli, [str(a) for a in args])


def write_images(folder: Path, count: int, height: int, width: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(natural_images(count, height, width, seed=seed)):
        path = folder / f"{i:03d}.png"
        assert cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def outputs(folder: Path) -> dict[str, bytes]:
    """Visible files under ``folder`` (no record, no temp file) and their bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def worker_pids(busy: bool = False) -> list[int]:
    """The model actors' processes on this machine (Ray titles them after the class, and after
    the method while one runs: ``busy`` ones only are this run's, not a previous test's)."""
    title = b"ray::TranslationWorker" + (b".run" if busy else b"")
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(title):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


# ---- on a cluster ------------------------------------------------------------------------------

@pytest.mark.slow
def test_outputs_are_the_local_runs_and_corrupt_inputs_are_named(tmp_path: Path,
                                                                 cluster: Any) -> None:
    photos = tmp_path / "photos"
    write_images(photos, 4, 64, 96, seed=1)
    write_images(photos / "sub", 3, 96, 64, seed=2)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    clip = cv2.VideoWriter(str(photos / "clip.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10.0,
                           (64, 48))
    for frame in natural_images(8, 48, 64, seed=3):
        clip.write(frame)
    clip.release()

    local = run(MODEL, photos, "-o", tmp_path / "local", "-q")
    on_ray = run(MODEL, photos, "-o", tmp_path / "ray", "--ray")  # -q would hide the workers line
    assert local.exit_code == on_ray.exit_code == 1, on_ray.output
    for result in (local, on_ray):
        assert "translated 8 of 9 input(s)" in result.output
        assert f"{photos / 'broken.jpg'}: corrupt or truncated image" in result.output
    assert "ray: 2 worker(s)" in on_ray.output
    expected = outputs(tmp_path / "local")
    assert len(expected) == 8 and outputs(tmp_path / "ray") == expected  # byte for byte


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds workers in /proc")
def test_a_killed_worker_costs_a_retry_never_an_input(tmp_path: Path, cluster: Any) -> None:
    write_images(tmp_path / "in", 24, 128, 128, seed=4)
    killed: list[int] = []

    def kill_one_worker(count: int) -> None:
        if not killed and (busy := worker_pids(busy=True)):  # one translating right now
            killed.append(busy[0])
            os.kill(busy[0], signal.SIGKILL)

    summary = translate(MODEL, str(tmp_path / "in"), tmp_path / "out", chunk_size=3,
                        progress=kill_one_worker)
    assert killed and killed[0] not in worker_pids()
    assert summary.failed == [] and len(summary.translated) == 24, summary.lines()
    assert any("died and were restarted" in note for note in summary.notes)
    assert not list((tmp_path / "out").glob(".*.part*"))  # the dead writer's temp file too
    assert run(MODEL, tmp_path / "in", "-o", tmp_path / "local", "-q").exit_code == 0
    assert outputs(tmp_path / "out") == outputs(tmp_path / "local")


@pytest.mark.slow
def test_skip_existing_continues_an_interrupted_run(tmp_path: Path, cluster: Any) -> None:
    write_images(tmp_path / "in", 16, 64, 64, seed=5)

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C once the first task is back

    first = translate(MODEL, str(tmp_path / "in"), tmp_path / "out", chunk_size=2,
                      progress=interrupt)
    assert first.interrupted and 0 < len(first.translated) < 16
    done = outputs(tmp_path / "out")
    assert sorted(done) == sorted(p.name for p in first.translated)  # all complete, listed

    rest = translate(MODEL, str(tmp_path / "in"), tmp_path / "out", skip_existing=True)
    assert len(rest.skipped) == len(done) and len(rest.translated) == 16 - len(done)
    assert not rest.failed and not rest.interrupted
    assert len(outputs(tmp_path / "out")) == 16
    assert {k: v for k, v in outputs(tmp_path / "out").items() if k in done} == done


# ---- before any cluster ------------------------------------------------------------------------

@needs_ray
def test_an_output_inside_the_inputs_is_refused_up_front(tmp_path: Path) -> None:
    write_images(tmp_path / "in", 2, 32, 32, seed=6)
    result = run(MODEL, tmp_path / "in", "-o", tmp_path / "in", "--ray")
    assert result.exit_code == 2 and "would replace inputs" in result.output, result.output
    assert "ray:" not in result.output and "Traceback" not in result.output  # no worker started
    with pytest.raises(OutputPlanError, match="would replace inputs"):
        translate(MODEL, str(tmp_path / "in"), tmp_path / "in")


def test_without_ray_the_command_says_what_to_install(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "in", 1, 32, 32, seed=7)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    result = run(MODEL, tmp_path / "in", "-o", tmp_path / "out", "--ray")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == 'error: --ray needs Ray: pip install "cyclegan-toolkit[ray]"'
    assert not (tmp_path / "out").exists()


def test_ray_options_need_ray_and_import_runtime_never_imports_ray(tmp_path: Path) -> None:
    result = run(MODEL, tmp_path, "-o", tmp_path / "out", "--workers", "2")
    assert result.exit_code == 2 and "go with --ray" in result.output
    code = ("import sys, runtime, runtime.cli, runtime.distributed; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("cpus", "gpus", "workers", "per_gpu", "shape"), [
    ([2], [0], None, 0.0, (2, 1.0)),        # default: one worker per CPU
    ([8, 8], [0, 0], 1, 0.0, (1, 8.0)),     # a share never larger than a node
    ([8, 8], [0, 0], 3, 0.0, (3, 4.0)),     # 5 CPUs each would place only two
    ([4, 4], [2, 1], None, 0.5, (6, 1.0)),  # GPU workers: as many as the GPUs hold
])
def test_workers_are_sized_to_fit_the_nodes(cpus: list[float], gpus: list[float],
                                            workers: int | None, per_gpu: float,
                                            shape: tuple[int, float]) -> None:
    assert worker_shape(cpus, gpus, workers, per_gpu) == shape


@pytest.mark.parametrize(("gpus", "workers", "per_gpu"), [([0], 3, 0.0), ([0], None, 1.0)])
def test_workers_that_cannot_be_placed_are_refused(gpus: list[float], workers: int | None,
                                                   per_gpu: float) -> None:
    with pytest.raises(DistributedError, match="room for"):
        worker_shape([2], gpus, workers, per_gpu)


def test_an_unreachable_cluster_is_one_line_at_once() -> None:
    import socket

    from runtime.distributed import _check_reachable

    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DistributedError, match=r"cannot reach X \(Connection refused\)"):
        _check_reachable(f"127.0.0.1:{port}", "X")  # before ray.init's minutes of retries
    for address in (None, "local", "auto", "ray://head:10001"):  # for ray.init to judge
        _check_reachable(address, "X")


def test_ray_init_leaves_the_commands_sigterm_handler_in_place() -> None:
    import signal

    from runtime.distributed import _connect

    class FakeRay:
        def is_initialized(self) -> bool:
            return False

        def init(self, **options: object) -> None:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(15))  # as ray.init does

    def ours(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        assert _connect(FakeRay(), None, False) is True
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)
