"""Compile and cache the numba kernels before the first campaign runs.

The decoder's and the analysis' kernels are compiled on first use and cached
next to their modules (``cache=True``).  On a fresh installation the first task
of every worker process compiles them all: ~70 s of one core each, on every
worker at once.  :func:`compile_kernels` runs the pipeline's own code once, on
two tiny simulated files (one plain, one Rice-compressed) and a tiny LeCroy
capture decoded, analysed and written to throw-away stores, so that the caches
exist before any worker starts; ``make setup`` calls it (``idexdask compile``), and a cluster image
should too (docs/deploy.md).  With warm caches it takes a few seconds.

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
from collections.abc import Callable
from pathlib import Path

from idexdask import kernel_cache
from idexdask.errors import IdexDaskError

__all__ = ["compile_kernels", "ensure_kernels"]

logger = logging.getLogger(__name__)

COLD_COMPILE_S = 70
"""Seconds of one core that compiling every kernel takes (development machine)."""


def compile_kernels() -> float:
    """Run decode, analysis and a region write once, compiling every kernel they use.

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
    from idexdask.pipeline.units import process_units
    from idexdask.simulate import write_campaign

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="idexdask-compile-") as tmp:
        directory = Path(tmp)
        files = []
        for index, compress in enumerate((False, True)):
            files.append(directory / f"warmup{index}.pkts")
            write_campaign(files[-1], 4, compress=compress, seed=index)
        plan = plan_inputs(files, 8)
        processed = process_units(tuple(plan.units), load_config({}))
        if processed.failures or processed.dataset is None:
            raise IdexDaskError(f"the warm-up events could not be processed: {processed.failures}")
        for name, events in (("warmup", processed.dataset),
                             ("warmup_lab", _lab_events(directory / "lab"))):
            n_events = events.sizes["epoch"]
            store = directory / f"{name}.zarr"
            initialise_store(store, events.isel(epoch=slice(0, 1)), n_events, rows=n_events,
                             meta={})
            write_region(store, events, (0, n_events), rows=n_events, n_events=n_events)
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


def _lab_events(directory: Path):
    """A tiny LeCroy capture (4 channels of noise) through the unit function: the
    kernels of the lab path (float32 volts, int16 codes) compiled too."""
    import numpy as np

    from idexdask.config import load_config
    from idexdask.io.trc import write_trc
    from idexdask.pipeline.plan import plan_inputs
    from idexdask.pipeline.units import process_units

    directory.mkdir()
    rng = np.random.default_rng(0)
    for channel in range(1, 5):
        codes = (rng.integers(-64, 64, 8192) * 16).astype(np.int16)
        write_trc(directory / f"lab_C{channel}_00001.trc", codes, horiz_interval=1e-9,
                  horiz_offset=-4e-6, vertical_gain=2.5e-6, wave_source=channel)
    (directory / "lab_settings.txt").write_text("QD 1\nTOF Low\nTOF High\nQD 2\n")
    processed = process_units(tuple(plan_inputs([directory], 1).units), load_config({}))
    if processed.failures or processed.dataset is None:
        raise IdexDaskError(f"the warm-up capture could not be processed: {processed.failures}")
    return processed.dataset
