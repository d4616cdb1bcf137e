"""Side-stream packets: one per video frame in the data track (:mod:`dualcodec.container`).

Each packet is::

    offset  size  field
    0       4     CRC-32 (IEEE, big-endian) of bytes 4..end
    4       1     side mode (:class:`SideMode`): 0 = NEW, latents follow;
                             1 = REPEAT, reuse the previous frame's latents (no more bytes);
                             2 = SKIP, every block skipped: the upsampler works from the
                                 base layer alone (no more bytes)
                             3 = KEEP, the previous frame's latents in the blocks a flag
                                 marks, none in the others (format version 4 on)
    5       n     (NEW) the enhancement layer of one frame: side level, per-block
                  skip flags and the enhanced blocks' latents, laid out as
                  :mod:`dualcodec.entropy` says (latent shape [M, ceil(bh/S), ceil(bw/S)],
                  M, the stride S and the coding tables from the model file);
                  (KEEP) the per-block keep flags, laid out as :mod:`dualcodec.entropy` says

The encoder picks the mode per frame by rate-distortion cost, and within a KEEP frame
each block's flag, so a static scene, or a frame the side stream cannot improve, pays 5
bytes for its side stream. A frame that the base layer codes as a key frame never has
mode REPEAT (format version 2 on) or KEEP, and the decoder forgets the previous latents
there: every GOP decodes on its own. What a frame keeps (REPEAT, KEEP) is what the
previous frame showed: its latents after its own flags.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import IntEnum

from dualcodec.errors import DualcodecError

# The encoder weighs side-stream bits (:class:`dualcodec.codec.ModelLayers`) against the
# frame's mean squared error (6:1:1, unit scale: what PSNR-YUV reads), at MSE_WEIGHT times
# the square of MSE_LMBDA's rate weight at the QP (:func:`dualcodec.model.lmbda_at`), per bit
# per pixel, on the base layer's key frames: 0.005 at QP 32, doubling every 3 QPs. That is
# about 4 times H.264's own mode-decision Lagrangian (0.85 * 2^((QP - 12) / 3) per bit,
# 8-bit SSD): a base-layer pixel's error spreads over the 4 output pixels it covers at 2x.
# The weight is the base layer's price of a bit, so it does not depend on the model (a
# model trained on MSE has a rate weight of another scale: its encoder weighs bits alike).
# MSE_LMBDA is the L1 rate weight the shipped models train with, the unit the weight was
# found in. On the frames the base codec predicts from others the weight is SIDE_WEIGHT
# times that: there a base-layer bit buys more (the side stream does not predict), so a
# side bit must too. experiments/side_lambda.py measures both choices.
MSE_WEIGHT = 8.0
MSE_LMBDA = 0.025
SIDE_WEIGHT = 4.0
# Which frames the encoder lets send NEW latents (:class:`dualcodec.codec.ModelLayers`):
# "all" weighs NEW against REPEAT and SKIP on every frame; "key" (the command's default)
# only on the base layer's key frames, the others repeating the key frame's latents or
# skipping. At SIDE_WEIGHT the predicted frames all but never choose NEW (README, *The
# encoder's side weight*), and searching them for it is half an encoder's work.
SIDE_NEW = ("key", "all")


class SideMode(IntEnum):
    """The first byte of a side-stream packet (after the CRC)."""

    NEW = 0  # entropy-coded latents follow
    REPEAT = 1  # the previous frame's latents; never at a base-layer key frame (version 2)
    SKIP = 2  # every latent at its most probable value
    KEEP = 3  # the previous frame's latents in the flagged blocks (version 4); never at a key frame


@dataclass(frozen=True)
class SideFrame:
    """The side stream of one frame: a mode and, for ``SideMode.NEW``, the entropy-coded latents."""

    mode: SideMode
    entropy_bytes: bytes = b""

    def to_bytes(self) -> bytes:
        return bytes([self.mode]) + self.entropy_bytes

    @classmethod
    def from_bytes(cls, body: bytes, index: int) -> "SideFrame":
        if not body or body[0] not in set(SideMode):
            raise DualcodecError(f"side stream of frame {index + 1} has an unknown mode")
        if body[0] not in (SideMode.NEW, SideMode.KEEP) and len(body) != 1:
            raise DualcodecError(f"side stream of frame {index + 1} is malformed")
        if body[0] in (SideMode.REPEAT, SideMode.KEEP) and index == 0:
            raise DualcodecError("side stream of frame 1 repeats a frame that does not exist")
        return cls(SideMode(body[0]), body[1:])


def frame_payload(body: bytes) -> bytes:
    """One side-stream packet: CRC-32 then the body."""
    return zlib.crc32(body).to_bytes(4, "big") + body


def parse_payload(payload: bytes, index: int) -> bytes:
    """The entropy-coded bytes of one side-stream packet; ``index`` counts frames from 0."""
    if len(payload) < 4 or zlib.crc32(payload[4:]).to_bytes(4, "big") != payload[:4]:
        raise DualcodecError(f"side stream of frame {index + 1} is corrupted (checksum mismatch)")
    return payload[4:]
