"""Compile and cache the numba kernels before the first campaign runs.

The decoder's and the analysis' kernels are compiled on first use and cached
next to their modules (``cache=True``).  On a fresh installation the first task
of every worker process compiles them all: ~70 s of one core each, on every
worker at once.  :func:`compile_kernels` runs the pipeline's own code once, on
two tiny simulated files (one plain, one Rice-compressed) and two tiny LeCroy
impacts (one with TOF lines and a clipped, saturated stretch) decoded, analysed,
written to throw-away stores and calibrated by the campaign step (its joint
calibration, targeted search and matched filter), so that the caches exist
before any worker starts; ``make setup`` calls it (``idexdask compile``), and a
cluster image should too (docs/deploy.md).  With warm caches it takes a few
seconds.  ``tests/unit/test_warmup.py`` checks that a lab and a flight campaign
run after it compile nothing more.

A campaign on the embedded cluster calls :func:`ensure_kernels` first: where
the kernels of this installation are not yet in the cache
(:func:`idexdask.kernel_cache.kernels_ready`), as on the first run after
``pip install``, it compiles them once in the client, saying so in one line,
and the workers then load them (each worker compiling them all at once on
its first task took 95 s for a 200-event demo on 2 cores).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idexdask import kernel_cache
from idexdask.errors import IdexDaskError

if TYPE_CHECKING:
    import xarray as xr

    from idexdask.sources import Unit

__all__ = ["compile_kernels", "ensure_kernels"]

logger = logging.getLogger(__name__)

COLD_COMPILE_S = 70
"""Seconds of one core that compiling every kernel takes (development machine)."""


def compile_kernels() -> float:
    """Run decode, analysis, a region write and the campaign step once, compiling
    every kernel they use; write the package's bytecode
    (:func:`idexdask.kernel_cache.compile_modules`).

    Returns
    -------
    float
        Seconds it took (~70 s with cold caches on the development machine, a
        few with warm ones).

    Raises
    ------
    IdexDaskError
        If the simulated events cannot be processed (a broken installation).
    """
    from idexdask.config import load_config
    from idexdask.pipeline.plan import plan_inputs
    from idexdask.pipeline.region_write import write_region
    from idexdask.pipeline.store import initialise_store
    from idexdask.simulate import write_campaign

    started = time.perf_counter()
    config = load_config({})
    with tempfile.TemporaryDirectory(prefix="idexdask-compile-") as tmp:
        directory = Path(tmp)
        files = []
        for index, compress in enumerate((False, True)):
            files.append(directory / f"warmup{index}.pkts")
            write_campaign(files[-1], 4, compress=compress, seed=index)
        flight = plan_inputs(files, 8).units
        lab = _lab_inputs(directory / "lab")
        # the flight events in one pack; the lab impacts one pack each (a pack
        # with a saturated TOF High has a per-sample merged noise, one without a
        # view of its high gain's: the line search compiles for both)
        for name, packs in (("warmup", [flight]), ("warmup_lab", [[u] for u in lab])):
            parts = [_processed(pack, config) for pack in packs]
            n_events = sum(p.sizes["epoch"] for p in parts)
            rows = parts[0].sizes["epoch"]  # one chunk per pack
            store = directory / f"{name}.zarr"
            initialise_store(store, parts[0].isel(epoch=slice(0, 1)), n_events, rows=rows,
                             meta={})
            for pack, events in zip(packs, parts, strict=True):
                write_region(store, events, (pack[0].region[0], pack[-1].region[1]), rows=rows,
                             n_events=n_events)
            _campaign_step(store, [u for pack in packs for u in pack], config, rows, n_events)
    # the modules' bytecode too: every worker process imports them from it
    kernel_cache.compile_modules()
    kernel_cache.mark_ready()
    return time.perf_counter() - started


def ensure_kernels(echo: Callable[[str], None] | None = None) -> float | None:
    """Compile the kernels once (in this process) unless they are cached already.

    Parameters
    ----------
    echo : callable, optional
        Receives the one-line message said before compiling (default: the log,
        at INFO).

    Returns
    -------
    float or None
        Seconds spent compiling; None if the kernels were cached already.
    """
    if kernel_cache.kernels_ready():
        return None
    (echo or logger.info)(
        f"compiling idexdask's numba kernels once for this machine (about {COLD_COMPILE_S} s "
        f"of one core; cached in {kernel_cache.cache_dir()} for every worker and later run)")
    seconds = compile_kernels()
    logger.info("kernels compiled and cached in %.1f s", seconds)
    return seconds


#: Stretch of the warm-up capture's TOF lines, µs/sqrt(u): the shared peridot
#: captures' (configs/calibration.yaml, preset ``lab_peridot``), so that the
#: lines calibrate and the campaign step's targeted search runs on them.
_LAB_STRETCH_US = 0.515
#: Ions of the warm-up capture's TOF lines: more than the lab presets'
#: ``min_matches`` (5), so that the impact calibrates on its own.
_LAB_IONS_U = (1.008, 12.0, 15.995, 22.990, 23.985, 27.977, 38.964, 39.963, 55.935)
#: Samples (1 ns apart) and start (s) of the warm-up captures: -4 to 12.4 µs,
#: a pre-trigger baseline and every line's time.
_LAB_SAMPLES = 16384
_LAB_START_S = -4e-6


def _processed(units: Sequence[Unit], config: Mapping[str, Any]) -> xr.Dataset:
    """The events of one pack of ``units``, analysed for the store (as a pack task)."""
    from idexdask.pipeline.units import process_units

    processed = process_units(tuple(units), config)
    if processed.failures or processed.dataset is None:
        raise IdexDaskError(f"the warm-up events could not be processed: {processed.failures}")
    return processed.dataset


def _campaign_step(store: Path, units: Sequence[Unit], config: Mapping[str, Any], rows: int,
                   n_events: int) -> None:
    """The campaign calibration step on a warm-up store, in this process: the
    reduce of each input's rows, then the map over them (as
    :func:`~idexdask.pipeline.recalibrate.campaign_step` runs them on the
    cluster): the joint calibration's shift search, the targeted search and
    its matched filter."""
    from idexdask.composition.settings import composition_settings
    from idexdask.pipeline.recalibrate import apply_region, reduce_group

    composition = composition_settings(config)
    by_input: dict[int, list[Unit]] = {}
    for unit in units:
        by_input.setdefault(unit.input_index, []).append(unit)
    for group in by_input.values():
        regions = [tuple(u.region) for u in group]
        reduced = reduce_group(str(store), regions, group[0].kind, config)
        part = {key: value for key, value in reduced.items() if key != "summary"}
        region = (regions[0][0], regions[-1][1])
        apply_region(str(store), region, part, {"0": reduced["summary"]}, config, rows,
                     n_events, composition)


def _lab_inputs(directory: Path) -> Sequence[Unit]:
    """Two tiny LeCroy impacts, planned: the kernels of the lab path (float32
    volts, int16 codes) compiled too.

    Impact 1 is noise on every channel.  Impact 2's TOF channels hold
    negative-going lines (as the scope records ions) at the comb's times, the
    strongest (Mg) clipped at the ADC's lowest code for 12 samples: the scope's
    clipping flag, a saturated stretch, whose interval the TOF gain merge
    locates on the formula time axis (:func:`~idexdask.analysis.signal_quality.
    kernels.formula_interval`); its lines are fitted and calibrate the impact.
    """
    import numpy as np

    from idexdask.io.trc import write_trc
    from idexdask.pipeline.plan import plan_inputs

    directory.mkdir()
    rng = np.random.default_rng(0)
    time_us = 1e6 * _LAB_START_S + 1e-3 * np.arange(_LAB_SAMPLES)
    lines = np.zeros(_LAB_SAMPLES)  # TOF High, codes below the baseline
    for k, mass in enumerate(_LAB_IONS_U):
        depth = 40000.0 if mass == 23.985 else 4000.0 + 1000.0 * k  # Mg beyond the rail
        centre = _LAB_STRETCH_US * np.sqrt(mass)
        lines -= depth * np.exp(-0.5 * ((time_us - centre) / 0.008) ** 2)
    for impact, signal in ((1, None), (2, lines)):
        for channel in range(1, 5):
            codes = rng.integers(-64, 64, _LAB_SAMPLES).astype(float) * 16
            if signal is not None and channel in (2, 3):  # TOF Low, TOF High
                codes += signal * (0.1 if channel == 2 else 1.0)  # TOF Low: a tenth
            codes = np.clip(np.round(codes), -32768, 32752).astype(np.int16)
            write_trc(directory / f"lab_C{channel}_{impact:05d}.trc", codes,
                      horiz_interval=1e-9, horiz_offset=_LAB_START_S, vertical_gain=2.5e-6,
                      wave_source=channel)
    (directory / "lab_settings.txt").write_text("QD 1\nTOF Low\nTOF High\nQD 2\n")
    return plan_inputs([directory], 1).units
