"""The run folder: everything a search remembers (config, log, checkpoint, alpha history,
plots, genotype), so that a run can be resumed, exported and read later; and its lock, so
that one process at a time drives it."""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path

import yaml

from scansearch.errors import InputError
from scansearch.fileio import atomic_write_text
from scansearch.genotype import Genotype, GenotypeError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt



class RunError(InputError):
    """A run folder that cannot be used as asked (exists already, missing, incomplete)."""


class RunFolder:
    CONFIG = "config.yaml"
    LOG = "log.txt"
    CHECKPOINT = "checkpoint.pt"
    HISTORY = "alphas.json"
    HEATMAP = "alphas.png"
    GENOTYPE = "genotype.yaml"
    SUMMARY = "summary.json"
    SELECTION = "selection.json"  # per-layer scores, margins and the check against fixed genotypes
    CLOSING = "complete"  # the config's last key
    LOCK = ".lock"  # held by the process that drives the run (see RunLock)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def default_path(cls, root: str | Path = "runs", prefix: str = "search") -> Path:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(root) / f"{prefix}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path(root) / f"{prefix}-{stamp}-{n}"
        return path

    @classmethod
    def create(cls, path: str | Path) -> "RunFolder":
        """A new run; refuses a folder that already holds a run (resume it instead)."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"{run.path}: exists and is not a folder")
        if (run.path / cls.CONFIG).exists():
            raise RunError(f"{run.path}: already holds a run; pass --resume to continue it, or another --out")
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunFolder":
        """An existing run (for --resume and export). A folder holding a link that leads out of
        it is refused: whatever the run reads or writes stays inside the run folder."""
        run = cls(path)
        if not (run.path / cls.CONFIG).is_file():
            raise RunError(f"{run.path}: not a run folder (no {cls.CONFIG})")
        run.check_contained()
        return run

    def check_contained(self) -> None:
        """RunError for a symbolic link below the folder whose target lies outside it."""
        root = self.path.resolve()
        for entry in self.path.rglob("*"):
            if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                raise RunError(f"{entry}: a link to {entry.resolve()}, outside the run folder {self.path}; "
                               f"a run folder must hold its own files")

    def file(self, name: str) -> Path:
        return self.path / name

    def lock(self) -> "RunLock":
        """Take the run's lock (RunError when another process holds it); release it with
        ``release()`` or a ``with`` block."""
        return RunLock(self.file(self.LOCK))

    # -- contents -----------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        """The config, closed by ``complete: true``: a file cut short (or edited into another
        whole YAML document without it) is told apart from one the run wrote."""
        atomic_write_text(self.file(self.CONFIG), yaml.safe_dump({**config, self.CLOSING: True}, sort_keys=False))

    def read_config(self) -> dict:
        path = self.file(self.CONFIG)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise RunError(f"{path}: cannot read: {str(err).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise RunError(f"{path}: not a mapping")
        if data.pop(self.CLOSING, None) is not True:
            raise RunError(f"{path}: truncated or not written by scansearch (no closing '{self.CLOSING}: true')")
        return data

    def log(self, message: str) -> None:
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        with open(self.file(self.LOG), "a", encoding="utf-8") as f:
            f.write(f"{stamp} {message}\n")

    def read_history(self) -> list[dict]:
        path = self.file(self.HISTORY)
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RunError(f"{path}: cannot read: {err}") from None
        return data.get("epochs", [])

    def write_history(self, candidates, epochs: list[dict]) -> None:
        """Per epoch: the softmax weights per layer and the epoch's metrics."""
        atomic_write_text(self.file(self.HISTORY),
                          json.dumps({"candidates": list(candidates), "epochs": epochs}, indent=1))

    def write_genotype(self, genotype) -> None:
        genotype.save(self.file(self.GENOTYPE))

    def read_genotype(self):
        """The run's genotype; RunError when the search has not finished."""

        path = self.file(self.GENOTYPE)
        if not path.is_file():
            raise RunError(f"{self.path}: the search has not written {self.GENOTYPE} yet (still running, or "
                           f"stopped early: resume it with --resume)")
        try:
            return Genotype.load(path)
        except GenotypeError as err:
            raise RunError(str(err)) from None

    def write_summary(self, summary: dict) -> None:
        self.write_json(self.SUMMARY, summary)

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.file(name), json.dumps(data, indent=2))

    def read_json(self, name: str) -> dict:
        path = self.file(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"{path}: missing (the run did not finish)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RunError(f"{path}: expected a JSON object")
        return data


class RunLock:
    """One process drives a run folder at a time: an exclusive, non-blocking lock on
    ``RUN/.lock`` (``flock`` on POSIX, ``msvcrt.locking`` on Windows), which the operating
    system releases when the process ends however it ends, so a crash leaves no lock behind
    (the file's stale owner is logged by whoever takes it next). The file holds the owner's
    host and pid, for the message a second process gets; it is removed on release."""

    def __init__(self, path: Path):
        self.path = path
        self.stale: str | None = None  # the owner a crash left in the file, if any
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                owner = _read_owner(fd)
                os.close(fd)
                raise RunError(f"{path.parent}: another scansearch process{f' ({owner})' if owner else ''} is "
                               f"running this search; wait for it to finish or stop it")
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:  # its owner removed it between our open and our lock
                same = False
            if same:
                break
            os.close(fd)
        self.stale = _read_owner(fd) or None
        os.ftruncate(fd, 0)
        os.write(fd, f"host {socket.gethostname()} pid {os.getpid()}".encode())
        os.fsync(fd)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # removed while held: a waiting opener retries on a fresh file
        finally:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is None:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:  # BlockingIOError on POSIX, PermissionError on Windows: another process holds it
        return False


def _read_owner(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return ""
