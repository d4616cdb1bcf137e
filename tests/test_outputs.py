"""dualcodec.outputs: output checks before any work, atomic writes, nothing of the user's lost."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dualcodec.errors import DualcodecError
from dualcodec.outputs import atomic_path, check_output_file, check_output_folder, new_folder


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- files ------------------------------------------------------------------------------


def test_new_file_is_accepted(tmp_path):
    assert check_output_file(tmp_path / "out.mp4", [tmp_path / "in.y4m"], [".mp4"]) == tmp_path / "out.mp4"
    assert names(tmp_path) == []  # a check creates nothing


def test_existing_file_needs_overwrite(tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"mine")
    with pytest.raises(DualcodecError, match="already exists; pass -y"):
        check_output_file(out, [], [".mp4"])
    check_output_file(out, [], [".mp4"], overwrite=True)
    assert out.read_bytes() == b"mine"


@pytest.mark.parametrize("overwrite", [False, True])
def test_the_input_is_never_an_output(tmp_path, monkeypatch, overwrite):
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"source")
    link = tmp_path / "link.mp4"
    os.link(source, link)  # the same file under another name
    monkeypatch.chdir(tmp_path)
    for output in (source, Path("clip.mp4"), Path("./sub/../clip.mp4"), link):
        with pytest.raises(DualcodecError, match="is the input"):
            check_output_file(output, [source], [".mp4"], overwrite=overwrite)
    assert source.read_bytes() == b"source"


@pytest.mark.parametrize(
    "output, message",
    [("-", "standard output takes y4m only"), ("out.avi", "output must be a .mp4 file"),
     ("missing/out.mp4", "output folder does not exist"), ("folder.mp4", "is a folder")],
)
def test_bad_output_files(tmp_path, monkeypatch, output, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(DualcodecError, match=message):
        check_output_file(Path(output), [], [".mp4"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    with pytest.raises(DualcodecError, match="permission denied"):
        check_output_file(folder / "out.mp4", [], [".mp4"])


# -- folders ----------------------------------------------------------------------------


def test_new_and_empty_folders_are_accepted(tmp_path):
    check_output_folder(tmp_path / "new", [])
    (tmp_path / "empty").mkdir()
    check_output_folder(tmp_path / "empty", [])
    check_output_folder(tmp_path / "a" / "b" / "c", [], make_parents=True)
    assert names(tmp_path) == ["empty"]
    with pytest.raises(DualcodecError, match="output folder does not exist"):
        check_output_folder(tmp_path / "a" / "b" / "c", [])


def test_folder_with_files_is_refused(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DualcodecError, match="is not empty"):
        check_output_folder(folder, [])
    (tmp_path / "file").write_text("x")
    with pytest.raises(DualcodecError, match="is not a folder"):
        check_output_folder(tmp_path / "file", [])


@pytest.mark.parametrize("output", [".", "./", "..", "../..", "/"])
def test_current_and_parent_folders_are_refused(tmp_path, monkeypatch, output):
    work = tmp_path / "work"
    (work / "empty").mkdir(parents=True)
    monkeypatch.chdir(work / "empty")  # refused even when empty: it is where the user stands
    with pytest.raises(DualcodecError, match="refusing to write frames into"):
        check_output_folder(output, [])


def test_home_folder_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DualcodecError, match="the home folder"):
        check_output_folder(Path("~").expanduser(), [])


def test_folder_holding_the_input_is_refused(tmp_path):
    source = tmp_path / "videos" / "deep" / "clip.mp4"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"x")
    with pytest.raises(DualcodecError, match="holds the input"):
        check_output_folder(tmp_path / "videos", [source])


def test_stdout_is_not_a_folder():
    with pytest.raises(DualcodecError, match="frames go into a folder"):
        check_output_folder("-", [])


# -- atomic_path ------------------------------------------------------------------------


def test_atomic_path_success(tmp_path):
    final = tmp_path / "out.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final and ".partial" in tmp.name
        tmp.write_bytes(b"done")
        assert not final.exists()
    assert final.read_bytes() == b"done"
    assert names(tmp_path) == ["out.bin"]
    # Not the private mode mkstemp gives: an ordinary file for this umask.
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_path_failure_leaves_nothing(tmp_path):
    final = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert names(tmp_path) == []


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"new")
            raise KeyboardInterrupt
    assert final.read_bytes() == b"old" and names(tmp_path) == ["out.bin"]


def test_atomic_path_replaces_a_linked_file_through_the_link(tmp_path):
    target = tmp_path / "target.y4m"
    target.write_bytes(b"old")
    link = tmp_path / "link.y4m"
    link.symlink_to(target)
    with atomic_path(link) as tmp:
        tmp.write_bytes(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_atomic_path_folder_takes_a_missing_or_empty_place(tmp_path):
    for name in ("new", "empty"):
        final = tmp_path / name
        if name == "empty":
            final.mkdir()
        with atomic_path(final, is_dir=True) as tmp:
            assert tmp.is_dir()
            (tmp / "frame_000001.png").write_bytes(b"y")
        assert names(final) == ["frame_000001.png"]
    assert names(tmp_path) == ["empty", "new"]
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "other", is_dir=True):
            raise ValueError
    assert names(tmp_path) == ["empty", "new"]


def test_atomic_path_never_replaces_a_folder_that_holds_files(tmp_path):
    final = tmp_path / "frames"
    final.mkdir()
    (final / "photo.jpg").write_bytes(b"precious")
    with pytest.raises(DualcodecError, match="cannot write"):
        with atomic_path(final, is_dir=True) as tmp:
            (tmp / "frame_000001.png").write_bytes(b"y")
    assert names(final) == ["photo.jpg"] and (final / "photo.jpg").read_bytes() == b"precious"
    assert names(tmp_path) == ["frames"]


def test_atomic_path_missing_parent(tmp_path):
    with pytest.raises(DualcodecError, match="output folder does not exist"):
        with atomic_path(tmp_path / "nope" / "out.y4m"):
            pass


# -- new_folder -------------------------------------------------------------------------


def test_new_folder_removes_only_what_it_made_and_only_when_empty(tmp_path):
    with pytest.raises(RuntimeError):
        with new_folder(tmp_path / "a" / "b"):
            raise RuntimeError
    assert names(tmp_path) == []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError):
        with new_folder(tmp_path / "a" / "b") as folder:
            (folder / "written.png").write_bytes(b"frame")  # kept: a finished output
            raise RuntimeError
    assert names(tmp_path / "a") == ["b", "keep.txt"]
    with new_folder(tmp_path / "c") as folder:
        pass
    assert folder.is_dir()
