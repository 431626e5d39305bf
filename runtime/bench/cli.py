"""``cyclegan-bench MODEL.onnx``: parse options, call :func:`runtime.bench.run_benchmark`, print.

The command only parses and reports; everything it measures is importable from
:mod:`runtime.bench.benchmark` (and :mod:`runtime.bench.report` for the table, JSON and chart).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from runtime.bench.report import PLOT_METRICS, BenchError
from runtime.console import InterruptibleCommand, package_version
from runtime.reasons import not_a_file

EXIT_FAILED_ROWS = 1  # every row failed: nothing was measured
EXIT_USAGE = 2


def _fail(message: str, debug: bool, exc: BaseException | None = None) -> NoReturn:
    if debug and exc is not None:
        raise exc
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _split(values: tuple[str, ...]) -> list[str]:
    """Repeated options and comma lists alike: ``--batch 1 --batch 4`` == ``--batch 1,4``."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"256x320"`` -> (256, 320) (height x width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r}: expected N or HxW, e.g. 256 or 256x320",
                                 param_hint="--size")
    height = int(parts[0])
    return height, int(parts[-1])


def _parse_batches(values: tuple[str, ...]) -> list[int]:
    batches = _split(values) or ["1"]
    if not all(b.isdigit() and int(b) > 0 for b in batches):
        raise click.BadParameter(f"{','.join(batches)}: batch sizes are positive integers",
                                 param_hint="--batch-size")
    return [int(b) for b in batches]


@click.command(cls=InterruptibleCommand,
               context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option("--int8", "int8_models", multiple=True, type=click.Path(path_type=Path),
              help="An int8 export to benchmark as its own rows (repeatable).")
@click.option("--fp16", "fp16_models", multiple=True, type=click.Path(path_type=Path),
              help="An fp16 export to benchmark as its own rows (repeatable).")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Training checkpoint or generator .pth: adds PyTorch eager as a peer "
              "(needs torch and the training package).")
@click.option("--direction", type=click.Choice(["AtoB", "BtoA"]),
              help="Which generator of a training --checkpoint.  [default: the reference "
              "model's, from its metadata]")
@click.option("--batch-size", "batches", multiple=True, metavar="N[,N...]",
              help="Batch size(s); repeatable or comma-separated.  [default: 1]")
@click.option("--batch", "old_batches", multiple=True, hidden=True)  # old spelling
@click.option("--size", "sizes", multiple=True, metavar="N|HxW",
              help="Resolution(s); repeatable or comma-separated; must suit the model's size "
              "multiple.  [default: 256]")
@click.option("--engine", "engines", multiple=True, metavar="NAME",
              help="Only these engines: onnxruntime, opencv, openvino, pytorch (repeatable or "
              "comma list). Default: all available.")
@click.option("--providers", help="onnxruntime providers to try, e.g. cpu,cuda. Default: all "
              "this build has.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs per row.")
@click.option("--iterations", type=int, help="Timed runs per row.  [default: 30, or unbounded "
              "with --seconds]")
@click.option("--seconds", type=float, help="Time budget per row (timed runs stop after it).")
@click.option("--threads", type=click.IntRange(min=1),
              help="CPU threads per engine (default: engine's own).")
@click.option("--psnr-images", type=int, default=4, show_default=True,
              help="Images each row translates for the PSNR column (0: skip).")
@click.option("--gemm-size", type=int, default=2048, show_default=True,
              help="Square size of the numpy fp32 GEMM yardstick (0: skip).")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Write the report to this file: JSON, markdown or a PNG chart, by its "
              "extension (.json, .md, .png).")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Write the full report as JSON.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path),
              help="Write a PNG bar chart (needs matplotlib).")
@click.option("--plot-metric", type=click.Choice(list(PLOT_METRICS)), default="throughput",
              show_default=True)
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path),
              help="Write the table as markdown.")
@click.option("--no-isolate", is_flag=True, help="Run rows in this process (faster start; "
              "peak memory then means nothing).")
@click.option("--ceiling", is_flag=True, help="Add the pipeline-ceiling rows: the runtime with "
              "a no-op backend at 640x480 and 1280x720 (the CPU side's own frames/s limit).")
@click.option("--preset", metavar="NAME", help="With --ceiling: the H.264 encoder's speed "
              "preset for the video rows, as cyclegan-run's --preset (default veryfast).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_version(), "--version", prog_name="cyclegan-bench",
                      message="%(prog)s %(version)s")
def main(models: tuple[Path, ...], int8_models: tuple[Path, ...], fp16_models: tuple[Path, ...],
         checkpoint: Path | None, direction: str | None, batches: tuple[str, ...],
         old_batches: tuple[str, ...], sizes: tuple[str, ...], engines: tuple[str, ...],
         providers: str | None, warmup: int, iterations: int | None, seconds: float | None,
         threads: int | None, psnr_images: int, gemm_size: int, output: Path | None,
         json_path: Path | None, plot_path: Path | None, plot_metric: str,
         markdown_path: Path | None, no_isolate: bool, ceiling: bool, preset: str | None,
         quiet: bool, debug: bool) -> None:
    """Benchmark exported MODELS (.onnx) on every engine this machine has.

    Latency p50/p90, throughput, effective GFLOP/s (also as a share of the machine's GEMM
    rate), peak memory per row (each row in its own process) and PSNR against onnxruntime's
    fp32 CPU output, next to PyTorch eager when --checkpoint is given.

    \b
    cyclegan-bench g.onnx
    cyclegan-bench g.onnx --int8 g_int8.onnx --checkpoint latest.pt -o bench.json
    cyclegan-bench g.onnx --batch-size 1,4 --size 256,512x512 --plot bench.png
    """
    from runtime.bench.benchmark import Timing, available_engines, run_benchmark
    from runtime.bench.report import plot_report
    from runtime.metadata import read_metadata

    if checkpoint is not None and "pytorch" not in available_engines(checkpoint):
        _fail(f"--checkpoint {checkpoint}: the PyTorch peer needs torch and the training "
              'packages: pip install "cyclegan-toolkit[export]"', debug)
    batches = batches + old_batches
    if output is not None:
        # -o/--output as the other commands have it: one report file, its kind by extension
        kinds = {".json": "json_path", ".md": "markdown_path", ".png": "plot_path"}
        kind = kinds.get(output.suffix.lower())
        if kind is None:
            raise click.UsageError(f"-o {output}: give a .json, .md or .png file")
        if {"json_path": json_path, "markdown_path": markdown_path,
                "plot_path": plot_path}[kind] is not None:
            raise click.UsageError(f"-o {output} and --{kind.split('_')[0]} both name the "
                                   f"{output.suffix.lower()} report; give one")
        json_path = output if kind == "json_path" else json_path
        markdown_path = output if kind == "markdown_path" else markdown_path
        plot_path = output if kind == "plot_path" else plot_path
    all_models = [*models, *int8_models, *fp16_models]
    if not all_models:
        raise click.UsageError("give at least one MODEL (.onnx)")
    for path in all_models:
        if not path.is_file():
            _fail(not_a_file(path), debug)
    unique: dict[Path, Path] = {}
    for path in all_models:  # one file named twice (MODEL and --int8): benchmarked once
        if path.resolve() in unique:
            click.echo(f"warning: {path} is given twice; benchmarking it once", err=True)
        unique.setdefault(path.resolve(), path)
    all_models = list(unique.values())
    for path, expected in [*((p, "int8") for p in int8_models), *((p, "fp16") for p in
                                                                   fp16_models)]:
        try:
            found = read_metadata(path).precision
        except Exception:  # noqa: BLE001 - run_benchmark reports unreadable files itself
            continue
        if found != expected:
            click.echo(f"warning: {path} was given as --{expected} but its metadata says "
                       f"{found}; benchmarking it as {found}", err=True)
    if direction is not None and checkpoint is None:
        click.echo("warning: --direction picks a generator of --checkpoint; without one it "
                   "changes nothing", err=True)
    _check_report_targets([p for p in (json_path, markdown_path, plot_path) if p is not None],
                          all_models, debug)
    if preset is not None:
        if not ceiling:
            raise click.UsageError("--preset is for the video rows of --ceiling")
        from runtime.media.video import VideoCodecError, choose_codec

        try:  # before minutes of benchmarking, not after
            choose_codec(Path("ceiling.mp4"), preset=preset)
        except VideoCodecError as exc:
            _fail(str(exc), debug, exc)
    if plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        _fail("--plot needs matplotlib (pip install matplotlib)", debug)
    size_pairs = [parse_size(s) for s in _split(sizes) or ["256"]]
    timing = Timing(warmup=warmup,
                    iterations=iterations if iterations is not None or seconds is not None
                    else 30,
                    seconds=seconds, psnr_images=psnr_images, threads=threads)

    def progress(line: str) -> None:
        if not quiet:
            click.echo(f"  {line}", err=True)

    try:
        report = run_benchmark(all_models, checkpoint=checkpoint, direction=direction,
                               batches=_parse_batches(batches), sizes=size_pairs,
                               engines=_split(engines) or None, providers=providers,
                               timing=timing, gemm_size=gemm_size, isolate=not no_isolate,
                               progress=progress)
        if ceiling:
            from runtime.bench.e2e import measure_pipeline_ceiling

            report.ceiling = measure_pipeline_ceiling(all_models[0], preset=preset,
                                                      progress=progress)
    except BenchError as exc:
        _fail(str(exc), debug, exc)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    click.echo(report.summary())
    from runtime.media.manifest import OutputManifest
    from runtime.media.sinks import OutputWriteError, write_bytes_atomic

    def claim(path: Path) -> Any:  # recorded as ours before the rename: ours to replace
        return OutputManifest(path.parent).claimer("report")

    try:
        written = []
        if json_path is not None:
            written.append(report.save_json(json_path, claim(json_path)))
        if markdown_path is not None:
            written.append(write_bytes_atomic(markdown_path, report.markdown().encode(),
                                              claim(markdown_path)))
        if plot_path is not None:
            written.append(plot_report(report, plot_path, plot_metric, claim(plot_path)))
        for path in written:
            click.echo(f"wrote {path}")
    except (BenchError, OutputWriteError) as exc:
        _fail(str(exc), debug, exc)
    except OSError as exc:
        _fail(f"cannot write output ({exc})", debug, exc)
    if not any(row.ok for row in report.rows):
        sys.exit(EXIT_FAILED_ROWS)


def _check_report_targets(targets: list[Path], models: list[Path], debug: bool) -> None:
    """--json / --markdown / --plot, before any work: each a new file or an earlier report of
    ours (the output record, :mod:`runtime.media.manifest`), never a model, a folder or a file
    the toolkit did not write (exit 2)."""
    from runtime.media.manifest import OutputManifest

    seen: set[Path] = set()
    for target in targets:
        resolved = target.resolve()
        if resolved in seen:
            _fail(f"{target}: named for two outputs; give each its own name", debug)
        seen.add(resolved)
        if target.is_dir():
            _fail(f"{target}: is a folder; give a file name", debug)
        _check_writable(target, debug)
        if not target.exists():
            continue
        if any(model.exists() and target.samefile(model) for model in models):
            _fail(f"{target}: would replace a model being benchmarked; choose another name",
                  debug)
        if not OutputManifest(target.parent).owns(target):
            _fail(f"{target}: exists and was not written by cyclegan-bench; choose another "
                  "name", debug)


def _check_writable(target: Path, debug: bool) -> None:
    """A temp file of our naming made and removed in ``target``'s folder: a folder that cannot
    be written (read-only, /proc, a file in the way) fails now, not after the benchmark. The
    folder is made if missing, as the report's own write would make it."""
    from runtime.media.sinks import OutputWriteError, discard, temp_path

    try:
        discard(temp_path(target))
    except OutputWriteError as exc:
        _fail(str(exc), debug, exc)


if __name__ == "__main__":  # python -m runtime.bench.cli, before the console script exists
    main()
