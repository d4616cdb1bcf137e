"""dualcodec.header: the JSON header, its versions, and refusals."""

from __future__ import annotations

import json

import av
import pytest

from dualcodec.errors import DualcodecError
from dualcodec.header import FORMAT_VERSION, Header
from helpers import make_av_clip


DUAL = Header(mode="dual", scale=2, width=37, height=29, base_width=20, base_height=16, codec="h264",
              bit_depth=8, full_range=False, model_name="tiny", model_fingerprint="0123456789abcdef")


BICUBIC = Header(mode="bicubic", scale=4, width=64, height=48, base_width=16, base_height=12, codec="av1",
                 bit_depth=10, full_range=True, matrix=9)


PLAIN = Header(mode="plain", scale=1, width=37, height=29, base_width=38, base_height=30, codec="hevc",
               bit_depth=8, full_range=False, matrix=6)


LEVEL = Header(mode="dual", scale=1, width=38, height=30, base_width=38, base_height=30, codec="h264",
               bit_depth=8, full_range=False, model_name="post", model_fingerprint="fedcba9876543210", level=27)


@pytest.mark.parametrize("header", [DUAL, BICUBIC, PLAIN, LEVEL], ids=["dual", "bicubic", "plain", "level"])
def test_header_json_round_trip(header):
    text = header.to_json()
    assert Header.from_json(text) == header
    assert Header.from_json(text).to_json() == text
    tree = json.loads(text)
    assert tree["format"] == "dualcodec" and tree["version"] == FORMAT_VERSION
    assert text == json.dumps(tree, sort_keys=True, separators=(",", ":"))  # compact, sorted keys


def test_header_json_contents():
    tree = json.loads(DUAL.to_json())
    assert tree["model"] == {"name": "tiny", "fingerprint": "0123456789abcdef"}
    assert tree["color"] == {"matrix": "bt709", "range": "tv", "chroma": "420"}
    bicubic = json.loads(BICUBIC.to_json())
    assert bicubic["model"] is None and bicubic["color"]["range"] == "pc" and bicubic["bit_depth"] == 10
    assert bicubic["color"]["matrix"] == "bt2020nc"
    # the quantiser level only where a model reads it: other headers are as they were
    assert "level" not in json.loads(DUAL.to_json()) and json.loads(LEVEL.to_json())["level"] == 27


# FFmpeg's names of the ITU-T H.273 matrix_coefficients code points (av_color_space_name).
MATRIX_NAMES = [(1, "bt709"), (5, "bt470bg"), (6, "smpte170m"), (9, "bt2020nc")]


@pytest.mark.parametrize("matrix, name", MATRIX_NAMES)
def test_matrix_names_round_trip(matrix, name):
    header = Header(mode="bicubic", scale=2, width=64, height=48, base_width=32, base_height=24, codec="h264",
                    bit_depth=8, full_range=False, matrix=matrix)
    tree = json.loads(header.to_json())
    assert tree["color"]["matrix"] == name
    back = Header.from_json(header.to_json())
    assert back.matrix == matrix and back == header
    assert back.yuv_format.matrix == matrix


def test_version_1_colour_reads_as_bt709():
    # Version 1 named primaries, transfer and siting too: its frames were BT.709 conversions of R'G'B'.
    tree = json.loads(DUAL.to_json())
    tree["version"] = 1
    tree["color"] = {"matrix": "bt709", "primaries": "bt709", "transfer": "bt709", "range": "tv",
                     "chroma": "420", "siting": "center"}
    header = Header.from_json(json.dumps(tree))
    assert header.version == 1 and header.matrix == 1 and not header.full_range


def _stream_header(path):
    with av.open(str(path)) as inp:
        return Header.from_video_stream(path, inp.streams.video[0])


@pytest.mark.parametrize("matrix, size, expected", [
    (6, (64, 48), 6), (5, (64, 48), 5), (1, (64, 48), 1), (9, (64, 48), 9),
    (None, (64, 48), 6), (None, (1280, 720), 1),  # unflagged: players' size rule
])
def test_plain_video_matrix_from_the_stream(tmp_path, matrix, size, expected):
    path = make_av_clip(tmp_path / "clip.mp4", width=size[0], height=size[1], frames=1, matrix=matrix)
    header = _stream_header(path)
    assert (header.mode, header.scale, header.width, header.height) == ("plain", 1, *size)
    assert header.matrix == expected and header.yuv_format.matrix == expected


@pytest.mark.parametrize("matrix", [4, 0, 7])  # FCC, identity (GBR), SMPTE 240M
def test_plain_video_with_another_matrix_is_refused_in_one_line(tmp_path, matrix):
    path = make_av_clip(tmp_path / "fcc.mp4", frames=1, matrix=matrix)
    with av.open(str(path)) as inp:
        assert inp.streams.video[0].codec_context.colorspace == matrix
    with pytest.raises(DualcodecError, match=f"colour matrix {matrix} .*BT.709, BT.601 and BT.2020") as info:
        _stream_header(path)
    assert "\n" not in str(info.value)


def _tree(**changes):
    tree = json.loads(DUAL.to_json())
    tree.update(changes)
    return json.dumps(tree)


@pytest.mark.parametrize(
    "text, match",
    [
        (_tree(version=FORMAT_VERSION + 1), f"version {FORMAT_VERSION + 1} is not supported.*a newer dualcodec wrote it"),
        (_tree(version="1"), "not supported"),
        (_tree(format="mp4"), "does not name the dualcodec format"),
        (_tree(mode="triple"), "unknown mode"),
        (_tree(width="wide"), "malformed"),
        (_tree(color=None), "malformed"),
        (_tree(color={"matrix": "fcc", "range": "tv", "chroma": "420"}), "malformed"),
        (_tree(color={"range": "tv", "chroma": "420"}), "malformed"),
        (_tree(bit_depth=9), "bit depth 9 .*not supported"),
        (_tree(codec="vp9"), "unknown base codec 'vp9'"),
        ('{"format": "dualcodec", "version": 1}', "malformed"),
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
    ],
)
def test_bad_header_is_rejected(text, match):
    with pytest.raises(DualcodecError, match=match):
        Header.from_json(text)
