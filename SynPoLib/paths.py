"""Paths a user gives: is there a file to read, can a result be written there.

Checked before any work, each with the rules every command shares, so a batch of
cases, the command line and a script refuse the same things with the same words:

- an input is an existing, readable, non-empty regular file: a folder, a named pipe
  (reading one blocks until something writes to it: a run would hang) or a device is
  refused by its kind, without opening it;
- an output names a file (not a folder or a pipe) whose folder exists or can be
  created, and a probe file created and removed there proves it is writable (the
  permission bits do not say so for root, nor on a read-only mount);
- no output is an input or another output: paths are compared resolved (symbolic
  links, ``..``) and by file identity (hard links).

Each check raises :class:`~SynPoLib.errors.InputError` with one line that starts with
the flag and the path and says what to do.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

from .errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> Optional[str]:
    """What a non-regular, non-folder file is, in words (None for a regular file or a folder)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return None


def check_input_file(path: PathLike, flag: str) -> Path:
    """``path`` as a readable, non-empty regular file; never opens a pipe or a device."""
    path = Path(path).expanduser()
    where = f"{flag} {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{where}: file not found; check the path") from None
    except NotADirectoryError:
        raise InputError(f"{where}: file not found (a part of the path is a file, not a folder)") from None
    except OSError as exc:
        raise InputError(f"{where}: cannot be opened ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{where} is a folder: give the image file inside it")
    kind = _kind(st.st_mode)
    if kind is not None:
        raise InputError(f"{where} is {kind}, not a regular file: save the data to a file and give that")
    if st.st_size == 0:
        raise InputError(f"{where} is empty (0 bytes): the file is incomplete; copy it again")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise InputError(f"{where}: cannot be read ({exc.strerror}); check its permissions") from None
    return path


def check_output_file(path: PathLike, flag: str) -> Path:
    """``path`` as a file SynPo can create or replace: its folder exists or can be made,
    and is writable (proved by creating and removing a probe file there)."""
    text = os.fspath(path)
    path = Path(path).expanduser()
    where = f"{flag} {text}"
    if text.endswith(os.sep) or path.name in ("", ".", ".."):
        raise InputError(f"{where} names a folder: give a file name inside it")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # reported below, with the file that is in the way
    except OSError as exc:
        raise InputError(f"{where}: cannot be used ({exc.strerror})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{where} is a folder: give a file name inside it")
        kind = _kind(st.st_mode)
        if kind is not None:
            raise InputError(f"{where} is {kind}: give a path for a regular file")
    ancestor = path.parent if str(path.parent) else Path(".")
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():  # a dangling link: mkdir would fail on it
            raise InputError(f"{where}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{where} lies under {ancestor}, which is a file, not a folder: choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".synpo-probe-", dir=ancestor)
    except OSError as exc:
        reason = {errno.EROFS: "a read-only file system", errno.EACCES: "no write permission",
                  errno.EPERM: "no write permission", errno.ENOSPC: "no space left"}.get(exc.errno, exc.strerror)
        raise InputError(f"{where}: cannot write into {ancestor} ({reason}); choose a folder you can write to") \
            from None
    os.close(fd)
    os.unlink(probe)
    return path


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: the same resolved path, or the same inode."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.resolve() == pb.resolve():
            return True
    except (OSError, RuntimeError):  # a symlink loop: fall back on identity
        pass
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist (yet): different files
        return False


def check_distinct(outputs: Sequence[Tuple[str, PathLike]], inputs: Iterable[Tuple[str, PathLike]]) -> None:
    """No output is an input, and no two outputs are one file; ``(flag, path)`` pairs."""
    inputs = [(flag, p) for flag, p in inputs if p]
    outputs = [(flag, p) for flag, p in outputs if p]
    for i, (flag, out) in enumerate(outputs):
        for in_flag, source in inputs:
            if same_file(out, source):
                raise InputError(f"{flag} {out} is the {in_flag} file: writing it would destroy an input; "
                                 f"choose another path for {flag}")
        for other_flag, other in outputs[:i]:
            if same_file(out, other):
                raise InputError(f"{flag} {out} is also the {other_flag} file: one would overwrite the other; "
                                 f"give each output its own path")


__all__ = ["check_distinct", "check_input_file", "check_output_file", "same_file"]
