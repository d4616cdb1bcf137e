"""dualcodec.container: the MP4 layout, written and read; damage; the golden files."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from dualcodec.container import ContainerReader, Orientation
from dualcodec.errors import DualcodecError
from dualcodec.header import FORMAT_VERSION, METADATA_KEY, Header
from dualcodec.sidestream import SideFrame, SideMode
from helpers import display_matrix, make_av_clip


def test_written_file_opens_with_plain_pyav(dual_file):
    header = ContainerReader(dual_file.path).header
    with av.open(str(dual_file.path)) as inp:
        assert inp.format.name.startswith("mov")
        assert len(inp.streams.video) == 1 and len(inp.streams.data) == 1
        video = inp.streams.video[0]
        assert video.codec_context.name == "h264"
        assert (video.codec_context.width, video.codec_context.height) == (header.base_width, header.base_height)
        assert (header.base_width, header.base_height) == (20, 16)  # 37x29 padded to 40x32, halved
        frames = list(inp.decode(video))
        assert len(frames) == 3
        assert frames[0].format.name == "yuv420p"
        # The base layer is coded in the source's format: the clip's y4m is SD and unflagged, so BT.601.
        assert header.matrix == 6 and not header.full_range
        assert (frames[0].colorspace, frames[0].color_range) == (6, 1)
        assert (frames[0].width, frames[0].height) == (20, 16)
        assert json.loads(inp.metadata[METADATA_KEY])["mode"] == "dual"


def test_reader_header_and_payloads(dual_file, tiny_model):
    reader = ContainerReader(dual_file.path)
    assert reader.header.mode == "dual" and reader.header.scale == 2
    assert (reader.header.width, reader.header.height) == (37, 29)
    assert reader.header.model_fingerprint == tiny_model.fingerprint
    assert reader.rate == 25
    sides = list(reader.side_frames())
    assert len(sides) == 3
    assert [side.mode for side in sides] == [SideMode.NEW] * 3  # the fixture sends latents every frame
    assert all(len(side.entropy_bytes) > 0 for side in sides)
    frames = list(reader.base_frames())
    assert len(frames) == 3 and all((p.width, p.height) == (20, 16) for p in frames)


def test_sizes_add_up(dual_file):
    sizes = ContainerReader(dual_file.path).sizes()
    file_bytes = dual_file.path.stat().st_size
    assert sizes.frames == 3
    assert sizes.file_bytes == file_bytes
    assert sizes.base_bytes + sizes.side_bytes + sizes.other_bytes == file_bytes
    assert sizes.base_bytes > 0 and sizes.side_bytes > 0 and sizes.other_bytes > 0
    # The same numbers the encoder counted while writing.
    report = dual_file.report
    assert (report.base_bytes, report.side_bytes, report.file_bytes) == (
        sizes.base_bytes, sizes.side_bytes, sizes.file_bytes)
    # Side bytes: a 4-byte CRC per frame plus the frame's side-stream body.
    sides = list(ContainerReader(dual_file.path).side_frames())
    assert sizes.side_bytes == sum(len(s.to_bytes()) + 4 for s in sides)
    with av.open(str(dual_file.path)) as inp:
        assert sizes.base_bytes == sum(p.size for p in inp.demux(inp.streams.video[0]))


def test_bicubic_file_has_no_side_stream(bicubic_file):
    reader = ContainerReader(bicubic_file.path)
    assert reader.header.mode == "bicubic" and reader.header.model_fingerprint is None
    sizes = reader.sizes()
    assert sizes.side_bytes == 0 and sizes.frames == 3
    with av.open(str(bicubic_file.path)) as inp:
        assert len(inp.streams.data) == 0


def test_mp4_without_the_header_reads_as_plain(tmp_path):
    path = make_av_clip(tmp_path / "plain.mp4", frames=2, rate=30)
    reader = ContainerReader(path)
    assert not reader.has_header and reader.header_dict() is None
    assert reader.header == Header(mode="plain", scale=1, width=64, height=48, base_width=64, base_height=48,
                                   codec="h264", bit_depth=8, full_range=False, matrix=6)  # unflagged SD: BT.601
    assert reader.rate == 30 and not reader.has_side_stream
    frames = list(reader.base_frames())
    assert len(frames) == 2 and (frames[0].width, frames[0].height) == (64, 48)
    sizes = reader.sizes()
    assert sizes.frames == 2 and sizes.side_bytes == 0 and sizes.file_bytes == path.stat().st_size


@pytest.mark.parametrize("mode, size, written", [("plain", (64, 48), False), ("plain", (37, 29), True),
                                                  ("bicubic", (64, 48), True), ("dual", (64, 48), True)])
def test_only_a_plain_file_of_even_size_goes_without_the_header(mode, size, written):
    width, height = size
    scale = 1 if mode == "plain" else 2
    header = Header(mode=mode, scale=scale, width=width, height=height, base_width=(width + width % 2) // scale,
                    base_height=(height + height % 2) // scale, codec="h264", bit_depth=8, full_range=False)
    assert header.is_written == written


def test_videos_dualcodec_cannot_decode_are_refused(tmp_path):
    import wave

    sound = tmp_path / "sound.wav"
    with wave.open(str(sound), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 800)
    with pytest.raises(DualcodecError, match="has no video stream"):
        ContainerReader(sound)
    fcc = make_av_clip(tmp_path / "fcc.mp4", frames=1, matrix=4)
    with pytest.raises(DualcodecError, match="colour matrix 4 .* BT.709, BT.601 and BT.2020 only"):
        ContainerReader(fcc)
    image = tmp_path / "image.png"
    av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24").to_image().save(image)
    with pytest.raises(DualcodecError, match="png video is not supported"):
        ContainerReader(image)


@pytest.mark.parametrize("matrix", [1, 5, 6, 9])
def test_plain_videos_of_each_supported_matrix_are_read(tmp_path, matrix):
    path = make_av_clip(tmp_path / "clip.mp4", frames=2, matrix=matrix)
    reader = ContainerReader(path)
    assert reader.header.matrix == matrix and reader.header.yuv_format.matrix == matrix
    assert len(list(reader.base_frames())) == 2


def test_truncated_mp4_does_not_pass_for_a_plain_video(dual_file, tmp_path):
    # The header sits at the end of moov: cut there, a dual file would read as a plain video.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(dual_file.path.read_bytes()[:-40])
    with av.open(str(cut)) as inp:
        assert METADATA_KEY not in inp.metadata and inp.streams.video  # FFmpeg alone opens it
    with pytest.raises(DualcodecError, match="cut.mp4 is truncated or damaged"):
        ContainerReader(cut)
    faststart = make_av_clip(tmp_path / "faststart.mp4", frames=2, faststart=True)  # moov first, mdat last
    cut.write_bytes(faststart.read_bytes()[:-10])
    with pytest.raises(DualcodecError, match="truncated or damaged"):
        ContainerReader(cut)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(DualcodecError, match="input not found"):
        ContainerReader(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(DualcodecError, match="empty.mp4: the file is empty"):
        ContainerReader(tmp_path / "empty.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(DualcodecError, match="cannot open"):
        ContainerReader(garbage)


def test_flipped_side_byte_is_detected_by_the_reader(dual_file, tmp_path):
    path = tmp_path / "bad.mp4"
    shutil.copy(dual_file.path, path)
    with av.open(str(path)) as inp:
        spans = [(p.pos, p.size) for p in inp.demux(inp.streams.data[0]) if p.size]
    pos, size = spans[1]
    data = bytearray(path.read_bytes())
    data[pos + size - 1] ^= 0x10
    path.write_bytes(bytes(data))
    sides = ContainerReader(path, strict=True).side_frames()
    next(sides)  # frame 1 is intact
    with pytest.raises(DualcodecError, match="side stream of frame 2 is corrupted"):
        next(sides)
    # By default the damaged packet decodes as SKIP, and the frame is named.
    reader = ContainerReader(path)
    modes = [side.mode for side in reader.side_frames()]
    assert modes[1] == SideMode.SKIP and reader.damaged == {1}


def _with_side_payload(source: Path, destination: Path, frame: int, payload: bytes,
                       mode: SideMode = SideMode.NEW) -> Path:
    """A copy of a dual file whose side packet of ``frame`` (0-based) is a ``mode`` packet with
    ``payload``, cut or padded to the packet's size (so the MP4 index stays valid), under a
    valid CRC: damage the CRC cannot see, only the entropy decoder."""
    import zlib

    with av.open(str(source)) as inp:
        spans = [(p.pos, p.size) for p in inp.demux(inp.streams.data[0]) if p.size]
    pos, size = spans[frame]
    body = (bytes([mode]) + payload + bytes(size))[: size - 4]
    data = bytearray(source.read_bytes())
    data[pos:pos + size] = zlib.crc32(body).to_bytes(4, "big") + body
    destination.write_bytes(bytes(data))
    return destination


@pytest.mark.parametrize("payload, message", [
    (b"\xc8\x80\x00\x00\x05" + bytes(range(60)), "malformed"),  # side level 200
    (b"\x1e\x00\x00\x00\x05" + bytes(range(60)), "malformed"),  # P(enhanced) 0
    (b"\x1e\x80\xff\xff\xff" + bytes(range(60)), "truncated"),  # flags beyond the packet
])
def test_a_new_payload_the_entropy_decoder_refuses_is_concealed_or_refused(dual_file, tiny_model, tmp_path,
                                                                            payload, message):
    from dualcodec.codec import ModelLayers, decode
    from dualcodec.model import load_model
    from dualcodec.video import crop_planes

    path = _with_side_payload(dual_file.path, tmp_path / "bad.mp4", 1, payload)
    assert [s.mode for s in ContainerReader(path, strict=True).side_frames()] == [SideMode.NEW] * 3  # CRCs pass
    with pytest.raises(DualcodecError, match=f"side stream of frame 2 is damaged: .*{message}") as info:
        list(decode(path, str(tiny_model.path), strict=True).frames)
    assert "\n" not in str(info.value)
    # By default the frame is concealed as SKIP (the base layer upsampled alone) and named.
    video = decode(path, str(tiny_model.path))
    frames = list(video.frames)
    assert len(frames) == 3 and video.damaged == {1}
    original = list(decode(dual_file.path, str(tiny_model.path)).frames)
    same = [all(np.array_equal(p, q) for p, q in zip((a.y, a.u, a.v), (b.y, b.u, b.v)))
            for a, b in zip(frames, original)]
    assert same == [True, False, True]  # the other frames carry their own latents (NEW every frame)
    reader = ContainerReader(path)
    base = list(reader.base_frames())[1]
    fmt = reader.header.yuv_format
    skipped = ModelLayers(load_model(str(tiny_model.path))).up(base, SideFrame(SideMode.SKIP), fmt)
    concealed = crop_planes(skipped, 37, 29)
    assert all(np.array_equal(p, q) for p, q in zip((concealed.y, concealed.u, concealed.v),
                                                      (frames[1].y, frames[1].u, frames[1].v)))


def test_garbage_latents_under_a_valid_crc_decode_or_are_concealed(dual_file, tiny_model, tmp_path):
    # A valid payload header, then random bytes: the flags may parse, the latents always do
    # (see test_entropy for what the entropy decoder cannot tell); nothing may escape but
    # a concealed frame.
    from dualcodec.codec import decode

    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(6):
        payload = b"\x20\x80\x00\x00\x08" + rng.integers(0, 256, 80, dtype=np.uint8).tobytes()
        path = _with_side_payload(dual_file.path, tmp_path / f"garbage{trial}.mp4", trial % 3, payload)
        video = decode(path, str(tiny_model.path))
        frames = list(video.frames)
        assert len(frames) == 3 and video.damaged <= {trial % 3}
        outcomes.add(bool(video.damaged))
    assert outcomes  # (both outcomes occur for some seeds; neither is an error)


def test_a_keep_packet_at_a_key_frame_or_in_a_version_3_file_is_concealed(golden, tmp_path):
    from dualcodec.codec import decode

    keep = bytes([128] * 4)  # then zeros: the flags of some blocks (whatever they decode to)
    model = str(golden / "golden_model.pt")
    assert [p.key_frame for p in ContainerReader(golden / "golden_v3.mp4").base_frames()] == [True, False, True]
    for frame, message in [(2, "repeats across a key frame"), (1, "keeps latents, which format version 3 has not")]:
        path = _with_side_payload(golden / "golden_v3.mp4", tmp_path / "keep.mp4", frame, keep, SideMode.KEEP)
        assert [s.mode for s in ContainerReader(path).side_frames()][frame] == SideMode.KEEP
        with pytest.raises(DualcodecError, match=f"side stream of frame {frame + 1} {message}"):
            list(decode(path, model, strict=True).frames)
        video = decode(path, model)
        assert len(list(video.frames)) == 3 and video.damaged == {frame}


def test_unknown_version_in_a_file_is_rejected(dual_file, tmp_path):
    # Rewrite the metadata of a real file with a future version: the reader refuses it.
    path = tmp_path / "future.mp4"
    text = ContainerReader(dual_file.path).header.to_json().replace(f'"version":{FORMAT_VERSION}', '"version":7')
    with av.open(str(dual_file.path)) as inp, av.open(str(path), "w", format="mp4",
                                                       options={"movflags": "use_metadata_tags"}) as out:
        out.metadata[METADATA_KEY] = text
        mapping = {s.index: out.add_stream_from_template(s) for s in inp.streams.video}
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    with pytest.raises(DualcodecError, match="version 7"):
        ContainerReader(path)


# -- golden file, version 1: still read, its dual layers refused ------------------------

GOLDEN = Path(__file__).resolve().parent / "golden"


GOLDEN_HEADER = (
    '{"base_height":20,"base_width":24,"bit_depth":8,"codec":"h264","color":{"chroma":"420","matrix":"bt709",'
    '"primaries":"bt709","range":"tv","siting":"center","transfer":"bt709"},"format":"dualcodec","height":37,'
    '"mode":"dual","model":{"fingerprint":"2a78078fe0078dca","name":"golden"},"scale":2,"version":1,"width":45}'
)


@pytest.fixture(scope="module")
def golden() -> Path:
    names = ("golden.mp4", "golden_v2.mp4", "golden_model.pt", "golden_v3.mp4", "golden_v3_frames.npz")
    missing = [n for n in names if not (GOLDEN / n).is_file()]
    assert not missing, f"golden files missing from {GOLDEN}: {missing} (they are committed, never regenerated here)"
    return GOLDEN


def test_golden_header(golden):
    with av.open(str(golden / "golden.mp4")) as inp:
        assert inp.metadata[METADATA_KEY] == GOLDEN_HEADER  # the exact stored string
    header = ContainerReader(golden / "golden.mp4").header
    assert header == Header(mode="dual", scale=2, width=45, height=37, base_width=24, base_height=20,
                            codec="h264", bit_depth=8, full_range=False, matrix=1, model_name="golden",
                            model_fingerprint="2a78078fe0078dca", version=1)


def test_golden_streams(golden):
    reader = ContainerReader(golden / "golden.mp4")
    sizes = reader.sizes()
    assert sizes.frames == 3
    assert sizes.base_bytes + sizes.side_bytes + sizes.other_bytes == (golden / "golden.mp4").stat().st_size
    sides = list(reader.side_frames())
    assert [s.mode for s in sides] == [SideMode.NEW, SideMode.REPEAT, SideMode.REPEAT]
    assert len(sides[0].entropy_bytes) > 0
    assert sizes.side_bytes == sum(4 + len(s.to_bytes()) for s in sides)
    frames = list(reader.base_frames())
    assert len(frames) == 3 and all((p.width, p.height) == (24, 20) for p in frames)


def test_golden_v1_dual_file_is_refused_with_a_message(golden):
    from dualcodec.codec import decode

    # Its learned layers worked in R'G'B': no model of today's format can decode it.
    with pytest.raises(DualcodecError, match="format version 1 dual-layer file.*R'G'B'") as info:
        decode(golden / "golden.mp4", str(golden / "golden_model.pt"))
    assert "\n" not in str(info.value)


# -- golden file, version 2: still read, its dual layers refused ------------------------

GOLDEN_V2_MODEL_FINGERPRINT = "7979d6ec55ae6576"  # the model format 2 golden model, no longer kept


def test_golden_v2_header_and_streams(golden):
    reader = ContainerReader(golden / "golden_v2.mp4")
    # The clip is an unflagged SD y4m: BT.601, limited range, coded so.
    assert reader.header == Header(mode="dual", scale=2, width=45, height=37, base_width=24, base_height=20,
                                   codec="h264", bit_depth=8, full_range=False, matrix=6, model_name="golden",
                                   model_fingerprint=GOLDEN_V2_MODEL_FINGERPRINT, version=2)
    keys = [planes.key_frame for planes in reader.base_frames()]
    sides = list(reader.side_frames())
    assert keys == [True, False, True]  # GOP 2
    assert [s.mode for s in sides] == [SideMode.NEW, SideMode.REPEAT, SideMode.NEW]  # no REPEAT at a key frame
    sizes = reader.sizes()
    assert sizes.side_bytes == sum(4 + len(s.to_bytes()) for s in sides)
    assert sizes.base_bytes + sizes.side_bytes + sizes.other_bytes == (golden / "golden_v2.mp4").stat().st_size


def test_golden_v2_dual_file_is_refused_with_a_message(golden):
    from dualcodec.codec import decode

    # Its side stream was a factorised latent: no model of today's format can decode it,
    # whichever model is named (the check comes before the model is looked for).
    for model in (str(golden / "golden_model.pt"), None):
        with pytest.raises(DualcodecError, match="format version 2 dual-layer file.*factorised latent") as info:
            decode(golden / "golden_v2.mp4", model)
        assert "\n" not in str(info.value) and "enhancement layer" in str(info.value)


def test_golden_v2_dual_file_is_refused_by_the_command_line_in_one_line(golden, tmp_path, capsys):
    from helpers import assert_one_line_error, run

    code, _, err = run(capsys, "decode", golden / "golden_v2.mp4", "-o", tmp_path / "x.y4m", "--model",
                       golden / "golden_model.pt", "-q")
    assert "format version 2 dual-layer file" in assert_one_line_error(code, err)
    assert list(tmp_path.iterdir()) == []


# -- golden file, version 3: the encoder's bitstream and the decoded frames, exactly ------

# Printed by make_golden.py; regenerated with the golden files when the format changes.
GOLDEN_MODEL_FINGERPRINT = "157b44d3b4f49124"
GOLDEN_V3_MD5 = "d932c7b7f0288330d0b3f900acb4de0e"  # base and side packets, less x264's banner


def test_golden_model_file(golden):
    from dualcodec.model import MODEL_VERSION, load_model

    loaded = load_model(str(golden / "golden_model.pt"))
    assert loaded.name == "golden" and loaded.fingerprint == GOLDEN_MODEL_FINGERPRINT
    assert (loaded.config.scale, loaded.config.up_width, loaded.config.side_width) == (2, 8, 16)
    assert MODEL_VERSION == 3


def test_golden_v3_header(golden):
    header = ContainerReader(golden / "golden_v3.mp4").header
    # The clip is an unflagged SD y4m: BT.601, limited range, coded so.
    assert header == Header(mode="dual", scale=2, width=45, height=37, base_width=24, base_height=20,
                            codec="h264", bit_depth=8, full_range=False, matrix=6, model_name="golden",
                            model_fingerprint=GOLDEN_MODEL_FINGERPRINT, version=3)
    with av.open(str(golden / "golden_v3.mp4")) as inp:
        assert json.loads(inp.metadata[METADATA_KEY])["color"] == {"matrix": "smpte170m", "range": "tv",
                                                                   "chroma": "420"}
        assert inp.streams.video[0].codec_context.colorspace == 6


@pytest.fixture()
def make_golden(golden):
    sys.path.insert(0, str(golden))
    import make_golden

    yield make_golden
    sys.path.remove(str(golden))


@pytest.mark.parametrize("threads", [1, 2])
def test_golden_v3_bitstream_is_pinned(make_golden, tmp_path, threads):
    import torch

    torch.set_num_threads(threads)
    try:
        make_golden.encode(tmp_path / "v3.mp4", threads=threads)
    finally:
        torch.set_num_threads(1)
    assert make_golden.bitstream_md5(tmp_path / "v3.mp4") == GOLDEN_V3_MD5
    assert make_golden.bitstream_md5(GOLDEN / "golden_v3.mp4") == GOLDEN_V3_MD5  # the committed file too


def test_todays_encoder_writes_the_same_bitstream_at_1_and_2_threads(make_golden, tmp_path):
    import torch

    digests = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:  # torch's small ops and the runtime's networks alike
            make_golden.encode(tmp_path / f"{threads}.mp4", rule="default", threads=threads)
        finally:
            torch.set_num_threads(1)
        digests.append(make_golden.bitstream_md5(tmp_path / f"{threads}.mp4"))
    assert digests[0] == digests[1]


def _golden_v3_frames(golden) -> list:
    from dualcodec.basecodec import Planes

    stored = np.load(golden / "golden_v3_frames.npz")
    assert stored["y"].dtype == np.uint8 and stored["y"].shape == (3, 37, 45)
    assert stored["u"].shape == stored["v"].shape == (3, 19, 23)
    return [Planes(*(stored[name][i] for name in "yuv")) for i in range(3)]


def _max_difference(a, b) -> int:
    return max(int(np.abs(p.astype(np.int32) - q).max()) for p, q in ((a.y, b.y), (a.u, b.u), (a.v, b.v)))


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
@pytest.mark.parametrize("threads", [1, 2])
def test_golden_v3_decodes_to_exactly_its_frames(golden, threads, runtime):
    # The stored frames are the torch decode's; OpenVINO fp32 gives the same code values.
    import torch

    from dualcodec.codec import decode

    expected = _golden_v3_frames(golden)
    try:
        video = decode(golden / "golden_v3.mp4", str(golden / "golden_model.pt"), runtime=runtime, threads=threads)
        frames = list(video.frames)
    finally:
        torch.set_num_threads(1)
    assert video.format.matrix == 6 and len(frames) == 3 and not video.damaged
    for got, want in zip(frames, expected):
        assert got.y.dtype == want.y.dtype and got.u.shape == want.u.shape
        assert _max_difference(got, want) == 0  # no tolerance


def test_golden_v3_side_stream_matters(golden):
    # The same base frame with every block skipped decodes visibly differently, so a decoder
    # that mishandled the side stream would fail the exact check above.
    from dualcodec.codec import ModelLayers
    from dualcodec.model import load_model
    from dualcodec.video import crop_planes

    reader = ContainerReader(golden / "golden_v3.mp4")
    fmt = reader.header.yuv_format
    layers = ModelLayers(load_model(str(golden / "golden_model.pt")))
    first = next(reader.base_frames())
    skipped = crop_planes(layers.up(first, SideFrame(SideMode.SKIP), fmt), 45, 37)
    assert _max_difference(skipped, _golden_v3_frames(golden)[0]) > 1


def test_golden_v3_side_stream_is_an_enhancement_layer(golden):
    # Its NEW packets parse as dualcodec.entropy lays them out: side level 30 (the QP), and
    # per-block flags over the 6x5 blocks of the 24x20 base layer (stride 4).
    from dualcodec.codec import to_unit
    from dualcodec.model import load_model

    reader = ContainerReader(golden / "golden_v3.mp4")
    model = load_model(str(golden / "golden_model.pt")).model
    fmt = reader.header.yuv_format
    new = 0
    for planes, side in zip(reader.base_frames(), reader.side_frames()):
        if side.mode != SideMode.NEW:
            continue
        new += 1
        assert side.entropy_bytes[0] == 30
        classes = model.side_classes(to_unit(planes, fmt)[0], fmt)
        coded = model.latent_coder.decompress(side.entropy_bytes, classes)
        assert coded.enhanced.shape == (5, 6) and coded.enhanced.any() and coded.w_hat.abs().max() > 0
    assert new >= 1


def test_golden_v3_forgets_latents_at_the_key_frame(golden):
    reader = ContainerReader(golden / "golden_v3.mp4")
    assert reader.header.version == 3
    keys = [planes.key_frame for planes in reader.base_frames()]
    modes = [side.mode for side in reader.side_frames()]
    assert keys == [True, False, True]  # GOP 2
    assert modes == [SideMode.NEW, SideMode.REPEAT, SideMode.NEW]  # no REPEAT at a key frame


def test_insane_base_layer_dts_is_repaired(tmp_path):
    # FFmpeg 8's libx265 wrapper now and then leaves the dts of a one-frame stream's packet
    # uninitialised; the MP4 muxer then refuses the file. Such a dts is replaced.
    from types import SimpleNamespace

    from dualcodec.container import MAX_REORDER, ContainerWriter

    writer = SimpleNamespace(_last_dts=None, ticks_per_frame=1)
    sane = ContainerWriter._sane_dts
    assert sane(writer, SimpleNamespace(pts=0, dts=-219043332147)) == 0
    assert sane(writer, SimpleNamespace(pts=0, dts=None)) == 0
    assert sane(writer, SimpleNamespace(pts=3, dts=-1)) == -1  # B-frame reordering: kept
    assert sane(writer, SimpleNamespace(pts=0, dts=-MAX_REORDER - 1)) == 0
    writer._last_dts = 4
    assert sane(writer, SimpleNamespace(pts=9, dts=5)) == 5
    assert sane(writer, SimpleNamespace(pts=9, dts=3)) == 5  # not above the last one
    assert sane(writer, SimpleNamespace(pts=9, dts=6799976246779207263)) == 5
    # Stamped in a source's own time base (a rate that varies), 100 ticks a frame here.
    writer = SimpleNamespace(_last_dts=None, ticks_per_frame=100)
    assert sane(writer, SimpleNamespace(pts=300, dts=-1200)) == -1200  # 15 frames of reordering: kept
    assert sane(writer, SimpleNamespace(pts=0, dts=-100 * MAX_REORDER - 1)) == 0


@pytest.mark.parametrize("threads", ["", "pools=none:frame-threads=1"])
def test_hevc_images_mux(tmp_path, threads, monkeypatch):
    # Before the dts repair, 6 of 16 (x265's thread pool) and 16 of 16 (no pool) of these failed.
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec, PlainLayers, decode
    from helpers import synthetic_rgb, write_png

    if threads:
        options = BaseCodecSettings.encoder_options.fget

        def with_threads(self):
            o = options(self)
            o["x265-params"] += ":" + threads
            return o

        monkeypatch.setattr(BaseCodecSettings, "encoder_options", property(with_threads))
    image = write_png(tmp_path / "i.png", synthetic_rgb(64, 48, 1, noise=30.0)[0])
    for qp in (22, 28, 34, 40, 22, 28):
        out = tmp_path / f"q{qp}.mp4"
        LayeredCodec(PlainLayers(), BaseCodecSettings(codec="hevc", qp=qp)).encode(image, out)
        assert len(list(decode(out).frames)) == 1


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("mirrored", [False, True])
def test_an_orientation_is_read_back_from_the_display_matrix_it_writes(tmp_path, rotation, mirrored):
    path = make_av_clip(tmp_path / "clip.mp4", frames=1, rotation=rotation, mirrored=mirrored)
    matrix = display_matrix(path)
    assert (matrix is None) == (not rotation and not mirrored)
    identity = [65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]
    assert Orientation.from_matrix(matrix or identity) == Orientation(rotation, mirrored)
