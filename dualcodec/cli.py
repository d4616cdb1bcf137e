"""``dualcodec``: encode, decode, inspect and train. A thin layer over the package."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

from dualcodec.errors import DualcodecError

PIX_FMT_DEPTHS = {"yuv420p": 8, "yuv420p10le": 10}  # what encode and eval --pix-fmt code at

EPILOG = """examples:
  dualcodec encode clip.y4m -o clip.mp4                 # the 2x model or the plain codec (--scale auto), H.264 QP 32
  dualcodec encode clip.mp4 -o cut.mp4 --start 250 --frames 100   # frames 250-349, their audio too
  dualcodec encode render/frame_%04d.png -o render.mp4 --rate 24   # numbered frames, as ffmpeg -i reads them
  dualcodec encode clip.mkv -o clip_hevc.mp4 --codec hevc --crf 28
  dualcodec encode phone_hdr.mov -o phone.mp4 --pix-fmt yuv420p   # a 10-bit video as 8-bit H.264, which any player plays
  dualcodec encode clip.y4m -o base.mp4 --baseline bicubic
  dualcodec decode clip.mp4 -o clip_decoded.y4m         # lossless output, measure on it
  dualcodec decode clip.mp4 -o clip_frames/             # PNG frames into a new (or empty) folder
  dualcodec decode photo.mp4 -o photo.png               # an encoded image back (one frame of a video: --frames 1)
  dualcodec decode clip.mp4 -o part.mp4 --start 100 --frames 50   # seek: frames 100-149, their audio too
  ffmpeg -i in.mkv -f yuv4mpegpipe - | dualcodec encode - -o piped.mp4   # y4m through a pipe
  dualcodec decode clip.mp4 -o - | ffplay -              # and out of one
  dualcodec info clip.mp4 --json
  dualcodec eval kodak/*.png --codec hevc --qp 27 32 37 42 -o dual_hevc.json
  dualcodec eval kodak/*.png --codec hevc --qp 27 32 37 42 -o dual_hevc.json --resume   # after a stop
  dualcodec pairs experiments/default_x2_pairs.toml -o runs_data/pairs_x2   # base layers coded once, from whole pictures
  dualcodec train experiments/default_x2.toml --set train.name=try
  dualcodec train experiments/default_x2.toml --set train.name=try --resume
  dualcodec frames clip.mp4 other.y4m -o frames/          # PNG frame folders for multi-frame training
  dualcodec frames --downscale 2 --every 4 phone/*.mp4 -o frames_x2/   # clean, spread-out training frames
  deepspeed --num_gpus 2 $(which dualcodec) train experiments/default_x2.toml   # 2 ranks
  dualcodec export my_model.pt --calibration ../shared/data/images/train   # int8 decoder graphs
  dualcodec decode clip.mp4 -o out.y4m --runtime torch --threads 1          # the eager reference

outputs: an existing file is replaced only with -y (never an input); frames go into a new
or empty folder, never into one that holds files; everything appears only when complete.
"""


def _parser() -> argparse.ArgumentParser:
    from dualcodec import __version__

    parser = argparse.ArgumentParser(
        prog="dualcodec",
        description="Jointly learned dual-layer video coding: a standard-codec base layer at low "
        "resolution plus a learned side stream, in one MP4.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dualcodec {__version__}")
    # The deepspeed launcher passes each rank --local_rank=N (LOCAL_RANK is read from the environment).
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enc = sub.add_parser("encode", help="encode a video or image into a dualcodec MP4",
                         description="Encode any FFmpeg-readable video (mp4, mkv, avi, webm, y4m, raw .264/.265) "
                         "or an image (one-frame video) into a dualcodec MP4.")
    enc.add_argument("input", type=Path, help="input video, image, folder of frames (PNG, JPEG; what decode -o "
                     "FOLDER/ writes; in natural order, see --rate) or numbered frames as ffmpeg names them "
                     "(frame_%%04d.png: from 0 to 4 on, to the first gap); - reads y4m from standard input")
    enc.add_argument("-o", "--output", type=Path, required=True, help="output .mp4")
    _overwrite_option(enc)
    enc.add_argument("--codec", choices=["h264", "hevc", "av1"], default="h264", help="base-layer codec (default h264)")
    rate = enc.add_mutually_exclusive_group()
    rate.add_argument("--qp", type=int, help="constant QP for the base layer (default 32; for a 10-bit source, "
                      "x264's QP scale sits 12 lower: --qp 44 there is about --qp 32 at 8 bits; x265's and "
                      "SVT-AV1's do not move)")
    rate.add_argument("--crf", type=float, help="constant rate factor instead of constant QP")
    enc.add_argument("--preset", help="encoder preset (default: medium for h264/hevc, 8 for av1)")
    enc.add_argument("--gop", type=int, default=32, help="key-frame interval in frames (default 32)")
    enc.add_argument("--scale", type=_scale, default="auto", metavar="{auto,1,2,4}",
                     help="base-layer downscaling: auto (default) encodes the plain codec and the 2x and 4x "
                     "models and keeps the one that pays best in rate-distortion (never worse than the plain "
                     "codec; a source of more than 8 GOPs is judged on 4 of them); 1, 2 or 4 use the model of "
                     "that scale (--model default: default_x1, default, default_x4; "
                     "1 without a scale-1 model is the plain codec; bicubic: 2 unless told)")
    enc.add_argument("--model", default="default", help="built-in model name or model file (default: default)")
    enc.add_argument("--baseline", choices=["bicubic", "none"],
                     help="no learned layers: bicubic down/up ('bicubic') or the plain codec at full resolution ('none')")
    enc.add_argument("--start", type=int, default=0, metavar="N",
                     help="begin at frame N of the input (0-based; the frames before it are decoded and dropped, "
                     "exact in any container), the audio at that frame's time")
    enc.add_argument("--frames", type=int, metavar="N", help="encode only N frames (the audio too)")
    _runtime_options(enc)
    _side_options(enc)
    enc.add_argument("--audio", choices=["auto", "copy", "aac", "none"], default="auto",
                     help="the input's audio: auto (default) copies what MP4 players play and transcodes the "
                     "rest (PCM, Vorbis) to AAC; copy keeps every stream as it is; aac transcodes all; none drops it")
    _pix_fmt_option(enc, "The decode, and --scale auto's judgement, are of the frames at that depth")
    enc.add_argument("--rate", type=_rate, metavar="R",
                     help="frame rate of a folder or numbered sequence of frames (default 25, as ffmpeg's "
                     "-framerate; 30000/1001 or 29.97 alike)")
    enc.add_argument("--no-tags", action="store_true",
                     help="leave out the input's tags (as ffmpeg -map_metadata -1); by default the output carries "
                     "its creation time, title, comment, location and the like, and its streams' languages, as "
                     "ffmpeg does")
    enc.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    dec = sub.add_parser("decode", help="decode a dualcodec MP4 to y4m, PNG or MP4",
                         description="Decode a dualcodec MP4. OUT.y4m holds the decoder's output as it is, in the "
                         "source's format (4:2:0 at its bit depth; what ffmpeg, VMAF and players read); OUT_DIR/ "
                         "holds PNG frames (8-bit RGB), OUT.png one (an encoded image, or --frames 1); OUT.mp4 is a high-quality "
                         "H.264 for viewing.")
    dec.add_argument("input", type=Path, help="dualcodec .mp4 (a video without the header decodes as mode plain)")
    dec.add_argument("-o", "--output", required=True,
                     help="OUT.y4m, OUT.mp4, OUT_DIR/ (PNG frames; a new or empty folder), OUT.png (one "
                     "picture) or - (y4m on standard output)")
    _overwrite_option(dec)
    dec.add_argument("--pix-fmt", choices=["yuv420p", "yuv420p10le", "yuv444p16le"],
                     help="y4m pixel format (default: the source's, yuv420p or yuv420p10le)")
    dec.add_argument("--model", help="model to decode with (default: the one named in the file)")
    dec.add_argument("--start", type=int, default=0, metavar="N",
                     help="seek: output from frame N on (0-based), decoded from the last key frame at or before it "
                     "as a player seeks; the same frames a whole decode gives (an .mp4 output: the audio from "
                     "that frame's time)")
    dec.add_argument("--frames", type=int, metavar="N",
                     help="output only N frames (after --start, as encode --frames; an .mp4 output's audio too)")
    dec.add_argument("--strict", action="store_true",
                     help="refuse a damaged file (default: decode what can be decoded, conceal the rest as a "
                     "player does, and name the damaged frames in one warning)")
    _runtime_options(dec)
    dec.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    inf = sub.add_parser("info", help="describe a dualcodec MP4: header, frames, rate, duration and bytes per "
                         "layer")
    inf.add_argument("input", type=Path, help="dualcodec .mp4 (a video without the header reads as mode plain)")
    inf.add_argument("--json", action="store_true", help="print JSON")

    ev = sub.add_parser("eval", help="rate-distortion of real files: encode, decode, measure; CompressAI JSON",
                        description="Encode and decode every input at every QP through the real container and "
                        "record bytes per layer, bpp, PSNR-YUV (6:1:1, on the source's planes), VMAF, PSNR RGB, MS-SSIM, "
                        "LPIPS and times, in "
                        "CompressAI's results layout (python -m compressai.utils.plot reads it).")
    ev.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="videos or images")
    ev.add_argument("-o", "--output", type=Path, required=True,
                    help="results .json, rewritten after every point (a stopped sweep keeps what it measured)")
    again = ev.add_mutually_exclusive_group()
    _overwrite_option(again, "overwrite an existing results file and start the sweep over")
    again.add_argument("--resume", action="store_true",
                       help="continue the sweep saved in the results file, measuring only the missing points "
                       "(refused if its settings differ)")
    ev.add_argument("--codec", choices=["h264", "hevc", "av1"], default="h264", help="base-layer codec (default h264)")
    ev.add_argument("--qp", type=int, nargs="+", default=[22, 27, 32, 37], metavar="QP",
                    help="base-layer QPs (default 22 27 32 37)")
    ev.add_argument("--preset", help="encoder preset (default: medium for h264/hevc, 8 for av1)")
    ev.add_argument("--gop", type=int, default=32, help="key-frame interval in frames (default 32)")
    ev.add_argument("--scale", type=_scale, default="auto", metavar="{auto,1,2,4}",
                    help="as for encode: auto (default) keeps, file by file, the plain codec or the model, "
                    "whichever pays best")
    method = ev.add_mutually_exclusive_group()
    method.add_argument("--model", default="default", help="built-in model name or model file (default: default)")
    method.add_argument("--baseline", choices=["bicubic", "none"],
                        help="evaluate a baseline instead: bicubic down/up, or the plain codec at full resolution")
    ev.add_argument("--start", type=int, default=0, metavar="N",
                    help="begin at frame N of each input (0-based), as encode --start does")
    ev.add_argument("--frames", type=int, metavar="N", help="use only N frames of each input")
    _pix_fmt_option(ev, "Each input is measured at that depth, as encode codes it")
    ev.add_argument("--name", help="curve name in the results (default: the model or baseline and the codec)")
    _runtime_options(ev)
    _side_options(ev)
    ev.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    fr = sub.add_parser("frames", help="decode videos into PNG frame folders for training",
                        description="Decode each VIDEO with PyAV into DIR/<video name>/frame_000001.png, ... "
                        "(8-bit RGB PNG, each named after its frame number in the video): the frame folders "
                        "that training reads as images, or as clips. Camera and web clips carry coding "
                        "artefacts at full size; --downscale 2 gives clean targets.")
    fr.add_argument("inputs", type=Path, nargs="+", metavar="VIDEO", help="input video (anything FFmpeg reads)")
    fr.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                    help="output folder (created if missing); each DIR/<video name>/ must be new or empty")
    fr.add_argument("--frames", type=int, metavar="N", help="read only the first N frames of each video")
    fr.add_argument("--every", type=int, default=1, metavar="K",
                    help="keep every K-th frame: the 1st, the K+1-th, ... (default 1: all); neighbouring "
                    "frames are near-duplicates for per-image training")
    fr.add_argument("--downscale", type=int, default=1, metavar="N",
                    help="shrink each frame N times in RGB, antialiased bicubic (default 1: full size); "
                    "sides N does not divide lose their last pixels")
    fr.add_argument("-q", "--quiet", action="store_true", help="no summary")

    pa = sub.add_parser("pairs", help="code an experiment's training pictures' base layer once, for training",
                        description="Code the base layer of every training picture of EXPERIMENT (its [data] "
                        "train_dirs, validation held out) at each QP, from whole pictures: an image as one intra "
                        "picture, a frame folder as one sequence with P- and B-frames, as a file has them. Train "
                        "on them with [data] pairs = \"DIR\" (bicubic downsampler only).")
    pa.add_argument("config", type=Path, metavar="EXPERIMENT", help="experiment file, e.g. experiments/default_x2.toml")
    pa.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="output folder (new or empty)")
    pa.add_argument("--qp", type=int, nargs="+", metavar="QP",
                    help="QPs to code at (default 22 to 42 in steps of 4); training draws from those within "
                    "[base] qp_min..qp_max")
    pa.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one setting of the experiment (repeatable)")
    pa.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")

    tr = sub.add_parser("train", help="train a model end to end with DeepSpeed",
                        description="Train a dual-layer model from an experiment file (TOML); the exported "
                        "model lands in RUN_DIR/model.pt.")
    tr.add_argument("config", type=Path, help="experiment file, e.g. experiments/default_x2.toml")
    tr.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one setting (repeatable), e.g. --set loss.lmbda=0.02")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run from its last checkpoint (refused if the configuration changed)")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    ex = sub.add_parser("export", help="build a model's int8 decoder graphs (for --runtime openvino-int8)",
                        description="Quantise the decoder's feature convolutions of MODEL to int8 (OpenVINO "
                        "graphs; the filter mixture stays fp32), calibrated on real images coded by the model at "
                        "several QPs and decoded, and write them beside the model file as NAME.int8/ (replacing "
                        "an older set), tied to the model's fingerprint.")
    ex.add_argument("model", help="built-in model name or model file")
    ex.add_argument("--calibration", type=Path, nargs="+", required=True, metavar="DIR",
                    help="folders of images to calibrate on (training images, never test images)")
    ex.add_argument("--images", type=_positive, default=24, metavar="N",
                    help="images to calibrate on, spread over the folders (default 24)")
    ex.add_argument("--qp", type=int, nargs="+", default=[22, 32, 42], metavar="QP",
                    help="H.264 QPs to code them at (default 22 32 42)")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    return parser


def _pix_fmt_option(parser, then: str) -> None:
    parser.add_argument("--pix-fmt", choices=list(PIX_FMT_DEPTHS),
                        help="code at 8 or 10 bits, as ffmpeg's -pix_fmt (default: the source's depth, 10 bits for "
                        "deeper ones): yuv420p makes a 10-bit source's H.264 base layer play everywhere (few browsers "
                        "and TVs play High 10); yuv420p10le codes an 8-bit source at 10 bits (AV1's files about 2%% "
                        f"smaller, README). {then}")


def _overwrite_option(parser, text: str = "overwrite an existing output file (as ffmpeg -y); never an input") -> None:
    parser.add_argument("-y", "--overwrite", action="store_true", help=text)


def _check_frames(frames: int | None) -> None:
    if frames is not None and frames < 1:
        raise DualcodecError(f"--frames must be at least 1, got {frames}")


def _check_start(start: int) -> None:
    if start < 0:
        raise DualcodecError(f"--start must be 0 or more (a frame number, from 0), got {start}")


def _rate(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"invalid rate {text!r} (frames per second: 25, 29.97 or 30000/1001)")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the rate must be positive, got {text}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _scale(text: str) -> str | int:
    if text == "auto":
        return text
    if text in ("1", "2", "4"):
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid scale {text!r} (choose from auto, 1, 2, 4)")


def _encode(args: argparse.Namespace) -> None:
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import make_codec
    from dualcodec.outputs import check_output_file
    from dualcodec.video import is_pattern

    check_output_file(args.output, [args.input], [".mp4"], args.overwrite)
    _check_frames(args.frames)
    _check_start(args.start)
    qp = args.qp if args.qp is not None or args.crf is not None else 32
    settings = BaseCodecSettings(codec=args.codec, qp=qp, crf=args.crf, preset=args.preset, gop=args.gop)
    codec = make_codec(settings, args.baseline, args.model, args.scale, args.audio, args.runtime, args.threads,
                       args.side_weight, args.side_new)
    source = Path(args.input)
    if args.rate is not None and not (source.is_dir() or not source.exists() and is_pattern(str(source))):
        raise DualcodecError(f"--rate is for a folder or numbered sequence of frames: {args.input} keeps its own rate")
    report = codec.encode(args.input, args.output, progress=not args.quiet, max_frames=args.frames, start=args.start,
                          tags=not args.no_tags, rate=args.rate, bit_depth=PIX_FMT_DEPTHS.get(args.pix_fmt))
    if not args.quiet:
        pixels = report.frames * report.width * report.height
        converted = (f" (from {report.converted_from}, coded as 4:2:0 {report.bit_depth}-bit)"
                     if report.converted_from else "")
        print(
            f"{args.output}: {_count_frames(report.frames)} {report.width}x{report.height}{converted}, "
            f"base {report.base_width}x"
            f"{report.base_height}; {report.file_bytes} bytes ({8 * report.file_bytes / pixels:.4f} bpp): "
            f"base {report.base_bytes}, side {report.side_bytes}, other "
            f"{report.file_bytes - report.base_bytes - report.side_bytes}; {report.seconds:.1f} s"
            + (f"; audio: {', '.join(report.audio)}" if report.audio else ""),
            file=sys.stderr,
        )
        if report.choice:
            print(report.choice, file=sys.stderr)
    if report.cut_short:
        print(f"dualcodec: warning: {args.input} ended after {_count_frames(report.frames)} of the "
              f"{report.announced} its container announces (truncated or damaged?); the output holds those",
              file=sys.stderr)


def _runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=["auto", "torch", "openvino", "openvino-int8"], default="auto",
                        help="what runs the decoder's learned layers (the encoder runs them too, to judge its "
                        "side-stream choices on what the decoder will show): auto (default) is openvino-int8 where the "
                        "model has int8 graphs (the built-in ones do; dualcodec export makes them), else openvino "
                        "(compiled fp32, the reference's code values to within 1); torch is the eager fp32 "
                        "reference")
    parser.add_argument("--threads", type=_positive, metavar="N",
                        help="threads for the learned layers (default: one per core): the decoder's runtime "
                        "runs on N threads; with OpenVINO the encoder computes N frames' side-stream candidates "
                        "at once, each on a thread of its own with 1-thread graphs (its choices do not depend "
                        "on N)")


def _side_options(parser: argparse.ArgumentParser) -> None:
    from dualcodec.sidestream import SIDE_NEW, SIDE_WEIGHT

    parser.add_argument("--side-new", choices=SIDE_NEW, default="key",
                        help="frames that may send new side-stream latents: key (default: the base layer's key "
                        "frames; the others repeat them or skip, and the encoder runs about twice as fast) or "
                        "all (any frame, by rate-distortion cost)")
    parser.add_argument("--side-weight", type=_positive_float, default=SIDE_WEIGHT, metavar="W",
                        help="with --side-new all: weight of the side stream's bits in the encoder's choices on "
                        "the frames the base codec predicts, in units of their weight on key frames (which the "
                        f"QP sets): higher spends fewer bits on the side stream (default {SIDE_WEIGHT:g})")


def _decode(args: argparse.Namespace) -> None:
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm import tqdm

    from dualcodec.codec import decode
    from dualcodec.outputs import STDIO, atomic_path, check_output_file, check_output_folder
    from dualcodec.video import open_writer, output_kind

    _check_start(args.start)
    _check_frames(args.frames)
    kind = output_kind(args.output)
    if args.pix_fmt and kind != "y4m":
        raise DualcodecError("--pix-fmt is for y4m output")
    destination = Path(args.output)
    if args.output == STDIO:  # y4m down a pipe: nothing to check, nothing to rename
        place = contextlib.nullcontext(STDIO)
    elif kind == "dir":
        check_output_folder(destination, [args.input])
        place = atomic_path(destination, is_dir=True)
    else:
        check_output_file(destination, [args.input], [f".{kind}"], args.overwrite)
        place = atomic_path(destination)
    start = time.time()
    video = decode(args.input, args.model, strict=args.strict, runtime=args.runtime, threads=args.threads,
                   start=args.start)
    header = video.header
    known = [n for n in (args.frames, video.length) if n is not None]
    wanted = min(known) if known else None  # the frames this decode writes, where that is known
    if kind == "png" and (wanted is None or wanted > 1):
        count = f"{wanted or 'all the'} frames of {args.input}" + (f" from frame {args.start}" if args.start else "")
        raise DualcodecError(f"{destination} holds one picture, not {count}: add --frames 1 (--start N for frame "
                             f"N) or decode into a folder ({destination.with_suffix('')}/)")
    frames = 0
    with place as tmp:
        writer = open_writer(kind, tmp, header.width, header.height, video.rate, video.format,
                             audio_from=args.input, pix_fmt=args.pix_fmt, orientation=video.orientation,
                             time_base=video.time_base, times=video.times, audio_start=video.start_time,
                             signal=video.signal, cut_audio=args.frames is not None)
        # Frame n is written (colour conversion, file I/O) while frame n+1 is decoded.
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(max_workers=1) as pool:
            try:
                shown = itertools.islice(video.frames, args.frames)  # None: every frame
                for planes in tqdm(shown, desc="decode", unit="frame", total=wanted,
                                   disable=args.quiet, leave=False):
                    frames += 1
                    pending.append(pool.submit(writer.write, planes))
                    if len(pending) > 2:
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
                pool.shutdown(wait=True)
                writer.close()
    if video.orientation and kind != "mp4":
        print(f"dualcodec: warning: {args.input} is flagged to be shown {video.orientation}, which "
              f"{'y4m' if kind == 'y4m' else 'PNG'} cannot carry: its frames are written as stored (an .mp4 output "
              "keeps the flag)", file=sys.stderr)
    if video.damaged:
        print(f"dualcodec: warning: {args.input}: {len(video.damaged)} damaged frame"
              f"{'s' if len(video.damaged) > 1 else ''} concealed ({_ranges(video.damaged)}); --strict refuses "
              "damaged files", file=sys.stderr)
    if not args.quiet:
        pix_fmt = args.pix_fmt or ("yuv420p" if header.bit_depth == 8 else "yuv420p10le")
        what = {"y4m": f"y4m {pix_fmt}", "mp4": "H.264 MP4 for viewing", "dir": "PNG frames", "png": "PNG"}[kind]
        name = "standard output" if args.output == STDIO else destination
        print(f"{name}: {_count_frames(frames)} {header.width}x{header.height} ({what}) from a {header.mode} "
              f"file; {time.time() - start:.1f} s", file=sys.stderr)


def _count_frames(count: int) -> str:
    return f"{count} frame{'s' * (count != 1)}"


def _ranges(indices: set[int]) -> str:
    """0-based frame indices as 1-based ranges: ``{2, 6, 7, 8}`` is ``"3, 7-9"``."""
    runs: list[list[int]] = []
    for n in sorted(i + 1 for i in indices):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _info(args: argparse.Namespace) -> None:
    from dualcodec.container import ContainerReader, played_seconds
    from dualcodec.yuv import MATRIX_NAMES

    reader = ContainerReader(args.input)
    sizes = reader.sizes()
    h = reader.header
    known_times = reader.times is not None and None not in reader.times
    seconds = float(played_seconds(sizes.frames, reader.rate, reader.time_base, reader.times if known_times else None))
    model = {"name": h.model_name, "fingerprint": h.model_fingerprint} if h.mode == "dual" else None
    primaries, transfer = reader.signal.names(h.matrix)
    aspect = reader.signal.aspect or Fraction(1)  # the base layer's, so the full-size frames' too
    report = {
        "file": str(args.input),
        "frames": sizes.frames,
        "rate": str(reader.rate),  # frames per second, the average where it varies
        "rate_varies": reader.times is not None,
        "seconds": seconds,
        "width": h.width,
        "height": h.height,
        "base_width": h.base_width,
        "base_height": h.base_height,
        "scale": h.scale,
        "primaries": primaries,
        "transfer": transfer,
        "sample_aspect_ratio": f"{aspect.numerator}:{aspect.denominator}",  # as ffprobe writes it
        "rotation": reader.orientation.rotation,
        "mirrored": reader.orientation.mirrored,
        "mode": h.mode,
        "codec": h.codec,
        "model": model,
        "bytes": {"total": sizes.file_bytes, "base": sizes.base_bytes, "side": sizes.side_bytes,
                  "other": sizes.other_bytes},
        "bpp": 8 * sizes.file_bytes / max(1, sizes.frames * h.width * h.height),
        "kbps": 8 * sizes.file_bytes / seconds / 1000 if seconds else None,  # the whole file's
        "header": reader.header_dict(),  # null: a plain video, no dualcodec header
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    kind = f"dualcodec v{report['header']['version']}" if reader.has_header else "no dualcodec header"
    print(f"{args.input}: {kind}, mode {h.mode}, scale {h.scale}x")
    varies = ", varying" if report["rate_varies"] else ""
    print(f"  frames {sizes.frames} at {float(reader.rate):.4g} fps{varies} ({seconds:.2f} s), {h.width}x{h.height} "
          f"from a {h.codec} base layer "
          f"{h.base_width}x{h.base_height} (4:2:0 {h.bit_depth}-bit, range {'pc' if h.full_range else 'tv'}, "
          f"matrix {MATRIX_NAMES[h.matrix]}, primaries {primaries}, transfer {transfer})")
    if reader.signal.aspect:
        print(f"  sample aspect ratio {report['sample_aspect_ratio']} (each sample shown {float(aspect):.3g} times as "
              "wide as tall)")
    if reader.orientation:
        print(f"  shown {reader.orientation} (display matrix)")
    if model:
        print(f"  model {model['name']} (fingerprint {model['fingerprint']})")
    print(f"  bytes {sizes.file_bytes}: base {sizes.base_bytes}, side {sizes.side_bytes}, other {sizes.other_bytes}"
          f" ({report['bpp']:.4f} bpp" + (f", {report['kbps']:.1f} kb/s)" if seconds else ")"))


def _eval(args: argparse.Namespace) -> None:
    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.auto import AutoCodec
    from dualcodec.codec import make_codec
    from dualcodec.evaluate import resumable_points, results_json, sweep, write_results
    from dualcodec.metrics import lpips_backbone_path
    from dualcodec.model import load_model
    from dualcodec.outputs import check_output_file, refuse_stdin
    from dualcodec.sidestream import MSE_WEIGHT
    from dualcodec.video import check_inputs

    check_output_file(args.output, args.inputs, [".json"], overwrite=args.overwrite or args.resume)
    _check_frames(args.frames)
    _check_start(args.start)
    refuse_stdin(args.inputs, "eval reads each input twice (to code it, then to measure it)")
    depths = check_inputs(args.inputs)
    bit_depth = PIX_FMT_DEPTHS.get(args.pix_fmt)
    depths = depths if bit_depth is None else {bit_depth}
    lpips_backbone_path()  # fail before the sweep, not after it
    qps = sorted(set(args.qp))
    settings_at = {qp: BaseCodecSettings(codec=args.codec, qp=qp, preset=args.preset, gop=args.gop) for qp in qps}
    for settings in settings_at.values():  # x264's top QP is 51 at 8 bits, 63 at 10
        for depth in depths:
            dataclasses.replace(settings, bit_depth=depth).check_quantiser()
    current: dict[int, object] = {}

    def codec_at(qp: int):
        """The codec of one QP, one at a time: the sweep goes QP by QP, and a codec's runtimes
        hold working memory for the frame sizes it coded."""
        if qp not in current:
            current.clear()
            current[qp] = make_codec(settings_at[qp], args.baseline, args.model, args.scale, runtime=args.runtime,
                                     threads=args.threads, side_weight=args.side_weight, side_new=args.side_new)
        return current[qp]

    first = codec_at(qps[0])
    mode = "auto" if isinstance(first, AutoCodec) else first.layers.mode
    model_path = first.model_path
    del first  # held only by codec_at from here
    method = ({"bicubic": "bicubic", "plain": "plain"}.get(mode)
              or f"dualcodec {args.model}" + (" auto" if mode == "auto" else ""))
    name = args.name or f"{method} {args.codec}"
    sources = [str(p) for p in args.inputs]
    fingerprint = (None if mode in ("bicubic", "plain") else  # the family's model for auto, else the one coding
                   load_model(args.model if mode == "auto" else str(model_path)).fingerprint)
    settings = {"codec": args.codec, "qps": qps, "preset": args.preset, "gop": args.gop, "scale": args.scale,
                "model": None if args.baseline else args.model, "model_fingerprint": fingerprint,
                "baseline": args.baseline, "frames": args.frames, "inputs": sources, "runtime": args.runtime,
                "side_weight": None if args.baseline else args.side_weight,
                "side_new": None if args.baseline else args.side_new,
                "side_rule": None if args.baseline else f"mse x{MSE_WEIGHT:g}",
                **({"start": args.start} if args.start else {}),  # files of sweeps from frame 0 stay resumable
                **({"pix_fmt": args.pix_fmt} if args.pix_fmt else {})}
    done = resumable_points(args.output, settings) if args.resume and args.output.exists() else []
    description = f"dualcodec eval: real files, whole-file rate; {method}, {args.codec} base"

    def save(points):
        write_results(args.output, results_json(points, name, description, settings, sources, qps))

    points = sweep(args.inputs, codec_at, qps, args.frames, progress=not args.quiet, desc=name,
                   done=done, on_point=save, runtime=args.runtime, threads=args.threads, start=args.start,
                   bit_depth=bit_depth)
    data = results_json(points, name, description, settings, sources, qps)
    write_results(args.output, data)
    if not args.quiet:
        results = data["results"]
        for i, qp in enumerate(qps):
            print(f"QP {qp}: {results['bpp'][i]:.4f} bpp, PSNR-YUV {results['psnr-yuv'][i]:.2f} dB, "
                  f"VMAF {results['vmaf'][i]:.2f}, RGB {results['psnr-rgb'][i]:.2f} dB, "
                  f"LPIPS {results['lpips'][i]:.4f}", file=sys.stderr)
        kept = f" ({len(done)} points from the earlier run)" if done else ""
        print(f"wrote {args.output}{kept}", file=sys.stderr)


def _frames(args: argparse.Namespace) -> None:
    from dualcodec.data import write_frames
    from dualcodec.outputs import check_output_folder, new_folder, refuse_stdin
    from dualcodec.video import VideoReader

    _check_frames(args.frames)
    for option in ("every", "downscale"):
        if getattr(args, option) < 1:
            raise DualcodecError(f"--{option} must be at least 1, got {getattr(args, option)}")
    refuse_stdin(args.inputs, "frames names each folder after its video file")
    names = [video.stem for video in args.inputs]
    for video in args.inputs:
        if names.count(video.stem) > 1:
            raise DualcodecError(f"two inputs would share the frame folder {args.output / video.stem}")
    for video in args.inputs:
        check_output_folder(args.output / video.stem, args.inputs, make_parents=True)
    for video in args.inputs:  # every input opens, and is large enough, before the first is decoded
        info = VideoReader(video).info
        if min(info.width, info.height) < args.downscale:
            raise DualcodecError(f"--downscale {args.downscale} leaves no pixel of {video} ({info.width}x{info.height})")
    with new_folder(args.output):
        for video in args.inputs:
            written = write_frames(video, args.output / video.stem, args.frames, every=args.every,
                                   downscale=args.downscale)
            if not args.quiet:
                print(f"{args.output / video.stem}: {_count_frames(written.count)} {written.width}x{written.height}",
                      file=sys.stderr)


def _train(args: argparse.Namespace) -> None:
    from dualcodec.config import load_experiment
    from dualcodec.train import train

    experiment = load_experiment(args.config, args.set)
    result = train(experiment, args.config, progress=not args.quiet, resume=args.resume)
    if result.model_path.exists() and os.environ.get("RANK", "0") == "0":
        print(f"{result.steps} steps{' (early stop)' if result.early_stop else ''}, best validation loss "
              f"{result.best_loss:.5f}; model written to {result.model_path}", file=sys.stderr)


def _pairs(args: argparse.Namespace) -> None:
    from dualcodec.basecodec import MAX_QP
    from dualcodec.config import load_experiment
    from dualcodec.data import split_sources
    from dualcodec.pairs import DEFAULT_QPS, write_pairs

    exp = load_experiment(args.config, args.set)
    qps = sorted(set(args.qp or DEFAULT_QPS))
    bad = [qp for qp in qps if not 0 <= qp <= MAX_QP[exp.base.codec]]
    if bad:
        raise DualcodecError(f"--qp must be within 0..{MAX_QP[exp.base.codec]} for {exp.base.codec}, got {bad}")
    train_files, _ = split_sources(exp.data.train_dirs, exp.data.val_fraction, exp.data.val_gap)
    count = write_pairs(train_files, args.output, exp.model.scale, exp.base.codec, exp.base.preset, qps,
                        progress=not args.quiet)
    if not args.quiet:
        print(f"{args.output}: {count} pictures at QP {' '.join(map(str, qps))}, scale "
              f"{exp.model.scale}, {exp.base.codec}", file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    from dualcodec.export import export_int8
    from dualcodec.model import load_model

    for folder in args.calibration:
        if not folder.is_dir():
            raise DualcodecError(f"calibration folder not found: {folder}")
    loaded = load_model(args.model)
    start = time.time()
    folder = export_int8(loaded, args.calibration, args.images, tuple(args.qp), progress=not args.quiet)
    if not args.quiet:
        print(f"{folder}: int8 graphs of {loaded.name} ({loaded.fingerprint}); {time.time() - start:.0f} s",
              file=sys.stderr)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so that every ``finally`` (temporary
    outputs, the decoder's writer thread) runs as it does on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a second signal must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    raise _Terminated(signum)


def _quiet_stdout() -> None:
    """The reader of stdout went away (``| head``): drop what is still buffered, unprinted."""
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    import warnings

    # compressai scripts its entropy coder helpers with torch.jit, which torch now flags.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
    args = _parser().parse_args(argv)
    handlers = {"encode": _encode, "decode": _decode, "info": _info, "eval": _eval, "frames": _frames, "pairs": _pairs,
                "train": _train, "export": _export}
    signals = (signal.SIGTERM, signal.SIGHUP)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = [signal.signal(sig, _raise_terminated) for sig in signals] if in_main_thread else []
    try:
        handlers[args.command](args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
    except DualcodecError as exc:
        print(f"dualcodec: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dualcodec: interrupted", file=sys.stderr)
        return 130
    except _Terminated as exc:
        print(f"dualcodec: terminated by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    finally:
        for sig, handler in zip(signals, previous):
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
