"""Shared fixtures: where the real data live, and the official pipeline's output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ORACLE_PYTHON = REPO / ".venv-oracle" / "bin" / "python"


def data_root() -> Path:
    """Real data directory: ``$IDEXDASK_DATA``, default ``../shared/data`` beside the repo."""
    return Path(os.environ.get("IDEXDASK_DATA", REPO.parent / "shared" / "data")).resolve()


L0_DIR = data_root() / "idex-l0"
TRC_DIR = data_root() / "scope-trc"
REAL_L0_FILES = sorted(L0_DIR.glob("*.pkts"))


@pytest.fixture(scope="session")
def l0_dir() -> Path:
    """The real IDEX L0 files; their absence is an error, not a skip."""
    if not REAL_L0_FILES:
        pytest.fail(f"no real L0 files under {L0_DIR}: set IDEXDASK_DATA to the shared data")
    return L0_DIR


@pytest.fixture(scope="session")
def trc_dir() -> Path:
    """The real LeCroy captures of peridot impacts; their absence is an error."""
    if not TRC_DIR.is_dir() or not any(TRC_DIR.glob("*.trc")):
        pytest.fail(f"no LeCroy captures under {TRC_DIR}: set IDEXDASK_DATA to the shared data")
    return TRC_DIR


def _run_oracle(script_name: str, out: Path, files: list[Path]) -> str:
    if not ORACLE_PYTHON.exists():
        pytest.fail(f"oracle venv missing ({ORACLE_PYTHON}); run `make setup`")
    result = subprocess.run(
        [
            str(ORACLE_PYTHON),
            str(REPO / "tests" / "oracle" / script_name),
            str(out),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    if result.returncode != 0:
        pytest.fail(f"official pipeline ({script_name}) failed:\n{result.stderr[-4000:]}")
    return result.stdout


@pytest.fixture(scope="session")
def official_l1a(tmp_path_factory, l0_dir) -> dict[str, Path]:
    """Run the official L1a (imap-processing 1.0.40, in .venv-oracle) once on every real file.

    Returns a mapping file name -> ``.npz`` of its science variables.  A missing
    oracle venv fails the tests that need it (``make setup`` installs it).
    """
    out = tmp_path_factory.mktemp("official_l1a")
    _run_oracle("official_l1a.py", out, REAL_L0_FILES)
    return {f.name: out / (f.name + ".npz") for f in REAL_L0_FILES}


@pytest.fixture(scope="session")
def official_target_fits(tmp_path_factory, l0_dir) -> dict[str, Path]:
    """The official L2a impact fits (``estimate_dust_mass``) of every real event.

    Returns a mapping file name -> ``.npz`` (see tests/oracle/official_target_fits.py).
    """
    out = tmp_path_factory.mktemp("official_target_fits")
    _run_oracle("official_target_fits.py", out, REAL_L0_FILES)
    return {f.name: out / (f.name + ".npz") for f in REAL_L0_FILES}


@pytest.fixture(scope="session")
def official_instrument_state(tmp_path_factory, l0_dir) -> dict[str, Path]:
    """The official L1b instrument state of every real event, plus random header words.

    Returns a mapping file name -> ``.npz``, and ``"synthetic"`` -> the ``.npz``
    of random words (see tests/oracle/official_instrument_state.py).
    """
    out = tmp_path_factory.mktemp("official_instrument_state")
    _run_oracle("official_instrument_state.py", out, REAL_L0_FILES)
    paths = {f.name: out / (f.name + ".npz") for f in REAL_L0_FILES}
    return paths | {"synthetic": out / "synthetic.npz"}


@pytest.fixture(scope="session")
def official_l1a_cdfs(tmp_path_factory, l0_dir) -> dict[str, Path]:
    """The official L1a science CDFs of the real files (imap-processing 1.0.40's writer).

    Returns a mapping L0 file name -> CDF, for the files holding science events
    (see tests/oracle/official_l1a_cdf.py).
    """
    out = tmp_path_factory.mktemp("official_l1a_cdf")
    lines = _run_oracle("official_l1a_cdf.py", out, REAL_L0_FILES).splitlines()
    pairs = [line.split("\t") for line in lines if "\t" in line]
    return {Path(src).name: Path(cdf) for src, cdf in pairs if cdf != "-"}


def pytest_report_header(config):
    return [f"idexdask data: {data_root()}", f"python: {sys.version.split()[0]}"]


@pytest.fixture(params=["internals", "public"])
def adapter_path(request, monkeypatch) -> str:
    """Run a test on both paths of the dependency adapters (idexdask.compat).

    ``internals``: each shortcut where its feature check passes (the default);
    ``public``: every adapter held to the public API (``IDEXDASK_PUBLIC_API=all``).
    """
    if request.param == "public":
        monkeypatch.setenv("IDEXDASK_PUBLIC_API", "all")
    else:
        monkeypatch.delenv("IDEXDASK_PUBLIC_API", raising=False)
    return request.param
