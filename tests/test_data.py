"""dualcodec.data: the split into training and validation sources, DALI training streams,
exact resume, validation crops, frame folders, crops to 4:2:0 planes.

The synthetic images carry their own coordinates (red = column, green = row, blue = image
number), so a test can tell from a crop alone where it came from and which of the eight
symmetries of the square was applied to it.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from dualcodec.cli import main
from dualcodec.data import (
    TRAINING_FORMAT,
    TrainStream,
    crops_to_planes,
    list_clips,
    list_images,
    split_sources,
    WrittenFrames,
    validation_crops,
    write_frames,
)
from dualcodec.errors import DualcodecError
from dualcodec.yuv import BT601, YUVFormat
from helpers import (
    SHARED_DATA,
    assert_one_line_error,
    psnr,
    pyav_rgb,
    run,
    shared_file,
    synthetic_frames,
    synthetic_rgb,
    to_planes,
    write_y4m,
)


def _has_dali() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no "nvidia" package at all
        return False


# Only the training streams need DALI; frame folders, validation crops and crops_to_planes do not.
needs_dali = pytest.mark.skipif(not _has_dali(), reason="NVIDIA DALI is not installed")


def _coordinate_image(width: int, height: int, blue: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx, yy, np.full_like(xx, blue)], axis=-1).astype(np.uint8)


@pytest.fixture
def images(tmp_path):
    """Eight 120x100 coordinate PNGs (blue = 0..7), sorted by name, plus a stray README."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(_coordinate_image(120, 100, i)).save(folder / ("sub" if i >= 4 else "") / f"im{i}.png")
    (folder / "README.md").write_text("not an image")
    return list_images(folder)


def _symmetry(crop: torch.Tensor) -> tuple[int, ...]:
    """The 2x2 signed permutation taking (row, column) to (green, red) steps; checks it is a window."""
    red, green = crop[0].int(), crop[1].int()
    d = (red[0, 1] - red[0, 0], red[1, 0] - red[0, 0], green[0, 1] - green[0, 0], green[1, 0] - green[0, 0])
    rows, cols = torch.arange(crop.shape[1])[:, None], torch.arange(crop.shape[2])[None, :]
    assert torch.equal(red, red[0, 0] + d[0] * cols + d[1] * rows), "not a rigid window of the image"
    assert torch.equal(green, green[0, 0] + d[2] * cols + d[3] * rows), "not a rigid window of the image"
    return tuple(int(v) for v in d)


def test_list_images_sorted_recursive_and_errors(images, tmp_path):
    assert [p.name for p in images] == [f"im{i}.png" for i in range(4)] + [f"im{i}.png" for i in range(4, 8)]
    assert all(p.suffix == ".png" for p in images)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DualcodecError, match="no images"):
        list_images(tmp_path / "empty")


@needs_dali
def test_crops_are_windows_with_all_eight_symmetries(images):
    seen = set()
    stream = TrainStream(images, 32, 16, seed=0)
    for _ in range(4):
        x = stream.next()
        assert x.shape == (16, 3, 32, 32) and x.dtype == torch.uint8 and x.device.type == "cpu"
        seen |= {_symmetry(crop) for crop in x}
    assert len(seen) == 8


FLIPS = {(1, 0, 0, 1), (-1, 0, 0, 1), (1, 0, 0, -1), (-1, 0, 0, -1)}
ROTATIONS = {(1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0)}


@needs_dali
@pytest.mark.parametrize("settings, expected", [
    ({"rotate": False}, FLIPS),
    ({"flip": False}, ROTATIONS),
    ({"flip": False, "rotate": False}, {(1, 0, 0, 1)}),  # the windows as they are
])
def test_flips_and_rotations_each_turn_off(images, settings, expected):
    seen = set()
    stream = TrainStream(images, 32, 16, seed=0, **settings)
    for _ in range(4):
        seen |= {_symmetry(crop) for crop in stream.next()}
    assert seen == expected


@needs_dali
def test_several_crops_per_image(images):
    stream = TrainStream(images, 32, 8, seed=0, crops_per_image=4)
    x = stream.next()
    assert x.shape == (8, 3, 32, 32)
    blue = x[:, 2, 0, 0].view(2, 4)
    assert (blue == blue[:, :1]).all()  # four crops of each decoded image, in a row
    corners = {(int(c[0].min()), int(c[1].min())) for c in x}
    assert len(corners) > 2  # at their own positions
    with pytest.raises(DualcodecError, match="must divide"):
        TrainStream(images, 32, 6, seed=0, crops_per_image=4)


def _batches(stream: TrainStream, n: int) -> list[torch.Tensor]:
    return [stream.next() for _ in range(n)]


@needs_dali
@pytest.mark.parametrize("crops_per_image", [1, 2])
def test_resume_continues_exactly(images, crops_per_image):
    # 8 images, batches of 6 crops: the 7 batches after the checkpoint cross epochs.
    kwargs = {"seed": 3, "crops_per_image": crops_per_image}
    first = TrainStream(images, 24, 6, **kwargs)
    _batches(first, 3)
    state = first.checkpoint()
    expected = _batches(first, 7)
    resumed = TrainStream(images, 24, 6, checkpoint=state, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(expected, _batches(resumed, 7)))
    other = TrainStream(images, 24, 6, seed=4, crops_per_image=crops_per_image)
    _batches(other, 3)
    assert not any(torch.equal(a, b) for a, b in zip(expected, _batches(other, 7)))


@needs_dali
def test_shards_split_the_files(images):
    for seed in (0, 1):
        blues = []
        for shard in range(2):
            stream = TrainStream(images, 24, 4, seed=seed, shard_id=shard, num_shards=2)
            blues.append({int(b) for b in stream.next()[:, 2, 0, 0]})  # one batch = this rank's epoch
        assert blues[0] | blues[1] == set(range(8)) and not blues[0] & blues[1]
    with pytest.raises(DualcodecError, match="shard_id"):
        TrainStream(images, 24, 4, seed=0, shard_id=2, num_shards=2)


@needs_dali
def test_images_smaller_than_the_crop_are_skipped(images, tmp_path):
    small = tmp_path / "small.png"
    Image.fromarray(_coordinate_image(40, 30, 99)).save(small)
    stream = TrainStream(images + [small], 32, 16, seed=0)
    assert 99 not in {int(b) for _ in range(3) for b in stream.next()[:, 2, 0, 0]}
    with pytest.raises(DualcodecError, match="at least 64 pixels"):
        TrainStream([small], 64, 4, seed=0)


def _frame_folders(root, lengths):
    """Frame folders ``v0``, ``v1``... whose frame t carries blue = 10 * folder + t."""
    for v, length in enumerate(lengths):
        folder = root / f"v{v}"
        folder.mkdir(parents=True)
        for t in range(length):
            Image.fromarray(_coordinate_image(90, 70, 10 * v + t)).save(folder / f"frame_{t + 1:06d}.png")
    return root


def test_list_clips(tmp_path):
    root = _frame_folders(tmp_path / "frames", [5, 3, 1])
    clips = list_clips(list_images(root), 3)
    assert len(clips) == 3 + 1
    assert [p.name for p in clips[1]] == ["frame_000002.png", "frame_000003.png", "frame_000004.png"]
    assert clips[-1][0].parent.name == "v1"
    assert len(list_clips(list_images(root), 1)) == 9
    with pytest.raises(DualcodecError, match="has 6 consecutive frames"):
        list_clips(list_images(root), 6)


@needs_dali
def test_clip_frames_share_crop_flip_and_rotation(tmp_path):
    clips = list_clips(list_images(_frame_folders(tmp_path / "frames", [6, 4])), 3)
    stream = TrainStream(clips, 32, 8, seed=0)
    seen = set()
    for _ in range(3):
        x = stream.next()
        assert x.shape == (8, 3, 3, 32, 32)
        for clip in x:
            assert torch.equal(clip[:, :2], clip[:1, :2].expand(3, -1, -1, -1))  # same window, same symmetry
            blue = clip[:, 2, 0, 0].int()
            assert torch.equal(blue - blue[0], torch.arange(3, dtype=torch.int32))  # consecutive frames
            assert int(blue[0]) in {0, 1, 2, 3, 10, 11}  # a real clip start
            seen.add(_symmetry(clip[0]))
    assert len(seen) >= 6
    with pytest.raises(DualcodecError, match="frames"):
        TrainStream([clips[0], clips[0][:2]], 32, 8, seed=0)


@needs_dali
def test_clip_resume_continues_exactly(tmp_path):
    clips = list_clips(list_images(_frame_folders(tmp_path / "frames", [6, 4])), 2)
    first = TrainStream(clips, 24, 4, seed=1)
    _batches(first, 2)
    state = first.checkpoint()
    expected = _batches(first, 4)
    resumed = TrainStream(clips, 24, 4, seed=1, checkpoint=state)
    assert all(torch.equal(a, b) for a, b in zip(expected, _batches(resumed, 4)))


def test_validation_crops_are_fixed_windows(images):
    x = validation_crops(images[:3], 32, 4)
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(x, validation_crops(images[:3], 32, 4))
    assert {_symmetry(crop) for crop in x} == {(1, 0, 0, 1)}  # no augmentation
    corners = [(int(c[0, 0, 0]), int(c[1, 0, 0])) for c in x[:4]]
    assert corners == [(88, 0), (58, 22), (29, 45), (0, 68)]  # top-right to bottom-left
    assert x[:, 2, 0, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_a_validation_clip_is_a_frame_and_the_frames_after_it(tmp_path, images):
    from dualcodec.data import validation_clip

    frames = list_images(_frame_folders(tmp_path / "frames", [5]))
    assert validation_clip(frames[1], 3) == tuple(frames[1:4])
    assert validation_clip(frames[3], 3) == (frames[3], frames[4], frames[4])  # the folder ends: the last repeats
    assert validation_clip(images[0], 3) == (images[0],) * 3  # a picture: a still shot
    x = validation_crops([frames[0], frames[2]], 32, 2, clip=3)
    assert x.shape == (4, 3, 3, 32, 32)
    assert x[:, :, 2, 0, 0].tolist() == [[0, 1, 2], [0, 1, 2], [2, 3, 4], [2, 3, 4]]  # blue: the frame
    assert torch.equal(x[:, 0], validation_crops([frames[0], frames[2]], 32, 2))  # the same windows


def test_write_frames_converts_each_frame_once(tmp_path):
    rgb = synthetic_rgb(48, 32, 4)
    frames = [to_planes(x) for x in rgb]
    video = write_y4m(tmp_path / "clip.y4m", frames)
    assert write_frames(video, tmp_path / "clip", max_frames=3).count == 3
    written = sorted((tmp_path / "clip").iterdir())
    assert [p.name for p in written] == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    for frame, original, path in zip(frames, rgb, written):
        image = np.asarray(Image.open(path))
        assert image.shape == (32, 48, 3) and image.dtype == np.uint8
        # The planes as they are, turned into R'G'B' once (unflagged SD: BT.601, limited range)...
        assert np.array_equal(image, pyav_rgb(frame))
        # ... so the PNG is the source picture up to one 4:2:0 round trip.
        assert psnr(image, original) > 30


def test_frames_command(tmp_path, capsys):
    a = write_y4m(tmp_path / "a.y4m", synthetic_frames(48, 32, 3))
    (tmp_path / "other").mkdir()
    b = write_y4m(tmp_path / "other" / "b.y4m", synthetic_frames(40, 24, 2))
    assert main(["frames", str(a), str(b), "-o", str(tmp_path / "frames")]) == 0
    assert "a: 3 frames 48x32" in capsys.readouterr().err
    assert len(list_clips(list_images(tmp_path / "frames"), 2)) == 2 + 1
    dup = write_y4m(tmp_path / "other" / "a.y4m", synthetic_frames(40, 24, 2))
    assert main(["frames", str(a), str(dup), "-o", str(tmp_path / "again")]) == 1
    assert "share the frame folder" in capsys.readouterr().err
    assert main(["frames", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "none")]) == 1
    assert not (tmp_path / "again").exists() and not (tmp_path / "none").exists()


def test_write_frames_every_and_downscale(tmp_path):
    video = write_y4m(tmp_path / "clip.y4m", [to_planes(x) for x in synthetic_rgb(48, 34, 7)])
    full = write_frames(video, tmp_path / "full", every=3)
    assert full == WrittenFrames(3, 48, 34)
    assert [p.name for p in sorted((tmp_path / "full").iterdir())] == ["frame_000001.png", "frame_000004.png",
                                                                        "frame_000007.png"]
    small = write_frames(video, tmp_path / "small", max_frames=4, every=3, downscale=4)
    assert small == WrittenFrames(2, 12, 8)  # 34 / 4: the last 2 rows are cut
    for name in ("frame_000001.png", "frame_000004.png"):
        with Image.open(tmp_path / "full" / name) as im:
            expected = np.asarray(im.resize((12, 8), Image.Resampling.BICUBIC, box=(0, 0, 48, 32)))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "small" / name)), expected)
    with pytest.raises(DualcodecError, match="every must be at least 1"):
        write_frames(video, tmp_path / "bad", every=0)
    assert not (tmp_path / "bad").exists()


def test_frames_command_every_and_downscale_on_a_real_clip(tmp_path, capsys):
    video = shared_file("video/cars_320x240_30f.y4m")
    code, _, err = run(capsys, "frames", video, "-o", tmp_path / "x2", "--every", 4, "--downscale", 2)
    assert code == 0 and f"{video.stem}: 8 frames 160x120" in err  # frames 1, 5, ..., 29
    written = list_images(tmp_path / "x2")
    assert len(written) == 8 and written[1].name == "frame_000005.png"
    assert all(Image.open(p).size == (160, 120) for p in written)
    code, _, err = run(capsys, "frames", video, "-o", tmp_path / "first", "--frames", 10, "--every", 4)
    assert code == 0 and f"{video.stem}: 3 frames 320x240" in err
    for argv, message in ((["--every", 0], "--every must be at least 1, got 0"),
                          (["--downscale", -2], "--downscale must be at least 1, got -2"),
                          (["--downscale", 241], "--downscale 241 leaves no pixel of")):
        line = assert_one_line_error(*run(capsys, "frames", video, "-o", tmp_path / "bad", *argv)[::2])
        assert message in line
    assert not (tmp_path / "bad").exists()


# Sources: training and validation ---------------------------------------------------------

def _collection(folder, count, stem="im"):
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(_coordinate_image(40, 30, i)).save(folder / f"{stem}{i:02d}.png")


@pytest.fixture
def sources(tmp_path):
    """``images/`` with collections a (10 images) and b (3), ``frames/`` with videos v0 (20
    frames) and v1 (8), as ``dualcodec frames`` names them."""
    _collection(tmp_path / "images" / "a", 10)
    _collection(tmp_path / "images" / "b" / "nested", 3)  # a source holds everything below it
    (tmp_path / "images" / "a" / "README.md").write_text("not an image")
    _frame_folders(tmp_path / "frames", [20, 8])
    return [tmp_path / "images", tmp_path / "frames"]


def test_split_draws_from_every_source_and_drops_the_neighbours_of_validation_frames(sources):
    images, frames = sources
    train, val = split_sources(sources, 0.1, val_gap=1)
    assert train == sorted(train) and val == sorted(val)
    # k = max(1, round(0.1 n)) per source at positions floor((i + 1/2) n / k): a 1 of 10, b 1 of 3,
    # v0 2 of 20, v1 1 of 8.
    assert [str(p.relative_to(p.parents[1])) for p in val] == ["v0/frame_000006.png", "v0/frame_000016.png",
                                                              "v1/frame_000005.png", "a/im05.png", "nested/im01.png"]
    assert not set(train) & set(val)
    unused = set(list_images(images) + list_images(frames)) - set(train) - set(val)
    # frames beside a validation frame are used nowhere; images of a collection all are
    assert sorted(p.name for p in unused) == ["frame_000004.png", "frame_000005.png", "frame_000006.png",
                                              "frame_000007.png", "frame_000015.png", "frame_000017.png"]
    assert {p.parent.name for p in unused} == {"v0", "v1"}
    assert split_sources(list(reversed(sources)), 0.1, val_gap=1) == (train, val)  # the same every time
    # Clips of the training frames never jump over a held-out one. Runs left: v0 0-3, 7-13, 17-19;
    # v1 0-2, 6-7; a 0-4, 6-9; b none of 3.
    clips = list_clips(train, 3)
    assert len(clips) == (2 + 5 + 1) + 1 + (3 + 2)
    assert all(int(c[-1].stem[6:]) - int(c[0].stem[6:]) == 2 for c in clips if c[0].parent.parent == frames)


def test_split_refuses_sources_too_small_missing_or_twice(tmp_path, sources):
    _collection(tmp_path / "images" / "c", 1)
    with pytest.raises(DualcodecError, match=r"too few images in source .*c: 1 cannot give 1 to validation"):
        split_sources(sources, 0.1)
    _frame_folders(tmp_path / "short", [3])
    with pytest.raises(DualcodecError, match=r"source .*v0: 3 .*1 frames on each side"):
        split_sources([tmp_path / "short"], 0.1)
    assert len(split_sources([tmp_path / "short"], 0.1, val_gap=0)[0]) == 2  # without the gap they fit
    with pytest.raises(DualcodecError, match="not found"):
        split_sources([tmp_path / "gone"], 0.1)
    with pytest.raises(DualcodecError, match="under two training folders"):
        split_sources([sources[0], sources[0] / "a"], 0.1)
    with pytest.raises(DualcodecError, match="between 0 and 1"):
        split_sources(sources[1:], 1.0)


def test_images_directly_in_a_listed_folder_are_one_source(tmp_path):
    _collection(tmp_path / "flat", 6)
    train, val = split_sources([tmp_path / "flat"], 0.2, val_gap=3)  # not frames: no neighbour dropped
    assert [p.name for p in val] == ["im03.png"] and len(train) == 5


def test_split_of_the_shared_training_images():
    folder = SHARED_DATA / "images" / "train"
    if not folder.is_dir():
        pytest.skip(f"shared training images not available: {folder} (expected ../shared/data beside the repo)")
    train, val = split_sources([folder], 0.03)
    assert {p.relative_to(folder).parts[0] for p in val} == {"bsd68", "jxl_wesaturate", "photos", "sun_hays80",
                                                            "wikipedia"}
    assert len(val) == 9 and len(train) + len(val) == len(list_images(folder))


@needs_dali
def test_shared_training_images():
    folder = SHARED_DATA / "images" / "train"
    if not folder.is_dir():
        pytest.skip(f"shared training images not available: {folder} (expected ../shared/data beside the repo)")
    files = list_images(folder)
    assert not any(p.suffix == ".md" for p in files)
    jpegs = [p for p in files if p.suffix == ".jpg"][:6]
    pngs = [p for p in files if "bsd68" in p.parts][:6]
    for items, kwargs in ((jpegs, {}), (pngs, {"crops_per_image": 4})):
        x = TrainStream(items, 64, 8, seed=0, **kwargs).next()
        assert x.shape == (8, 3, 64, 64) and 20 < x.float().mean() < 235
    assert validation_crops(files[:2], 128, 4).shape == (8, 3, 128, 128)


@needs_dali
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (DALI's mixed decoder)")
def test_gpu_stream(images):
    x = TrainStream(images, 32, 8, seed=0, device_id=0).next()
    assert x.shape == (8, 3, 32, 32) and x.device.type == "cuda"
    for crop in x.cpu():
        _symmetry(crop)


# Crops to planes ---------------------------------------------------------------------------

def _numpy_bt601_planes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 R'G'B' ``[B,3,H,W]`` to 8-bit limited-range BT.601 4:2:0 code values, in numpy:
    Y' = 16 + 219 E'y, Cb = 128 + 224 (B' - E'y) / 1.772, Cr = 128 + 224 (R' - E'y) / 1.402,
    chroma averaged over each 2x2 block before rounding."""
    r, g, b = (x[:, i].astype(np.float64) / 255.0 for i in range(3))
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cb, cr = 224 * (b - luma) / 1.772, 224 * (r - luma) / 1.402

    def box(c):
        return (c[:, 0::2, 0::2] + c[:, 0::2, 1::2] + c[:, 1::2, 0::2] + c[:, 1::2, 1::2]) / 4

    y = np.round(16 + 219 * luma)
    uv = np.round(128 + np.stack([box(cb), box(cr)], axis=1))
    return y[:, None], uv


def test_training_format_is_bt601_limited_8_bit():
    assert TRAINING_FORMAT == YUVFormat(bit_depth=8, full_range=False, matrix=BT601)


def test_crops_to_planes_shapes_and_scale():
    x = torch.from_numpy(np.stack([_coordinate_image(32, 24, b).transpose(2, 0, 1) for b in (0, 200, 255)]))
    y, uv = crops_to_planes(x)
    assert y.shape == (3, 1, 24, 32) and uv.shape == (3, 2, 12, 16)
    assert y.dtype == uv.dtype == torch.float32
    # Unit scale of 8-bit code values: (Y - 16) / 219 and (C - 128) / 224 + 0.5, integers inside.
    codes_y, codes_uv = 16 + 219 * y, 128 + 224 * (uv - 0.5)
    assert torch.allclose(codes_y, codes_y.round(), atol=1e-4) and torch.allclose(codes_uv, codes_uv.round(), atol=1e-4)
    assert codes_y.min() >= 16 - 1e-4 and codes_y.max() <= 235 + 1e-4


def test_crops_to_planes_of_black_white_and_grey():
    x = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    x[1], x[2] = 255, 128
    y, uv = crops_to_planes(x)
    assert torch.equal(y[0], torch.zeros(1, 4, 4)) and torch.equal(y[1], torch.ones(1, 4, 4))
    assert torch.allclose(y[2], torch.full((1, 4, 4), (126 - 16) / 219))  # 16 + 219 * 128 / 255 = 125.9 -> 126
    assert torch.equal(uv, torch.full((3, 2, 2, 2), 0.5))  # no colour, at the training format's grey


def test_crops_to_planes_code_values_equal_a_numpy_bt601_conversion():
    rgb = np.stack([x.transpose(2, 0, 1) for x in synthetic_rgb(40, 24, 3, seed=4, noise=12.0)])
    y, uv = crops_to_planes(torch.from_numpy(rgb))
    expected_y, expected_uv = _numpy_bt601_planes(rgb)
    codes_y = (16 + 219 * y.double()).round().numpy()
    codes_uv = (128 + 224 * (uv.double() - 0.5)).round().numpy()
    assert np.array_equal(codes_y, expected_y)
    assert np.array_equal(codes_uv, expected_uv)
    # Not BT.709: the matrix matters for these colours.
    bt709_luma = np.round(16 + 219 * (0.2126 * rgb[:, 0] + 0.7152 * rgb[:, 1] + 0.0722 * rgb[:, 2]) / 255)
    assert np.abs(codes_y[:, 0] - bt709_luma).max() > 5
