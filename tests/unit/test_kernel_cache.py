"""idexdask/kernel_cache.py: the package's bytecode written by `idexdask compile`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from idexdask.kernel_cache import compile_modules


def _imported_value(root: Path) -> str:
    """``pkg.mod.VALUE`` as a fresh interpreter that writes no bytecode imports it."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root)}
    env.pop("PYTHONPYCACHEPREFIX", None)
    return subprocess.run(
        [sys.executable, "-c", "import pkg.mod; print(pkg.mod.VALUE)"],
        env=env, capture_output=True, text=True, check=True, cwd=root,
    ).stdout.strip()


def test_written_bytecode_is_what_imports_load_and_an_edit_is_not_hidden(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "mod.py"
    module.write_text("VALUE = 1\n")
    stat = module.stat()

    assert compile_modules(package)
    # the same size and modification time with other text: an import that
    # prints the compiled value has read the bytecode, not the source
    module.write_text("VALUE = 2\n")
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _imported_value(tmp_path) == "1"

    # an edit (a new modification time) is imported from its source, not from
    # the stale bytecode, until the modules are compiled again
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _imported_value(tmp_path) == "2"
    assert compile_modules(package)
    module.write_text("VALUE = 3\n")
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _imported_value(tmp_path) == "2"


def test_a_module_that_does_not_compile_is_reported_not_raised(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "good.py").write_text("A = 1\n")
    (package / "bad.py").write_text("def broken(:\n")
    assert compile_modules(package) is False
    assert (package / "__pycache__").is_dir()  # the good module was compiled all the same
