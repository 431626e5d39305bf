"""``cyclegan-run``: translate images, folders, globs and videos, or a live source.

The command parses options and calls :mod:`runtime.media.pipeline` /
:mod:`runtime.media.live`; all logic is importable. Only click is imported at module level: the
heavy imports happen inside the command, after the argument checks, so ``--help`` is instant
and Ctrl-C during them is one line (:class:`runtime.console.InterruptibleCommand`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import click

from runtime.console import InterruptibleCommand, package_version, show_warning
from runtime.reasons import first_line

EXIT_FAILED_INPUTS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail(message: str, debug: bool, exc: BaseException | None = None) -> NoReturn:
    if debug and exc is not None:
        raise exc
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


class _Progress:
    """The ``translating`` progress bar on stderr, with items per second since :meth:`start`
    (count, rate, ETA). ``start`` opens it; ``update`` before that only counts."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.done = 0
        self.started = time.perf_counter()
        self.bar: Any = None

    def rate(self, _: Any) -> str:
        elapsed = time.perf_counter() - self.started
        return f"{self.done / elapsed:.1f}/s" if elapsed > 0 and self.done else ""

    def start(self, stack: contextlib.ExitStack, already: int = 0) -> None:
        """Open the bar in ``stack`` with ``already`` items done (not counted in the rate)."""
        self.started = time.perf_counter()
        self.bar = stack.enter_context(click.progressbar(
            length=self.total, label="translating", show_eta=True, show_pos=True,
            item_show_func=self.rate, file=sys.stderr, hidden=self.quiet))
        self.bar.update(already)

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)


AUTO_BATCH = 0  # --batch-size auto, resolved once the model is loaded (with --ray: 1)


def _batch_size_option(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """``--batch-size``: a positive int, or ``auto`` (:data:`AUTO_BATCH`)."""
    if str(value).strip().lower() == "auto":
        return AUTO_BATCH
    try:
        size = int(value)
    except ValueError:
        raise click.UsageError(f"--batch-size must be a number or auto, got {value!r}"
                               ) from None
    if size < 1:
        raise click.UsageError(f"--batch-size must be >= 1, got {size}")
    return size


@click.command(cls=InterruptibleCommand, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--batch-size", default="1", show_default=True, callback=_batch_size_option,
              metavar="N|auto", help="Same-size images translated together; auto: measured "
              "on a probe frame of the inputs' size (the choice is printed).")
@click.option("--providers", default="auto", show_default=True,
              help="onnxruntime providers: auto, cpu, cuda, tensorrt or a comma list.")
@click.option("--backend", type=click.Choice(["onnxruntime", "opencv", "openvino", "auto"]),
              default=None, help="auto: on a CPU, the fastest installed backend that keeps "
              "quality.  [default: onnxruntime; auto in live mode]")
@click.option("--target-fps", type=float, default=15.0, show_default=True,
              help="Live mode: pick and adapt the working size to hold this rate (0: off; "
              "--max-side turns it off).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True,
              help="Compute precision where the backend chooses it: OpenVINO's auto picks bf16 "
              "on CPUs that have it; onnxruntime on a GPU runs fp16 unless fp32 is asked for, "
              "and on a CPU the model's own precision.")
@click.option("--device-id", type=int, default=0, show_default=True, help="GPU index.")
@click.option("--cuda-graph", is_flag=True, help="CUDA provider: capture each frame size's run "
              "as a CUDA graph and replay it (fewer launches for videos and live frames).")
@click.option("--threads", type=int, help="CPU threads for inference.")
@click.option("--max-side", type=int, help="Translate at most this resolution (longer side), "
              "then scale back: faster on large frames.")
@click.option("--skip-existing", is_flag=True, help="Leave outputs that already exist.")
@click.option("--codec", metavar="NAME", help="Video codec: h264, h265, vp9, av1 or mjpeg. "
              "Default by extension: H.264 for .mp4/.mov/.mkv, VP9 for .webm, MJPEG for .avi.")
@click.option("--crf", type=int, help="Video quality (lower is better): CRF for h264/h265 "
              "(0-51, default 20/24), vp9/av1 (0-63, default 32/35); JPEG quantiser for mjpeg "
              "(2-31, default 3).")
@click.option("--preset", metavar="NAME", help="Video encoder speed: h264/h265 ultrafast, "
              "superfast, veryfast (default), faster, ... veryslow; av1 13 (fastest) to 0 "
              "(default 10; SVT-AV1 4 runs 12 and 13 as 11). Faster presets make bigger files "
              "at the same --crf.")
@click.option("--temporal", is_flag=True, help="Videos and live mode: steady the translation "
              "over time (flow-guided blending of the previous output), against flicker.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS]", help="Translate on a Ray cluster: auto (the one `ray start` "
              "made on this machine), ray://HOST:10001, or nothing for a local one started for "
              "the run. Put it after INPUTS. Needs: pip install \"cyclegan-toolkit[ray]\".")
@click.option("--workers", type=int, help="With --ray: model workers (default: one per CPU, or "
              "as many as --gpus-per-worker fits on the GPUs).")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True,
              help="With --ray: GPUs per worker (0.5: two workers share one GPU).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or start-up lines (model, "
              "backend); warnings, errors and the summary still show.")
@click.option("--no-progress", "no_progress", is_flag=True, hidden=True)  # old spelling of -q
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_version(), "--version", prog_name="cyclegan-run",
                      message="%(prog)s %(version)s")
def main(model: str | None, inputs: tuple[str, ...], demo: bool, output: Path | None,
         webcam: str | None,
         no_display: bool, max_frames: int | None, reconnects: int, side_by_side: bool,
         batch_size: int, providers: str, backend: str | None, target_fps: float,
         precision: str, device_id: int, cuda_graph: bool,
         threads: int | None, max_side: int | None, skip_existing: bool, codec: str | None,
         crf: int | None, preset: str | None, temporal: bool, ray_address: str | None,
         workers: int | None, gpus_per_worker: float, quiet: bool, no_progress: bool,
         debug: bool) -> None:
    """Translate INPUTS (images, folders, globs, videos) with MODEL (an exported .onnx).

    \b
    cyclegan-run --demo -o out/                      # the bundled demo model and samples
    cyclegan-run horse2zebra.onnx photos/ -o zebras/
    cyclegan-run horse2zebra.onnx clip.mp4 -o clip_zebra.mp4 --side-by-side
    cyclegan-run horse2zebra.onnx clip.mov -o clip_zebra.webm --temporal
    cyclegan-run horse2zebra.onnx photos/ -o zebras/ --ray   # on a Ray cluster
    cyclegan-run horse2zebra.onnx --webcam            # camera 0, q quits
    cyclegan-run horse2zebra.onnx --webcam rtsp://camera/stream --no-display -o rec.mp4

    Outputs never replace an input or a file that cyclegan-run did not write; such a run is
    refused before it starts.
    """
    warnings.showwarning = show_warning
    quiet = quiet or no_progress
    _quiet_opencv()
    if quiet:  # a CPU-only onnxruntime is what its user installed: no need to say so
        from runtime.backends import NoGpuProviderWarning

        warnings.simplefilter("ignore", NoGpuProviderWarning)
    _check_ray_options(ray_address, workers, gpus_per_worker, webcam, device_id, debug)
    if demo:
        from runtime.demo import DemoMissingError, demo_inputs, demo_model_path

        if model is not None and Path(model).suffix.lower() == ".onnx":
            _fail(f"{model}: --demo runs the bundled demo model; give a MODEL or --demo, not "
                  "both", debug)

        try:
            given = ([model] if model else []) + list(inputs)
            # the bundled samples when nothing is given; live mode has its own source
            inputs = tuple(given) or (tuple(str(p) for p in demo_inputs()) if webcam is None
                                      else ())
            model = str(demo_model_path())
        except DemoMissingError as exc:
            _fail(str(exc), debug, exc)
    if model is None:
        raise click.UsageError("missing argument MODEL (an exported .onnx), or use --demo")
    if webcam is None and not inputs:
        raise click.UsageError("give INPUTS to translate, or --webcam [SOURCE]")
    if webcam is None and output is None:
        raise click.UsageError("-o/--output is required for files and folders")
    model_path = Path(model)
    if model_path.is_dir():
        _fail(f"{model_path}: is a folder; give the exported .onnx model file", debug)
    _check_mode_options(webcam, list(inputs), side_by_side, debug)
    if webcam is not None:
        _check_recording(output, webcam, debug)
        if output is not None:
            _check_codec([output], codec, crf, preset, debug)
        if target_fps < 0:
            _fail(f"--target-fps must be >= 0, got {target_fps:g}", debug)
        if max_frames is not None and max_frames < 1:
            _fail(f"--max-frames must be >= 1, got {max_frames}", debug)
        if reconnects < 0:
            _fail(f"--reconnects must be >= 0, got {reconnects}", debug)
        if batch_size != 1:
            click.echo("warning: --batch-size: live mode translates each frame as it comes, so "
                       "it changes nothing", err=True)
        from runtime.media.live import LiveError, check_live_source

        try:
            check_live_source(webcam)  # before minutes of choosing a backend, not after
        except LiveError as exc:
            _fail(str(exc), debug, exc)
        if not no_display:
            from runtime.media.live import NO_DISPLAY, display_available

            if not display_available():  # before minutes of choosing a backend, not after
                _fail(NO_DISPLAY, debug)
        # Live mode chooses for real time unless told otherwise: the fastest backend within
        # the quality floor, and a working size that holds --target-fps.
        translator = _load(model_path, providers, device_id, threads, backend or "auto",
                           precision, max_side, debug, quiet, cuda_graph=cuda_graph)
        if max_side is None and target_fps > 0 and not quiet:
            click.echo(f"live: backend {translator.providers[0]}, working size adapted to hold "
                       f"{target_fps:g} FPS (--max-side or --target-fps 0 to fix it)", err=True)
        _run_live(translator, webcam, output, no_display, max_frames, reconnects, debug,
                  codec=codec, crf=crf, preset=preset, temporal=temporal,
                  target_fps=target_fps if max_side is None else 0.0)
        return
    backend = backend or "onnxruntime"
    assert output is not None
    plan, found = _plan(list(inputs), output, skip_existing, debug, quiet)
    _check_codec([job.target for job in plan.jobs if job.kind == "video"], codec, crf, preset,
                 debug)
    if ray_address is not None:
        from runtime.distributed import WorkerSettings

        # --batch-size auto measures on a loaded model; the driver loads none: batches of 1
        settings = WorkerSettings(providers=providers, backend=backend, precision=precision,
                                  max_side=max_side, threads=threads,
                                  batch_size=1 if batch_size == AUTO_BATCH else batch_size,
                                  side=side_by_side, codec=codec, crf=crf, preset=preset,
                                  temporal=temporal)
        _run_ray(model_path, plan, found, settings, ray_address, workers, gpus_per_worker,
                 quiet, debug)
        return
    translator = _load(model_path, providers, device_id, threads, backend, precision, max_side,
                       debug, quiet, cuda_graph=cuda_graph)
    if batch_size == AUTO_BATCH:
        batch_size = _auto_batch_size(translator, plan, quiet)
    _run_files(translator, plan, found, batch_size, side_by_side, quiet, codec=codec, crf=crf,
               preset=preset, temporal=temporal)


def _auto_batch_size(translator: Any, plan: Any, quiet: bool) -> int:
    """Measure batch sizes on a frame of the first input's size; set the translator's
    ``max_batch`` to the winner and say which it chose (stderr, unless ``quiet``)."""
    from runtime.media.sources import InputError, read_image
    from runtime.media.video import probe_video

    if not plan.jobs or (len(plan.jobs) == 1 and plan.jobs[0].kind == "image"):
        if not quiet:  # nothing to measure for: a batch needs two frames
            click.echo("--batch-size auto: 1 (one image, nothing to batch)", err=True)
        return 1
    height, width = 256, 256
    for job in plan.jobs:
        try:
            if job.kind == "video":
                info = probe_video(job.source)
                height, width = info.height, info.width
            else:
                height, width = read_image(job.source).shape[:2]
            break
        except InputError:
            continue
    chosen, lines = translator.pick_batch_size(height, width)
    translator.max_batch = chosen
    if not quiet:
        click.echo(f"--batch-size auto: chose {chosen} at {width}x{height} "
                   f"({'; '.join(lines)})", err=True)
    return chosen


def _quiet_opencv() -> None:
    """OpenCV logs its decoders' complaints to stderr; every failure is named in our summary
    with its reason, so the command keeps OpenCV's log silent, and the log of the FFmpeg inside
    OpenCV (camera and stream capture: "moov atom not found"), which OpenCV reads from
    OPENCV_FFMPEG_LOGLEVEL when it opens its first capture (-8: AV_LOG_QUIET)."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _load(model: Path, providers: str, device_id: int, threads: int | None, backend: str,
          precision: str, max_side: int | None, debug: bool, quiet: bool, *,
          cuda_graph: bool = False) -> Any:
    from runtime.backends import BackendError
    from runtime.metadata import MetadataError
    from runtime.translator import Translator

    try:
        translator = Translator(model, providers=providers, device_id=device_id,
                                threads=threads, backend=backend, max_side=max_side,
                                precision=precision, cuda_graph=cuda_graph)
    except (MetadataError, BackendError, ValueError) as exc:
        _fail(str(exc), debug, exc)
    if not quiet:
        for line in translator.selection:
            click.echo(f"backend auto: {line}", err=True)
        for line in translator.notes:
            click.echo(f"note: {line}", err=True)
        click.echo(f"model: {translator!r}", err=True)
    return translator


def _check_recording(output: Path | None, source: str, debug: bool) -> None:
    """A live recording follows the output rules: a video name, never the source itself, never
    a file that cyclegan-run did not write."""
    from runtime.media.manifest import OutputManifest
    from runtime.media.sinks import VIDEO_WRITE_EXTENSIONS

    if output is None:
        return
    if output.suffix.lower() not in VIDEO_WRITE_EXTENSIONS:
        _fail(f"{output}: with --webcam, -o records a video "
              f"({', '.join(sorted(VIDEO_WRITE_EXTENSIONS))})", debug)
    if not output.exists():
        return
    if Path(source).exists() and Path(source).samefile(output):
        _fail(f"{output}: would replace the live source; choose another -o", debug)
    if output.is_dir() or not OutputManifest(output.parent).owns(output):
        _fail(f"{output}: exists and was not written by cyclegan-run; choose another -o", debug)


# Options of live mode only, and their flags: given to a file run, they would change nothing.
_LIVE_ONLY = {"no_display": "--no-display", "max_frames": "--max-frames",
              "target_fps": "--target-fps", "reconnects": "--reconnects"}


def _check_mode_options(webcam: str | None, inputs: list[str], side_by_side: bool,
                        debug: bool) -> None:
    """Options one mode does not use, said before any work: INPUTS with --webcam are refused
    (which was meant?); the other mode's flags are named as changing nothing."""
    if webcam is not None and inputs:
        _fail(f"--webcam {webcam} translates its source live; {inputs[0]} "
              f"{'and more ' if len(inputs) > 1 else ''}would be left out: give INPUTS or "
              "--webcam, not both", debug)
    if webcam is not None and side_by_side:
        click.echo("warning: --side-by-side: live mode shows and records the translation "
                   "alone, so it changes nothing", err=True)
    if webcam is None:
        context = click.get_current_context()
        given = [flag for name, flag in _LIVE_ONLY.items()
                 if context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            click.echo(f"warning: {', '.join(given)}: for --webcam only, so "
                       f"{'they change' if len(given) > 1 else 'it changes'} nothing here",
                       err=True)


def _check_codec(targets: list[Path], codec: str | None, crf: int | None, preset: str | None,
                 debug: bool) -> None:
    """--codec / --crf / --preset against every video output, before the model is loaded
    (exit 2); given with no video output, a warning says they change nothing."""
    from runtime.media.video import VideoCodecError, choose_codec

    given = [name for name, value in (("--codec", codec), ("--crf", crf), ("--preset", preset))
             if value is not None]
    if given and not targets:
        click.echo(f"warning: {', '.join(given)}: no video output in this run, so "
                   f"{'they change' if len(given) > 1 else 'it changes'} nothing", err=True)
    for target in targets:
        try:
            choose_codec(target, codec, crf, preset)
        except VideoCodecError as exc:
            _fail(str(exc), debug, exc)


def _plan(inputs: list[str], output: Path, skip_existing: bool, debug: bool,
          quiet: bool) -> Any:
    """Inputs and their outputs, checked before the model is even loaded (exit 2 on refusal)."""
    from runtime.media.outputs import OutputPlanError, names_a_file, plan_outputs
    from runtime.media.sources import expand_inputs

    if output.suffix and not names_a_file(output) and not output.exists() and not quiet:
        # "-o result.jpeg2" or a typo: a new folder of that name is not what was meant
        click.echo(f"note: -o {output}: {output.suffix} is no image or video extension this "
                   "tool writes, so it is made as a folder", err=True)

    found = expand_inputs(inputs, exclude=None if names_a_file(output) else output)
    try:
        plan = plan_outputs(found.files, output, skip_existing=skip_existing)
    except OutputPlanError as exc:
        if not found.files and found.errors:
            # -o refused for want of inputs: the inputs are what is wrong, name them
            for error in found.errors:
                click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_FAILED_INPUTS)
        _fail(str(exc), debug, exc)
    plan.failed = found.errors + plan.failed
    return plan, found


def _run_live(translator: Any, source: str, output: Path | None, no_display: bool,
              max_frames: int | None, reconnects: int, debug: bool, codec: str | None,
              crf: int | None, preset: str | None, temporal: bool,
              target_fps: float = 0.0) -> None:
    from runtime.media.live import LiveError, run_live

    try:
        stats = run_live(translator, source, display=not no_display, record=output,
                         max_frames=max_frames, reconnects=reconnects, codec=codec, crf=crf,
                         preset=preset, temporal=temporal, target_fps=target_fps)
    except LiveError as exc:
        _fail(str(exc), debug, exc)
    except (OSError, ValueError, RuntimeError) as exc:  # e.g. cannot record, inference error
        _fail(first_line(exc), debug, exc)
    click.echo(stats.line())
    for warning in stats.warnings:
        click.echo(f"warning: {warning}", err=True)
    if stats.error:
        click.echo(f"error: {stats.error}", err=True)
        sys.exit(EXIT_FAILED_INPUTS)
    if stats.ended_by == "interrupted":  # Ctrl-C: the recording is kept, the status says so
        sys.exit(EXIT_INTERRUPTED)


def _run_files(translator: Any, plan: Any, found: Any, batch_size: int, side: bool,
               quiet: bool, codec: str | None, crf: int | None, preset: str | None,
               temporal: bool) -> None:
    from runtime.media.pipeline import count_work, translate_files

    progress = _Progress(count_work(plan.jobs) + len(plan.skipped), quiet)
    with contextlib.ExitStack() as stack:
        progress.start(stack)
        summary = translate_files(translator, plan, batch_size=batch_size, side=side,
                                  progress=progress.update, codec=codec, crf=crf,
                                  preset=preset, temporal=temporal)
    _report(summary, found)


def _report(summary: Any, found: Any) -> None:
    """The final summary of a file run (local or Ray) and its exit status: 1 when any input
    failed, 130 when interrupted."""
    summary.passed_over(found)
    for line in summary.lines():
        click.echo(line)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if summary.failed:
        sys.exit(EXIT_FAILED_INPUTS)


def _check_ray_options(address: str | None, workers: int | None, gpus_per_worker: float,
                       webcam: str | None, device_id: int, debug: bool) -> None:
    """--ray and its options, and Ray itself, before any input is read (exit 2)."""
    if address is None:
        if workers is not None or gpus_per_worker:
            _fail("--workers and --gpus-per-worker go with --ray", debug)
        return
    if webcam is not None:
        _fail("--ray translates files and folders, not --webcam", debug)
    if Path(address).exists():  # "--ray photos/ ...": click took an input for the ADDRESS
        _fail(f"--ray {address}: a path, not a cluster address; put --ray after the inputs, or "
              "write --ray=auto", debug)
    if workers is not None and workers < 1:
        _fail(f"--workers must be >= 1, got {workers}", debug)
    if gpus_per_worker < 0:
        _fail(f"--gpus-per-worker must be >= 0, got {gpus_per_worker:g}", debug)
    if device_id:
        _fail("--device-id: with --ray, Ray gives each worker its GPU(s) (--gpus-per-worker)",
              debug)
    from runtime.distributed import DistributedError, require_ray

    try:
        require_ray()
    except DistributedError as exc:
        _fail(str(exc), debug, exc)


def _run_ray(model: Path, plan: Any, found: Any, settings: Any, address: str,
             workers: int | None, gpus_per_worker: float, quiet: bool, debug: bool) -> None:
    """The files of ``plan`` on a Ray cluster: the local run's progress bar and summary."""
    from runtime.distributed import DistributedError, translate_plan
    from runtime.media.pipeline import count_work
    from runtime.metadata import MetadataError, read_metadata

    try:
        read_metadata(model)  # a wrong model is one line here, not one per worker
    except MetadataError as exc:
        _fail(str(exc), debug, exc)
    progress = _Progress(count_work(plan.jobs) + len(plan.skipped), quiet)
    with contextlib.ExitStack() as stack:
        def ready(line: str) -> None:  # the bar starts once the workers have the model
            if not quiet:
                click.echo(line, err=True)
            progress.start(stack, already=len(plan.skipped))

        try:
            summary = translate_plan(model, plan, settings,
                                     address=None if address == "local" else address,
                                     workers=workers, gpus_per_worker=gpus_per_worker,
                                     progress=progress.update, ready=ready, worker_logs=debug)
        except DistributedError as exc:
            _fail(str(exc), debug, exc)
    _report(summary, found)
