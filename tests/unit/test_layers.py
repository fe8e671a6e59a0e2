"""The package's architecture: layers without cycles, no private names across modules.

The layers and the other import contracts are written in pyproject.toml
(``[tool.importlinter]``) and checked here with import-linter, so that
``make test`` fails on an upward import, an import cycle between the modules of
a package, or a private module imported from outside its package.  Import-linter
does not look at names: :func:`private_imports` finds the private names
(``_name``) one module of the package imports from another, which the
developers' guide forbids (a shared kernel gets a public name in a module of its
own).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import idexdask

PACKAGE = Path(idexdask.__file__).resolve().parent
ROOT = PACKAGE.parent


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_module(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """Absolute name of the module a ``from ... import`` statement reads."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def private_imports(package: Path = PACKAGE) -> list[str]:
    """``file:line: importer <- module.name`` for each private name imported across modules.

    Covers ``from idexdask.x import _name`` (absolute or relative, at any depth
    of the code) and ``alias._name`` where ``alias`` is a module of the package
    bound by an import.  Names of a private module (``idexdask._logging``) are
    its public interface: who may import that module is the ``private_modules``
    contract's business.
    """
    root = package.parent
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _imported_module(node, module, path.name == "__init__.py")
                if source.split(".")[0] != package.name:
                    continue
                for alias in node.names:
                    if _private(alias.name) and source != module:
                        found.append(
                            f"{path.relative_to(root)}:{node.lineno}: "
                            f"{module} <- {source}.{alias.name}"
                        )
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == package.name and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and (root / Path(*aliases[node.value.id].split("."))).with_suffix(".py").exists()
            ):
                found.append(
                    f"{path.relative_to(root)}:{node.lineno}: "
                    f"{module} <- {aliases[node.value.id]}.{node.attr}"
                )
    return found


def test_import_contracts_hold():
    """lint-imports on pyproject.toml's contracts: layers, no cycles, private modules."""
    exe = Path(sys.executable).with_name("lint-imports")  # the dev extra installs it
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    run = subprocess.run(
        [str(exe), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=False,
    )
    report = run.stdout + run.stderr
    assert "Contracts:" in report, report  # it ran and checked the contracts
    assert run.returncode == 0, report


def test_no_private_name_is_imported_across_modules():
    assert private_imports() == []


def test_private_import_check_finds_what_it_should(tmp_path):
    """The scan itself: each kind of private import is found; public ones and dunders are not."""
    pkg = tmp_path / PACKAGE.name
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .kernels import _shared\n")
    (pkg / "sub" / "kernels.py").write_text("def _shared(): ...\ndef public(): ...\n")
    (pkg / "user.py").write_text(
        f"from {PACKAGE.name}.sub.kernels import _shared, public\n"
        f"from {PACKAGE.name}.sub import kernels as k\n"
        f"from {PACKAGE.name} import __version__\n"
        "def f():\n"
        f"    from {PACKAGE.name}.sub.kernels import _late\n"
        "    return k._shared(), k.public()\n"
    )
    found = private_imports(pkg)
    assert len(found) == 4, found
    assert any("sub/__init__.py:1" in line for line in found)  # relative, from a sibling
    assert sum("user.py" in line for line in found) == 3  # absolute, lazy, attribute
    assert not any("public" in line or "__version__" in line for line in found)
