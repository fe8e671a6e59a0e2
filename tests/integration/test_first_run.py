"""First run from a wheel: the kernels are compiled once, in the client, with a
one-line message; the caches go to a per-user directory when the installed
package's directory is read-only.

The wheel is built from this checkout (hatchling, no network) and installed
with ``--no-deps`` into a fresh virtual environment that sees the test
environment's site-packages (a ``.pth`` file), so that nothing is downloaded.
The package directory is made read-only: by file modes, or, run as root (who
writes through file modes), immutable (``chattr +i``, as a read-only mount is).
"""

from __future__ import annotations

import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], *, env: dict | None = None, timeout: int = 900,
         cwd: Path | None = None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture
def installed(tmp_path_factory):
    """A venv holding the idexdask wheel only; its package directory read-only."""
    root = Path(tempfile.mkdtemp(prefix="idexdask-wheel-"))  # not pytest's 0700 directories
    root.chmod(0o755)
    dist = root / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(dist), str(REPO)])
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("idexdask-*.whl")
    venv = root / "venv"
    made = _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                            "['purelib'])"]).stdout.strip())
    (purelib / "test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    assert pip.returncode == 0, pip.stderr
    package = purelib / "idexdask"
    immutable = os.geteuid() == 0
    if immutable:
        made = _run(["chattr", "-R", "+i", str(package)])
        assert made.returncode == 0, f"root needs chattr +i for a read-only package: {made}"
    else:
        for directory, _, files in os.walk(package):
            for name in files:
                Path(directory, name).chmod(0o444)
            Path(directory).chmod(0o555)
    probe = package / "probe"
    with pytest.raises(OSError):
        probe.write_text("")  # the package directory really is read-only
    home = root / "home"
    home.mkdir()
    yield venv, package, home
    if immutable:
        _run(["chattr", "-R", "-i", str(package)])
    for directory, _, _ in os.walk(package):
        Path(directory).chmod(stat.S_IRWXU)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow  # compiles every kernel from nothing: ~70 s of one core, more on a busy host
def test_wheel_first_run_compiles_once_into_the_user_cache(installed):
    venv, package, home = installed
    # a user's environment: no test-runner variables, a home of their own
    env = {k: os.environ[k] for k in ("PATH", "LANG", "TZ") if k in os.environ}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), OMP_NUM_THREADS="1")
    demo = [str(venv / "bin" / "idexdask"), "demo", "--files", "1", "--events", "20",
            "--workers", "1"]
    first = _run([*demo, "--output", str(home / "one")], env=env, cwd=home)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = [line for line in first.stdout.splitlines() if "compiling idexdask's numba" in line]
    assert len(lines) == 1, first.stdout  # one line, saying what and how long
    assert "about 70 s" in lines[0] and str(home / ".cache" / "idexdask" / "numba") in lines[0]
    assert "kernels            : compiled in" in first.stdout
    assert "round trip exact   : yes" in first.stdout
    cached = list((home / ".cache" / "idexdask" / "numba").rglob("*.nbi"))
    assert len(cached) > 20, cached  # the kernels' cache indexes, in the user's directory
    assert not list(package.rglob("*.nbi"))  # nothing could be (or was) written there

    second = _run([*demo, "--output", str(home / "two")], env=env, cwd=home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "compiling" not in second.stdout
    assert "round trip exact   : yes" in second.stdout
