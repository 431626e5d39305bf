"""cyclegan-distill: students, teachers of every kind, exact resume, export, DDP, the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import write_domain

from training.checkpoint import load_checkpoint
from training.distill.cli import main as distill_cli
from training.distill.config import DistillConfig
from training.distill.objective import tap_pairs
from training.distill.students import STUDENTS, student_macs
from training.distill.teacher import load_teacher
from training.distill.trainer import DistillTrainer, distill
from training.networks import build_generator, count_macs, generator_spec, init_weights

TINY = ["--crop-size", "32", "--load-size", "36", "--batch-size", "2", "--workers", "0",
        "--log-every", "1", "--sample-every", "2", "--checkpoint-every", "100", "-q"]


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny resnet_6blocks ngf 8 saved as an official-layout generator file: DataParallel's
    ``module.`` prefix and stale InstanceNorm statistics included, as published files have."""
    torch.manual_seed(0)
    net = build_generator(generator_spec("resnet_6blocks", ngf=8))
    init_weights(net)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.model.2.running_mean"] = torch.zeros(8)  # a stale InstanceNorm buffer
    path = tmp_path_factory.mktemp("teacher") / "latest_net_G_A.pth"
    torch.save(state, path)
    return path


def distill_args(teacher: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [str(teacher), str(data), "-o", str(out), *TINY, *extra]


@pytest.mark.parametrize("name", list(STUDENTS))
def test_analytic_macs_equal_the_counted_ones(name: str) -> None:
    student = STUDENTS[name]
    net = build_generator(generator_spec(student.generator, ngf=student.ngf))
    assert student_macs(student) == count_macs(net)


def test_resnet9_ngf64_costs_what_the_issue_says() -> None:
    net = build_generator(generator_spec("resnet_9blocks"))
    assert round(count_macs(net) / 1e9, 1) == 49.6


def test_help_lists_the_students_with_their_cost_without_torch() -> None:
    code = ("import sys; from training.distill.cli import main; "
            "sys.argv = ['cyclegan-distill', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported for --help'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "mobile-4: mobile_resnet_9blocks ngf 4, 0.13 GMAC at 256x256" in done.stdout


def test_tap_pairs_spread_over_both_depths() -> None:
    assert tap_pairs(9, 6, 3) == [(2, 2), (4, 3), (7, 4)]
    assert tap_pairs(9, 9, 0) == []


@pytest.mark.parametrize("student", ["mobile-4", "resnet-8"])
def test_official_layout_teacher_distils_and_the_student_exports_verified(
        teacher_file: Path, dataroot: Path, tmp_path: Path, student: str) -> None:
    from cyclegan_export.export import export_onnx

    run = tmp_path / "run"
    args = distill_args(teacher_file, dataroot, run, "--student", student, "--steps", "3")
    args.remove("-q")  # -q leaves the teacher line out
    result = CliRunner().invoke(distill_cli, args)
    assert result.exit_code == 0, result.output
    assert "distilled to step 3; checkpoint:" in result.output
    assert "resnet_6blocks ngf 8" in result.stderr  # the teacher's architecture, read from keys
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["kind"] == "distill" and list(state["generators"]) == ["G_AB"]
    assert state["teacher"]["spec"]["ngf"] == 8
    records = [json.loads(x) for x in (run / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and {"l1", "feat"} <= set(records[0])
    assert (run / "samples" / "step_0000002.png").is_file()

    report = export_onnx(run / "checkpoints" / "latest.pt", tmp_path / "student.onnx")
    assert report.ok, report.summary()
    from runtime.metadata import read_metadata

    meta = read_metadata(tmp_path / "student.onnx")
    assert meta.architecture == STUDENTS[student].generator
    assert (meta.source_domain, meta.target_domain) == ("A", "B")


def test_resume_is_exact(teacher_file: Path, dataroot: Path, tmp_path: Path) -> None:
    """3 steps + resume to 6 == 6 straight: student, mappings, D, optimisers, schedule."""
    extra = ("--student", "mobile-4", "--lambda-gan", "1", "--target", str(dataroot / "trainB"))
    straight = tmp_path / "straight"
    assert CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, straight,
                                                        *extra, "--steps", "6")).exit_code == 0
    split = tmp_path / "split"
    first = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, split, *extra,
                                                         "--steps", "6", "--max-steps", "3"))
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, split, *extra,
                                                           "--resume"))
    assert resumed.exit_code == 0, resumed.output
    a = load_checkpoint(straight / "checkpoints" / "latest.pt")
    b = load_checkpoint(split / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 6
    for group in ("mappings", "discriminator"):
        for key, value in a[group].items():
            assert torch.equal(value, b[group][key]), f"{group}.{key}"
    for key, value in a["generators"]["G_AB"]["state_dict"].items():
        assert torch.equal(value, b["generators"]["G_AB"]["state_dict"][key]), key
    opt_a, opt_b = a["optimizers"]["student"]["state"], b["optimizers"]["student"]["state"]
    assert all(torch.equal(opt_a[k]["exp_avg"], opt_b[k]["exp_avg"]) for k in opt_a)
    log = [json.loads(x)["step"] for x in (split / "loss_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4, 5, 6]
    # resumed where it already ends: says so and rewrites nothing
    latest = split / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    again = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, split, *extra,
                                                         "--resume"))
    assert again.exit_code == 0, again.output
    assert "already at step 6, where this run ends: nothing to distil" in again.output
    assert latest.read_bytes() == before


def test_resume_with_another_teacher_is_refused(teacher_file: Path, dataroot: Path,
                                                tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, run,
                                                        "--steps", "1")).exit_code == 0
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    torch.save(build_generator(generator_spec("resnet_6blocks", ngf=8)).state_dict(), other)
    result = CliRunner().invoke(distill_cli, distill_args(other, dataroot, run, "--steps", "2",
                                                          "--resume"))
    assert result.exit_code == 2 and "is not the teacher this run was distilled from" in \
        result.output


@pytest.mark.parametrize(("make", "reason"), [
    ("discriminator", "not a CycleGAN ResNet or U-Net generator"),
    ("onnx", "is an ONNX model"),
    ("tensor", "not a generator file"),
])
def test_a_teacher_that_is_not_a_generator_is_refused(dataroot: Path, tmp_path: Path,
                                                      make: str, reason: str) -> None:
    from training.networks import build_discriminator

    path = tmp_path / "teacher.pth"
    if make == "discriminator":
        torch.save(build_discriminator("basic", ndf=8).state_dict(), path)
    elif make == "onnx":
        path = tmp_path / "teacher.onnx"
        path.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    else:
        torch.save(torch.zeros(3), path)
    result = CliRunner().invoke(distill_cli, distill_args(path, dataroot, tmp_path / "run",
                                                          "--steps", "1"))
    assert result.exit_code == 2, result.output
    assert reason in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_training_checkpoint_teaches_with_its_own_discriminator(dataroot: Path,
                                                                  tmp_path: Path) -> None:
    from training.cli import main as train_cli

    run = tmp_path / "cyclegan"
    trained = CliRunner().invoke(train_cli, [str(dataroot), "-o", str(run), "--generator",
                                             "resnet_6blocks", "--ngf", "8", "--ndf", "8",
                                             "--load-size", "36", "--crop-size", "32",
                                             "--max-steps", "1", "--workers", "0", "-q",
                                             "--discriminator", "pixel"])
    assert trained.exit_code == 0, trained.output
    teacher = load_teacher(run / "checkpoints" / "latest.pt", "BtoA")
    assert teacher.discriminator is not None  # D_A: the B->A generator's target domain
    assert teacher.spec.ngf == 8
    # the images distillation scales up for it are the pixel discriminator's floor, not 70x70's
    assert teacher.discriminator_min_size == 2
    result = CliRunner().invoke(distill_cli, distill_args(
        run / "checkpoints" / "latest.pt", dataroot, tmp_path / "student", "--direction",
        "BtoA", "--lambda-gan", "1", "--steps", "2"))
    assert result.exit_code == 0, result.output
    assert "discriminator from the teacher's checkpoint" in result.output


def test_a_generator_file_teaches_with_a_new_70x70_discriminators_floor(
        teacher_file: Path) -> None:
    teacher = load_teacher(teacher_file)
    assert teacher.discriminator is None and teacher.discriminator_min_size == 24


def test_teacher_cache_runs_the_teacher_once_per_fixed_crop(teacher_file: Path,
                                                            dataroot: Path,
                                                            tmp_path: Path) -> None:
    config = DistillConfig(teacher=str(teacher_file), dataroot=str(dataroot), student="mobile-4",
                           crop_size=32, load_size=36, batch_size=2, steps=9, num_workers=0,
                           cache_teacher=6, log_every=0, sample_every=0, checkpoint_every=0)
    teacher = load_teacher(teacher_file)
    calls = []
    trainer = DistillTrainer(config, tmp_path / "run", teacher, progress=False)
    # counted from here: the trainer's start runs the teacher once to count its MACs
    teacher.net.register_forward_hook(lambda *args: calls.append(args[1][0].shape[0]))
    trainer.run()
    # 9 steps of 2 crops over a fixed set of 6: the teacher saw each crop once (and the
    # samples' fixed views once at the end)
    assert sum(calls[:-1]) == 6 and len(trainer.cache) == 6


def test_a_second_distiller_on_the_same_folder_is_refused(teacher_file: Path, dataroot: Path,
                                                          tmp_path: Path) -> None:
    from training.run_dir import RunFolder

    run = tmp_path / "run"
    held = RunFolder.open(run)  # as if another process were distilling into it
    try:
        result = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, run,
                                                              "--steps", "1"))
    finally:
        held.close()
    assert result.exit_code == 2 and "run" in result.output, result.output


@pytest.mark.slow
def test_two_process_gloo_distillation(teacher_file: Path, dataroot: Path,
                                       tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "training.distill", *distill_args(teacher_file, dataroot, run,
                                                            "--steps", "4", "--student",
                                                            "mobile-4")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["world_size"] == 2 and state["step"] == 4
    first, second = state["replica_checksums"]
    assert first == second  # gradients all-reduced: the replicas agree
    steps = [json.loads(x)["step"] for x in (run / "loss_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # one writer
    assert done.stdout.count("distilled to step 4;") == 1


def test_library_entry_point(teacher_file: Path, dataroot: Path, tmp_path: Path) -> None:
    config = DistillConfig(teacher=str(teacher_file), dataroot=str(dataroot), student="mobile-4",
                           crop_size=32, load_size=36, batch_size=2, steps=2, num_workers=0)
    result = distill(config, tmp_path / "run", load_teacher(teacher_file), progress=False)
    assert result.step == 2 and result.checkpoint is not None and result.checkpoint.is_file()


def test_cyclegan_train_refuses_a_students_checkpoint(teacher_file: Path, dataroot: Path,
                                                      tmp_path: Path) -> None:
    from training.cli import main as train_cli

    run = tmp_path / "student"
    assert CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, run,
                                                        "--steps", "1")).exit_code == 0
    result = CliRunner().invoke(train_cli, [str(dataroot), "-o", str(tmp_path / "new"),
                                            "--resume", str(run / "checkpoints" / "latest.pt")])
    assert result.exit_code == 2 and "continue it with cyclegan-distill" in result.output


def test_a_raw_mobile_student_file_is_read_from_its_keys(tmp_path: Path) -> None:
    from training.pretrained import load_pretrained_generator

    torch.manual_seed(0)
    net = build_generator(generator_spec("mobile_resnet_6blocks", ngf=4))
    torch.save(net.state_dict(), tmp_path / "student.pth")
    loaded, spec = load_pretrained_generator(tmp_path / "student.pth")
    assert (spec.name, spec.ngf) == ("mobile_resnet_6blocks", 4)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded(x), net.eval()(x))


def test_a_crop_larger_than_the_load_size_is_refused_as_training_refuses_it() -> None:
    from training.distill.config import DistillConfigError, validate

    with pytest.raises(DistillConfigError, match="crop_size 64 is larger than load_size 32"):
        validate(DistillConfig(crop_size=64, load_size=32))


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_data_folder_that_is_not_one_is_said_before_the_teacher_loads(
        teacher_file: Path, tmp_path: Path, kind: str) -> None:
    data = tmp_path / "photos"
    if kind == "file":
        data.write_bytes(b"not a folder")
    result = CliRunner().invoke(distill_cli, distill_args(teacher_file, data, tmp_path / "run",
                                                          "--steps", "1"))
    assert result.exit_code == 2, result.output
    reason = "is a file" if kind == "file" else "no such folder"
    assert f"{data}: {reason}; give a folder of the teacher's input images" in result.output
    assert "teacher:" not in result.output and "Traceback" not in result.output


def test_crops_a_unet_teacher_cannot_take_are_refused_before_the_run_starts(
        dataroot: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_generator(generator_spec("unet_128", ngf=8))
    torch.save(net.state_dict(), tmp_path / "unet.pth")
    run = tmp_path / "run"
    result = CliRunner().invoke(distill_cli, distill_args(tmp_path / "unet.pth", dataroot, run,
                                                          "--steps", "1"))
    assert result.exit_code == 2, result.output
    assert "--crop-size 32 does not fit the teacher's unet_128: use a multiple of 128" \
        in result.output
    assert not run.exists()  # refused before the run folder was claimed


def test_ctrl_c_finishes_the_step_and_saves_before_stopping(
        teacher_file: Path, dataroot: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    real_step, calls = DistillTrainer.train_step, []

    def step_with_ctrl_c(self: DistillTrainer, *args: object) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return real_step(self, *args)

    monkeypatch.setattr(DistillTrainer, "train_step", step_with_ctrl_c)
    run = tmp_path / "run"
    result = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, run,
                                                          "--steps", "50"))
    assert result.exit_code == 130, result.output
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 2
    assert "stopped by SIGINT at step 2 (2 in this run); checkpoint saved" in result.output


# ---- a demanding user's findings --------------------------------------------------------------

def test_a_student_teaches_from_its_own_input_domain_and_exports_as_a_student(
        teacher_file: Path, dataroot: Path, tmp_path: Path) -> None:
    """A B -> A student as teacher: its input is B, whatever --direction's default says; a
    --direction that contradicts it is refused (as export refuses it); its export says it is a
    student of which teacher."""
    from cyclegan_export.export import export_onnx
    from cyclegan_export.source import load_generator
    from runtime.metadata import read_metadata
    from training.checkpoint import CheckpointError

    first = tmp_path / "b2a"
    result = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, first,
                                                          "--direction", "BtoA", "--steps", "1",
                                                          "--student", "mobile-4"))
    assert result.exit_code == 0, result.output
    student = first / "checkpoints" / "latest.pt"
    only_b = tmp_path / "only_b"
    (only_b / "trainB").mkdir(parents=True)
    for image in (dataroot / "trainB").iterdir():
        (only_b / "trainB" / image.name).write_bytes(image.read_bytes())
    second = CliRunner().invoke(distill_cli, distill_args(student, only_b, tmp_path / "c",
                                                          "--steps", "1", "--student",
                                                          "mobile-4"))
    assert second.exit_code == 0, second.output  # it read trainB, the student's input
    assert load_checkpoint(tmp_path / "c" / "checkpoints" / "latest.pt")["config"][
        "direction"] == "BtoA"
    wrong = CliRunner().invoke(distill_cli, distill_args(student, dataroot, tmp_path / "d",
                                                         "--direction", "AtoB", "--steps", "1"))
    assert wrong.exit_code == 2
    assert "a distilled student translates B -> A only (its run's direction, BtoA); leave " \
        "--direction out" in wrong.output
    # a run from the student as an older version saved it (direction AtoB, the default)
    latest = tmp_path / "c" / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=True)
    state["config"]["direction"] = "AtoB"
    torch.save(state, latest)
    older = CliRunner().invoke(distill_cli, distill_args(student, only_b, tmp_path / "c",
                                                         "--steps", "2", "--resume"))
    assert older.exit_code == 2
    assert "this run distils in direction AtoB, but its teacher, a distilled student, " \
        "translates BtoA only; start a new run" in older.output
    with pytest.raises(CheckpointError, match="leave --direction out"):
        load_generator(student, "AtoB")
    report = export_onnx(student, tmp_path / "student.onnx", opencv_check=False)
    assert "(distilled student, BtoA: B -> A)" in report.summary()
    meta = read_metadata(tmp_path / "student.onnx")
    assert (meta.direction, meta.source_domain, meta.target_domain) == ("BtoA", "B", "A")
    assert meta.extra["distilled_from"]["file"] == teacher_file.name
    assert len(meta.extra["distilled_from"]["sha256"]) == 64


def test_the_start_names_the_student_its_cost_and_the_images(
        teacher_file: Path, dataroot: Path, tmp_path: Path) -> None:
    args = distill_args(teacher_file, dataroot, tmp_path / "run", "--steps", "1", "--student",
                        "resnet-16")
    args.remove("-q")
    result = CliRunner().invoke(distill_cli, args)
    assert result.exit_code == 0, result.output
    assert "student: resnet-16 (resnet_9blocks ngf 16), 3.33 GMAC at 256x256, the teacher " \
        "0.68 (0.2x); 5 images of A in" in result.stderr
    # a "student" dearer than its teacher is said, even with -q
    assert "note: the student (resnet-16, 3.33 GMAC at 256x256) costs 4.9x its teacher's " \
        "0.68: it will not run faster" in result.stderr


def test_target_settings_errors_and_resume_lines_speak_plainly(
        teacher_file: Path, dataroot: Path, tmp_path: Path) -> None:
    def run(out: Path, *extra: str) -> Result:
        return CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, out, *extra))

    lonely = run(tmp_path / "a", "--target", str(dataroot / "trainB"), "--steps", "1")
    assert lonely.exit_code == 2 and "--target gives the adversarial term its images: add " \
        "--lambda-gan" in lonely.output
    missing = run(tmp_path / "a", "--target", str(tmp_path / "nope"), "--lambda-gan", "1")
    assert missing.exit_code == 2
    assert f"{tmp_path / 'nope'}: no such folder (--target: a folder of" in missing.output
    flags = run(tmp_path / "a", "--batch-size", "0")
    assert flags.exit_code == 2 and "error: --batch-size must be >= 1, got 0" in flags.output
    # --max-steps: the end line says the run goes on, and the resume counts its own steps
    part = run(tmp_path / "r", "--steps", "4", "--max-steps", "2")
    assert part.exit_code == 0, part.output
    assert "distilled to step 2; checkpoint:" in part.output
    assert "the run goes on to step 4: continue with --resume" in part.output
    stuck = run(tmp_path / "r", "--max-steps", "2", "--resume")
    assert "already at step 2, where --max-steps stops it (the run goes on to 4)" in stuck.output
    other = tmp_path / "elsewhere"
    other.mkdir()
    for folder in ("trainA", "trainB"):
        (other / folder).symlink_to(dataroot / folder)
    rest = CliRunner().invoke(distill_cli, distill_args(teacher_file, other, tmp_path / "r",
                                                        "--resume"))
    assert rest.exit_code == 0, rest.output
    assert "distilled to step 4 (2 in this run)" in rest.output
    assert f"note: resuming on {other}, not the run's {dataroot}" in rest.output


def test_a_teacher_changed_in_place_is_said_so(teacher_file: Path, dataroot: Path,
                                               tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.pth"
    teacher.write_bytes(teacher_file.read_bytes())
    run = tmp_path / "run"
    assert CliRunner().invoke(distill_cli, distill_args(teacher, dataroot, run, "--steps", "2",
                                                        "--max-steps", "1")).exit_code == 0
    torch.manual_seed(7)  # the teacher went on training: same file, new weights
    torch.save(build_generator(generator_spec("resnet_6blocks", ngf=8)).state_dict(), teacher)
    result = CliRunner().invoke(distill_cli, distill_args(teacher, dataroot, run, "--resume"))
    assert result.exit_code == 2
    assert f"{teacher}: changed since this run started (sha256 " in result.output


def test_resume_before_the_first_checkpoint_starts_the_run(teacher_file: Path, dataroot: Path,
                                                           tmp_path: Path) -> None:
    """A requeued job repeats its command with --resume; its first try may have stopped before
    any checkpoint."""
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)  # the first try's start: a run folder, no checkpoint
    (run / ".cyclegan-train.json").write_text('{"format": "cyclegan-toolkit/run", "run_id": "x"}\n')
    (run / "config.yaml").write_text("student: mobile-4\n")
    result = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, run,
                                                          "--steps", "1", "--resume"))
    assert result.exit_code == 0, result.output
    assert f"note: --resume: {run} has no checkpoint yet" in result.output
    assert (run / "checkpoints" / "latest.pt").is_file()
    (tmp_path / "empty").mkdir()
    went_on = tmp_path / "went_on"  # a run whose checkpoints were deleted: it got further
    (went_on / "samples").mkdir(parents=True)
    (went_on / ".cyclegan-train.json").write_bytes((run / ".cyclegan-train.json").read_bytes())
    (went_on / "loss_log.jsonl").write_text('{"step": 70}\n')
    # not a run folder; no folder at all; an unmarked empty one; one whose run went on
    for wrong in (tmp_path, tmp_path / "misspelt", tmp_path / "empty", went_on):
        typo = CliRunner().invoke(distill_cli, distill_args(teacher_file, dataroot, wrong,
                                                            "--steps", "1", "--resume"))
        assert typo.exit_code == 2 and "latest.pt: no such file" in typo.output, wrong
    assert (went_on / "loss_log.jsonl").read_text() == '{"step": 70}\n'  # left as it was


def test_translated_images_in_the_data_are_read_but_named(tmp_path: Path) -> None:
    import warnings

    from training.data import TranslatedImagesWarning, scan_images

    rng = np.random.default_rng(0)
    write_domain(tmp_path / "trainA", 2, rng)
    write_domain(tmp_path / "trainA" / "translated", 2, rng)
    (tmp_path / "trainA" / "translated" / ".cyclegan-run.jsonl").write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(scan_images(tmp_path / "trainA")) == 4
    said = [w for w in caught if issubclass(w.category, TranslatedImagesWarning)]
    assert len(said) == 1 and "translated: cyclegan-run output folder(s)" in str(said[0].message)
    from runtime.media.manifest import MANIFEST_NAME
    from training.data import RUN_OUTPUT_MANIFEST

    assert RUN_OUTPUT_MANIFEST == MANIFEST_NAME  # the copy training keeps of the runtime's name


def test_an_int8_exports_work_folder_left_by_a_kill_is_removed(tmp_path: Path) -> None:
    import os
    import time

    from cyclegan_export.quantize import STALE_WORK_AGE_S, WORK_PREFIX, remove_stale_work_folders

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    old, young, live = (tmp_path / f"{WORK_PREFIX}{dead}-abc", tmp_path / f"{WORK_PREFIX}{dead}-d",
                        tmp_path / f"{WORK_PREFIX}{os.getppid()}-e")
    for folder in (old, young, live):
        folder.mkdir()
        (folder / "fp32").write_bytes(b"model")
    # an export in another PID namespace: its pid means nothing here, its lock is held
    elsewhere = tmp_path / f"{WORK_PREFIX}{dead}-f"
    elsewhere.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; h = open(sys.argv[1], 'wb'); fcntl.flock(h, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(60)"), str(elsewhere / ".lock")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    legacy_old, legacy_young = tmp_path / f"{WORK_PREFIX}abc123", tmp_path / f"{WORK_PREFIX}x9"
    legacy_old.mkdir()
    legacy_young.mkdir()
    past = time.time() - STALE_WORK_AGE_S - 10
    for folder in (old, live, elsewhere, legacy_young):
        os.utime(folder, (past, past))
    os.utime(legacy_old, (time.time() - 2 * 86400,) * 2)
    try:
        assert sorted(remove_stale_work_folders(tmp_path)) == sorted([old, legacy_old])
    finally:
        holder.kill()
        holder.wait()
    assert young.is_dir() and live.is_dir() and elsewhere.is_dir() and legacy_young.is_dir()
