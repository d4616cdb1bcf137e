"""dualcodec.header: the JSON header, its versions, and refusals."""

from __future__ import annotations

import json

import pytest

from dualcodec.errors import DualcodecError
from dualcodec.header import FORMAT_VERSION, Header


DUAL = Header(mode="dual", scale=2, width=37, height=29, base_width=20, base_height=16, codec="h264",
              bit_depth=8, full_range=False, model_name="tiny", model_fingerprint="0123456789abcdef")


BICUBIC = Header(mode="bicubic", scale=4, width=64, height=48, base_width=16, base_height=12, codec="av1",
                 bit_depth=10, full_range=True)


@pytest.mark.parametrize("header", [DUAL, BICUBIC], ids=["dual", "bicubic"])
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
    assert tree["color"] == {"matrix": "bt709", "primaries": "bt709", "transfer": "bt709", "range": "tv",
                             "chroma": "420", "siting": "center"}
    bicubic = json.loads(BICUBIC.to_json())
    assert bicubic["model"] is None and bicubic["color"]["range"] == "pc" and bicubic["bit_depth"] == 10


def _tree(**changes):
    tree = json.loads(DUAL.to_json())
    tree.update(changes)
    return json.dumps(tree)


@pytest.mark.parametrize(
    "text, match",
    [
        (_tree(version=3), "version 3 is not supported.*a newer dualcodec wrote it"),
        (_tree(version="1"), "not supported"),
        (_tree(format="mp4"), "does not name the dualcodec format"),
        (_tree(mode="triple"), "unknown mode"),
        (_tree(width="wide"), "malformed"),
        (_tree(color=None), "malformed"),
        ('{"format": "dualcodec", "version": 1}', "malformed"),
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
    ],
)
def test_bad_header_is_rejected(text, match):
    with pytest.raises(DualcodecError, match=match):
        Header.from_json(text)
