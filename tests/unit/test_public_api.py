"""The public API: every name of the packages' ``__all__`` exists and is documented."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import idexdask

PACKAGES = ["idexdask", "idexdask.packets", "idexdask.io", "idexdask.simulate"]

#: what ``import idexdask`` must offer a user (issue 18)
TOP_LEVEL = ["read_l0", "read_trc", "read_cdf", "analyze", "open_campaign", "run_campaign",
             "load_config", "simulate"]


def _section(doc: str, name: str) -> bool:
    """Whether a numpydoc docstring has the section ``name`` (title, dashes)."""
    lines = doc.splitlines()
    return any(a.strip() == name and set(b.strip()) == {"-"} and len(b.strip()) >= len(name)
               for a, b in zip(lines, lines[1:], strict=False))


def _public(package: str) -> list[tuple[str, object]]:
    module = importlib.import_module(package)
    names = module.__all__
    assert len(set(names)) == len(names), f"{package}.__all__ repeats a name"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{package}.__all__ names what it lacks: {missing}"
    return [(f"{package}.{n}", getattr(module, n)) for n in names]


def test_top_level_offers_what_a_user_needs():
    assert set(TOP_LEVEL) <= set(idexdask.__all__)
    assert isinstance(idexdask.simulate, types.ModuleType)  # the simulator's package


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_is_documented(package):
    """Functions: numpydoc Parameters and Returns; classes: Attributes or
    Parameters; modules: a docstring (their own names are checked in turn)."""
    undocumented = []
    for name, obj in _public(package):
        doc = inspect.getdoc(obj) or ""
        if isinstance(obj, types.ModuleType):
            ok = bool(doc.strip())
        elif inspect.isclass(obj):
            ok = _section(doc, "Attributes") or _section(doc, "Parameters")
        else:
            ok = _section(doc, "Parameters") and _section(doc, "Returns")
        if not ok:
            undocumented.append(name)
    assert not undocumented, f"without numpydoc sections: {undocumented}"


def test_section_detection_fails_on_a_bare_docstring():
    assert not _section("Read a file.\n\nParameters: path", "Parameters")
    assert _section("Read.\n\nParameters\n----------\npath : str", "Parameters")


def test_packages_reexport_their_modules_functions():
    """A name of a package's ``__all__`` is the module's own object, not a copy."""
    from idexdask.io import trc
    from idexdask.packets import reader

    assert idexdask.packets.read_l0 is reader.read_l0 is idexdask.read_l0
    assert idexdask.io.read_trc is trc.read_trc is idexdask.read_trc
