"""``cyclegan-run``: translate images, folders, globs and videos, or a live source.

The command parses options and calls :mod:`runtime.media.pipeline` /
:mod:`runtime.media.live`; all logic
is importable.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click

from runtime.backends import BackendError
from runtime.media.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, expand_inputs
from runtime.metadata import MetadataError

EXIT_FAILED_INPUTS = 1
EXIT_USAGE = 2


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    click.echo(f"warning: {message}", err=True)


def _fail(message: str, debug: bool, exc: BaseException | None = None) -> None:
    if debug and exc is not None:
        raise exc
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _rate_label(started: float) -> Any:
    done = [0]

    def show(_: Any) -> str:
        elapsed = time.perf_counter() - started
        return f"{done[0] / elapsed:.1f}/s" if elapsed > 0 and done[0] else ""

    return done, show


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False)
@click.argument("inputs", nargs=-1)
@click.option("--demo", is_flag=True, help="Use the bundled demo model (photo -> blue hour); "
              "without INPUTS, translate the bundled sample photos and video.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output file (one input) or folder (mirrors folder inputs); with --webcam a "
              "video file to record.")
@click.option("--webcam", "webcam", is_flag=False, flag_value="0", default=None,
              metavar="[SOURCE]", help="Live: camera index (default 0), video file or stream "
              "URL (rtsp://, http://).")
@click.option("--no-display", is_flag=True, help="Live mode without a window (headless).")
@click.option("--max-frames", type=int, help="Live mode: stop after N frames.")
@click.option("--reconnects", type=int, default=5, show_default=True,
              help="Live mode: how often a dropped stream is reopened before giving up.")
@click.option("--side-by-side", is_flag=True, help="Write input | output pairs.")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Same-size images translated together.")
@click.option("--providers", default="auto", show_default=True,
              help="onnxruntime providers: auto, cpu, cuda, tensorrt or a comma list.")
@click.option("--backend", type=click.Choice(["onnxruntime", "opencv", "openvino", "auto"]),
              default="onnxruntime", show_default=True,
              help="auto: on a CPU, the fastest installed backend that keeps quality.")
@click.option("--device-id", type=int, default=0, show_default=True, help="GPU index.")
@click.option("--threads", type=int, help="CPU threads for inference.")
@click.option("--max-side", type=int, help="Translate at most this resolution (longer side), "
              "then scale back: faster on large frames.")
@click.option("--skip-existing", is_flag=True, help="Leave outputs that already exist.")
@click.option("--no-progress", is_flag=True)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(model: str | None, inputs: tuple[str, ...], demo: bool, output: Path | None,
         webcam: str | None,
         no_display: bool, max_frames: int | None, reconnects: int, side_by_side: bool,
         batch_size: int,
         providers: str, backend: str, device_id: int, threads: int | None,
         max_side: int | None, skip_existing: bool, no_progress: bool, debug: bool) -> None:
    """Translate INPUTS (images, folders, globs, videos) with MODEL (an exported .onnx).

    \b
    cyclegan-run --demo -o out/                      # the bundled demo model and samples
    cyclegan-run horse2zebra.onnx photos/ -o zebras/
    cyclegan-run horse2zebra.onnx clip.mp4 -o clip_zebra.mp4 --side-by-side
    cyclegan-run horse2zebra.onnx --webcam            # camera 0, q quits
    cyclegan-run horse2zebra.onnx --webcam rtsp://camera/stream --no-display -o rec.mp4
    """
    warnings.showwarning = _show_warning
    if demo:
        from runtime.demo import DemoMissingError, demo_inputs, demo_model_path

        try:
            given = ([model] if model else []) + list(inputs)
            inputs = tuple(given) or tuple(str(p) for p in demo_inputs())
            model = str(demo_model_path())
        except DemoMissingError as exc:
            _fail(str(exc), debug, exc)
    if model is None:
        raise click.UsageError("missing argument MODEL (an exported .onnx), or use --demo")
    if batch_size < 1:
        _fail(f"--batch-size must be >= 1, got {batch_size}", debug)
    if webcam is None and not inputs:
        raise click.UsageError("give INPUTS to translate, or --webcam [SOURCE]")
    if webcam is None and output is None:
        raise click.UsageError("-o/--output is required for files and folders")
    from runtime.translator import Translator

    try:
        translator = Translator(Path(model), providers=providers, device_id=device_id,
                                threads=threads, backend=backend, max_side=max_side)
    except (MetadataError, BackendError, ValueError) as exc:
        _fail(str(exc), debug, exc)
    for line in translator.selection:
        click.echo(f"backend auto: {line}", err=True)
    click.echo(f"model: {translator!r}", err=True)
    if webcam is not None:
        _run_live(translator, webcam, output, no_display, max_frames, reconnects, debug)
    else:
        assert output is not None
        _run_files(translator, list(inputs), output, batch_size, side_by_side, skip_existing,
                   no_progress)


def _run_live(translator: Any, source: str, output: Path | None, no_display: bool,
              max_frames: int | None, reconnects: int, debug: bool) -> None:
    from runtime.media.live import LiveError, run_live

    if output is not None and output.suffix.lower() not in VIDEO_EXTENSIONS:
        _fail(f"{output}: with --webcam, -o records a video (.mp4, .avi, .mkv)", debug)
    try:
        stats = run_live(translator, source, display=not no_display, record=output,
                         max_frames=max_frames, reconnects=reconnects)
    except LiveError as exc:
        _fail(str(exc), debug, exc)
    except (OSError, ValueError, RuntimeError) as exc:  # e.g. cannot record, inference error
        _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
              debug, exc)
    click.echo(stats.line())
    if stats.error:
        click.echo(f"error: {stats.error}", err=True)
        sys.exit(EXIT_FAILED_INPUTS)


def _run_files(translator: Any, inputs: list[str], output: Path, batch_size: int, side: bool,
               skip_existing: bool, no_progress: bool) -> None:
    from runtime.media.pipeline import count_work, plan_jobs, translate_files

    files, errors = expand_inputs(inputs)
    single_file = (len(inputs) == 1 and Path(inputs[0]).is_file()
                   and output.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    jobs, collisions = plan_jobs(files, output, single_target=single_file)
    errors += collisions
    total = count_work(jobs)
    started = time.perf_counter()
    done, rate = _rate_label(started)
    with click.progressbar(length=total, label="translating", show_eta=True, show_pos=True,
                           item_show_func=rate, file=sys.stderr,
                           hidden=no_progress) as bar:
        def progress(count: int) -> None:
            done[0] += count
            bar.update(count)

        summary = translate_files(translator, jobs, batch_size=batch_size, side=side,
                                  skip_existing=skip_existing, progress=progress)
    summary.failed = errors + summary.failed
    for line in summary.lines():
        click.echo(line)
    if summary.interrupted:
        sys.exit(130)
    if summary.failed:
        sys.exit(EXIT_FAILED_INPUTS)

