"""Fuzz `dualcodec decode` with damaged copies of a real dualcodec file (issue 9, item 6).

Mutants: truncations at many points, single bit flips and random byte bursts, aimed at
each region of the file: the header (the ``dualcodec`` metadata JSON), base-layer
packets, side-stream packets, the MP4 index (``moov`` outside the header) and the rest.
Each mutant is decoded in this process through the command line's ``main`` and must end
in one of two ways, within a time limit:

* exit 0, the output file and nothing else in the output folder, and on stderr nothing
  or one ``dualcodec: warning:`` line (the damaged frames, concealed);
* exit 1, an empty output folder, and on stderr exactly one ``dualcodec: error:`` line.

Anything else (an exception escaping ``main``, a hang, a partial or stray output, more
than one line) is a failure. tests/test_fuzz.py runs a small sample; the full run:

    python experiments/fuzz_decode.py --mutants 500          # prints a JSON summary
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import signal
import sys
import tempfile
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGIONS = ("header", "base", "side", "index", "other")
KINDS = ("truncate", "flip", "burst")
TIME_LIMIT_S = 60


@dataclass
class Outcome:
    mutant: str  # e.g. "flip side @1234"
    verdict: str  # "decoded", "refused" or "FAILED: why"
    stderr: str


@dataclass
class Report:
    mutants: int = 0
    decoded: int = 0
    refused: int = 0
    failures: list[Outcome] = field(default_factory=list)
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)


def regions(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Byte spans ``(start, end)`` of each region of a dualcodec MP4."""
    import av

    data = path.read_bytes()
    spans: dict[str, list[tuple[int, int]]] = {name: [] for name in REGIONS}
    with av.open(str(path)) as inp:
        for packet in inp.demux():
            if packet.size and packet.pos is not None and packet.pos >= 0:
                kind = "base" if packet.stream.type == "video" else "side" if packet.stream.type == "data" else "other"
                spans[kind].append((packet.pos, packet.pos + packet.size))
    start = data.find(b'{"base_height"')
    if start >= 0:
        spans["header"].append((start, data.index(b"}", data.index(b'"width"', start)) + 1))
    pos = 0
    while pos + 8 <= len(data):  # top-level boxes: moov (less the header) is the index
        size, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        size = size or len(data) - pos
        if kind == b"moov":
            header = spans["header"][0] if spans["header"] else (pos, pos)
            spans["index"] += [(pos, header[0]), (header[1], pos + size)]
        pos += max(size, 8)
    return {k: [s for s in v if s[1] > s[0]] for k, v in spans.items()}


def mutants(path: Path, count: int, seed: int):
    """``count`` (name, bytes) pairs: kinds and regions in turn, positions at random."""
    rng = random.Random(seed)
    data = path.read_bytes()
    spans = regions(path)
    targets = [r for r in REGIONS if spans[r]]
    for i in range(count):
        kind, region = KINDS[i % len(KINDS)], targets[(i // len(KINDS)) % len(targets)]
        start, end = rng.choice(spans[region])
        at = rng.randrange(start, end)
        mutant = bytearray(data)
        if kind == "truncate":
            del mutant[at:]
        elif kind == "flip":
            mutant[at] ^= 1 << rng.randrange(8)
        else:
            length = min(rng.randint(2, 64), len(mutant) - at)
            mutant[at : at + length] = bytes(rng.randrange(256) for _ in range(length))
        yield f"{kind} {region} @{at}", bytes(mutant)


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang


def decode_one(name: str, data: bytes, model: Path, work: Path) -> Outcome:
    """Decode one mutant in this process and judge how it ended."""
    from dualcodec.cli import main

    source = work / "mutant.mp4"
    source.write_bytes(data)
    out = work / "out"
    out.mkdir()
    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        with contextlib.redirect_stderr(err):
            code = main(["decode", str(source), "-o", str(out / "x.y4m"), "--model", str(model), "-q"])
        verdict = None
    except _Hang:
        code, verdict = None, f"FAILED: no end after {TIME_LIMIT_S} s"
    except BaseException:  # anything that escapes main is a traceback for the user
        code, verdict = None, "FAILED: " + traceback.format_exc().strip().splitlines()[-1]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    lines = err.getvalue().strip().splitlines()
    left = sorted(p.name for p in out.iterdir())
    if verdict is None:
        if code == 0 and left == ["x.y4m"] and (not lines or (len(lines) == 1 and lines[0].startswith(
                "dualcodec: warning: "))):
            verdict = "decoded"
        elif code == 1 and not left and len(lines) == 1 and lines[0].startswith("dualcodec: error: "):
            verdict = "refused"
        else:
            verdict = f"FAILED: exit {code}, left {left}, {len(lines)} stderr lines"
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    return Outcome(name, verdict, err.getvalue())


def fuzz(path: Path, model: Path, count: int, seed: int = 0) -> Report:
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in mutants(path, count, seed):
            outcome = decode_one(name, data, model, Path(tmp))
            report.mutants += 1
            kind = " ".join(name.split()[:2])
            tally = report.by_kind.setdefault(kind, {"decoded": 0, "refused": 0, "failed": 0})
            if outcome.verdict == "decoded":
                report.decoded += 1
                tally["decoded"] += 1
            elif outcome.verdict == "refused":
                report.refused += 1
                tally["refused"] += 1
            else:
                report.failures.append(outcome)
                tally["failed"] += 1
    return report


def make_victim(work: Path) -> tuple[Path, Path]:
    """A 12-frame dual file with side data in every frame (a NEW packet, every block
    enhanced), from a tiny model with random side weights (so the side stream carries
    bytes), and the model file."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch

    from helpers import build_tiny_model, new_latents_every_frame, synthetic_frames, write_y4m

    from dualcodec.basecodec import BaseCodecSettings
    from dualcodec.codec import LayeredCodec
    from dualcodec.model import load_model, save_model

    torch.set_num_threads(1)
    model, config = build_tiny_model(seed=3)
    model_path = work / "tiny.pt"
    save_model(model, config, "tiny", model_path, lmbda=0.02)
    source = write_y4m(work / "victim.y4m", synthetic_frames(64, 48, 12, seed=4))
    victim = work / "victim.mp4"
    layers = new_latents_every_frame(load_model(str(model_path)), level=30, keep=True)  # NEW key frames, KEEP the rest
    LayeredCodec(layers, BaseCodecSettings(codec="h264", qp=30, gop=4)).encode(source, victim)
    return victim, model_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        victim, model = make_victim(Path(tmp))
        report = fuzz(victim, model, args.mutants, args.seed)
    summary = asdict(report)
    summary["failures"] = [asdict(f) for f in report.failures[:20]]
    print(json.dumps(summary, indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
