"""Where numba caches idexdask's compiled kernels, and whether they are there yet.

The decoder's and the analysis' kernels are numba functions with ``cache=True``:
compiled on first use (~70 s of one core for all of them) and cached.  Numba
caches beside the module (``__pycache__``) when it can write there; an
installed wheel's package directory often is read-only (a system or shared
site-packages), so :func:`configure` points numba at a per-user directory
first: ``$XDG_CACHE_HOME/idexdask/numba`` (default ``~/.cache/idexdask/numba``),
through ``NUMBA_CACHE_DIR``, which numba reads when it is first imported, and
which the workers of an embedded cluster inherit.  A ``NUMBA_CACHE_DIR`` set by
the user is left alone.

:func:`kernels_ready` tells whether the kernels of this code, numba, Python and
CPU have been compiled into that cache: :func:`idexdask.pipeline.warmup.compile_kernels`
leaves a marker there named after a fingerprint of those.  A campaign compiles
them once, in the client, before the workers start
(:func:`idexdask.pipeline.warmup.ensure_kernels`), instead of every worker
compiling all of them at once on its first task.

The same compile writes the package's Python bytecode (:func:`compile_modules`):
where ``PYTHONDONTWRITEBYTECODE`` is set (containers, CI, this project's
development machines), an import never writes a ``.pyc``, so every process
compiled the ~140 modules a worker imports from source, 0.22-0.24 s of CPU per
worker process (docs/performance.md), each time a campaign started one.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_dir", "compile_modules", "configure", "fingerprint", "kernels_ready",
           "mark_ready"]

PACKAGE_DIR = Path(__file__).resolve().parent
ENV = "NUMBA_CACHE_DIR"


def _writable(directory: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idexdask"


def configure() -> Path | None:
    """Point numba's cache at a per-user directory if the package directory is read-only.

    Call before numba is imported (``idexdask/__init__.py`` does).  Returns the
    directory set, or None where nothing was changed (``NUMBA_CACHE_DIR``
    already set, or the package directory writable: numba caches beside the
    modules).
    """
    if os.environ.get(ENV) or _writable(PACKAGE_DIR):
        return None
    directory = _user_cache_root() / "numba"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        directory = Path(tempfile.gettempdir()) / f"idexdask-{os.getuid()}" / "numba"
        directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(directory)
    return directory


def cache_dir() -> Path:
    """The directory holding the compiled kernels (``NUMBA_CACHE_DIR``, else the package's)."""
    return Path(os.environ[ENV]) if os.environ.get(ENV) else PACKAGE_DIR


def fingerprint() -> str:
    """Hex digest of what the cached kernels depend on.

    The package's modules (path, size, modification time: an installed wheel's
    never change; an edited checkout's do), numba's and Python's versions, and
    the CPU numba compiles for (its caches are per CPU).
    """
    import llvmlite.binding
    import numba

    digest = hashlib.sha256()
    digest.update(f"{numba.__version__} {sys.version} {platform.machine()} "
                  f"{llvmlite.binding.get_host_cpu_name()}".encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(PACKAGE_DIR)} {stat.st_size} "
                      f"{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def compile_modules(directory: Path = PACKAGE_DIR) -> bool:
    """Write the bytecode (``.pyc``) of every module under ``directory`` where
    imports look for it (best effort).

    Explicit, as ``pip install`` does for a wheel: ``PYTHONDONTWRITEBYTECODE``
    stops imports from writing bytecode, not this.  A ``.pyc`` records its
    source's modification time and size; an edited module's is ignored (and
    the module compiled from source) until this runs again, which the next
    campaign does (:func:`kernels_ready` is false for edited modules).

    Parameters
    ----------
    directory : path
        A package directory (default: idexdask's).

    Returns
    -------
    bool
        True if every module was compiled (or was compiled already); False
        where some could not be (a read-only installation: imports then
        compile them in memory, as without this).
    """
    import compileall

    try:
        return bool(compileall.compile_dir(directory, quiet=2, workers=1))
    except OSError:
        return False


def _marker() -> Path:
    return cache_dir() / "__pycache__" / f"idexdask-kernels-{fingerprint()}.ok"


def kernels_ready() -> bool:
    """True if :func:`mark_ready` ran for this code, numba, Python and CPU."""
    return _marker().exists()


def mark_ready() -> None:
    """Record that every kernel is compiled into :func:`cache_dir` (best effort)."""
    marker = _marker()
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # an unwritable cache: numba could not cache either; nothing to record
        pass
