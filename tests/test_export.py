from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from test_checkpoint import RunsCode
from test_pretrained import official_layout_file

import cyclegan_export.export as export_module
from cyclegan_export import ExportError, export_onnx
from cyclegan_export.cli import main as export_cli
from runtime.metadata import SCHEMA_VERSION, read_metadata
from runtime.synthetic import natural_images
from runtime.transforms import from_model_output, to_model_input
from training.checkpoint import CheckpointError, atomic_torch_save, load_torch_file
from training.networks import build_generator, generator_spec, init_weights


def run_onnx(path: Path, feed: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})[0]


def official_file(tmp_path: Path, name: str, **options: object) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = build_generator(generator_spec(name, ngf=8, **options))
    init_weights(net)
    return official_layout_file(net.eval(), tmp_path / "latest_net_G.pth"), net


@pytest.mark.parametrize("name", ["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"])
def test_official_layout_files_export_and_verify(tmp_path: Path, name: str) -> None:
    path, net = official_file(tmp_path, name)
    out = tmp_path / "g.onnx"
    report = export_onnx(path, out, opencv_check=False)

    assert report.ok and out.exists()
    parity = [c for c in report.checks if c.name.startswith("onnxruntime vs PyTorch")]
    assert len(parity) == 2 and all(c.passed for c in parity)  # two sizes, batch 2
    assert all("2x3x" in c.name for c in parity)
    meta = read_metadata(out)
    assert meta.architecture == name and meta.size_multiple == (
        4 if name.startswith("resnet") else int(name.split("_")[1]))
    # dynamic batch, height and width: run a size the export never saw
    m = meta.size_multiple
    x = torch.rand(3, 3, m * (3 if m == 4 else 1), m * (5 if m == 4 else 2)) * 2 - 1
    with torch.no_grad():
        want = net(x).numpy()
    assert np.abs(run_onnx(out, x.numpy()) - want).max() < 1e-4


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_training_checkpoint_exports_the_chosen_generator(tiny_checkpoint: Path, tmp_path: Path,
                                                          direction: str) -> None:
    out = tmp_path / f"{direction}.onnx"
    report = export_onnx(tiny_checkpoint, out, direction=direction)
    assert report.ok
    meta = read_metadata(out)
    assert (meta.source_domain, meta.target_domain) == (
        ("horse", "zebra") if direction == "AtoB" else ("zebra", "horse"))
    assert meta.crop_size == 32 and meta.direction == direction
    key = "G_AB" if direction == "AtoB" else "G_BA"
    state = load_torch_file(tiny_checkpoint)["generators"][key]["state_dict"]
    net = build_generator(generator_spec("resnet_6blocks", ngf=8))
    net.load_state_dict(state)
    x = torch.rand(1, 3, 40, 44) * 2 - 1
    with torch.no_grad():
        assert np.abs(run_onnx(out, x.numpy()) - net.eval()(x).numpy()).max() < 1e-4


def test_default_model_is_self_contained_float_nchw_with_dynamic_axes(tiny_checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    report = export_onnx(tiny_checkpoint, out)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no .onnx.data, no temp files
    model = onnx.load(str(out))
    (graph_input,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims == ["batch", 3, "height", "width"]
    assert model.opset_import[0].version == 17
    opencv = [c for c in report.checks if c.name.startswith("OpenCV DNN")]
    assert len(opencv) == 1 and opencv[0].passed, opencv
    assert "OpenCV DNN" in report.summary() and "max abs error" in report.summary()


def test_uint8_io_graph_matches_float_graph_plus_python_pre_post(tiny_checkpoint: Path,
                                                                 tmp_path: Path) -> None:
    float_path, uint8_path = tmp_path / "f.onnx", tmp_path / "u8.onnx"
    export_onnx(tiny_checkpoint, float_path)
    report = export_onnx(tiny_checkpoint, uint8_path, io_kind="uint8")
    assert report.ok
    frames_bgr = natural_images(2, 48, 64, seed=9)[..., ::-1].copy()  # as OpenCV delivers

    got = run_onnx(uint8_path, frames_bgr)
    want = from_model_output(run_onnx(float_path, to_model_input(frames_bgr, "BGR")), "BGR")

    assert got.dtype == np.uint8 and got.shape == frames_bgr.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    meta = read_metadata(uint8_path)
    assert (meta.io, meta.layout, meta.color_order, meta.value_range) == (
        "uint8", "NHWC", "BGR", (0.0, 255.0))


def test_portable_pad_removes_reflect_pad_and_is_numerically_identical(tmp_path: Path) -> None:
    path, _ = official_file(tmp_path, "resnet_6blocks")
    plain, portable = tmp_path / "plain.onnx", tmp_path / "portable.onnx"
    export_onnx(path, plain, opencv_check=False)
    report = export_onnx(path, portable, portable_pad=True, simplify=True)
    assert report.ok
    ops = {n.op_type for n in onnx.load(str(portable)).graph.node}
    assert "Pad" not in ops
    assert "Pad" in {n.op_type for n in onnx.load(str(plain)).graph.node}
    x = to_model_input(natural_images(2, 36, 52, seed=3), "RGB")
    assert np.abs(run_onnx(portable, x) - run_onnx(plain, x)).max() < 1e-5
    assert read_metadata(portable).portable_pad is True


def test_static_shape_and_fixed_batch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "static.onnx"
    report = export_onnx(tiny_checkpoint, out, static_size=(32, 48), batch=1)
    assert report.ok
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 48]
    meta = read_metadata(out)
    assert meta.static_size == (32, 48) and meta.batch == 1


def test_a_fixed_batch_above_one_exports_and_verifies(tiny_checkpoint: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "b2.onnx"
    report = export_onnx(tiny_checkpoint, out, batch=2)
    assert report.ok, report.summary()
    assert all(check.passed for check in report.checks), report.summary()  # OpenCV's too
    assert read_metadata(out).batch == 2


def test_static_size_must_follow_the_size_rule(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="multiples of 4"):
        export_onnx(tiny_checkpoint, tmp_path / "x.onnx", static_size=(30, 32))


def test_metadata_round_trip_and_info_command(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    export_onnx(tiny_checkpoint, out, verify=False)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["cyclegan.schema_version"] == str(SCHEMA_VERSION)
    meta = read_metadata(out)
    assert meta.generator["ngf"] == 8 and meta.precision == "fp32"
    assert len(meta.source_sha256) == 64 and meta.package_version
    result = CliRunner().invoke(export_cli, ["--info", str(out)])
    assert result.exit_code == 0
    assert 'architecture: "resnet_6blocks"' in result.output
    assert 'source_domain: "horse"' in result.output


# ---- bad input: one line naming the file and the reason, exit 2, no file written -----------

def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(export_cli, list(args))
    return result.exit_code, result.output


def test_an_opset_beyond_the_exporters_is_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from cyclegan_export.export import max_opset

    newest = max_opset()
    if newest is None:
        pytest.skip("this torch does not say its newest opset")
    code, output = _cli(str(tiny_checkpoint), str(tmp_path / "o.onnx"), "--opset",
                        str(newest + 1))
    assert code == 2 and output.strip() == (f"error: opset {newest + 1} is newer than this torch "
                                            f"{torch.__version__} exports; use 13 to {newest}")
    assert export_onnx(tiny_checkpoint, tmp_path / "newest.onnx", opset=newest).ok  # the limit


def test_option_mistakes_name_the_option_not_the_source(tiny_checkpoint: Path, tmp_path: Path,
                                                        calibration_dir: Path) -> None:
    out = str(tmp_path / "o.onnx")
    code, output = _cli(str(tiny_checkpoint), out, "--static", "64")
    assert code == 2 and "Invalid value for --static: '64': expected HxW" in output
    assert str(tiny_checkpoint) not in output
    image = next(calibration_dir.glob("*.png"))
    code, output = _cli(str(tiny_checkpoint), out, "--precision", "int8", "--calibration",
                        str(image))
    assert code == 2 and f"{image}: is a file; --calibration takes a folder" in output
    code, output = _cli("--info", str(tmp_path))
    assert code == 2 and output.strip() == f"error: {tmp_path}: is a folder"
    code, output = _cli(str(tiny_checkpoint), out, "--calibration", str(calibration_dir),
                        "--color-order", "RGB", "-q", "--no-verify")
    assert code == 0, output
    assert "warning: --calibration: only int8 exports are calibrated" in output
    assert "warning: --color-order: float IO is always RGB" in output


def test_missing_file(tmp_path: Path) -> None:
    code, output = _cli(str(tmp_path / "nope.pt"), str(tmp_path / "o.onnx"))
    assert code == 2 and f"{tmp_path / 'nope.pt'}: no such file" in output


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("just some text")
    code, output = _cli(str(path), str(tmp_path / "o.onnx"))
    assert code == 2 and "notes.pt: is not a PyTorch file" in output and output.count("\n") == 1


def test_unknown_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)},
               path)
    code, output = _cli(str(path), str(tmp_path / "o.onnx"))
    assert code == 2 and "resnet50.pth: not a CycleGAN ResNet or U-Net generator" in output


def test_direction_the_file_does_not_contain(tiny_checkpoint: Path, tmp_path: Path) -> None:
    state = load_torch_file(tiny_checkpoint)
    del state["generators"]["G_BA"]
    path = tmp_path / "half.pt"
    atomic_torch_save(state, path)
    code, output = _cli(str(path), str(tmp_path / "o.onnx"), "--direction", "BtoA")
    assert code == 2 and "half.pt: has no G_BA generator for direction BtoA" in output


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "latest_net_G.pth"
    torch.save({"model.1.weight": torch.zeros(1), "x": RunsCode(marker)}, path)
    code, output = _cli(str(path), str(tmp_path / "o.onnx"))
    assert code == 2 and "refused to load" in output and "weights_only" in output
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        export_onnx(path, tmp_path / "o.onnx")


def test_output_directory_that_cannot_be_written(tiny_checkpoint: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    code, output = _cli(str(tiny_checkpoint), str(blocker / "sub" / "o.onnx"))
    assert code == 2 and "cannot create output directory" in output and "Traceback" not in output


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(export_cli, [str(tmp_path / "nope.pt"), "o.onnx", "--debug"])
    assert isinstance(result.exception, CheckpointError)


# ---- atomicity --------------------------------------------------------------------------------

def test_failed_verification_leaves_no_file(tiny_checkpoint: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import cyclegan_export.verify as verify_module

    monkeypatch.setattr(verify_module, "FP32_MAX_ABS_ERROR", 0.0)  # nothing can pass now
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="verification failed.*max abs error"):
        export_onnx(tiny_checkpoint, out)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_no_file_and_keeps_the_old_one(
        tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.onnx"
    export_onnx(tiny_checkpoint, out, verify=False)
    before = out.read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        Path(str(args[1])).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module.onnx, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(tiny_checkpoint, out, direction="BtoA")
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize(("stop", "code", "said"), [(KeyboardInterrupt, 130, "interrupted"),
                                                    (None, 143, "terminated")])
def test_cli_sigterm_is_handled_as_ctrl_c(tiny_checkpoint: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, stop: type | None,
                                          code: int, said: str) -> None:
    from training.graceful_stop import Terminated

    def stopped(*args: object, **kwargs: object) -> None:
        Path(str(args[1])).write_bytes(b"half a model")
        raise (stop or Terminated)()

    monkeypatch.setattr(export_module.onnx, "save_model", stopped)
    out = tmp_path / "m.onnx"
    assert _cli(str(tiny_checkpoint), str(out), "--no-verify") == (
        code, f"{said}: nothing was written to {out}\n")
    assert os.listdir(tmp_path) == []


# ---- reduced precision through the exporter ---------------------------------------------

@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    folder = tmp_path_factory.mktemp("calibration")
    for i, image in enumerate(natural_images(6, 40, 48, seed=50)):
        cv2.imwrite(str(folder / f"c{i}.png"), image[..., ::-1])
    (folder / "readme.txt").write_text("not an image: ignored")
    return folder


@pytest.mark.parametrize("io_kind", ["float", "uint8"])
def test_fp16_export_reports_psnr_above_its_floor(tiny_checkpoint: Path, tmp_path: Path,
                                                  io_kind: str) -> None:
    out = tmp_path / "fp16.onnx"
    report = export_onnx(tiny_checkpoint, out, precision="fp16", io_kind=io_kind)
    psnr_checks = [c for c in report.checks if c.name.startswith("fp16 vs fp32")]
    assert len(psnr_checks) == 2 and all(c.passed for c in psnr_checks)
    assert all("floor 45 dB" in c.detail for c in psnr_checks)
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == (
        onnx.TensorProto.FLOAT if io_kind == "float" else onnx.TensorProto.UINT8)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert read_metadata(out).precision == "fp16"


def test_int8_export_calibrates_on_a_folder_and_reports_psnr(tiny_checkpoint: Path,
                                                             tmp_path: Path,
                                                             calibration_dir: Path) -> None:
    out = tmp_path / "int8.onnx"
    report = export_onnx(tiny_checkpoint, out, precision="int8", calibration=calibration_dir)
    psnr_checks = [c for c in report.checks if c.name.startswith("int8 vs fp32")]
    assert len(psnr_checks) == 3  # two sizes of held-out images + the calibration images
    assert all(c.passed and "floor 30 dB" in c.detail for c in psnr_checks)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert read_metadata(out).precision == "int8"


@pytest.mark.parametrize(("static_size", "batch", "io_kind"),
                         [((32, 40), None, "float"), (None, 4, "float"), ((32, 32), 2, "uint8")])
def test_int8_export_with_a_fixed_shape_calibrates_at_that_shape(
        tiny_checkpoint: Path, tmp_path: Path, calibration_dir: Path,
        static_size: tuple[int, int] | None, batch: int | None, io_kind: str) -> None:
    # a fixed-shape graph takes only its own shape: the calibration feed must be it
    out = tmp_path / "int8_fixed.onnx"
    report = export_onnx(tiny_checkpoint, out, precision="int8", calibration=calibration_dir,
                         static_size=static_size, batch=batch, io_kind=io_kind)
    assert report.ok and [c for c in report.checks if c.name.startswith("int8 vs fp32")]
    meta = read_metadata(out)
    assert (meta.precision, meta.static_size, meta.batch) == ("int8", static_size, batch)


def test_int8_without_calibration_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    code, output = _cli(str(tiny_checkpoint), str(tmp_path / "o.onnx"), "--precision", "int8")
    assert code == 2 and "needs --calibration DIR" in output
    assert not (tmp_path / "o.onnx").exists()


# ---- never onto the source, never over a file that is not ours (issue 9) -------------------

def test_export_onto_its_own_source_is_refused_and_the_source_kept(tiny_checkpoint: Path,
                                                                   tmp_path: Path) -> None:
    source = tmp_path / "c.pt"
    source.write_bytes(tiny_checkpoint.read_bytes())
    before = source.read_bytes()
    alias = tmp_path / "alias.onnx"  # another name for the same file
    alias.symlink_to(source)
    for output in (source, alias):
        code, text = _cli(str(source), str(output))
        assert code == 2 and text.count("\n") == 1
        assert f"{output}: is the file being exported" in text
    assert source.read_bytes() == before
    with pytest.raises(ExportError, match="is the file being exported"):
        export_onnx(source, source)
    assert source.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["alias.onnx", "c.pt"] and alias.is_symlink()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notes
@pytest.mark.parametrize("kind", ["text", "checkpoint", "foreign onnx"])
def test_existing_file_that_is_not_our_export_is_not_replaced(tiny_checkpoint: Path,
                                                             tmp_path: Path, kind: str) -> None:
    output = tmp_path / "out.onnx"
    if kind == "text":
        output.write_text("my notes")
    elif kind == "checkpoint":
        output.write_bytes(tiny_checkpoint.read_bytes())
    else:  # a valid ONNX model, but not one of ours (no cyclegan-toolkit metadata)
        torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.zeros(1, 3, 4, 4),), str(output),
                          dynamo=False)
    before = output.read_bytes()
    code, text = _cli(str(tiny_checkpoint), str(output))
    assert code == 2 and text.count("\n") == 1
    assert f"{output}: exists and is not a model exported by cyclegan-export" in text
    assert output.read_bytes() == before


def test_an_earlier_export_of_ours_is_replaced(tiny_checkpoint: Path, tmp_path: Path) -> None:
    output = tmp_path / "m.onnx"
    export_onnx(tiny_checkpoint, output, verify=False)
    code, text = _cli(str(tiny_checkpoint), str(output), "--direction", "BtoA", "--no-verify")
    assert code == 0, text
    assert read_metadata(output).direction == "BtoA"


def test_stale_temp_files_of_a_killed_export_are_removed_only_if_ours_and_unused(
        tiny_checkpoint: Path, tmp_path: Path) -> None:
    import fcntl

    old = 1_000_000_000  # 2001: long before this process started
    stale = [tmp_path / ".m.onnx.abcd1234.tmp", tmp_path / ".other.onnx.x_y9zz00.tmp"]
    kept = [tmp_path / ".latest.pt.abcd1234.tmp",  # a trainer's, not ours
            tmp_path / ".m.onnx.tmp", tmp_path / "m.onnx.abcd1234.tmp",  # not our pattern
            tmp_path / ".busy.onnx.abcd1234.tmp"]  # locked: an export running right now
    for path in stale + kept:
        path.write_bytes(b"\0" * 100)
        os.utime(path, (old, old))
    busy = os.open(kept[-1], os.O_RDONLY)
    fcntl.flock(busy, fcntl.LOCK_EX)
    try:
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx", verify=False)
    finally:
        os.close(busy)
    assert [p.exists() for p in stale] == [False, False]
    assert all(p.exists() for p in kept)


@pytest.mark.parametrize(("name", "given", "recorded"), [
    ("unet_128", [], None),          # no weights tell a U-Net's dropout: unknown, not False
    ("unet_128", ["--dropout"], True),
    ("unet_128", ["--no-dropout"], False),
    ("resnet_6blocks", [], False),   # a ResNet's dropout shifts keys: read from the file
])
def test_metadata_records_dropout_only_when_known(tmp_path: Path, name: str, given: list[str],
                                                  recorded: bool | None) -> None:
    path, _ = official_file(tmp_path, name)
    out = tmp_path / "g.onnx"
    code, text = _cli(str(path), str(out), "--no-verify", *given)
    assert code == 0, text
    generator = read_metadata(out).generator
    assert generator["dropout"] is recorded
    # only the family's own depth field: a U-Net has no blocks, a ResNet no levels
    assert (generator["n_blocks"], generator["num_downs"]) == (
        (None, 7) if name == "unet_128" else (6, None))


def test_training_checkpoint_records_its_configured_dropout(tiny_checkpoint: Path,
                                                            tmp_path: Path) -> None:
    export_onnx(tiny_checkpoint, tmp_path / "m.onnx", verify=False)
    assert read_metadata(tmp_path / "m.onnx").generator["dropout"] is False
