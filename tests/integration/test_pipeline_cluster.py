"""Campaign pipeline on real Dask processes: a scheduler and workers started as
subprocesses on 127.0.0.1, real and simulated L0 files, real failures (SIGKILL of a
worker and of the submitting client, a corrupt input, an unwritable store)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from idexdask.config import load_config
from idexdask.errors import ConfigError, StoreError
from idexdask.pipeline.cluster import ClusterOptions
from idexdask.pipeline.export import open_campaign
from idexdask.pipeline.manifest import Manifest
from idexdask.pipeline.plan import plan_inputs
from idexdask.pipeline.runner import run_campaign, store_status
from idexdask.pipeline.units import process_unit
from idexdask.simulate import write_campaign

BIN = Path(sys.executable).parent
DECODE_ONLY = {
    "pipeline": {"analyze": False, "batch_events": 40, "chunk_events": 16},
    "cluster": {"dashboard": ":0"},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DASK_DISTRIBUTED__WORKER__DAEMON="False",
    )
    return env


class DaskProcesses:
    """`dask scheduler` + `dask worker`s as subprocesses; killed at teardown."""

    def __init__(self, directory: Path, workers: int = 2, nanny: bool = True) -> None:
        self.scheduler_file = directory / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        log = open(directory / "dask.log", "ab")
        self.procs.append(
            subprocess.Popen(
                [
                    str(BIN / "dask"),
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(self.scheduler_file),
                ],
                stdout=log,
                stderr=log,
                env=_env(),
            )
        )
        deadline = time.monotonic() + 30
        while not self.scheduler_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("scheduler did not start")
            time.sleep(0.1)
        self.workers = []
        for _ in range(workers):
            args = [
                str(BIN / "dask"),
                "worker",
                "--scheduler-file",
                str(self.scheduler_file),
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--memory-limit",
                "0",
            ]
            if not nanny:
                args.append("--no-nanny")
            proc = subprocess.Popen(args, stdout=log, stderr=log, env=_env())
            self.procs.append(proc)
            self.workers.append(proc)
        from distributed import Client

        with Client(scheduler_file=str(self.scheduler_file), timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"))
    yield procs
    procs.close()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, l0_dir) -> list[Path]:
    """Real L0 files + a simulated campaign (plain and Rice-compressed)."""
    sim = tmp_path_factory.mktemp("sim")
    write_campaign(sim / "sim_plain.pkts", 130, compress=False, seed=11)
    write_campaign(sim / "sim_rice.pkts", 90, compress=True, seed=12)
    return [l0_dir, sim / "sim_plain.pkts", sim / "sim_rice.pkts"]


def _reference(inputs, config) -> list:
    """Single-process results: the unit function on every planned unit, in order."""
    pipeline = config["pipeline"]
    plan = plan_inputs(
        inputs, int(pipeline["batch_events"]), align=int(pipeline["chunk_events"])
    )  # the runner's plan
    return plan, [process_unit(u, config) for u in plan.units]


def _recalibrated(store: Path) -> set[str]:
    """Variables the campaign calibration step rewrote (manifest record ``campaign``):
    they depend on every event of the input, not on one unit alone."""
    records = [r for r in Manifest(store).records() if r.get("record") == "campaign"]
    return set(records[-1]["variables"]) if records else set()


def _assert_store_equals(store: Path, plan, reference) -> None:
    stored = open_campaign(store).load()
    assert stored.sizes["epoch"] == plan.n_events
    skip = _recalibrated(store)
    for unit, expected in zip(plan.units, reference, strict=True):
        rows = slice(*unit.region)
        for name, variable in expected.variables.items():
            if "epoch" not in variable.dims or name in skip:
                continue
            got = stored[name].values[rows]
            want = variable.values
            if want.dtype.kind == "f":
                np.testing.assert_array_equal(got, want, err_msg=f"{unit.uid}: {name}")
            else:
                assert np.array_equal(got.astype(want.dtype), want), f"{unit.uid}: {name}"
    stored.close()


def _unit_records(store: Path) -> list[dict]:
    return [r for r in Manifest(store).records() if r.get("record") == "unit"]


def test_remote_cluster_equals_single_process(cluster, campaign, tmp_path):
    config = load_config(DECODE_ONLY)
    store = tmp_path / "campaign.zarr"
    summary = run_campaign(
        campaign, store, config, cluster=ClusterOptions(address=str(cluster.scheduler_file))
    )
    assert summary.failures == []
    assert summary.events_done == summary.events_total == 130 + 90 + 22
    plan, reference = _reference(campaign, config)
    assert len(plan.units) >= 7  # the simulated files are cut into event batches
    _assert_store_equals(store, plan, reference)
    # the short real files share tasks with their neighbours
    assert max(r["task_units"] for r in _unit_records(store)) > 1
    # the read_l0 of each whole file equals its rows, every variable
    from idexdask import read_l0

    stored = open_campaign(store).load()
    for index, path in enumerate(plan.inputs):
        rows = np.flatnonzero(stored["input_index"].values == index)
        whole = read_l0(path)
        for name in whole.variables:
            if "epoch" in whole[name].dims:
                assert np.array_equal(stored[name].values[rows], whole[name].values), name

    # unchanged inputs and configuration: nothing to do
    again = run_campaign(
        campaign, store, config, cluster=ClusterOptions(address=str(cluster.scheduler_file))
    )
    assert again.events_this_run == 0 and again.units_skipped == len(plan.units)
    # a product-relevant configuration change reprocesses everything
    changed = load_config({**DECODE_ONLY, "decode": {"verify_crc": False}})
    redo = run_campaign(
        campaign, store, changed, cluster=ClusterOptions(address=str(cluster.scheduler_file))
    )
    assert redo.events_this_run == redo.events_total and redo.units_skipped == 0
    _assert_store_equals(store, plan, reference)
    assert store_status(store).events_done == plan.n_events
    # inputs with other event counts do not fit the store
    with pytest.raises(StoreError, match="--overwrite"):
        run_campaign(
            campaign[1:],
            store,
            changed,
            cluster=ClusterOptions(address=str(cluster.scheduler_file)),
        )


def test_analysis_on_cluster_equals_single_process(cluster, l0_dir, tmp_path):
    """Full analysis on the cluster, several units per file: every event and every
    TOF line equals analyze() run on the whole file in one process."""
    from idexdask import read_l0
    from idexdask.pipeline.ragged import peaks_to_event_major
    from idexdask.workflow import analyze

    sim = tmp_path / "sim_rice.pkts"
    write_campaign(sim, 45, compress=True, seed=5)
    config = load_config({"cluster": {"dashboard": ":0"}, "pipeline": {"batch_events": 10}})
    inputs = [l0_dir / "imap_idex_l0_raw_20231218_v001.pkts", sim]
    store = tmp_path / "analysed.zarr"
    summary = run_campaign(
        inputs, store, config, cluster=ClusterOptions(address=str(cluster.scheduler_file))
    )
    assert summary.failures == [] and summary.events_done == 14 + 45
    plan, reference = _reference(inputs, config)
    assert len(plan.units) >= 6
    _assert_store_equals(store, plan, reference)
    stored = open_campaign(store).load()
    max_peaks = config["pipeline"]["max_peaks_per_event"]
    for index, path in enumerate(plan.inputs):
        rows = np.flatnonzero(stored["input_index"].values == index)
        whole = peaks_to_event_major(analyze(read_l0(path), config), max_peaks)
        assert int(whole["peak_count"].sum()) > 0  # lines from every unit are stored
        for name in (
            "peak_count",
            "peak_center",
            "peak_area",
            "peak_mass",
            "target_low_impact_charge",
            "tof_high_snr",
            "mass_calibration_status",
        ):
            np.testing.assert_array_equal(
                stored[name].values[rows], whole[name].values, err_msg=f"{path}: {name}"
            )


def test_lab_captures_share_a_task(cluster, trc_dir, tmp_path):
    """A directory of LeCroy captures: one unit per impact, the impacts processed
    together in one task, every event as the unit function gives it alone."""
    config = load_config({"cluster": {"dashboard": ":0"}, "pipeline": {"batch_events": 64}})
    store = tmp_path / "lab.zarr"
    summary = run_campaign(
        [trc_dir], store, config, cluster=ClusterOptions(address=str(cluster.scheduler_file))
    )
    plan, reference = _reference([trc_dir], config)
    assert len(plan.units) == 3 and summary.failures == []
    assert summary.events_done == summary.events_total == 3
    _assert_store_equals(store, plan, reference)
    records = _unit_records(store)
    assert sorted(r["uid"] for r in records) == sorted(u.uid for u in plan.units)
    assert {r["task_units"] for r in records} == {3}  # one task for the three impacts
    stored = open_campaign(store).load()
    assert stored["impact_number"].values.tolist() == [u.impact for u in plan.units]
    stored.close()


def test_lab_campaign_calibration_is_a_dataflow_step(cluster, trc_dir, tmp_path):
    """One impact per task (batch_events 1): no task sees the other impacts, yet
    the reduction over the input's line lists calibrates all three with one
    shape, as analyze() of the whole directory does; a resumed run skips it."""
    from idexdask import read_trc
    from idexdask.pipeline.ragged import peaks_to_event_major
    from idexdask.workflow import analyze
    from tests.integration.test_science_real import check_lab_calibration

    config = load_config({"cluster": {"dashboard": ":0"},
                          "pipeline": {"batch_events": 1, "chunk_events": 1}})
    store = tmp_path / "lab1.zarr"
    address = ClusterOptions(address=str(cluster.scheduler_file))
    summary = run_campaign([trc_dir], store, config, cluster=address)
    assert summary.failures == [] and summary.events_done == 3
    assert {r["task_units"] for r in _unit_records(store)} == {1}
    alone = [process_unit(u, config) for u in _reference([trc_dir], config)[0].units]
    # alone, impacts 1 and 3 do not calibrate (too few comb lines)
    assert [str(d["mass_calibration_status"].values[0]) for d in alone].count("calibrated") < 3
    stored = open_campaign(store).load()
    check_lab_calibration(_ragged(stored))
    whole = peaks_to_event_major(analyze(read_trc(trc_dir), config), 64)
    for name in sorted(_recalibrated(store)):
        want, got = whole[name].values, stored[name].values
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            assert np.array_equal(got.astype(want.dtype), want), name
    assert "campaign_calibration" in stored.attrs
    stored.close()
    # the exports carry it: per event, and the input's joint result
    import json

    import h5py

    from idexdask.pipeline.export import export_store

    (h5,) = export_store(store, ["hdf5"], tmp_path / "exports")
    with h5py.File(h5) as f:
        assert json.loads(f.attrs["campaign_calibration"])["events"] == [0, 1, 2]
        assert [bytes(m).decode() if isinstance(m, bytes) else str(m)
                for m in f["mass_calibration_method"][:]] == ["campaign"] * 3
    again = run_campaign([trc_dir], store, config, cluster=address)
    assert again.campaign_calibration is None  # unchanged: the step is skipped
    assert summary.campaign_calibration["0"]["calibrated"]


def test_campaign_step_splits_an_input_by_high_voltage(cluster, tmp_path):
    """An input recorded at two reflectron voltages gets two mass scales in `submit`'s
    campaign step too (issue 22), as analyze() of the whole input does, although each
    task sees only 8 of its 40 events."""
    from idexdask.pipeline.ragged import peaks_to_event_major
    from idexdask.simulate import simulate_events
    from idexdask.simulate.writer import write_packets
    from idexdask.workflow import analyze

    # first half at the simulator's 2946 V, second half 442 V lower (as in
    # tests/unit/calibration/test_campaign_calibration.py): only the grouping separates them
    events = simulate_events(40, seed=3, tof_stretch=(1.4437, 1.4437),
                             tof_t0=(0.0, 0.1)).events.copy()
    word = events["idx__txhdrhvpshkch45"].values.copy()
    second = np.arange(word.size) >= word.size // 2
    word[second] = (word[second] & np.uint32(0xFFFFF000)) | np.uint32(0x6AD)
    events["idx__txhdrhvpshkch45"] = ("epoch", word)
    source = tmp_path / "two_settings.pkts"
    source.write_bytes(write_packets(events))
    config = load_config({"cluster": {"dashboard": ":0"},
                          "pipeline": {"batch_events": 8, "chunk_events": 8}})
    store = tmp_path / "hv.zarr"
    summary = run_campaign([source], store, config,
                           cluster=ClusterOptions(address=str(cluster.scheduler_file)))
    assert summary.failures == [] and summary.events_done == 40
    settings = summary.campaign_calibration["0"]["high_voltage_settings"]
    assert sorted(settings) == ["0:hv0", "0:hv1"]
    assert set(settings["0:hv0"]["events"]) <= set(np.flatnonzero(second).tolist())
    assert set(settings["0:hv1"]["events"]) <= set(np.flatnonzero(~second).tolist())
    assert all(part["calibrated"] for part in settings.values())
    # the step's products equal those of analyze() over the whole input
    from idexdask import read_l0

    stored = open_campaign(store).load()
    whole = peaks_to_event_major(analyze(read_l0(source), config), 64)
    for name in ("mass_calibration", "mass_calibration_status", "mass_calibration_method"):
        want, got = whole[name].values, stored[name].values
        if want.dtype.kind == "f":
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            assert np.array_equal(got.astype(want.dtype), want), name


def _ragged(stored):
    from idexdask.pipeline.ragged import peaks_from_event_major

    return peaks_from_event_major(stored)


def test_corrupt_file_and_exit_codes(cluster, campaign, tmp_path):
    bad = tmp_path / "garbage.pkts"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(DECODE_ONLY))
    store = tmp_path / "partial.zarr"
    result = subprocess.run(
        [
            str(BIN / "idexdask"),
            "submit",
            str(campaign[1]),
            str(bad),
            str(campaign[2]),
            "-o",
            str(store),
            "--scheduler",
            str(cluster.scheduler_file),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "garbage.pkts" in result.stdout and "not IDEX L0 telemetry" in result.stdout
    failed = [r for r in _unit_records(store) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["input"].endswith("garbage.pkts")
    assert store_status(store).events_done == 220
    status = subprocess.run(
        [str(BIN / "idexdask"), "status", str(store)], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 3 and "garbage.pkts" in status.stdout
    assert "incomplete" in status.stdout and "finished" not in status.stdout
    assert "state              : incomplete" in result.stdout  # the run's own summary


def test_unwritable_output_fails_before_work(campaign, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    start = time.monotonic()
    result = subprocess.run(
        [str(BIN / "idexdask"), "submit", str(campaign[1]), "-o", str(blocker / "store.zarr")],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 2
    assert "cannot write the store" in result.stdout
    assert "dashboard" not in result.stdout  # no cluster was started
    assert time.monotonic() - start < 30


def test_bad_config_rejected_before_work(campaign, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("pipeline:\n  batch_events: 0\n")
    result = subprocess.run(
        [
            str(BIN / "idexdask"),
            "submit",
            str(campaign[1]),
            "-o",
            str(tmp_path / "s.zarr"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 2 and "pipeline.batch_events" in result.stdout
    assert not (tmp_path / "s.zarr").exists()


def test_concurrent_submits_into_one_store_one_is_refused(campaign, tmp_path):
    """Two real `idexdask submit` started together: one runs, the other exits 2 at once."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(
        {**DECODE_ONLY, "cluster": {"dashboard": ":0", "workers": 1}}))
    store = tmp_path / "store.zarr"
    command = [str(BIN / "idexdask"), "submit", str(campaign[1]), str(campaign[2]),
               "-o", str(store), "--config", str(tmp_path / "run.yaml")]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env()) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outputs
    winner = procs[codes.index(0)]
    refused = outputs[codes.index(2)][0]
    # the refusal names the run that holds the store
    assert "being written by another run" in refused
    assert f"pid {winner.pid}" in refused and "idexdask submit" in refused
    assert socket.gethostname() in refused
    assert "dashboard" not in refused  # refused before its cluster started
    # exactly one run wrote into the store
    runs = [r for r in Manifest(store).records() if r.get("record") == "run_start"]
    assert [r["pid"] for r in runs] == [winner.pid]
    assert store_status(store).state == "finished"


def _wait_for_units(store: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = (
            [r for r in _unit_records(store) if r["status"] == "done"]
            if (store / "_pipeline" / "manifest.jsonl").exists()
            else []
        )
        if len(done) >= n:
            return len(done)
        if proc.poll() is not None:
            raise AssertionError(f"submit ended early: {proc.returncode}")
        time.sleep(0.02)
    raise AssertionError("no progress")


def test_worker_death_mid_run(tmp_path, l0_dir):
    procs = DaskProcesses(tmp_path, workers=2, nanny=False)
    try:
        write_campaign(tmp_path / "sim.pkts", 24, compress=True, seed=21)
        inputs = [tmp_path / "sim.pkts"]
        overrides = {"pipeline": {"batch_events": 2, "chunk_events": 4}}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(overrides))
        store = tmp_path / "store.zarr"
        proc = subprocess.Popen(
            [
                str(BIN / "idexdask"),
                "submit",
                *map(str, inputs),
                "-o",
                str(store),
                "--scheduler",
                str(procs.scheduler_file),
                "--config",
                str(tmp_path / "run.yaml"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        try:
            done_at_kill = _wait_for_units(store, 3, proc)
            procs.workers[0].send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, out
        assert done_at_kill < 12  # the kill landed mid-run
        records = _unit_records(store)
        assert sorted(r["uid"] for r in records) == sorted({r["uid"] for r in records})
        assert all(r["status"] == "done" for r in records) and len(records) == 12
        config = load_config(overrides)
        plan, reference = _reference(inputs, config)
        _assert_store_equals(store, plan, reference)
    finally:
        procs.close()


def test_client_interrupted_and_resumed(campaign, tmp_path):
    inputs = [campaign[1], campaign[2]]
    overrides = {
        "pipeline": {"analyze": False, "batch_events": 5, "chunk_events": 8},
        "cluster": {"dashboard": ":0", "workers": 2},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(overrides))
    store = tmp_path / "store.zarr"
    command = [
        str(BIN / "idexdask"),
        "submit",
        *map(str, inputs),
        "-o",
        str(store),
        "--config",
        str(tmp_path / "run.yaml"),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        start_new_session=True,
    )
    try:
        _wait_for_units(store, 4, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the client and its embedded cluster
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = {r["uid"] for r in _unit_records(store) if r["status"] == "done"}
    status = subprocess.run(
        [str(BIN / "idexdask"), "status", str(store)], capture_output=True, text=True, timeout=60
    )
    assert "interrupted" in status.stdout
    config = load_config(overrides)
    plan, reference = _reference(inputs, config)
    assert 4 <= len(first) < len(plan.units)

    killed = json.loads((store / "_pipeline" / "lock.json").read_text())
    assert killed["pid"] == proc.pid  # SIGKILL left the lock behind

    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=_env())
    assert result.returncode == 0, result.stdout + result.stderr
    # the killed run's lock was recognised as stale and taken over, with a log line
    assert "took over the stale lock" in result.stderr
    assert f"pid {proc.pid}" in result.stderr
    assert not (store / "_pipeline" / "lock.json").exists()  # released at the end
    runs = [r for r in Manifest(store).records() if r.get("record") == "run_start"]
    assert runs[-1]["todo_units"] == len(plan.units) - len(first)
    second = [r for r in _unit_records(store) if r["run_id"] == runs[-1]["run_id"]]
    assert {r["uid"] for r in second} == {u.uid for u in plan.units} - first
    assert f"{len(first)} already done before this run" in result.stdout
    _assert_store_equals(store, plan, reference)
    assert json.loads(json.dumps(store_status(store).failures)) == []


def _worker_malloc_env() -> tuple[dict[str, str | None], str | None]:
    return ({k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")},
            os.environ.get("OMP_NUM_THREADS"))


def _worker_profiles(dask_worker) -> bool:
    """Whether the worker runs its statistical profiler (a periodic stack sample)."""
    return "profile" in dask_worker.periodic_callbacks


def test_embedded_workers_take_arrays_from_the_heap():
    """Embedded workers start with the mmap threshold at 32 MiB, not with distributed's
    MALLOC_TRIM_THRESHOLD_=65536 alone (2x slower array code: every temporary over
    128 KiB mmap-ed and faulted in), thread caps kept."""
    from idexdask.pipeline.cluster import open_client

    options = ClusterOptions(workers=1, threads_per_worker=1, dashboard="")
    with open_client(options) as client:
        ((malloc, omp),) = client.run(_worker_malloc_env).values()
        (profiled,) = client.run(_worker_profiles).values()
    assert malloc == {"MALLOC_TRIM_THRESHOLD_": str(32 << 20),
                      "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
    assert omp == "1"
    assert not profiled  # cluster.profile: false (the default) reaches the workers
    with open_client(replace(options, profile=True)) as client:
        (profiled,) = client.run(_worker_profiles).values()
    assert profiled


def _poll_intervals_ms(dask_worker=None, dask_scheduler=None) -> dict[str, float]:
    server = dask_worker if dask_worker is not None else dask_scheduler
    return {name: round(pc.callback_time) for name, pc in server.periodic_callbacks.items()
            if name in ("tick", "monitor", "memory_monitor")}


def test_embedded_cluster_runs_with_the_configured_dask_settings():
    """cluster.dask_config reaches the scheduler and the workers (Dask's defaults poll
    the event loop every 20 ms and the memory every 100 ms: ~5 % of an idle 2-worker
    cluster's core); an unknown Dask key is a ConfigError before a cluster starts."""
    from idexdask.pipeline.cluster import open_client

    shipped = ClusterOptions.from_config(load_config({}))
    assert shipped.dask_config["distributed.admin.tick.interval"] == "500ms"
    options = replace(shipped, workers=1, dashboard="", dask_config={
        **shipped.dask_config, "distributed.worker.memory.monitor-interval": "700ms"})
    with open_client(options) as client:
        (worker,) = client.run(_poll_intervals_ms).values()
        scheduler = client.run_on_scheduler(_poll_intervals_ms)
    assert worker == {"tick": 500, "monitor": 1000, "memory_monitor": 700}
    assert scheduler["tick"] == 500 and scheduler["monitor"] == 1000

    with pytest.raises(ConfigError, match="distributed.admin.tik.interval"):
        ClusterOptions.from_config(load_config(
            {"cluster": {"dask_config": {"distributed.admin.tik.interval": "1s"}}}))
    with pytest.raises(ConfigError, match="not a Dask setting"), open_client(
            replace(options, dask_config={"no.such.key": 1})):
        pass
    # null keeps Dask's own default
    dropped = ClusterOptions.from_config(load_config(
        {"cluster": {"dask_config": {"distributed.admin.tick.interval": None}}}))
    assert "distributed.admin.tick.interval" not in dropped.dask_config


def _processed(index: int, good_from: int):
    from idexdask.pipeline.tasks import Processed
    from idexdask.pipeline.units import ProcessedUnits

    if index < good_from:
        return Processed(ProcessedUnits(None, failures={f"u{index}": "bad bytes"}), 0.0)
    events = xr.Dataset({"x": ("epoch", np.arange(3.0) + index)})
    return Processed(ProcessedUnits(events), 0.0)


def test_store_schema_from_the_first_pack_that_processes():
    """The store's schema comes from the first pack whose processing succeeds: packs
    beyond those already processing are submitted one by one (and kept, their writes
    follow), up to five; if all fail, the run stops with every reason."""
    from idexdask.errors import IdexDaskError
    from idexdask.pipeline.cluster import open_client
    from idexdask.pipeline.runner import _template
    from idexdask.pipeline.units import Unit

    packs = [(Unit(uid=f"u{i}", kind="l0", path="f", input_index=0, n_events=3,
                   input_hash="", region=(3 * i, 3 * i + 3)),) for i in range(8)]
    with open_client(ClusterOptions(workers=1, threads_per_worker=1, dashboard="")) as client:
        for good_from, leading in ((3, 2), (0, 2), (6, 2)):
            def submit(index, good_from=good_from):
                return client.submit(_processed, index, good_from, pure=False)

            processing = [submit(i) for i in range(leading)]
            if good_from < 5:
                schema = _template(client, packs, processing, submit, None)
                assert float(schema["x"].values[0]) == good_from
                assert len(processing) == max(leading, good_from + 1)
            else:
                with pytest.raises(IdexDaskError, match="u4: bad bytes") as failure:
                    _template(client, packs, processing, submit, None)
                assert "u0: bad bytes" in str(failure.value)
                assert len(processing) == 5


def _lost_pack(key, dask_worker):
    raise KeyError(key)  # a worker that no longer holds the pack


def test_store_schema_read_where_the_pack_is_held_or_by_a_task(monkeypatch):
    """The schema of a processed pack is read on the worker holding it; where that
    fails, a schema task gives the same; a pack whose processing raised raises."""
    from idexdask.pipeline import runner
    from idexdask.pipeline.cluster import open_client

    with open_client(ClusterOptions(workers=1, threads_per_worker=1, dashboard="")) as client:
        held = client.submit(_processed, 2, 0, pure=False)
        with monkeypatch.context() as patch:
            patch.setattr(runner, "schema_task", _lost_pack)  # no task may be needed
            direct = runner._schema(client, held, None)
        monkeypatch.setattr(runner, "held_schema", _lost_pack)
        by_task = runner._schema(client, held, None)
        for schema in (direct, by_task):
            assert float(schema.template()["x"].values[0]) == 2
        failing = client.submit(_processed, "not an index", 0, pure=False, retries=0)
        with pytest.raises(TypeError):
            runner._schema(client, failing, None)
