"""The distillation loop: a frozen teacher, a student with its feature mappings, an optional
discriminator; logs, sample grids (input | teacher | student) and checkpoints in a run folder.

Run folder layout (as ``cyclegan-train``'s; see :mod:`training.run_dir`)::

    RUN_DIR/config.yaml               the resolved settings
    RUN_DIR/loss_log.jsonl            one JSON record per ``log_every`` steps
    RUN_DIR/samples/step_XXXXXXX.png  rows of input | teacher | student
    RUN_DIR/checkpoints/latest.pt     newest checkpoint (atomic writes), step_XXXXXXX.pt history

The checkpoint is a training checkpoint (``format`` "cyclegan-toolkit/checkpoint") of kind
``"distill"`` whose only generator is the student, stored as ``G_AB`` with the teacher's
source and target domains as ``domain_a`` / ``domain_b``: ``cyclegan-export RUN/checkpoints/
latest.pt student.onnx`` needs no flags. The teacher's forward pass (no grad) dominates the
cost on a CPU; ``cache_teacher`` keeps its outputs for a fixed set of crops.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torchvision.utils import make_grid
from tqdm import tqdm

from training import __version__
from training.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    atomic_torch_save,
    checkpoint_step,
)
from training.data import Preprocess, augment, batches_into_epoch, loader_workers, read_image
from training.distill.config import DistillConfig, check_teacher_fits
from training.distill.data import (
    DomainDataset,
    DomainSampler,
    KeyedDataset,
    collate_keys,
    domain_folder,
)
from training.distill.objective import (
    FeatureCapture,
    StudentWithMappings,
    discriminator_loss,
    feature_pairs,
    residual_blocks,
    student_losses,
)
from training.distill.students import STUDENTS
from training.distill.teacher import Teacher
from training.distributed import (
    DistContext,
    barrier,
    gather_objects,
    init_distributed,
    shutdown,
)
from training.graceful_stop import GracefulStop, ignore_interrupts_in_worker
from training.loss_log import append_record
from training.model import adam_options, match_optimizer_to_device
from training.networks import (
    GeneratorSpec,
    build_discriminator,
    build_generator,
    count_macs,
    generator_spec,
    init_weights,
)
from training.run_dir import RunFolder, rewind_to
from training.samples import load_fixed_views, save_png_atomic

CHECKPOINT_KIND = "distill"


@dataclass
class DistillResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    last_losses: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stopped_by: str = ""  # "SIGINT" / "SIGTERM": stopped early, the checkpoint saved first


def generator_gmac(net: torch.nn.Module, spec: GeneratorSpec) -> float:
    """Billions of multiply-accumulates of one 256x256 frame through ``net`` (on the CPU),
    counted at a smaller size where the network takes one: a convolutional generator's work
    grows with the pixels."""
    side = max(64, spec.min_size)
    side = -(-side // spec.size_multiple) * spec.size_multiple
    device, training = next(net.parameters()).device, net.training
    net.eval()  # a counting pass must not move batch-norm statistics
    try:
        macs = count_macs(net.cpu(), side, side) * (256 * 256) / (side * side)
    finally:
        net.to(device).train(training)
    return macs / 1e9


def student_spec(config: DistillConfig) -> GeneratorSpec:
    student = STUDENTS[config.student]
    return generator_spec(student.generator, ngf=config.ngf or student.ngf)


class DistillTrainer:
    """Owns one distillation run; :meth:`run` trains until ``config.steps``."""

    def __init__(self, config: DistillConfig, run_dir: str | Path, teacher: Teacher,
                 resume_from: dict[str, Any] | None = None, progress: bool = True,
                 ctx: DistContext | None = None, run_id: str | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.teacher = teacher
        self.run_id = run_id
        self.ctx = ctx or init_distributed(config.device)
        self.progress = progress and self.ctx.is_main
        self.notes: list[str] = []
        # Denormals make x86 CPUs fall back to microcode (see training/trainer.py).
        torch.set_flush_denormal(True)
        device = self.ctx.device
        torch.manual_seed(config.seed)
        self.spec = student_spec(config)
        student = build_generator(self.spec)
        init_weights(student)
        # What each costs per 256x256 frame: a "student" no cheaper than its teacher is said.
        self.student_gmac = generator_gmac(student, self.spec)
        self.teacher_gmac = generator_gmac(teacher.net, teacher.spec)
        if self.student_gmac >= self.teacher_gmac:
            self.notes.append(
                f"the student ({config.student}, {self.student_gmac:.2f} GMAC at 256x256) costs "
                f"{self.student_gmac / self.teacher_gmac:.1f}x its teacher's "
                f"{self.teacher_gmac:.2f}: it will not run faster; a smaller --student is "
                "(see --help)")
        pairs = feature_pairs(self.spec, teacher.spec, config.feature_taps) \
            if config.lambda_feat > 0 else []
        if config.lambda_feat > 0 and not pairs:
            self.notes.append("feature distillation off: it needs ResNet-family teacher and "
                              "student")
        self.model = StudentWithMappings(student, self.spec, teacher.spec, pairs).to(device)
        self.teacher_net = teacher.net.to(device)
        blocks = residual_blocks(self.teacher_net)
        self.teacher_capture = FeatureCapture([blocks[t] for _, t in pairs])
        self.train_model: torch.nn.Module = self._ddp(self.model)
        betas = (0.5, 0.999)
        self.opt_s = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=betas,
                                      **adam_options(device))
        self.sched_s = torch.optim.lr_scheduler.LambdaLR(self.opt_s, self._lr_factor)
        self.disc: torch.nn.Module | None = None
        if config.lambda_gan > 0:
            if teacher.discriminator is not None:
                self.disc = teacher.discriminator
                self.notes.append("adversarial term: discriminator from the teacher's checkpoint")
            else:
                self.disc = build_discriminator("basic", ndf=32)
                init_weights(self.disc)
                self.notes.append("adversarial term: a new 70x70 PatchGAN (ndf 32)")
            self.disc = self.disc.to(device)
            self.train_disc = self._ddp(self.disc)
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=config.lr, betas=betas,
                                          **adam_options(device))
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, self._lr_factor)
        # Uncropped modes scale and pad images to what all the networks take: the student, the
        # teacher (a U-Net: multiples of 2**depth) and, with the adversarial term, the
        # discriminator, which needs more than either ResNet.
        min_side = max(self.spec.min_size, teacher.spec.min_size)
        if config.lambda_gan > 0:
            min_side = max(min_side, teacher.discriminator_min_size)
        self.preprocess = Preprocess(config.preprocess, config.load_size, config.crop_size,
                                     not config.no_flip,
                                     math.lcm(self.spec.size_multiple, teacher.spec.size_multiple),
                                     min_side)
        images = domain_folder(config.dataroot, config.direction)
        self.dataset = DomainDataset(images, self.preprocess)
        if self.progress:
            print(f"student: {config.student} ({self.spec.name} ngf {self.spec.ngf}), "
                  f"{self.student_gmac:.2f} GMAC at 256x256, the teacher "
                  f"{self.teacher_gmac:.2f} ({self.teacher_gmac / self.student_gmac:.1f}x); "
                  f"{len(self.dataset)} images of {teacher.source_domain} in {images}",
                  file=sys.stderr)
        if config.lambda_gan > 0:
            target = Path(config.target) if config.target else domain_folder(
                config.dataroot, config.direction, target=True)
            self.target_set: DomainDataset | None = DomainDataset(target, self.preprocess)
        else:
            self.target_set = None
        cached = config.cache_teacher > 0
        self.sampler = DomainSampler(len(self.dataset), config.cache_teacher or None,
                                     seed=config.seed, rank=self.ctx.rank,
                                     world_size=self.ctx.world_size, fixed_crops=cached)
        self.cache: dict[tuple[int, int], tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        if resume_from is not None:
            self._restore(resume_from)

    def _ddp(self, net: torch.nn.Module) -> torch.nn.Module:
        if not self.ctx.enabled:
            return net
        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids)

    def _lr_factor(self, step: int) -> float:
        """Constant, then linear decay to 0 over the last ``1 - decay_from`` of the steps."""
        total = self.config.steps
        start = int(total * self.config.decay_from)
        if step < start or total <= start:
            return 1.0
        return max(0.0, (total - step) / (total - start))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.sampler.per_rank / self.config.batch_size)

    @property
    def stop_at(self) -> int:
        cfg = self.config
        return min(cfg.steps, cfg.max_steps) if cfg.max_steps else cfg.steps

    def _autocast(self) -> AbstractContextManager[Any]:
        if not self.config.bf16:
            return nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16)

    # ---- one step ------------------------------------------------------------------------
    @torch.no_grad()
    def _teacher(self, keys: list[tuple[int, int]],
                 images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's output and tapped features for ``images`` (from the cache when on)."""
        if self.config.cache_teacher and all(key in self.cache for key in keys):
            outs, feats = zip(*(self.cache[key] for key in keys), strict=True)
            device = self.ctx.device
            stacked = [torch.stack([f[i] for f in feats]).to(device)
                       for i in range(len(feats[0]))]
            return torch.stack(outs).to(device), stacked
        with self._autocast():
            out = self.teacher_net(images)
        features = [f.float() for f in self.teacher_capture.take()]
        out = out.float()
        if self.config.cache_teacher:
            for row, key in enumerate(keys):
                self.cache[key] = (out[row].cpu(), [f[row].cpu() for f in features])
        return out, features

    def _target_batch(self) -> torch.Tensor:
        """Target-domain images for this step: a function of (seed, step), so resume is exact."""
        assert self.target_set is not None
        gen = torch.Generator().manual_seed(self.config.seed * 7_919 + self.step * 31
                                            + self.ctx.rank)
        count = self.config.batch_size
        picks = torch.randint(0, len(self.target_set), (count,), generator=gen)
        seeds = torch.randint(0, 2**62, (count,), generator=gen)
        return torch.stack([self.target_set[(int(i), int(s))] for i, s in
                            zip(picks, seeds, strict=True)]).to(self.ctx.device)

    def train_step(self, keys: list[tuple[int, int]], images: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        images = images.to(self.ctx.device, non_blocking=True)
        teacher_out, teacher_feats = self._teacher(keys, images)
        fake_score = None
        if self.disc is not None:
            for parameter in self.disc.parameters():
                parameter.requires_grad_(False)
        self.opt_s.zero_grad(set_to_none=True)
        with self._autocast():
            out, mapped = self.train_model(images)
            if self.disc is not None:
                fake_score = self.disc(out)
        total, terms = student_losses(out, mapped, teacher_out, teacher_feats, fake_score,
                                      cfg.lambda_l1, cfg.lambda_feat, cfg.lambda_gan)
        total.backward()
        self.opt_s.step()
        self.sched_s.step()
        losses = {k: float(v.detach()) for k, v in terms.items()}
        if self.disc is not None:
            for parameter in self.disc.parameters():
                parameter.requires_grad_(True)
            real = self._target_batch()
            self.opt_d.zero_grad(set_to_none=True)
            with self._autocast():
                loss_d = discriminator_loss(self.train_disc(real),
                                            self.train_disc(out.detach()))
            loss_d.backward()
            self.opt_d.step()
            self.sched_d.step()
            losses["D"] = float(loss_d.detach())
        return losses

    # ---- main loop -----------------------------------------------------------------------
    def run(self) -> DistillResult:
        cfg = self.config
        latest = self.run_dir / "checkpoints" / "latest.pt"
        if self.step and self.step >= self.stop_at and latest.is_file():
            # Resumed at its end already: nothing to distil, nothing of the run rewritten.
            return DistillResult(self.run_dir, self.step, latest if self.ctx.is_main else None,
                                 notes=self.notes)
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_config()
            # resume: nothing of later steps stays (latest.pt at a later step included)
            rewind_to(self.run_dir, self.step,
                      checkpoint_step(self.run_dir / "checkpoints" / "latest.pt"))
            fixed = load_fixed_views(self.dataset.files, cfg.num_samples, cfg.crop_size)
        bar = tqdm(total=self.stop_at, initial=self.step, unit="step", disable=not self.progress,
                   dynamic_ncols=True, smoothing=0.1)
        losses: dict[str, float] = {}
        checkpoint: Path | None = None
        saved_at = -1
        started, steps_at_start = time.perf_counter(), self.step
        self.model.train()
        # The first Ctrl-C/SIGTERM ends the run after the step in flight, saved (one process).
        stop = GracefulStop(enabled=self.ctx.world_size == 1,
                            progress_bar=self.progress).start()
        try:
            while self.step < self.stop_at and not stop.requested:
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch * cfg.batch_size)
                for batch in self._loader():
                    losses = self.train_step(batch["keys"], batch["images"])
                    self.step += 1
                    self.batch_in_epoch += 1
                    bar.update(1)
                    if self.progress:
                        bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()},
                                        refresh=False)
                    if self.ctx.is_main and cfg.log_every and self.step % cfg.log_every == 0:
                        rate = (self.step - steps_at_start) / (time.perf_counter() - started)
                        self._log(losses, rate)
                    if self.ctx.is_main and cfg.sample_every and self.step % cfg.sample_every == 0:
                        self._write_samples(fixed)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        checkpoint = self._save(history=True)
                        saved_at = self.step
                    if self.step >= self.stop_at or stop.requested:
                        break
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
            # a signal during the last step stops nothing: the run is complete
            stopped_by = stop.signal_name if self.step < self.stop_at else ""
            if self.ctx.is_main and not stopped_by:
                self._write_samples(fixed)
            if saved_at != self.step:
                checkpoint = self._save(history=False)
        finally:
            stop.restore()
            bar.close()
        barrier(self.ctx)
        return DistillResult(self.run_dir, self.step, checkpoint if self.ctx.is_main else None,
                             losses, self.notes, stopped_by=stopped_by)

    def _loader(self) -> DataLoader:
        cfg = self.config
        return DataLoader(KeyedDataset(self.dataset), batch_size=cfg.batch_size,
                          sampler=self.sampler, num_workers=loader_workers(cfg.num_workers),
                          collate_fn=collate_keys, pin_memory=self.ctx.device.type == "cuda",
                          generator=torch.Generator().manual_seed(cfg.seed),
                          worker_init_fn=ignore_interrupts_in_worker)  # this process decides

    # ---- outputs -------------------------------------------------------------------------
    def _write_config(self) -> None:
        path = self.run_dir / "config.yaml"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False), encoding="utf-8")
        tmp.replace(path)

    def _log(self, losses: dict[str, float], rate: float) -> None:
        append_record(self.run_dir, {
            "step": self.step, "epoch": self.epoch, "lr": self.sched_s.get_last_lr()[0],
            "steps_per_s": round(rate, 4), **{k: round(v, 6) for k, v in losses.items()}})

    @torch.no_grad()
    def _write_samples(self, fixed: torch.Tensor) -> None:
        """Rows of input | teacher | student for a fixed set of centred crops."""
        inputs = fixed.to(self.ctx.device)
        self.model.eval()
        try:
            teacher = self.teacher_net(inputs)
            self.teacher_capture.take()
            student, _ = self.model(inputs)
        finally:
            self.model.train()
        tiles = torch.stack([t for row in zip(inputs, teacher, student, strict=True)
                             for t in row]).float().cpu()
        grid = make_grid(tiles, nrow=3, padding=2, normalize=True, value_range=(-1, 1))
        save_png_atomic(grid.mul(255).round().clamp(0, 255).to(torch.uint8),
                        self.run_dir / "samples" / f"step_{self.step:07d}.png")

    # ---- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        teacher = self.teacher
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "kind": CHECKPOINT_KIND,
            "package_version": __version__,
            "run_id": self.run_id,
            "torch_version": str(torch.__version__),
            # domain_a -> domain_b is the student's own direction (so export needs no flags)
            "config": {**self.config.to_dict(), "domain_a": teacher.source_domain,
                       "domain_b": teacher.target_domain},
            "teacher": teacher.record(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.ctx.world_size,
            "generators": {"G_AB": {"spec": self.spec.to_dict(),
                                    "state_dict": self.model.student.state_dict()}},
            "mappings": self.model.mappings.state_dict(),
            "discriminator": self.disc.state_dict() if self.disc is not None else None,
            "optimizers": {"student": self.opt_s.state_dict(),
                           "D": self.opt_d.state_dict() if self.disc is not None else None},
            "schedulers": {"student": self.sched_s.state_dict(),
                           "D": self.sched_d.state_dict() if self.disc is not None else None},
            "rng": {"torch": torch.get_rng_state()},
        }

    def _weights_checksum(self) -> float:
        return float(sum(p.detach().double().sum() for p in self.model.parameters()))

    def _save(self, history: bool) -> Path:
        """Write the checkpoint (rank 0); a collective under torchrun (replica checksums)."""
        folder = self.run_dir / "checkpoints"
        latest = folder / "latest.pt"
        checksums = gather_objects(self.ctx, self._weights_checksum())
        if self.ctx.is_main:
            state = {**self.checkpoint_state(), "replica_checksums": checksums}
            atomic_torch_save(state, latest)
            if history:
                atomic_torch_save(state, folder / f"step_{self.step:07d}.pt")
                history_files = sorted(folder.glob("step_*.pt"))
                keep = self.config.keep_checkpoints
                for old in history_files[:-keep] if keep > 0 else []:
                    old.unlink(missing_ok=True)
        return latest

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.model.student.load_state_dict(state["generators"]["G_AB"]["state_dict"])
            self.model.mappings.load_state_dict(state["mappings"])
            self.opt_s.load_state_dict(state["optimizers"]["student"])
            self.sched_s.load_state_dict(state["schedulers"]["student"])
            if self.disc is not None:
                self.disc.load_state_dict(state["discriminator"])
                self.opt_d.load_state_dict(state["optimizers"]["D"])
                self.sched_d.load_state_dict(state["schedulers"]["D"])
                match_optimizer_to_device(self.opt_d)
            match_optimizer_to_device(self.opt_s)
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not match these settings ({exc})") from None
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        # Another process count: the epoch, and its learning rate, go on where they were.
        self.batch_in_epoch = batches_into_epoch(int(state.get("batch_in_epoch", 0)),
                                                 self.config.batch_size,
                                                 int(state.get("world_size", 1)),
                                                 self.ctx.world_size)


def distill(config: DistillConfig, run_dir: str | Path, teacher: Teacher,
            resume_from: dict[str, Any] | None = None,
            resume_path: str | Path | None = None, progress: bool = True) -> DistillResult:
    """Distil ``teacher`` into the configured student in ``run_dir`` (locked while it runs).

    The folder is claimed as :meth:`training.run_dir.RunFolder.claim` says: a new run, the
    continuation of its own ``resume_from``, or a new run from another run's checkpoint in a new
    folder. Under ``torchrun`` call this in every process.
    """
    check_teacher_fits(config, teacher.spec)  # before the run folder is claimed
    ctx = init_distributed(config.device)
    folder: RunFolder | None = None
    try:
        notes: list[str] = []
        if ctx.is_main:
            folder = RunFolder.open(Path(run_dir))
            note = folder.claim(resume_from, Path(resume_path) if resume_path else None)
            if note:
                notes.append(note)
        trainer = DistillTrainer(config, run_dir, teacher, resume_from, progress, ctx=ctx,
                                 run_id=folder.run_id if folder is not None else None)
        result = trainer.run()
        result.notes = notes + result.notes
        return result
    finally:
        if folder is not None:
            folder.close()
        shutdown(ctx)


def fixed_crops(files: list[Path], count: int, preprocess: Preprocess,
                seed: int = 0) -> torch.Tensor:
    """``count`` augmented crops (seeded), ``(N, 3, crop, crop)`` in [-1, 1]: held-out checks."""
    gen = torch.Generator().manual_seed(seed)
    crops = [augment(read_image(files[i % len(files)]), preprocess, gen) for i in range(count)]
    return torch.stack(crops)
