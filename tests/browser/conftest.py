"""Real-browser fixtures: stores built by `idexdask submit`, `idexdask serve`, headless Chromium.

The stores are built once per test session and shared by the xdist workers (a
file lock in pytest's shared base directory): real flight L0 files, the real
lab captures and a small simulated campaign.  Each server is a real
``idexdask serve`` subprocess on a free port; the browser is Debian's Chromium
driven by Selenium through Debian's chromedriver (nothing is downloaded).
Screenshots go to the test's tmp directory and are copied to
``test-artifacts/dashboard/`` in the repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, data_root

CHROMIUM = Path(os.environ.get("IDEXDASK_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IDEXDASK_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
IDEXDASK = [sys.executable, "-m", "idexdask.cli"]
SIM_EVENTS = 200


def run_cli(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``idexdask ARGS`` in a subprocess (the installed CLI, this checkout's code)."""
    result = subprocess.run([*IDEXDASK, *args], capture_output=True, text=True,
                            timeout=timeout, env=cli_env())
    if check and result.returncode not in (0, 3):
        raise AssertionError(f"idexdask {' '.join(args)} -> {result.returncode}\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("IDEXDASK_DATA", str(data_root()))
    return env


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A directory shared by the xdist workers of this session.

    ``IDEXDASK_BROWSER_STORES=DIR`` keeps the stores in DIR across sessions (building
    them takes minutes on a loaded host); unset, as in ``make test``, every session
    builds its own.
    """
    reuse = os.environ.get("IDEXDASK_BROWSER_STORES")
    if reuse:  # a developer's folder of stores built by an earlier session, kept
        path = Path(reuse)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "dashboard-stores"
    path.mkdir(exist_ok=True)
    return path


def _build(shared_dir: Path, name: str, inputs: list[str]) -> Path:
    store = shared_dir / f"{name}.zarr"
    done = shared_dir / f"{name}.built"
    with _locked(shared_dir / f"{name}.lock"):
        if not done.exists():
            run_cli("submit", *inputs, "-o", str(store), "--workers", "1", "--overwrite")
            done.write_text("ok")
    return store


@pytest.fixture(scope="session")
def l0_store(shared_dir, l0_dir) -> Path:
    """Store of the real flight L0 files (22 events)."""
    return _build(shared_dir, "l0", [str(l0_dir)])


@pytest.fixture(scope="session")
def trc_store(shared_dir, trc_dir) -> Path:
    """Store of the real LeCroy captures (3 impacts, 4 channels of 500,002 samples)."""
    return _build(shared_dir, "trc", [str(trc_dir)])


@pytest.fixture(scope="session")
def sim_store(shared_dir) -> Path:
    """Store of a simulated campaign (calibrated events with compositions)."""
    pkts = shared_dir / "sim" / "campaign.pkts"
    with _locked(shared_dir / "sim.pkts.lock"):
        if not pkts.exists():
            pkts.parent.mkdir(exist_ok=True)
            run_cli("simulate", "-n", str(SIM_EVENTS), "-o", str(pkts), "--seed", "7")
    return _build(shared_dir, "sim", [str(pkts.parent)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running ``idexdask serve`` subprocess."""

    def __init__(self, store: Path, *extra: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._stream = open(log, "w")
        self.process = subprocess.Popen(
            [*IDEXDASK, "serve", str(store), "--port", str(self.port), *extra],
            stdout=self._stream, stderr=subprocess.STDOUT, env=cli_env(),
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}:\n"
                                     f"{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=5):
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"serve did not answer within 90 s:\n{log.read_text()[-3000:]}")

    def server_log(self) -> str:
        self._stream.flush()
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._stream.close()


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Factory of servers, stopped at the end of the session."""
    servers: list[Server] = []
    logs = tmp_path_factory.mktemp("serve-logs")

    def start(store: Path, *extra: str) -> Server:
        server = Server(store, *extra, log=logs / f"serve-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium through Selenium (console log captured)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.fail(f"{path} missing: `make setup` installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where a test writes its screenshots (copied to test-artifacts/dashboard/)."""
    out = tmp_path / "screenshots"
    out.mkdir()
    yield out
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for shot in out.glob("*.png"):
        shutil.copy2(shot, ARTIFACTS / shot.name)
