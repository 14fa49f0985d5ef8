"""Atomic writes and the one rule for file modes: what a plain open/mkdir gives under the umask."""
import os
import stat

import pytest

from scansearch import fileio


def test_reading_the_umask_never_changes_it(monkeypatch):
    """Setting the umask to read it would give files made meanwhile by another thread mode 0666."""
    if fileio._proc_umask() is None:
        pytest.skip("this system does not report the umask in /proc; it is read once at import")

    def forbidden(mask):
        raise AssertionError("os.umask called after import")

    monkeypatch.setattr(os, "umask", forbidden)
    assert fileio.file_mode() == 0o666 & ~fileio._proc_umask()
    assert fileio.dir_mode() == 0o777 & ~fileio._proc_umask()


def test_atomic_dir_replaces_a_folder_whole_and_keeps_it_on_failure(tmp_path):
    target = tmp_path / "d"
    with fileio.atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    assert [p.name for p in target.iterdir()] == ["a"]
    assert stat.S_IMODE(target.stat().st_mode) == fileio.dir_mode()
    with pytest.raises(RuntimeError):
        with fileio.atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("halfway")
    assert [p.name for p in target.iterdir()] == ["a"]
    with fileio.atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # nothing left beside it
