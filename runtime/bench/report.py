"""What ``cyclegan-bench`` measured, and how it is shown: table, markdown, JSON, bar chart.

Pure data and formatting (numpy-free, engine-free): :mod:`.benchmark` fills these records,
this module turns them into text and files, and reads its own JSON back.

Units everywhere: milliseconds for latencies, images per second for throughput, GFLOP/s for
arithmetic rates (1 multiply-accumulate = 2 FLOPs), MiB for memory, dB for PSNR.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_NAME = "cyclegan-toolkit/bench"
SCHEMA_VERSION = 1

# Engine registry names -> what the table calls them.
ENGINE_TITLES = {
    "onnxruntime": "onnxruntime",
    "opencv": "OpenCV DNN",
    "openvino": "OpenVINO",
    "pytorch": "PyTorch eager",
}

# End-to-end targets: the pipeline keeps the model busy, the live loop adds little around it.
PIPELINE_TARGET_RATIO = 0.90
LIVE_OVERHEAD_TARGET = 0.10
# --temporal: this much less temporal warping error, while each stabilised frame stays this
# close to the per-frame one (a blur that hides everything cannot pass), for at most this much
# extra time over the model's own per frame.
TEMPORAL_WARP_CUT_TARGET = 0.40
TEMPORAL_PSNR_TARGET_DB = 28.0
TEMPORAL_COST_TARGET = 0.25


class BenchError(RuntimeError):
    """A benchmark that cannot run as asked; the message is one line naming the reason."""


@dataclass
class MachineInfo:
    """The machine the figures belong to.

    ``gemm_gflops``: best float32 square matmul rate numpy reached (``gemm_size`` squared), the
    yardstick each row's GFLOP/s is divided by.
    """

    cpu: str
    cores_logical: int
    cores_usable: int                   # what this process may run on (affinity, cgroups)
    cpu_flags: list[str]                # the vector/matrix extensions that matter here
    os: str
    python: str
    versions: dict[str, str | None]     # package -> version, None when not installed
    onnxruntime_providers: list[str]
    gpus: list[str] = field(default_factory=list)
    gemm_gflops: float | None = None
    gemm_size: int = 0
    gemm_threads: int | None = None     # BLAS threads of the GEMM; None: numpy's default (all)

    @property
    def tag(self) -> str:
        """Short file-name-safe name of the machine kind, with the CPU's ISA level, e.g.
        ``amd-epyc-avx2-2c`` or ``intel-xeon-amx-16c-nvidia-h200``: an AVX2 and an AVX-512 BF16
        machine of one vendor name no longer share (and overwrite) one result file."""
        parts = [_slug(self.cpu) or "cpu", *filter(None, [isa_level(self.cpu_flags)]),
                 f"{self.cores_usable}c"]
        if self.gpus:
            parts.append(_slug(self.gpus[0]))
        return "-".join(parts)


@dataclass
class BenchRow:
    """One engine x model x batch x size, measured in its own process.

    ``macs``: multiply-accumulates of one batch (Conv + ConvTranspose, from the graph), None
    when they could not be counted. ``psnr_db``: against the reference row's output on the same
    images (``inf`` for the reference itself, None when not compared). ``vs_pytorch``:
    throughput over PyTorch eager's at the same batch, size and device kind.
    """

    label: str                          # "onnxruntime CPU fp32"
    engine: str                         # registry name: onnxruntime | opencv | openvino | pytorch
    provider: str                       # what ran: "CPU", "CUDA", "OpenCV 5.0.0 CPU", ...
    precision: str                      # what ran: fp32 | fp16 | int8 | bf16 ...
    model: str                          # file name of the .onnx (or checkpoint)
    io: str                             # float | uint8
    batch: int
    height: int
    width: int
    device: str = "cpu"                 # cpu | gpu: which peers compare
    iterations: int = 0
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_mean_ms: float | None = None
    throughput_ips: float | None = None  # images per second: batch / mean latency
    macs: int | None = None
    gflops: float | None = None          # effective: 2 * macs / mean latency
    gemm_fraction: float | None = None   # gflops / machine GEMM rate (CPU rows only)
    peak_rss_mib: float | None = None    # peak resident memory of the row's own process
    base_rss_mib: float | None = None    # the same process before the engine was loaded
    load_seconds: float | None = None    # engine creation (session build / compile)
    psnr_db: float | None = None
    reference: bool = False
    vs_pytorch: float | None = None
    error: str | None = None

    @property
    def size(self) -> str:
        return f"{self.height}x{self.width}"

    @property
    def ok(self) -> bool:
        return self.error is None and self.throughput_ips is not None


@dataclass
class EndToEndResult:
    """Whole-pipeline throughput against the model alone, and the live loop's overhead.

    ``folder_ratio`` / ``video_ratio``: images (frames) per second through
    ``translate_files`` (:mod:`runtime.media.pipeline`) over model-only images per second at
    the same size and batch (target >= :data:`PIPELINE_TARGET_RATIO`).
    ``live_overhead_fraction``: the live loop's time outside the model and outside waiting for
    frames, over the model's time (``LiveStats.overhead_fraction``; target <=
    :data:`LIVE_OVERHEAD_TARGET`); ``live_temporal_*``: the same loop with ``--temporal``
    (the stabiliser's time counts as overhead).
    ``warp_error`` / ``warp_error_temporal``: temporal warping error (Lai et al., ECCV 2018;
    gray levels, :func:`runtime.media.temporal.warping_errors`) of the per-frame and the
    stabilised translation of a ``temporal_height`` x ``temporal_width`` pan clip with sensor
    noise (target: :data:`TEMPORAL_WARP_CUT_TARGET` less); ``temporal_psnr_db`` (mean) /
    ``temporal_psnr_min_db``: per-frame PSNR of the stabilised frames against the per-frame
    ones (target: min >= :data:`TEMPORAL_PSNR_TARGET_DB`); ``temporal_ms`` over
    ``temporal_model_ms``: the stabiliser's and the model's time per frame (target <=
    :data:`TEMPORAL_COST_TARGET`). None when not measured (reports of older versions).
    """

    model: str
    engine: str
    provider: str
    batch: int
    height: int
    width: int
    model_only_ips: float
    folder_images: int
    folder_ips: float
    video_frames: int
    video_ips: float
    live_frames: int
    live_fps: float
    live_model_ms: float                # per frame, inside Translator.translate
    live_overhead_fraction: float
    live_wait_fraction: float           # waiting for the source, over the loop's whole time
    live_source_fps: float              # the pace the test video was written at
    live_temporal_frames: int = 0
    live_temporal_overhead_fraction: float | None = None
    live_temporal_ms: float | None = None       # the stabiliser, per frame
    live_temporal_fps: float | None = None
    live_temporal_model_ms: float | None = None  # per frame, in the --temporal run
    temporal_height: int | None = None
    temporal_width: int | None = None
    temporal_frames: int = 0
    warp_error: float | None = None
    warp_error_temporal: float | None = None
    temporal_psnr_db: float | None = None
    temporal_psnr_min_db: float | None = None
    temporal_ms: float | None = None
    temporal_model_ms: float | None = None

    @property
    def warp_cut(self) -> float | None:
        """How much less warping error ``--temporal`` leaves (0.6 = 60 % less)."""
        if self.warp_error is None or self.warp_error_temporal is None or self.warp_error <= 0:
            return None
        return 1.0 - self.warp_error_temporal / self.warp_error

    @property
    def temporal_cost(self) -> float | None:
        """The stabiliser's time per frame over the model's."""
        if self.temporal_ms is None or not self.temporal_model_ms:
            return None
        return self.temporal_ms / self.temporal_model_ms

    @property
    def folder_ratio(self) -> float:
        return self.folder_ips / self.model_only_ips if self.model_only_ips > 0 else 0.0

    @property
    def video_ratio(self) -> float:
        return self.video_ips / self.model_only_ips if self.model_only_ips > 0 else 0.0

    def lines(self) -> list[str]:
        """Human-readable summary with each target and whether it was met."""

        def mark(ok: bool) -> str:
            return "meets" if ok else "MISSES"

        def noise(share: float) -> str:  # the pipeline cannot outrun the model it waits on
            return "; above 100%: noise between rounds, not a speed-up" if share > 1.0 else ""

        head = (f"end to end, {self.model} on {ENGINE_TITLES.get(self.engine, self.engine)} "
                f"{self.provider}, batch {self.batch}, {self.height}x{self.width}:")
        ratio, overhead = PIPELINE_TARGET_RATIO, LIVE_OVERHEAD_TARGET
        return [
            head,
            f"  {'model only':<20} {self.model_only_ips:8.1f} img/s",
            f"  {f'folder, {self.folder_images} images':<20} {self.folder_ips:8.1f} img/s = "
            f"{self.folder_ratio:.1%} of model only ({mark(self.folder_ratio >= ratio)} "
            f"target >= {ratio:.0%}{noise(self.folder_ratio)})",
            f"  {f'video, {self.video_frames} frames':<20} {self.video_ips:8.1f} img/s = "
            f"{self.video_ratio:.1%} of model only ({mark(self.video_ratio >= ratio)} "
            f"target >= {ratio:.0%}{noise(self.video_ratio)})",
            f"  {f'live, {self.live_frames} frames':<20} {self.live_fps:8.1f} img/s; loop "
            f"overhead {self.live_overhead_fraction:.1%} of model time "
            f"({mark(self.live_overhead_fraction <= overhead)} target <= {overhead:.0%}); model "
            f"{self.live_model_ms:.1f} ms/frame, waiting for frames "
            f"{self.live_wait_fraction:.1%} of the time",
            *self._temporal_lines(mark),
        ]

    def _temporal_lines(self, mark: Any) -> list[str]:
        lines = []
        if self.live_temporal_overhead_fraction is not None:
            overhead = self.live_temporal_overhead_fraction
            label = f"live --temporal, {self.live_temporal_frames} frames"
            # Its own rate and model time: the overhead is over this run's model time, which
            # differs from the plain run's (results older than these fields lack them).
            rate = ("" if self.live_temporal_fps is None
                    else f" {self.live_temporal_fps:8.1f} img/s;")
            model = ("" if self.live_temporal_model_ms is None
                     else f"model {self.live_temporal_model_ms:.1f} ms/frame, ")
            lines.append(f"  {label:<20}{rate} loop overhead {overhead:.1%} of model time "
                         f"({mark(overhead <= LIVE_OVERHEAD_TARGET)} target <= "
                         f"{LIVE_OVERHEAD_TARGET:.0%}); {model}stabiliser "
                         f"{self.live_temporal_ms or 0.0:.1f} ms/frame of the overhead")
        cut, cost = self.warp_cut, self.temporal_cost
        if cut is None or cost is None or self.temporal_psnr_min_db is None:
            return lines
        assert self.warp_error is not None and self.warp_error_temporal is not None
        lowest = self.temporal_psnr_min_db
        lines += [
            f"  --temporal, {self.temporal_width}x{self.temporal_height} pan with sensor noise, "
            f"{self.temporal_frames} frames:",
            f"    warping error {self.warp_error:.2f} -> {self.warp_error_temporal:.2f} levels = "
            f"{cut:.0%} less ({mark(cut >= TEMPORAL_WARP_CUT_TARGET)} target >= "
            f"{TEMPORAL_WARP_CUT_TARGET:.0%})",
            f"    PSNR against per-frame {self.temporal_psnr_db:.1f} dB, lowest frame "
            f"{lowest:.1f} dB ({mark(lowest >= TEMPORAL_PSNR_TARGET_DB)} target >= "
            f"{TEMPORAL_PSNR_TARGET_DB:.0f} dB)",
            f"    +{self.temporal_ms:.1f} ms/frame = {cost:.1%} of the model's "
            f"{self.temporal_model_ms:.0f} ms ({mark(cost <= TEMPORAL_COST_TARGET)} target <= "
            f"{TEMPORAL_COST_TARGET:.0%})",
        ]
        return lines


def isa_level(flags: Sequence[str]) -> str:
    """The best vector level of a CPU's flags: ``amx``, ``avx512-bf16``, ``avx512``, ``avx2``,
    ``avx``, ``neon`` (asimd), or "" when none is known."""
    found = set(flags)
    for level, needs in (("amx", "amx_tile"), ("avx512-bf16", "avx512_bf16"),
                         ("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"),
                         ("neon", "asimd")):
        if needs in found:
            return level
    return ""


@dataclass
class CeilingResult:
    """The CPU side's own limit: the runtime with a backend that returns at once (its input),
    frames per second, best of the alternating rounds.

    ``translate_fps``: :meth:`Translator.translate` one frame at a time on the model as it is
    (for a float model, the numpy pre/post-processing a CPU provider pays). ``folder_fps`` and
    ``video_fps``: the whole folder path (``video_frames`` JPEGs) and video path (an H.264 clip
    of ``video_frames`` frames) through ``translate_files``; with ``device_io`` they ran as on a
    GPU, the model in uint8 BGR IO so that its conversion is the device's (reports before it
    existed ran the video path in float IO and had no folder figure).

    The codecs apart, with the threads the video path gives them: ``decode_fps`` (the clip read
    into BGR frames alone) and ``encode_fps`` (its frames written as H.264 at ``preset`` alone);
    and ``video_cpu_ms``, the process's CPU time per frame of the video path (least of the
    rounds), which a busy machine changes less than the rates. Zero where not measured.
    """

    height: int
    width: int
    translate_fps: float
    video_frames: int
    video_fps: float
    decode_fps: float = 0.0
    encode_fps: float = 0.0
    video_cpu_ms: float = 0.0
    preset: str = "veryfast"  # the H.264 encoder's (older reports: the default, veryfast)
    folder_fps: float = 0.0
    device_io: bool = False

    def line(self) -> str:
        text = (f"pipeline ceiling {self.width}x{self.height} (no-op backend): "
                f"{self.translate_fps:.1f} frames/s through Translator")
        if self.device_io:
            text += (f"; in the device's IO as on a GPU: {self.folder_fps:.1f} images/s through "
                     "the folder path (JPEG),")
        else:
            text += ","
        text += (f" {self.video_fps:.1f} frames/s through the video path ({self.video_frames} "
                 "frames")
        if self.video_cpu_ms:
            text += f", {self.video_cpu_ms:.1f} ms CPU a frame"
        text += ")"
        if self.decode_fps and self.encode_fps:
            text += (f"; H.264 ({self.preset}) alone: decode {self.decode_fps:.1f}, encode "
                     f"{self.encode_fps:.1f} frames/s")
        return text


@dataclass
class BenchReport:
    """Everything one benchmark run produced; :meth:`save_json` / :meth:`load_json` round-trip."""

    machine: MachineInfo
    rows: list[BenchRow] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    end_to_end: list[EndToEndResult] = field(default_factory=list)
    created: str = ""                   # ISO 8601, local time with offset
    ceiling: list[CeilingResult] = field(default_factory=list)  # cyclegan-bench --ceiling

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: strict JSON (an infinite PSNR is written as the string ``"inf"``)."""
        rows = []
        for row in self.rows:
            values = asdict(row)
            if values["psnr_db"] is not None and math.isinf(values["psnr_db"]):
                values["psnr_db"] = "inf"
            rows.append(values)
        return {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "created": self.created,
                "machine": {**asdict(self.machine), "tag": self.machine.tag},
                "settings": self.settings, "rows": rows,
                "end_to_end": [{key: "inf" if isinstance(value, float) and math.isinf(value)
                                else value for key, value in asdict(result).items()}
                               for result in self.end_to_end],
                "pipeline_ceiling": [asdict(result) for result in self.ceiling],
                "notes": self.notes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        if data.get("schema") != SCHEMA_NAME:
            raise BenchError("not a cyclegan-bench report (schema missing)")
        if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
            raise BenchError(f"report schema {data['schema_version']} is newer than this "
                             f"reader ({SCHEMA_VERSION})")
        rows = []
        for values in data.get("rows", []):
            values = dict(values)
            if values.get("psnr_db") == "inf":
                values["psnr_db"] = math.inf
            rows.append(BenchRow(**_known(BenchRow, values)))
        return cls(MachineInfo(**_known(MachineInfo, data["machine"])), rows,
                   dict(data.get("settings", {})), list(data.get("notes", [])),
                   [EndToEndResult(**_known(EndToEndResult, {
                       key: math.inf if value == "inf" else value for key, value in v.items()}))
                    for v in data.get("end_to_end", [])],
                   str(data.get("created", "")),
                   [CeilingResult(**_known(CeilingResult, v))
                    for v in data.get("pipeline_ceiling", [])])

    def save_json(self, path: str | Path, claim: Any = None) -> Path:
        """Write the report to ``path`` atomically (temp file, then rename); ``claim``: see
        :func:`runtime.media.sinks.publish`."""
        from runtime.media.sinks import write_bytes_atomic  # cv2 and numpy: not at import

        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        return write_bytes_atomic(Path(path), text.encode(), claim)  # it makes the folder

    @classmethod
    def load_json(cls, path: str | Path) -> BenchReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ---- text -----------------------------------------------------------------------------
    def machine_lines(self) -> list[str]:
        m = self.machine
        threads = f", {m.gemm_threads} thread(s)" if m.gemm_threads else ""
        gemm = (f"{m.gemm_gflops:.1f} GFLOP/s fp32 GEMM ({m.gemm_size}x{m.gemm_size}, numpy"
                f"{threads})" if m.gemm_gflops else "GEMM rate not measured")
        versions = ", ".join(f"{k} {v}" for k, v in m.versions.items() if v)
        lines = [f"machine: {m.cpu}, {m.cores_usable} of {m.cores_logical} core(s) usable, "
                 f"flags: {' '.join(m.cpu_flags) or 'none of interest'}; {gemm}",
                 f"         {m.os}, Python {m.python}; {versions}"]
        if m.gpus:
            lines.append(f"         GPU: {', '.join(m.gpus)}")
        return lines

    def table(self) -> str:
        """Aligned plain-text table, one line per row (errors on their row)."""
        return _render(self._cells(markdown=False), markdown=False)

    def markdown(self) -> str:
        """The same table in GitHub markdown, preceded by the machine line."""
        m = self.machine
        gemm = f"{m.gemm_gflops:.0f} GFLOP/s fp32 GEMM" if m.gemm_gflops else "GEMM n/a"
        head = (f"**{m.cpu}**, {m.cores_usable} core(s), {' '.join(m.cpu_flags) or '-'}; "
                f"{gemm}; " + ", ".join(f"{k} {v}" for k, v in m.versions.items() if v))
        parts = [head, "", _render(self._cells(markdown=True), markdown=True)]
        if self.notes:  # what qualifies the ratios (a busy machine, unsteady rows) goes along
            parts += [""] + [f"- note: {note}" for note in self.notes]
        if self.end_to_end:
            parts += ["", "```"] + [line for r in self.end_to_end for line in r.lines()] + ["```"]
        if self.ceiling:
            parts += ["", "```"] + [r.line() for r in self.ceiling] + ["```"]
        return "\n".join(parts) + "\n"

    def ratio_lines(self) -> list[str]:
        """``"onnxruntime CPU fp32 g.onnx, b1 256x256: 1.15x PyTorch eager"`` for every
        compared row."""
        return [f"{row.label} {row.model}, b{row.batch} {row.size}: {row.vs_pytorch:.2f}x "
                "PyTorch eager" for row in self.rows
                if row.vs_pytorch is not None and row.engine != "pytorch"]

    def summary(self) -> str:
        """Machine, table, ratios, notes and end-to-end figures: what the command prints."""
        lines = [*self.machine_lines(), "", self.table()]
        ratios = self.ratio_lines()
        if ratios:
            lines += ["", "throughput against PyTorch eager (same batch, size and device):"]
            lines += [f"  {line}" for line in ratios]
        for result in self.end_to_end:
            lines += ["", *result.lines()]
        if self.ceiling:
            lines += [""] + [result.line() for result in self.ceiling]
        if self.notes:
            lines += [""] + [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def _cells(self, markdown: bool) -> list[list[str]]:
        header = ["row", "model", "batch", "size", "p50 ms", "p90 ms", "img/s", "GFLOP/s",
                  "of GEMM", "peak MiB", "PSNR dB", "vs eager"]
        out = [header]
        for row in self.rows:
            label = row.label + (" (ref)" if row.reference else "")
            if row.error is not None:
                reason = row.error.replace("|", "/") if markdown else row.error
                out.append([label, row.model, str(row.batch), row.size, f"error: {reason}"])
                continue
            out.append([label, row.model, str(row.batch), row.size,
                        _num(row.latency_p50_ms, 2), _num(row.latency_p90_ms, 2),
                        _num(row.throughput_ips, 1), _num(row.gflops, 1),
                        "-" if row.gemm_fraction is None else f"{row.gemm_fraction:.0%}",
                        _num(row.peak_rss_mib, 0), _psnr(row.psnr_db),
                        "-" if row.vs_pytorch is None else f"{row.vs_pytorch:.2f}x"])
        return out


def plot_report(report: BenchReport, path: str | Path, metric: str = "throughput",
                claim: Any = None) -> Path:
    """Horizontal bar chart (PNG) of throughput (img/s) or p50 latency (ms) per row, each bar
    annotated with its ratio to PyTorch eager. Needs matplotlib (:class:`BenchError` without).
    ``claim``: see :func:`runtime.media.sinks.publish`."""
    if metric not in PLOT_METRICS:
        raise BenchError(f"plot metric must be one of {', '.join(PLOT_METRICS)}, got {metric!r}")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BenchError("--plot needs matplotlib (pip install matplotlib)") from None
    attribute, axis_label = PLOT_METRICS[metric]
    rows = [row for row in report.rows if row.ok]
    if not rows:
        raise BenchError("nothing to plot: no row produced a measurement")
    labels = [f"{row.label}\n{row.model}, b{row.batch} {row.size}" for row in rows]
    values = [float(getattr(row, attribute)) for row in rows]
    # Figure + Agg canvas directly, not pyplot: no global state, no display needed.
    figure = Figure(figsize=(9, 1.2 + 0.55 * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = [PLOT_COLOURS.get(row.engine, "#777777") for row in rows]
    positions = list(range(len(rows)))[::-1]  # first row on top, as in the table
    axes.barh(positions, values, color=colours)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlabel(axis_label)
    axes.set_xlim(0, max(values) * 1.3)
    for y, value, row in zip(positions, values, rows, strict=True):
        text = f"{value:.3g}" if value < 100 else f"{value:.0f}"
        if row.vs_pytorch is not None:
            text += " (eager)" if row.engine == "pytorch" else f"  {row.vs_pytorch:.2f}x eager"
        axes.text(value, y, " " + text, va="center", fontsize=8)
    m = report.machine
    gemm = f", GEMM {m.gemm_gflops:.0f} GFLOP/s" if m.gemm_gflops else ""
    axes.set_title(f"{m.cpu}, {m.cores_usable} core(s){gemm}", fontsize=9)
    from runtime.media.sinks import write_bytes_atomic

    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    return write_bytes_atomic(Path(path), png.getvalue(), claim)  # it makes the folder


# metric -> (BenchRow attribute, axis label)
PLOT_METRICS = {
    "throughput": ("throughput_ips", "images / s (higher is better)"),
    "latency": ("latency_p50_ms", "p50 latency per batch, ms (lower is better)"),
}
PLOT_COLOURS = {"onnxruntime": "#1f77b4", "opencv": "#2ca02c", "openvino": "#9467bd",
                "pytorch": "#d62728"}


def _known(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Drop keys a dataclass does not have (derived ones such as ``tag``), for older readers."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _slug(text: str) -> str:
    text = re.sub(r"\d+-core", " ", text, flags=re.IGNORECASE)
    words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
    # drop noise words so tags stay short: "AMD EPYC 7763 64-Core Processor" -> amd-epyc-7763
    noise = {"processor", "cpu", "core", "with", "radeon", "graphics", "r", "tm"}
    kept = [w for w in words if w not in noise and not w.endswith("core")]
    return "-".join(kept[:4])


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _psnr(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _render(cells: Sequence[Sequence[str]], markdown: bool) -> str:
    """Columns padded to their widest cell, figures right-aligned; a short row (an error) runs
    its last cell on unpadded."""
    width = max(len(row) for row in cells)
    widths = [max(len(row[i]) for row in cells if len(row) == width) for i in range(width)]
    numeric = [i >= 2 for i in range(width)]  # batch onwards are figures

    def pad(row: Sequence[str]) -> list[str]:
        last = len(row) - 1
        return [cell if i == last and len(row) < width
                else cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
                for i, cell in enumerate(row)]

    lines = []
    for index, row in enumerate(cells):
        padded = pad(row)
        if markdown:
            padded += [""] * (width - len(row))
            lines.append("| " + " | ".join(padded) + " |")
            if index == 0:
                lines.append("|" + "|".join("-" * (w + 1) + (":" if numeric[i] else "-")
                                           for i, w in enumerate(widths)) + "|")
        else:
            lines.append("  ".join(padded).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
