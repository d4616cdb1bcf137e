"""The dualcodec header: what a decoder needs that the base-layer stream does not say.

It is the file-level metadata key ``dualcodec`` of the MP4 (an ``mdta`` tag, see
:mod:`dualcodec.container`; absent from a plain file of even size), compact JSON with
sorted keys::

    format       "dualcodec"
    version      4 (1 to 3 are still read; see dualcodec.container for what changed)
    mode         "dual" | "bicubic" | "plain"
    scale        1 (plain), 2 or 4
    width/height       size of the original frames (the decoder returns exactly this)
    base_width/height  size of the base-layer frames (even; the padded original / scale)
    codec        "h264" | "hevc" | "av1";  bit_depth 8 | 10
    color        {"matrix": "bt709"|"bt470bg"|"smpte170m"|"bt2020nc" (the source's),
                  "range": "tv"|"pc", "chroma": "420"}
    model        {"name", "fingerprint"} for mode "dual", else null
    level        (only with a model that takes it, ``model.level_input``) the base layer's
                 quantiser on H.264's 8-bit scale: the QP or CRF, less 12 for 10-bit H.264
                 (x264's scale sits 12 lower there); the upsampler reads it

A reader refuses a header whose ``format`` is not ``dualcodec`` or whose ``version`` it
does not know.

Plain files: no header. A ``plain`` file (the base codec alone at full resolution) whose
frames needed no padding is written *without* the header: what the codec alone gives
(less x264's version SEI, :data:`dualcodec.basecodec.X264_BANNER_UUID`). A reader takes
any file without the header that has a video stream for mode ``plain``, scale 1
(:meth:`Header.from_video_stream`), reading from the video stream the
size (even), codec (H.264, HEVC or AV1), bit depth (4:2:0 at 8 or 10 bit) and range flag
(``pc`` when flagged full range, else ``tv``) and matrix (BT.709, BT.601 or BT.2020; an
unflagged one by players' size rule, :func:`dualcodec.yuv.matrix_for`). A plain file of
odd width or height keeps the header: it alone records the size to crop back to (4:2:0
needs even frame sizes).

Version 1 headers said ``"bt709"`` for matrix, primaries and transfer, and ``siting``:
their frames were BT.709 conversions of R'G'B'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dualcodec.basecodec import DECODERS, RANGE_PC
from dualcodec.errors import DualcodecError
from dualcodec.yuv import BT709, LUMA_WEIGHTS, MATRIX_NAMES, YUVFormat, matrix_for

FORMAT_NAME = "dualcodec"
FORMAT_VERSION = 4  # what the writer writes
READ_VERSIONS = (1, 2, 3, 4)  # what the reader reads
METADATA_KEY = "dualcodec"
MODES = ("dual", "bicubic", "plain")
UNSPECIFIED_MATRIX = 2  # ITU-T H.273 matrix_coefficients "unspecified"
BIT_DEPTHS = {"yuv420p": 8, "yuvj420p": 8, "yuv420p10le": 10}  # the 4:2:0 formats a plain file may have


@dataclass(frozen=True)
class Header:
    mode: str
    scale: int
    width: int
    height: int
    base_width: int
    base_height: int
    codec: str
    bit_depth: int
    full_range: bool
    matrix: int = BT709  # ITU-T H.273 matrix_coefficients of the planes
    model_name: str | None = None
    model_fingerprint: str | None = None
    level: int | None = None  # the quantiser level a level-input model reads
    version: int = FORMAT_VERSION  # a header read from a file: that file's version

    @property
    def yuv_format(self) -> YUVFormat:
        """The format of the frames the file decodes to (the source's, and the base layer's)."""
        return YUVFormat(bit_depth=self.bit_depth, full_range=self.full_range, matrix=self.matrix)

    def to_json(self) -> str:
        tree = {
            "format": FORMAT_NAME,
            "version": self.version,
            "mode": self.mode,
            "scale": self.scale,
            "width": self.width,
            "height": self.height,
            "base_width": self.base_width,
            "base_height": self.base_height,
            "codec": self.codec,
            "bit_depth": self.bit_depth,
            "color": {
                "matrix": MATRIX_NAMES[self.matrix],
                "range": "pc" if self.full_range else "tv",
                "chroma": "420",
            },
            "model": (
                {"name": self.model_name, "fingerprint": self.model_fingerprint}
                if self.mode == "dual"
                else None
            ),
        }
        if self.level is not None:
            tree["level"] = self.level
        return json.dumps(tree, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Header":
        try:
            tree = json.loads(text)
            if tree.get("format") != FORMAT_NAME:
                raise DualcodecError("the header does not name the dualcodec format")
            if tree.get("version") not in READ_VERSIONS:
                raise DualcodecError(
                    f"file format version {tree.get('version')} is not supported (this dualcodec reads "
                    f"{' and '.join(map(str, READ_VERSIONS))}): a newer dualcodec wrote it"
                )
            model = tree["model"] or {}
            matrix = {name: code for code, name in MATRIX_NAMES.items()}[tree["color"]["matrix"]]
            header = cls(
                mode=tree["mode"],
                scale=int(tree["scale"]),
                width=int(tree["width"]),
                height=int(tree["height"]),
                base_width=int(tree["base_width"]),
                base_height=int(tree["base_height"]),
                codec=tree["codec"],
                bit_depth=int(tree["bit_depth"]),
                full_range=tree["color"]["range"] == "pc",
                matrix=matrix,
                model_name=model.get("name"),
                model_fingerprint=model.get("fingerprint"),
                level=None if tree.get("level") is None else int(tree["level"]),
                version=int(tree["version"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise DualcodecError("the dualcodec header is malformed") from None
        if header.mode not in MODES:
            raise DualcodecError(f"unknown mode {header.mode!r} in the header")
        if header.codec not in DECODERS:
            raise DualcodecError(f"unknown base codec {header.codec!r} in the header")
        if header.bit_depth not in BIT_DEPTHS.values():
            raise DualcodecError(f"bit depth {header.bit_depth} in the header is not supported (8 or 10)")
        return header

    @property
    def is_written(self) -> bool:
        """Whether the file carries this header: all but a plain file of even size, which
        is a standard MP4 whose video stream says everything the decoder needs."""
        return self.mode != "plain" or (self.width, self.height) != (self.base_width, self.base_height)

    @classmethod
    def from_video_stream(cls, path: Path, video) -> "Header":
        """The header of a file that has none: the plain codec, described by its video stream."""
        cc = video.codec_context
        codec = cc.codec.canonical_name
        if codec not in DECODERS:
            raise DualcodecError(f"{path}: {codec} video is not supported (dualcodec decodes {', '.join(DECODERS)})")
        if cc.pix_fmt not in BIT_DEPTHS:
            raise DualcodecError(f"{path}: {cc.pix_fmt} video is not supported (4:2:0 at 8 or 10 bits only)")
        if cc.colorspace not in (*LUMA_WEIGHTS, UNSPECIFIED_MATRIX):
            raise DualcodecError(f"{path}: the video is flagged with colour matrix {cc.colorspace} "
                                 "(ITU-T H.273); dualcodec decodes BT.709, BT.601 and BT.2020 only")
        width, height = cc.width, cc.height
        if width % 2 or height % 2:
            raise DualcodecError(f"{path}: the video is {width}x{height}; 4:2:0 needs an even width and height")
        return cls(mode="plain", scale=1, width=width, height=height, base_width=width, base_height=height,
                   codec=codec, bit_depth=BIT_DEPTHS[cc.pix_fmt],
                   full_range=cc.color_range == RANGE_PC or cc.pix_fmt == "yuvj420p",
                   matrix=matrix_for(cc.colorspace, width, height))
