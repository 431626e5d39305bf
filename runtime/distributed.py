"""Batch translation on a Ray cluster: ``cyclegan-run MODEL INPUTS -o OUT --ray [ADDRESS]``.

The driver (this process) expands the inputs and plans every output with the same planner as a
local run (:func:`runtime.media.outputs.plan_outputs`: refusals up front, final names,
collisions), then ships only paths to a pool of model actors. Each actor holds one
:class:`~runtime.translator.Translator`, loaded once, and reads, translates and writes its
inputs itself with the local pipeline's own functions (atomic writes, the output folder's
record), so no image travels through the driver and the outputs are the local run's, byte for
byte. Images go in chunks of at most ``chunk_size``, smaller towards the end so that no worker
is left with a long last chunk while the others idle; a video or an animation is one task,
never split.

Why Ray core actors and :func:`ray.wait`, not Ray Data's ``map_batches``: the work is a list of
paths whose outputs the actors write themselves, so nothing but a short result per task needs
to flow back. With actors, bounded in-flight work is one counter per actor (at most
``in_flight`` tasks outstanding, so the object store holds a few lists of paths, whatever the
folder's size); retries are two actor options (``max_restarts``, ``max_task_retries``: a killed
worker is restarted and its tasks run again); progress is each task's return. Ray Data would
add its own operators, progress bars and CPU reservations (on a small node they compete with
the model actors), batch rows by count where a video is a task of any length, and retry lost
actors with the same two options underneath.

Shared storage: every worker reads the inputs and writes the outputs at the paths the driver
sees (made absolute here), so on a real cluster they must lie on storage mounted at the same
path on every node, and the model file too.

``ray`` is an optional extra: it is imported only inside these functions, never by
``import runtime``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime.media.manifest import OutputManifest
from runtime.media.outputs import Job, OutputPlan, names_a_file, plan_outputs
from runtime.media.pipeline import Progress, RunSummary, translate_jobs
from runtime.media.sinks import remove_stale_parts
from runtime.media.sources import InputError, expand_inputs
from runtime.reasons import typed_first_line

INSTALL_HINT = 'pip install "cyclegan-toolkit[ray]"'
CHUNK_SIZE = 16       # images per task: amortises a task's round trip (~ms) over ~1 s of work
IN_FLIGHT = 2         # tasks per actor: one running, one queued, so no actor waits on the driver
TASK_RETRIES = 2      # reruns of a task whose worker died, before its inputs are split or failed
INTERRUPT_GRACE_S = 10.0  # after Ctrl-C, running tasks may finish (and count) this long


class DistributedError(RuntimeError):
    """The run cannot start on the cluster (exit 2): no ray, no cluster, no room, no model."""


@dataclass(frozen=True)
class WorkerSettings:
    """How each actor builds its Translator and writes its outputs (the local run's options)."""

    providers: str = "auto"
    backend: str = "onnxruntime"
    precision: str = "auto"
    max_side: int | None = None
    threads: int | None = None      # None: the actor's CPU share
    batch_size: int = 1
    side: bool = False
    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    temporal: bool = False


@dataclass
class TaskResult:
    """What one task reports back: job indexes, never images."""

    pid: int
    translated: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    frames: int = 0
    units: int = 0                     # progress units, as :func:`count_work` counts them
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def require_ray() -> Any:
    """The ``ray`` module, or :class:`DistributedError` saying what to install."""
    try:
        import ray
    except ImportError:
        raise DistributedError(f"--ray needs Ray: {INSTALL_HINT}") from None
    return ray


def worker_shape(node_cpus: list[float], node_gpus: list[float], workers: int | None,
                 gpus_per_worker: float) -> tuple[int, float]:
    """(actors, CPUs per actor) that fit on nodes with these free CPUs and GPUs.

    GPU actors take ``gpus_per_worker`` GPUs and one CPU (for decoding and encoding); the
    default is as many as the GPUs hold. CPU actors share the CPUs: by default one per CPU (one
    onnxruntime thread each scales better than one process with many threads); with
    ``workers`` given, the largest whole CPU share that still places them all, node by node.
    Raises :class:`DistributedError` when they cannot all be placed.
    """
    if gpus_per_worker > 0:
        room = sum(int(g / gpus_per_worker + 1e-9) for g in node_gpus)
        count = room if workers is None else workers
        if count < 1 or count > room:
            raise DistributedError(f"the cluster has {sum(node_gpus):g} GPU(s): room for {room} "
                                   f"worker(s) of {gpus_per_worker:g} GPU(s), not "
                                   f"{count or 'any'}")
        return count, 1.0
    total = int(sum(int(c) for c in node_cpus))
    count = total if workers is None else workers
    if count < 1 or count > total:
        raise DistributedError(f"the cluster has {total} CPU(s): room for at most {total} CPU "
                               f"worker(s), not {count or 'any'}")
    for share in range(total // count, 0, -1):
        if sum(int(c) // share for c in node_cpus) >= count:
            return count, float(share)
    raise AssertionError("unreachable: a share of 1 places one worker per CPU")


class TranslationWorker:
    """A model actor: one Translator, loaded once; translates the jobs it is sent and writes
    their outputs as a local run does (atomic files, noted in the output folder's record).

    Never raises: a model that cannot load is reported by :meth:`ready`, an input that fails is
    a named failure in its :class:`TaskResult`.
    """

    def __init__(self, model: str, settings: WorkerSettings, threads: int, destination: str,
                 single: bool, folders: list[str]) -> None:
        import cv2

        # Failures are named in the summary; OpenCV's own decoder complaints would only be noise.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        self.settings = settings
        # One record per output folder for the actor's lifetime: read once, appended per write.
        self.plan = OutputPlan(destination=Path(destination), single=single,
                               manifests={Path(f): OutputManifest(Path(f)) for f in folders})
        self.translator: Any = None
        self.error: str | None = None
        try:
            from runtime.translator import Translator

            self.translator = Translator(model, providers=settings.providers, threads=threads,
                                         backend=settings.backend, max_side=settings.max_side,
                                         precision=settings.precision)
        except Exception as exc:  # noqa: BLE001 - reported once by the driver, exit 2
            self.error = typed_first_line(exc)

    def ready(self) -> tuple[int, str | None, str]:
        """(pid, the model's load error or None, the translator's description)."""
        return os.getpid(), self.error, repr(self.translator)

    def run(self, batch: list[tuple[int, Job]]) -> TaskResult:
        """Translate ``batch`` ((index, job) with absolute paths); report by index."""
        result = TaskResult(pid=os.getpid())
        summary = RunSummary()

        def progress(count: int) -> None:
            result.units += count

        jobs = [job for _, job in batch]
        try:
            if self.translator is None:
                raise RuntimeError(self.error or "no model")
            s = self.settings
            translate_jobs(self.translator, self.plan, jobs, summary, progress,
                           batch_size=s.batch_size, side=s.side, codec=s.codec, crf=s.crf,
                           preset=s.preset, temporal=s.temporal)
        except Exception as exc:  # noqa: BLE001 - fails what this task had not finished
            summary.failed.append(InputError("", f"worker error ({typed_first_line(exc)})"))
        by_target = {str(job.target): index for index, job in batch}
        by_source: dict[str, list[int]] = defaultdict(list)
        for index, job in batch:
            by_source[str(job.source)].append(index)
        for path in summary.translated:
            found = by_target.get(str(path))
            if found is None and len(batch) == 1:  # a video or animation: alone in its task
                found = batch[0][0]
            if found is not None:
                result.translated.append(found)
        unnamed: list[str] = []  # a failure of the whole task, not of one input
        for err in summary.failed:
            indexes = by_source.get(os.path.abspath(err.path), []) if str(err.path) else []
            if indexes:
                result.failed.append((indexes.pop(0), err.reason))
            else:
                unnamed.append(err.reason)
        accounted = set(result.translated) | {index for index, _ in result.failed}
        reason = unnamed[0] if unnamed else "no result from the worker"
        result.failed += [(index, reason) for index, _ in batch if index not in accounted]
        result.frames = summary.frames
        result.warnings, result.notes = summary.warnings, summary.notes
        return result



def translate(model: str | Path, inputs: list[str] | str, output: str | Path, *,
              address: str | None = None, workers: int | None = None,
              gpus_per_worker: float = 0.0, batch_size: int = 1, skip_existing: bool = False,
              side: bool = False, providers: str = "auto", backend: str = "onnxruntime",
              precision: str = "auto", max_side: int | None = None, threads: int | None = None,
              codec: str | None = None, crf: int | None = None, preset: str | None = None,
              temporal: bool = False, chunk_size: int = CHUNK_SIZE,
              progress: Progress | None = None) -> RunSummary:
    """Translate ``inputs`` (files, folders, globs) into ``output`` on a Ray cluster.

    The same inputs, outputs and rules as a local ``cyclegan-run``; raises
    :class:`runtime.media.outputs.OutputPlanError` before any work when the plan is refused,
    :class:`DistributedError` when the cluster cannot run it. ``address``: None starts a local
    cluster for the run, ``"auto"`` joins the one ``ray start`` made on this machine,
    ``"ray://HOST:10001"`` a remote one (a Ray already initialised in this process is used as
    it is). ``workers``: model actors (default: what the cluster offers, see
    :func:`worker_shape`); ``threads``: per actor (default: its CPU share). See
    :func:`translate_plan` for the rest.
    """
    paths = [inputs] if isinstance(inputs, str) else list(inputs)
    output = Path(output)
    found = expand_inputs(paths, exclude=None if names_a_file(output) else output)
    plan = plan_outputs(found.files, output, skip_existing=skip_existing)
    plan.failed = found.errors + plan.failed
    settings = WorkerSettings(providers=providers, backend=backend, precision=precision,
                              max_side=max_side, threads=threads, batch_size=batch_size,
                              side=side, codec=codec, crf=crf, preset=preset,
                              temporal=temporal)
    summary = translate_plan(model, plan, settings, address=address, workers=workers,
                             gpus_per_worker=gpus_per_worker, chunk_size=chunk_size,
                             progress=progress)
    summary.passed_over(found)
    return summary


def translate_plan(model: str | Path, plan: OutputPlan, settings: WorkerSettings, *,
                   address: str | None = None, workers: int | None = None,
                   gpus_per_worker: float = 0.0, chunk_size: int = CHUNK_SIZE,
                   in_flight: int = IN_FLIGHT, progress: Progress | None = None,
                   ready: Callable[[str], None] | None = None,
                   worker_logs: bool = False) -> RunSummary:
    """Run a checked plan on the cluster; the summary a local run would give.

    ``progress`` is called on the driver with the units each finished task covers (one per
    image, the frames of a video once it is done); ``ready`` once with a line describing the
    workers, when they have loaded the model. ``worker_logs``: forward the workers' output to
    this terminal (Ray prints a worker's death in any case). Ctrl-C sends no new task, lets
    those sent finish for up to :data:`INTERRUPT_GRACE_S`, and returns with ``interrupted``
    set: every output written is complete.
    """
    ray = require_ray()
    progress = progress or (lambda n: None)
    summary = RunSummary.for_plan(plan)
    summary.removed_parts = remove_stale_parts(plan.folders, recursive=not plan.single)
    if not plan.jobs:
        return summary  # nothing to translate: no cluster to start
    owned = _connect(ray, address, worker_logs)
    actors: list[Any] = []
    try:
        actors, pids, description = _start_workers(ray, model, plan, settings, workers,
                                                   gpus_per_worker)
        if ready is not None:
            ready(description)
        run = _Run(ray, actors, pids, plan, summary, progress, max(1, chunk_size),
                   max(1, in_flight))
        started = time.perf_counter()
        run.drive()
        summary.seconds = time.perf_counter() - started
        if run.restarts:
            summary.notes.append(f"{run.restarts} worker process(es) died and were restarted; "
                                 "their tasks were retried")
            # Temp files of the killed workers (a running writer's are never touched; see
            # remove_stale_parts): the only ones this run can have left.
            summary.removed_parts += remove_stale_parts(plan.folders, recursive=not plan.single)
    finally:
        for actor in actors:
            ray.kill(actor)  # after Ctrl-C: any write still running leaves only a temp file
        if owned:
            ray.shutdown()
    return summary


def _connect(ray: Any, address: str | None, worker_logs: bool) -> bool:
    """Initialise Ray unless this process already did; True when we must shut it down."""
    if ray.is_initialized():
        return False
    import logging
    import signal
    import threading

    where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
    _check_reachable(address, where)
    in_main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if in_main else None
    try:
        # "local" always starts a new cluster for the run, even where RAY_ADDRESS is set.
        ray.init(address=address or "local", include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=worker_logs)
    except Exception as exc:  # noqa: BLE001 - connection refused, bad address, ...
        raise DistributedError(f"cannot start or reach {where} ({typed_first_line(exc)})") from None
    finally:
        if in_main and sigterm is not None:
            # ray.init installs its own SIGTERM handler (sys.exit(15) after a C++ stack dump);
            # the command's own handler ends the run as Ctrl-C does, with its summary and 143.
            signal.signal(signal.SIGTERM, sigterm)
    return True


RAY_CONNECT_TIMEOUT_S = 10.0  # a cluster's GCS port that does not answer in this is unreachable


def _check_reachable(address: str | None, where: str) -> None:
    """For a ``HOST:PORT`` address, connect to the port first: ray.init retries an unreachable
    one for minutes, printing C++ log lines, before it fails."""
    if not address or address in ("local", "auto") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # ray.init names what is wrong with it
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise DistributedError(f"cannot reach {where} ({reason})") from None


def _start_workers(ray: Any, model: str | Path, plan: OutputPlan, settings: WorkerSettings,
                   workers: int | None,
                   gpus_per_worker: float) -> tuple[list[Any], list[int], str]:
    """Create the actors and wait until each has loaded the model; (actors, their pids, a
    line describing them)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    count, cpus = worker_shape([n.get("CPU", 0.0) for n in nodes],
                               [n.get("GPU", 0.0) for n in nodes], workers, gpus_per_worker)
    threads = settings.threads or max(1, int(cpus))
    if gpus_per_worker == 0 and settings.providers == "auto":
        # "auto" would take a GPU that Ray did not give this actor.
        settings = replace(settings, providers="cpu")
    folders = [_absolute(f) for f in plan.folders]
    remote = ray.remote(TranslationWorker).options(
        num_cpus=cpus, num_gpus=gpus_per_worker, max_restarts=-1,
        max_task_retries=TASK_RETRIES)
    actors = [remote.remote(_absolute(Path(model)), settings, threads,
                            _absolute(plan.destination), plan.single, folders)
              for _ in range(count)]
    try:
        states = _wait_all(ray, [actor.ready.remote() for actor in actors])
    except BaseException:
        for actor in actors:
            ray.kill(actor)
        raise
    errors = [error for _, error, _ in states if error]
    if errors:
        for actor in actors:
            ray.kill(actor)
        raise DistributedError(f"{model}: the workers cannot load the model ({errors[0]})")
    gpus = f"{gpus_per_worker:g} GPU, " if gpus_per_worker else ""
    description = (f"ray: {count} worker(s), {gpus}{cpus:g} CPU and {threads} thread(s) each; "
                   f"model: {states[0][2]}")
    return actors, [pid for pid, _, _ in states], description


def _wait_all(ray: Any, refs: list[Any]) -> list[Any]:
    """``ray.get(refs)``, saying why a worker that cannot be placed keeps the run waiting."""
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=60)
        if pending:
            import warnings

            warnings.warn(f"ray: still waiting for {len(pending)} worker(s) to start (is the "
                          "cluster busy, or is a node missing?)", stacklevel=2)
    return list(ray.get(refs))


class _Run:
    """The driver's loop: tasks to actors, at most ``in_flight`` outstanding per actor."""

    def __init__(self, ray: Any, actors: list[Any], pids: list[int], plan: OutputPlan,
                 summary: RunSummary, progress: Progress, chunk_size: int,
                 in_flight: int) -> None:
        self.ray = ray
        self.actors = actors
        self.jobs = plan.jobs
        self.summary = summary
        self.progress = progress
        self.in_flight = in_flight
        self.chunk_size = chunk_size
        # Videos and animations first, one task each: the longest tasks start early, so none
        # is left running alone at the end. Then the images, chunked as they are sent.
        self.tasks = deque([i] for i, job in enumerate(plan.jobs) if job.kind != "image")
        self.images = deque(i for i, job in enumerate(plan.jobs) if job.kind == "image")
        self.outstanding: dict[Any, tuple[int, list[int]]] = {}
        self.load = [0] * len(actors)
        self.pids = [{pid} for pid in pids]  # a second pid: the actor was restarted
        self.translated: list[int] = []
        self.failed: list[tuple[int, str]] = []

    @property
    def restarts(self) -> int:
        return sum(max(0, len(pids) - 1) for pids in self.pids)

    def drive(self) -> None:
        try:
            self._submit()
            while self.outstanding:
                done, _ = self.ray.wait(list(self.outstanding), num_returns=1)
                for ref in done:
                    self._collect(ref)
                self._submit()
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self._wind_down()
        finally:
            self.summary.translated += [self.jobs[i].target for i in sorted(self.translated)]
            self.summary.failed += [InputError(self.jobs[i].source, reason)
                                    for i, reason in sorted(self.failed)]

    def _submit(self) -> None:
        while self.tasks or self.images:
            actor = min(range(len(self.actors)), key=self.load.__getitem__)
            if self.load[actor] >= self.in_flight:
                return
            task = self.tasks.popleft() if self.tasks else self._next_chunk()
            batch = [(i, _shipped(self.jobs[i])) for i in task]
            self.outstanding[self.actors[actor].run.remote(batch)] = (actor, task)
            self.load[actor] += 1

    def _next_chunk(self) -> list[int]:
        """The next images: a fair share of what is left over all task slots (guided
        self-scheduling), at most ``chunk_size``: full chunks while there is plenty, single
        images at the end."""
        slots = len(self.actors) * self.in_flight
        size = max(1, min(self.chunk_size, -(-len(self.images) // slots)))
        return [self.images.popleft() for _ in range(min(size, len(self.images)))]

    def _collect(self, ref: Any, quiet: bool = False) -> None:
        """Merge a finished task into the run; ``quiet``: no progress call (winding down)."""
        actor, task = self.outstanding.pop(ref)
        self.load[actor] -= 1
        try:
            result: TaskResult = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            if len(task) > 1:  # retried and lost again: find the input that kills the worker
                self.tasks.extendleft([i] for i in reversed(task))
            else:
                self.failed.append((task[0], _lost(self.ray, exc)))
                if not quiet:
                    self.progress(max(1, self.jobs[task[0]].frames))
            return
        self.pids[actor].add(result.pid)
        self.translated += result.translated
        self.failed += [(i, self._relabel(reason, task)) for i, reason in result.failed]
        self.summary.frames += result.frames
        self.summary.warnings += [self._relabel(text, task) for text in result.warnings]
        self.summary.notes += [self._relabel(text, task) for text in result.notes]
        if not quiet:
            self.progress(result.units)

    def _wind_down(self) -> None:
        """After Ctrl-C: no new task starts; those sent (at most ``in_flight`` per actor) may
        finish and count for :data:`INTERRUPT_GRACE_S`. Not ``ray.cancel``: a running actor
        task it flags still writes its outputs, but its result is lost, so files would be
        written that the summary does not list."""
        self.tasks.clear()
        self.images.clear()
        try:
            deadline = time.monotonic() + INTERRUPT_GRACE_S
            while self.outstanding and time.monotonic() < deadline:
                done, _ = self.ray.wait(list(self.outstanding), num_returns=1,
                                        timeout=max(0.0, deadline - time.monotonic()))
                for ref in done:
                    self._collect(ref, quiet=True)
        except KeyboardInterrupt:
            return  # a second Ctrl-C: stop now; the actors are killed

    def _relabel(self, text: str, task: list[int]) -> str:
        """Name this task's files as the user gave them, not by the absolute paths shipped."""
        for i in task:
            job = self.jobs[i]
            for path in (job.source, job.target):
                text = text.replace(_absolute(path), str(path))
        return text


def _shipped(job: Job) -> Job:
    """``job`` with absolute paths: a worker's working folder is not the driver's."""
    return Job(Path(_absolute(job.source)), Path(_absolute(job.target)), job.kind, job.frames)


def _absolute(path: Path) -> str:
    return os.path.abspath(path)


def _lost(ray: Any, exc: BaseException) -> str:
    if isinstance(exc, ray.exceptions.RayActorError):
        return (f"the worker process died {TASK_RETRIES + 1} times while translating it "
                "(out of memory, or a crash in a decoder?)")
    return f"worker error ({typed_first_line(exc)})"

