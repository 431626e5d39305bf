from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import smooth_image, write_domain
from PIL import Image

from training.data import (
    DataError,
    Preprocess,
    SkippedFilesWarning,
    UnpairedDataset,
    UnpairedSampler,
    batches_into_epoch,
    read_image,
    scan_images,
)


def write_odd_images(folder: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One file per awkward format; returns the expected RGB content of each."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = smooth_image(rng, 24, 28)
    gray = rgb[:, :, 1]
    expected = {}
    Image.fromarray(gray, "L").save(folder / "gray.png")
    expected["gray.png"] = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.dstack([rgb, np.full(gray.shape, 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    expected["rgba.png"] = rgb
    gray16 = gray.astype(np.uint16) * 257
    cv2.imwrite(str(folder / "gray16.png"), gray16)
    expected["gray16.png"] = np.repeat(gray[:, :, None], 3, axis=2)
    rgb16 = rgb.astype(np.uint16) * 257
    cv2.imwrite(str(folder / "rgb16.png"), rgb16[:, :, ::-1])  # OpenCV writes BGR
    expected["rgb16.png"] = rgb
    Image.fromarray(rgb).save(folder / "photo.bmp")
    expected["photo.bmp"] = rgb
    Image.fromarray(rgb).save(folder / "photo.webp", lossless=True)
    expected["photo.webp"] = rgb
    return expected


def test_odd_formats_decode_to_rgb_uint8(tmp_path: Path) -> None:
    expected = write_odd_images(tmp_path, np.random.default_rng(0))
    for name, want in expected.items():
        got = read_image(tmp_path / name).permute(1, 2, 0).numpy()
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, name


def test_broken_files_are_skipped_with_one_warning_naming_them(tmp_path: Path) -> None:
    folder = tmp_path / "trainA"
    write_domain(folder, 2, np.random.default_rng(0))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a picture")
    (folder / "fake.jpg").write_text("text pretending to be a jpeg")
    good = (folder / "img_000.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "sub").mkdir()
    Image.fromarray(smooth_image(np.random.default_rng(1), 20, 20)).save(folder / "sub" / "x.png")

    with pytest.warns(SkippedFilesWarning) as record:
        files = scan_images(folder)

    assert [p.name for p in files] == ["img_000.png", "img_001.png", "x.png"]
    assert len(record) == 1
    message = str(record[0].message)
    for name in ("empty.png (empty file)", "notes.txt (not an image)", "fake.jpg", "cut.png"):
        assert name in message


def test_hidden_files_and_run_folders_are_passed_over_silently(tmp_path: Path) -> None:
    import warnings

    from training.run_dir import MARKER_NAME

    folder = tmp_path / "trainA"
    write_domain(folder, 2, np.random.default_rng(0))
    picture = (folder / "img_000.png").read_bytes()
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._img_000.png").write_bytes(b"\0\5\x16\7 AppleDouble")  # macOS resource fork
    (folder / ".thumbs").mkdir()
    (folder / ".thumbs" / "t.png").write_bytes(picture)
    run = folder / "my_run"  # a training run folder: recognised by its marker, not its name
    (run / "samples").mkdir(parents=True)
    (run / MARKER_NAME).write_text('{"format": "cyclegan-toolkit/run", "run_id": "x"}')
    (run / "samples" / "step_0000001.png").write_bytes(picture)
    lookalike = folder / "other"  # the same layout without the marker is just data
    (lookalike / "samples").mkdir(parents=True)
    (lookalike / "samples" / "step_0000001.png").write_bytes(picture)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing above is worth a warning
        files = scan_images(folder)

    assert [p.relative_to(folder).as_posix() for p in files] == [
        "img_000.png", "img_001.png", "other/samples/step_0000001.png"]


def test_file_that_breaks_after_the_scan_is_replaced_at_load_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_domain(tmp_path / "trainA", 2, rng, suffix=".jpg")
    write_domain(tmp_path / "trainB", 2, rng)
    dataset = UnpairedDataset(tmp_path, Preprocess("resize_and_crop", 36, 32))
    first = tmp_path / "trainA" / "img_000.jpg"
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])  # e.g. a sync still writing it
    with pytest.warns(SkippedFilesWarning, match="img_000.jpg"):
        item = dataset[(0, 0, 1)]
    assert item["A_path"].endswith("img_001.jpg")


@pytest.mark.parametrize("missing", ["trainA", "trainB"])
def test_missing_domain_folder_is_a_clear_error(dataroot: Path, missing: str) -> None:
    for path in (dataroot / missing).iterdir():
        path.unlink()
    (dataroot / missing).rmdir()
    with pytest.raises(DataError, match=f"{missing}: no such folder"):
        UnpairedDataset(dataroot, Preprocess())


def test_empty_domain_folder_is_a_clear_error(dataroot: Path) -> None:
    for path in (dataroot / "trainB").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"trainB: no readable images \(folder is empty\)"):
        UnpairedDataset(dataroot, Preprocess())


@pytest.mark.parametrize(
    ("mode", "shape"),
    [("resize_and_crop", (3, 32, 32)), ("crop", (3, 32, 32)), ("scale_width", (3, 32, 36)),
     ("scale_width_and_crop", (3, 32, 32)), ("none", (3, 40, 48))],
)
def test_preprocess_modes_give_model_range_tensors(dataroot: Path, mode: str, shape: tuple) -> None:
    dataset = UnpairedDataset(dataroot, Preprocess(mode, load_size=36, crop_size=32))
    item = dataset[(1, 2, 7)]
    for key in ("A", "B"):
        assert item[key].shape == shape and item[key].dtype == torch.float32
        assert -1 <= item[key].min() and item[key].max() <= 1
        assert item[key].std() > 0.05  # real content, not a constant


def test_same_key_gives_the_same_sample_and_flip_happens(dataroot: Path) -> None:
    dataset = UnpairedDataset(dataroot, Preprocess("resize_and_crop", 36, 32))
    assert torch.equal(dataset[(0, 0, 5)]["A"], dataset[(0, 0, 5)]["A"])
    crops = {tuple(dataset[(0, 0, s)]["A"][0, 0, :3].tolist()) for s in range(12)}
    assert len(crops) > 3  # crops and flips vary with the seed


def test_sampler_is_deterministic_unpaired_and_sharded() -> None:
    sampler = UnpairedSampler(len_a=5, len_b=3, seed=0)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    assert sorted(k[0] for k in epoch0) == [0, 1, 2, 3, 4]  # every A once per epoch
    assert all(0 <= k[1] < 3 for k in epoch0)
    sampler.set_epoch(0, start=2)
    assert list(sampler) == epoch0[2:] and len(sampler) == 3

    shards = [UnpairedSampler(5, 3, seed=0, rank=r, world_size=2) for r in range(2)]
    for shard in shards:
        shard.set_epoch(0)
    rank0, rank1 = list(shards[0]), list(shards[1])
    assert len(rank0) == len(rank1) == 3
    assert {k[0] for k in rank0 + rank1} == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(("saved", "world", "batch", "done"), [(1, 2, 1, 30), (2, 1, 1, 12),
                                                               (1, 2, 2, 7), (3, 2, 1, 5)])
def test_resuming_with_another_process_count_goes_on_from_the_samples_used(
        saved: int, world: int, batch: int, done: int) -> None:
    """A run stopped after ``done`` batches per process of ``saved`` processes, resumed with
    ``world``: the new processes together take up the epoch's order where the old ones left
    it, repeating at most a step's worth of samples and skipping none."""
    total = 50

    def keys(count: int, start_batches: int) -> list[tuple[int, ...]]:
        shards = [UnpairedSampler(total, 7, seed=3, rank=r, world_size=count)
                  for r in range(count)]
        for shard in shards:
            shard.set_epoch(0, start_batches * batch)
        return [key for shard in shards for key in shard]

    order = keys(1, 0)  # the epoch's order, as one process deals it
    used = order[:done * batch * saved]
    start = batches_into_epoch(done, batch, saved, world)
    left = keys(world, start)
    assert set(order) <= set(used) | set(left)  # nothing skipped
    assert len(set(used) & set(left)) < batch * world  # less than a step comes again



def test_scan_follows_folder_links_once_and_names_broken_links(tmp_path: Path) -> None:
    import warnings

    rng = np.random.default_rng(4)
    elsewhere = tmp_path / "elsewhere"
    write_domain(elsewhere, 2, rng)
    folder = tmp_path / "trainA"
    write_domain(folder, 1, rng)
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice
    (folder / "loop").symlink_to(folder, target_is_directory=True)       # a loop
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = scan_images(folder)
    assert len(found) == 3  # its own image and the linked folder's two, once
    assert len({p.resolve() for p in found}) == 3
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedFilesWarning)]
    assert len(messages) == 1 and "gone.jpg (a broken link)" in messages[0]
