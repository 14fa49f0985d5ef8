"""Atomic file writes: a temporary file beside the target, then a rename, so that a
reader never sees a half-written file and a failure leaves the old one in place.

One rule for the permissions of everything the toolkit writes: what a plain ``open``
or ``mkdir`` would give (0666 or 0777 less the umask), whatever the writer (``mkstemp``
makes 0600 files, ``mkdtemp`` 0700 folders, safetensors 0600 files).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator


def _proc_umask() -> int | None:
    """The umask as the kernel reports it (Linux >= 4.7), without changing it; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_once() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Setting the umask to read it leaves a window in which another thread creates files with
# the wrong mode: where /proc cannot tell, that is done once, here, at import.
_IMPORT_UMASK = None if _proc_umask() is not None else _umask_once()


def _read_umask() -> int:
    mask = _proc_umask()
    return mask if mask is not None else _IMPORT_UMASK


def file_mode() -> int:
    """The mode a new file gets from ``open``: 0666 less the umask."""
    return 0o666 & ~_read_umask()


def dir_mode() -> int:
    """The mode a new folder gets from ``mkdir``: 0777 less the umask."""
    return 0o777 & ~_read_umask()


def apply_modes(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the modes of a plain open/mkdir."""
    path = Path(path)
    files, dirs = file_mode(), dir_mode()
    if path.is_dir():
        for item in path.rglob("*"):
            os.chmod(item, dirs if item.is_dir() else files)
        os.chmod(path, dirs)
    else:
        os.chmod(path, files)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux's ``renameat2`` with
    ``RENAME_EXCHANGE``); False, with nothing changed, where the system or the file system
    cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place whole.

    An existing ``path`` is swapped with the new folder in one atomic exchange where the
    system has one (Linux), then removed, so at every moment ``path`` is either the old
    folder or the new one, never a mix and never absent; a failure leaves the old folder
    as it was. (Elsewhere it takes two renames: the old folder aside, the new one in.
    Between them ``path`` is briefly absent, and a crash there leaves the old folder
    intact under its ``.old`` name.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        apply_modes(tmp)
        if path.exists() and exchange(tmp, path):
            pass  # tmp now holds the old folder, removed below
        elif path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            try:
                os.replace(path, old)  # a folder replaces an empty folder in one rename
            except BaseException:
                old.rmdir()
                raise
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
