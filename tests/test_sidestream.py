"""dualcodec.sidestream: side-stream packets (CRC framing and modes)."""

from __future__ import annotations

import zlib

import pytest

from dualcodec.errors import DualcodecError
from dualcodec.sidestream import SideFrame, SideMode, frame_payload, parse_payload


def test_payload_round_trip():
    body = bytes(range(50))
    payload = frame_payload(body)
    assert len(payload) == len(body) + 4
    assert payload[:4] == zlib.crc32(body).to_bytes(4, "big")
    assert parse_payload(payload, 0) == body
    assert parse_payload(frame_payload(b""), 0) == b""


@pytest.mark.parametrize("position", [0, 3, 4, 20, 53])
def test_payload_crc_detects_a_flipped_byte(position):
    payload = bytearray(frame_payload(bytes(range(50))))
    payload[position] ^= 0x01
    with pytest.raises(DualcodecError, match="frame 7 is corrupted"):  # index 6 is the 7th frame
        parse_payload(bytes(payload), 6)


def test_payload_too_short():
    with pytest.raises(DualcodecError, match="corrupted"):
        parse_payload(b"\x00\x01", 0)


def test_side_frame_bytes_round_trip():
    new = SideFrame(SideMode.NEW, b"\x01\x02\x03")
    assert new.to_bytes() == b"\x00\x01\x02\x03"
    assert SideFrame.from_bytes(new.to_bytes(), 0) == new
    for mode in (SideMode.REPEAT, SideMode.SKIP):
        side = SideFrame(mode)
        assert len(side.to_bytes()) == 1
        assert SideFrame.from_bytes(side.to_bytes(), 5) == side
    assert SideFrame.from_bytes(bytes([SideMode.SKIP]), 0).mode == SideMode.SKIP  # skipping needs no earlier frame
    keep = SideFrame(SideMode.KEEP, b"\x80\x80\x80\x80\x00")
    assert keep.to_bytes()[0] == 3 and SideFrame.from_bytes(keep.to_bytes(), 2) == keep


@pytest.mark.parametrize("body, index", [(b"", 1), (b"\x07abc", 1), (bytes([SideMode.REPEAT]), 0),
                                         (bytes([SideMode.REPEAT]) + b"extra", 3), (bytes([SideMode.SKIP]) + b"x", 3),
                                         (bytes([SideMode.KEEP]) + b"\x80\x80\x80\x80", 0)])
def test_bad_side_frame_is_rejected(body, index):
    with pytest.raises(DualcodecError, match="side stream of frame"):
        SideFrame.from_bytes(body, index)
