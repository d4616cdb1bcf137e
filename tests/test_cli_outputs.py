"""The command line never loses a user's data: refused outputs touch nothing, errors are one
line, signals and closed pipes leave no litter and no traceback.

Every test snapshots the folders the user owns (every file's bytes) before a command and
compares after it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualcodec.cli import EPILOG
from helpers import assert_one_line_error, make_av_clip, run, synthetic_frames, synthetic_rgb, write_png, write_y4m

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "dualcodec.cli"]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``: a file's bytes, or None for a folder."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


@pytest.fixture()
def home(tmp_path) -> Path:
    """A user's folder: a photo, notes, a subfolder, and a short bicubic dualcodec file."""
    folder = tmp_path / "home"
    (folder / "sub").mkdir(parents=True)
    write_png(folder / "photo.png", synthetic_rgb(16, 12, 1, seed=5)[0])
    (folder / "notes.txt").write_text("do not lose me\n")
    (folder / "sub" / "deep.txt").write_text("nor me\n")
    return folder


@pytest.fixture()
def coded(home, bicubic_file) -> Path:
    path = home / "x.mp4"
    shutil.copy(bicubic_file.path, path)
    return path


def refused(capsys, folder: Path, *argv, message: str) -> None:
    """``dualcodec ARGV`` fails with a one-line error containing ``message`` and leaves
    ``folder`` exactly as it was."""
    before = snapshot(folder)
    code, _, err = run(capsys, *argv)
    assert message in assert_one_line_error(code, err)
    assert snapshot(folder) == before


# -- decode into folders -----------------------------------------------------------------


def test_decode_into_a_folder_with_files_is_refused(capsys, home, coded):
    refused(capsys, home, "decode", coded, "-o", f"{home}/", "-q", message="holds the input")
    other = home / "sub"
    refused(capsys, home, "decode", coded, "-o", f"{other}/", "-q", message="is not empty")


@pytest.mark.parametrize("target", [".", "./", ".."])
def test_decode_into_the_current_folder_touches_nothing(capsys, home, coded, monkeypatch, target):
    monkeypatch.chdir(home)
    refused(capsys, home.parent, "decode", "x.mp4", "-o", target, "-q", message="refusing to write frames into")


def test_decode_into_the_home_folder_is_refused(capsys, home, coded, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    refused(capsys, home, "decode", coded, "-o", f"{Path('~').expanduser()}/", "-q", message="the home folder")


def test_decode_dot_in_a_subprocess_with_sentinels(home, coded):
    """The reported case as a user runs it: the installed command, inside the folder."""
    before = snapshot(home)
    result = subprocess.run([*CLI, "decode", "x.mp4", "-o", ".", "-q"], cwd=home, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("dualcodec: error: ")
    assert snapshot(home) == before


def test_decode_to_stdout_is_y4m_not_a_folder(home, coded):
    before = snapshot(home)
    piped = subprocess.run([*CLI, "decode", "x.mp4", "-o", "-", "-q"], cwd=home, capture_output=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert snapshot(home) == before  # no folder named "-", nothing else
    filed = subprocess.run([*CLI, "decode", "x.mp4", "-o", str(home.parent / "x.y4m"), "-q"], cwd=home,
                           capture_output=True, timeout=120)
    assert filed.returncode == 0, filed.stderr
    assert piped.stdout == (home.parent / "x.y4m").read_bytes()


# -- frames ------------------------------------------------------------------------------


def test_frames_never_replaces_a_folder_with_files(capsys, home, tmp_path):
    clip = make_av_clip(tmp_path / "clip.mp4", frames=3)
    out = home / "frames"
    (out / "clip").mkdir(parents=True)
    (out / "clip" / "mine.txt").write_text("mine")
    refused(capsys, home, "frames", clip, "-o", out, "-q", message="is not empty")
    (out / "clip" / "mine.txt").unlink()  # an empty folder is fine, and the rest of DIR stays
    before = snapshot(home)
    code, _, err = run(capsys, "frames", clip, "-o", out, "-q")
    assert code == 0, err
    after = snapshot(home)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == [f"frames/clip/frame_00000{i}.png" for i in (1, 2, 3)]


def test_frames_checks_every_input_before_writing(capsys, home, tmp_path):
    good = make_av_clip(tmp_path / "good.mp4", frames=2)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    refused(capsys, home, "frames", good, bad, "-o", home / "frames", "-q", message="bad.mp4")
    assert not (home / "frames").exists()  # not even the folder


# -- files: ffmpeg's -y ------------------------------------------------------------------


def test_existing_output_needs_y(capsys, home, coded, clip):
    out = home / "notes.txt"
    refused(capsys, home, "decode", coded, "-o", home / "notes.txt", "-q", message="unsupported output")
    refused(capsys, home, "decode", coded, "-o", home / "photo.png", "--frames", "1", "-q",
            message="already exists; pass -y")
    (home / "old.y4m").write_bytes(b"an earlier decode")
    refused(capsys, home, "decode", coded, "-o", home / "old.y4m", "-q", message="already exists; pass -y")
    (home / "old.mp4").write_bytes(b"an earlier encode")
    refused(capsys, home, "encode", clip.path, "-o", home / "old.mp4", "--baseline", "bicubic", "-q",
            message="already exists; pass -y")
    before = snapshot(home)
    code, _, err = run(capsys, "decode", coded, "-o", home / "old.y4m", "-y", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "encode", clip.path, "-o", home / "old.mp4", "--baseline", "bicubic", "--overwrite",
                       "-q")
    assert code == 0, err
    after = snapshot(home)
    assert sorted(k for k in after if after[k] != before.get(k)) == ["old.mp4", "old.y4m"]
    assert out.read_text() == "do not lose me\n"


@pytest.mark.parametrize("overwrite", [[], ["-y"]])
def test_output_equal_to_input_is_always_refused(capsys, home, coded, monkeypatch, overwrite):
    monkeypatch.chdir(home)
    refused(capsys, home, "encode", "x.mp4", "-o", "x.mp4", "--baseline", "bicubic", "-q", *overwrite,
            message="is the input")
    refused(capsys, home, "decode", "x.mp4", "-o", "./x.mp4", "-q", *overwrite, message="is the input")
    refused(capsys, home, "eval", "x.mp4", "-o", "x.mp4", "--baseline", "none", "-q", *overwrite,
            message="output must be a .json file")


@pytest.mark.parametrize("command", ["encode", "eval"])
def test_stdout_is_y4m_only(capsys, home, coded, command):
    refused(capsys, home, command, coded, "-o", "-", "--baseline", "bicubic", "-q",
            message="standard output takes y4m only")


def test_stdin_is_refused_where_a_pipe_cannot_serve(capsys, home, coded):
    refused(capsys, home, "eval", "-", "-o", home / "r.json", "--baseline", "bicubic", "-q",
            message="eval reads each input twice")
    refused(capsys, home, "frames", "-", "-o", home / "frames", "-q", message="frames names each folder")
    refused(capsys, home, "decode", "-", "-o", home / "x.y4m", "-q", message="an MP4 cannot be read from a pipe")
    refused(capsys, home, "info", "-", message="an MP4 cannot be read from a pipe")


def _pyav_y4m(path: Path, frames: int = 4) -> Path:
    """A 4:2:0 y4m written by PyAV's own yuv4mpegpipe muxer (not dualcodec's writer)."""
    import av

    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i, rgb in enumerate(synthetic_rgb(48, 32, frames, seed=9)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("method", ["bicubic", "auto"])
def test_encode_reads_y4m_from_stdin(home, tmp_path, tiny_model, method):
    # --scale auto reads its input once per candidate: it keeps a copy of the pipe.
    source = _pyav_y4m(tmp_path / "src.y4m")
    options = ["--baseline", "bicubic"] if method == "bicubic" else ["--model", str(tiny_model.path), "--scale", "auto"]
    piped = subprocess.run([*CLI, "encode", "-", "-o", "piped.mp4", *options, "-q"], cwd=home,
                           stdin=source.open("rb"), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    filed = subprocess.run([*CLI, "encode", str(source), "-o", "filed.mp4", *options, "-q"],
                           cwd=home, capture_output=True, text=True, timeout=120)
    assert filed.returncode == 0, filed.stderr
    assert (home / "piped.mp4").read_bytes() == (home / "filed.mp4").read_bytes()
    assert not list(home.glob(".dualcodec-auto-*"))  # the copy and the candidates are gone


def test_encode_from_a_pipe_that_is_not_y4m_says_how_to_pipe(home, tmp_path):
    source = make_av_clip(tmp_path / "clip.mp4", frames=2)  # cat clip.mp4 | dualcodec encode -
    before = snapshot(home)
    piped = subprocess.run([*CLI, "encode", "-", "-o", "piped.mp4", "-q"], cwd=home, stdin=source.open("rb"),
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 1 and len(piped.stderr.splitlines()) == 1
    assert "standard input is not y4m" in piped.stderr and "-f yuv4mpegpipe -" in piped.stderr
    assert snapshot(home) == before


def test_encode_from_a_start_frame_reads_a_pipe_as_it_reads_the_file(home, tmp_path, tiny_model):
    # --scale auto keeps a copy of the pipe from the start frame on, which its trials read from 0.
    source = _pyav_y4m(tmp_path / "src.y4m")
    options = ["--model", str(tiny_model.path), "--scale", "auto", "--start", "2", "--frames", "2", "-q"]
    piped = subprocess.run([*CLI, "encode", "-", "-o", "piped.mp4", *options], cwd=home,
                           stdin=source.open("rb"), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    filed = subprocess.run([*CLI, "encode", str(source), "-o", "filed.mp4", *options],
                           cwd=home, capture_output=True, text=True, timeout=120)
    assert filed.returncode == 0, filed.stderr
    assert (home / "piped.mp4").read_bytes() == (home / "filed.mp4").read_bytes()
    import av

    with av.open(str(home / "filed.mp4")) as inp:
        assert inp.streams.video[0].frames == 2


@pytest.mark.parametrize("start, message", [
    ("-1", "--start must be 0 or more (a frame number, from 0), got -1"),
    ("4", "src.y4m has 4 frames: --start 4 is past its end (frames count from 0)"),
])
def test_a_start_frame_outside_the_input_is_a_one_line_error(home, tmp_path, start, message):
    source = _pyav_y4m(tmp_path / "src.y4m")
    argv = [*CLI, "encode", str(source), "-o", "out.mp4", "--baseline", "bicubic", "--start", start, "-q"]
    result = subprocess.run(argv, cwd=home, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.endswith(message + "\n") and result.stderr.count("\n") == 1
    assert not (home / "out.mp4").exists() and not list(home.glob(".*"))


def test_garbage_on_stdin_is_a_one_line_error(home):
    result = subprocess.run([*CLI, "encode", "-", "-o", "out.mp4", "--baseline", "bicubic", "-q"], cwd=home,
                            input=b"not a y4m stream\n" * 10, capture_output=True, timeout=120)
    assert result.returncode == 1 and result.stderr.decode().startswith("dualcodec: error: ")
    assert result.stderr.decode().count("\n") == 1 and not (home / "out.mp4").exists()


# -- options checked before any frame ------------------------------------------------------


@pytest.mark.parametrize(
    "codec, preset, message",
    [("h264", "foo", "unknown h264 preset 'foo'"), ("hevc", "quick", "unknown hevc preset 'quick'"),
     ("av1", "slow", "unknown av1 preset 'slow'"), ("av1", "14", "refuses preset '14'")],
)
def test_invalid_presets_are_one_line_errors(capsys, home, clip, codec, preset, message):
    refused(capsys, home, "encode", clip.path, "-o", home / "out.mp4", "--codec", codec, "--preset", preset,
            "--baseline", "bicubic", "-q", message=message)
    refused(capsys, home, "eval", clip.path, "-o", home / "r.json", "--codec", codec, "--preset", preset,
            "--baseline", "bicubic", "-q", message=message)


def test_valid_presets_pass(capsys, home, clip):
    for codec, preset in (("h264", "veryfast"), ("hevc", "ultrafast"), ("av1", "12")):
        code, _, err = run(capsys, "encode", clip.path, "-o", home / f"{codec}.mp4", "--codec", codec, "--preset",
                           preset, "--baseline", "none", "-q")
        assert code == 0, err


def test_binary_experiment_file_is_a_one_line_error(capsys, home):
    (home / "model.toml").write_bytes(bytes(range(256)))
    refused(capsys, home, "train", home / "model.toml", "-q", message="not UTF-8 text")
    refused(capsys, home, "train", home / "sub", "-q", message="cannot read experiment file")


def test_train_refuses_a_run_folder_that_holds_files(home):
    (home / "runs" / "smoke").mkdir(parents=True)
    (home / "runs" / "smoke" / "keep.txt").write_text("results of another day")
    before = snapshot(home)
    # In a process of its own: training sets the launcher's environment (RANK, MASTER_PORT).
    result = subprocess.run([*CLI, "train", str(ROOT / "experiments" / "smoke.toml"), "--set",
                             f"train.out_dir='{home / 'runs'}'", "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "already holds files; pass --resume" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("dualcodec: error: ")
    assert snapshot(home) == before


# -- eval: checked first, saved as it goes, resumable --------------------------------------


@pytest.fixture()
def stills(tmp_path) -> list[Path]:
    return [write_png(tmp_path / f"s{i}.png", synthetic_rgb(48, 32, 1, seed=i)[0]) for i in range(3)]


def test_eval_checks_outputs_and_inputs_before_the_sweep(capsys, home, stills, tmp_path, monkeypatch):
    def no_point(*args, **kwargs):
        raise AssertionError("a point was measured before the checks")

    monkeypatch.setattr("dualcodec.evaluate.measure", no_point)
    refused(capsys, home, "eval", *stills, "--baseline", "none", "-o", home / "missing" / "r.json", "-q",
            message="output folder does not exist")
    bad = tmp_path / "unreadable.png"
    bad.write_bytes(b"\x89PNG garbage")
    refused(capsys, home, "eval", stills[0], bad, stills[1], "--baseline", "none", "-o", home / "r.json", "-q",
            message="unreadable.png")
    (home / "r.json").write_text("{}")
    refused(capsys, home, "eval", *stills, "--baseline", "none", "-o", home / "r.json", "-q",
            message="already exists; pass -y")


def test_a_failed_sweep_keeps_its_points_and_resumes(capsys, home, stills, tmp_path):
    # A file that opens (its index is intact) but fails to decode part way.
    whole = make_av_clip(tmp_path / "whole.mp4", frames=20, faststart=True)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = home / "r.json"
    argv = ["eval", stills[0], clip, stills[1], "--baseline", "none", "--qp", "40", "30", "-o", out, "-q"]
    code, _, err = run(capsys, *argv)
    line = assert_one_line_error(code, err)
    assert "clip.mp4 at QP 30" in line
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and saved["results"]["qp"] == []  # no QP has every input yet
    assert [(Path(i["source"]).name, len(i["points"])) for i in saved["inputs"]] == [("s0.png", 1)]
    kept = saved["inputs"][0]["points"][0]

    refused(capsys, home, *argv[:-1], "--qp", "40", "--resume", message="it was measured with other qps")
    shutil.copy(whole, clip)  # the user mends the input; the sweep goes on where it stopped
    code, _, err = run(capsys, *argv, "--resume")
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["results"]["qp"] == [30, 40]
    points = {(Path(i["source"]).name, p["qp"]): p for i in data["inputs"] for p in i["points"]}
    assert len(points) == 6
    assert points[("s0.png", 30)] == kept  # measured once, not again (its timings would differ)


# -- signals and pipes ------------------------------------------------------------------------


# Runs ``dualcodec ARGV`` with one function of dualcodec.codec wrapped to stop, on its
# 10th call, in the middle of the work: it touches MARKER and sleeps, so the signal
# from the test lands mid-encode or mid-decode however slowly the test itself runs.
STALL = """
import sys, time, warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # as main() does
import dualcodec.codec as codec
from dualcodec.cli import main

owner_name, attribute, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
owner = getattr(codec, owner_name)
original = getattr(owner, attribute)
calls = []

def stalled(*args, **kwargs):
    calls.append(1)
    if len(calls) == 10:
        marker.touch()
        time.sleep(120)
    return original(*args, **kwargs)

setattr(owner, attribute, stalled)
sys.exit(main(sys.argv[4:]))
"""


def _signal_mid_work(argv: list[str], cwd: Path, stall: tuple[str, str], partial: str, sig: int,
                     marker: Path) -> subprocess.CompletedProcess:
    """Run ``dualcodec ARGV`` in ``cwd``, stopped mid-work at ``stall`` (class, method), and
    send ``sig`` while a temporary output matching ``partial`` exists."""
    cmd = [sys.executable, "-c", STALL, *stall, str(marker), *argv]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, f"ended before the work was half done: {proc.communicate()}"
            assert time.time() < deadline, "the work never reached its 10th frame"
            time.sleep(0.01)
        assert list(cwd.glob(partial)), f"no temporary output: {sorted(cwd.iterdir())}"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    """30 frames of 64x48 and their dual-mode encoding (--scale 2: the learned layers, whatever
    they cost)."""
    folder = tmp_path_factory.mktemp("long")
    source = write_y4m(folder / "long.y4m", synthetic_frames(64, 48, 30, seed=7))
    coded = folder / "long.mp4"
    code = subprocess.run([*CLI, "encode", source, "-o", coded, "--model", tiny_model.path, "--scale", "2", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stderr
    return source, coded


@pytest.mark.slow
@pytest.mark.parametrize("scale, partial", [("2", ".out.mp4.*"), ("auto", ".dualcodec-auto-*")])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_encode_leaves_nothing(home, long_clip, tiny_model, tmp_path, sig, scale, partial):
    # --scale auto codes its candidates in a temporary folder beside the output: the model's
    # is stopped, after the plain codec's was written.
    source, _ = long_clip
    before = snapshot(home)
    result = _signal_mid_work(["encode", str(source), "-o", "out.mp4", "--model", str(tiny_model.path), "--scale",
                               scale, "-q"], home, ("ModelLayers", "_choose"), partial, sig, tmp_path / "marker")
    assert result.returncode == 128 + sig, result.stderr
    assert result.stderr.strip() == f"dualcodec: terminated by {signal.Signals(sig).name}"
    assert snapshot(home) == before


@pytest.mark.slow
@pytest.mark.parametrize("target, partial", [("frames/", ".frames.*"), ("out.y4m", ".out.y4m.*")])
def test_sigterm_mid_decode_leaves_nothing(home, long_clip, tiny_model, tmp_path, target, partial):
    _, coded = long_clip
    (home / "out.y4m").write_bytes(b"an earlier decode")  # kept as it was, -y or not
    before = snapshot(home)
    result = _signal_mid_work(["decode", str(coded), "-o", target, "-y", "--model", str(tiny_model.path), "-q"],
                              home, ("ModelLayers", "up"), partial, signal.SIGTERM, tmp_path / "marker")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.strip() == "dualcodec: terminated by SIGTERM"
    assert snapshot(home) == before


@pytest.mark.parametrize("command", [["info", "x.mp4", "--json"], ["decode", "x.mp4", "-o", "-", "-q"]])
def test_closed_stdout_ends_quietly(home, coded, command):
    before = snapshot(home)
    proc = subprocess.Popen([*CLI, *command], cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `| head` does once it has its lines
    err = proc.communicate(timeout=120)[1].decode()
    assert err == "" and proc.returncode == 128 + signal.SIGPIPE
    assert snapshot(home) == before


# -- the examples we print ----------------------------------------------------------------


def _examples(text: str) -> list[list[str]]:
    return [line.split("#")[0].split() for line in text.splitlines()
            if re.match(r"\s*(\.venv/bin/)?dualcodec (encode|decode|frames|eval) ", line)]


@pytest.mark.parametrize("source", ["--help", "README.md"])
def test_examples_never_overwrite_their_inputs_or_each_other(source):
    text = EPILOG if source == "--help" else (ROOT / "README.md").read_text()
    examples = _examples(text)
    assert len(examples) >= 5
    written: list[str] = []
    for words in examples:
        output = words[words.index("-o") + 1]
        inputs = [w for w in words[2 : words.index("-o")] if not w.startswith("-")]
        assert output not in inputs, " ".join(words)
        if "--resume" not in words:  # continuing an earlier example's output is the point
            assert output not in written, f"{' '.join(words)} overwrites an earlier example's output"
        written.append(output)
