"""Where commands write: checked before any work, built beside, renamed into place.

The rules every command follows (ffmpeg's where ffmpeg has one):

* **Files.** An existing output file is replaced only when the user says so (``-y`` /
  ``--overwrite``, as in ffmpeg); an output that is one of the inputs is refused even then.
* **Folders** (PNG frames). A folder output is a new folder, or an existing empty one.
  An existing folder that holds anything, the current folder, a folder above it, the
  home folder and a folder that holds an input are refused: nothing is ever written
  into a user's folder or deleted from it, ``-y`` or not.
* **Standard input and output.** ``-`` is never a file name: it is y4m on stdin (encode)
  or stdout (decode), and refused wherever a pipe cannot serve (an MP4, a folder, an
  input read twice).
* **Atomic.** Output is built as a hidden temporary sibling (``.NAME.XXXXXXXX.partial...``)
  and renamed onto its name only when complete; on any failure, Ctrl-C, or a signal
  that the command line turns into an exception (SIGTERM, SIGHUP) the temporary is
  removed and whatever stood at the name before is untouched.

The ``check_*`` functions raise :class:`DualcodecError` with a one-line reason; they
create nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from dualcodec.errors import DualcodecError

STDIO = "-"


def refuse_stdin(paths: Sequence[Path | str], why: str) -> None:
    """Refuse ``-`` among ``paths`` where an input must be a file, saying ``why``."""
    if any(str(p) == STDIO for p in paths):
        raise DualcodecError(f"input -: {why}; name the file")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def _check_writable_folder(folder: Path, what: str = "output folder") -> None:
    if not folder.exists():
        raise DualcodecError(f"{what} does not exist: {folder}")
    if not folder.is_dir():
        raise DualcodecError(f"{what} is not a folder: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DualcodecError(f"cannot write to {what} {folder}: permission denied")


def check_output_file(path: Path, inputs: Sequence[Path], suffixes: Sequence[str], overwrite: bool = False) -> Path:
    """Check that ``path`` may be written as an output file of a command reading ``inputs``.

    ``suffixes``: the accepted suffixes, lower case with the dot (``[".mp4"]``).
    """
    if str(path) == STDIO:
        raise DualcodecError(f"-o -: standard output takes y4m only (dualcodec decode IN -o -); name a "
                             f"{' or '.join(suffixes)} file")
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise DualcodecError(f"output must be a {' or '.join(suffixes)} file, got {path}")
    if path.is_dir():
        raise DualcodecError(f"output {path} is a folder; name a {' or '.join(suffixes)} file")
    for source in inputs:
        if _same_file(path, Path(source)):
            raise DualcodecError(f"output {path} is the input; name another output file")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise DualcodecError(f"output {path} already exists; pass -y to overwrite it")
    _check_writable_folder(path.parent if str(path.parent) else Path("."))
    return path


def _protected(folder: Path) -> str | None:
    """Why ``folder`` (resolved) may never be an output folder, or None."""
    cwd = Path.cwd().resolve()
    if folder == cwd:
        return "the current folder"
    if folder in cwd.parents:
        return "a folder above the current one"
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no HOME and no passwd entry
        return None
    if folder == home:
        return "the home folder"
    if folder in home.parents:
        return "a folder above the home folder"
    return None


def check_output_folder(path: Path | str, inputs: Sequence[Path], make_parents: bool = False) -> Path:
    """Check that ``path`` may become an output folder (new, or existing and empty).

    ``make_parents``: the folder's missing parents will be created (``dualcodec frames``);
    otherwise its parent must exist.
    """
    if str(path) == STDIO:
        raise DualcodecError("-o -: frames go into a folder; name one")
    path = Path(path)
    real = path.resolve()
    why = _protected(real)
    if why:
        raise DualcodecError(f"refusing to write frames into {path}: it is {why}; name a new folder")
    for source in inputs:
        if real in Path(source).resolve().parents:
            raise DualcodecError(f"refusing to write frames into {path}: it holds the input {source}")
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise DualcodecError(f"output {path} exists and is not a folder")
        if any(path.iterdir()):
            raise DualcodecError(f"output folder {path} is not empty; name a new or empty folder")
        _check_writable_folder(real.parent)
        return path
    parent = real.parent
    if make_parents:
        while not parent.exists():
            parent = parent.parent
    _check_writable_folder(parent)
    return path


@contextlib.contextmanager
def atomic_path(final: Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; move it onto ``final`` only on success.

    A file replaces ``final`` (through a symbolic link, its target); a folder takes the
    place of a missing or empty ``final`` and never of one that holds anything. On any
    exception the temporary is removed and ``final`` is left as it was.
    """
    final = Path(os.path.realpath(final))
    _check_writable_folder(final.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial" + final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if is_dir:
            tmp.unlink()
            tmp.mkdir()
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)  # mkstemp made it private
        try:
            os.replace(tmp, final)  # a folder replaces only an empty folder (rename(2))
        except OSError as exc:
            raise DualcodecError(f"cannot write {final}: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if is_dir else tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def new_folder(folder: Path) -> Iterator[Path]:
    """Create ``folder`` and its missing parents; on failure remove those it created, if still empty."""
    folder = Path(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
