"""Build, cache and load the compiled CPU scan (``cpu_scan.c``).

The C source is compiled on first use with the machine's C compiler (``$CC``, else
``cc``, ``gcc`` or ``clang`` on PATH) for the CPU it runs on (``-march=native``: AVX-512,
AVX2, NEON or plain code from the same source), with OpenMP when the compiler has it.
The shared library is cached under ``$SCANSEARCH_CACHE_DIR`` (default
``$XDG_CACHE_HOME/scansearch`` or ``~/.cache/scansearch``), one file per source, compiler,
flags, torch version and CPU, written atomically so that concurrent processes can build
it at once. A machine without a compiler installs and runs all the same: :func:`load`
then reports why the library is missing, and the dispatcher runs the ``torch`` backend
and says so (see :mod:`.dispatch`).

The library needs no torch headers: it is called through ``ctypes`` with raw pointers to
contiguous float32 tensors (see :mod:`.cpu_backend`). Its OpenMP runtime is the one torch
already loaded (``libgomp.so.1``), and every call passes ``torch.get_num_threads()``, so
``torch.set_num_threads`` governs it.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cpu_scan.c")
ENV_CACHE = "SCANSEARCH_CACHE_DIR"
COMPILERS = ("cc", "gcc", "clang")
BASE_FLAGS = ("-O3", "-std=gnu11", "-fPIC", "-shared", "-fno-math-errno")
# tried in order: the first that compiles is kept (a compiler without OpenMP or
# -march=native still gives a working, if slower, library)
FLAG_SETS = (("-march=native", "-fopenmp"), ("-march=native",), ("-fopenmp",), ())
BUILD_TIMEOUT_S = 300


@dataclass(frozen=True)
class Build:
    """Outcome of :func:`load`: the library, or why there is none (one line)."""

    lib: ctypes.CDLL | None
    why: str | None = None
    path: str | None = None
    compiler: str | None = None
    flags: tuple[str, ...] = ()
    isa: str | None = None
    lanes: int | None = None
    openmp: bool = False

    @property
    def ok(self) -> bool:
        return self.lib is not None


_lock = threading.Lock()
_build: Build | None = None


def cache_dir() -> Path:
    """Where built libraries are kept."""
    root = os.environ.get(ENV_CACHE)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "scansearch"


def find_compiler() -> tuple[list[str] | None, str | None]:
    """The C compiler command, or (None, why not)."""
    cc = os.environ.get("CC")
    if cc:
        cmd = cc.split()
        if shutil.which(cmd[0]) is None:
            return None, f"the C compiler named by $CC ({cmd[0]!r}) was not found"
        return cmd, None
    for name in COMPILERS:
        if shutil.which(name):
            return [name], None
    return None, f"no C compiler found ($CC unset; none of {', '.join(COMPILERS)} on PATH)"


def _cpu_id() -> str:
    """The CPU the library is built for: its model and feature flags where the OS says them."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part"):
                    parts.append(line.strip())
                if key in ("flags", "Features"):
                    break
    except OSError:
        pass
    return "\n".join(parts)


def _compiler_version(cmd: list[str]) -> str:
    try:
        res = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout.splitlines()[0] if res.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _key(cmd: list[str], flags: tuple[str, ...], source: bytes) -> str:
    h = hashlib.sha256()
    for part in (source, " ".join(cmd).encode(), _compiler_version(cmd).encode(), " ".join(flags).encode(),
                 torch.__version__.encode(), _cpu_id().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _compile(cmd: list[str], flags: tuple[str, ...], target: Path) -> str | None:
    """Compile the source into ``target`` atomically; None on success, else the first error line."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        res = subprocess.run([*cmd, *BASE_FLAGS, *flags, str(SOURCE), "-o", tmp, "-lm"],
                             capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr or res.stdout).splitlines() if "error" in ln.lower()]
            return (lines or (res.stderr or res.stdout).splitlines() or ["no output"])[0].strip()
        os.replace(tmp, target)
        return None
    except subprocess.TimeoutExpired:
        return f"the compiler ran past {BUILD_TIMEOUT_S} s"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _open(path: Path, cmd, flags) -> Build:
    lib = ctypes.CDLL(str(path))
    lib.scan_isa.restype = ctypes.c_char_p
    lib.scan_lanes.restype = ctypes.c_int
    lib.scan_openmp.restype = ctypes.c_int
    for fn in (lib.scan_forward, lib.scan_backward):
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p]
    lib.scan_probe.restype = ctypes.c_double
    lib.scan_probe.argtypes = [ctypes.c_int32, ctypes.c_int64]
    return Build(lib=lib, path=str(path), compiler=" ".join(cmd), flags=flags, isa=lib.scan_isa().decode(),
                 lanes=lib.scan_lanes(), openmp=bool(lib.scan_openmp()))


def _build_now() -> Build:
    cmd, why = find_compiler()
    if cmd is None:
        return Build(lib=None, why=why)
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        return Build(lib=None, why=f"the kernel source {SOURCE.name} cannot be read: {exc.strerror}")
    errors = []
    for flags in FLAG_SETS:
        target = cache_dir() / "kernels" / f"cpu_scan-{_key(cmd, flags, source)}.so"
        if not target.exists():
            error = _compile(cmd, flags, target)
            if error is not None:
                errors.append(error)
                continue
        try:
            return _open(target, cmd, flags)
        except OSError as exc:
            errors.append(f"built but cannot be loaded: {exc}")
    return Build(lib=None, why=f"the C compiler {' '.join(cmd)!r} failed: {errors[0]}")


def load() -> Build:
    """The compiled library, built on the first call of the process (then cached on disk)."""
    global _build
    with _lock:
        if _build is None:
            _build = _build_now()
        return _build


def reset() -> None:
    """Forget this process's build outcome, so that the next :func:`load` tries again
    (after ``$CC`` or the cache folder changed)."""
    global _build
    with _lock:
        _build = None
