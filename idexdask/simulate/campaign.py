"""Write a simulated campaign to an L0 packet file."""

from __future__ import annotations

import os
from pathlib import Path

from idexdask._logging import get_logger
from idexdask.simulate.model import SimulatedEvents, encode_and_finalize, simulate_events

__all__ = ["write_campaign"]

_log = get_logger(__name__)


def write_campaign(
    path: str | os.PathLike,
    n_events: int,
    *,
    compress: bool = False,
    seed: int = 0,
    **model_options,
) -> SimulatedEvents:
    """Simulate ``n_events`` impacts and write their science packets to ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        Output ``.pkts`` file (overwritten).
    n_events : int
        Number of events.
    compress : bool
        Rice-compress the waveforms.
    seed : int
        Seed of the random generator.
    **model_options
        Fields of :class:`idexdask.simulate.model.ModelParameters`.

    Returns
    -------
    SimulatedEvents
        ``events`` is what decoding the file returns (``idx__sci0comp`` and
        ``idx__crcsci0pkt`` match the packets written); ``truth`` the model draws.
    """
    simulated = simulate_events(n_events, seed=seed, **model_options)
    # Compression changes COMP and the sequence counts (hence the header CRCs).
    events, encoded = encode_and_finalize(simulated.events, compress=compress, start_sequence=0)
    data = encoded.data
    Path(path).write_bytes(data)
    _log.info("wrote %d events (%d bytes) to %s", n_events, len(data), path)
    return SimulatedEvents(events=events, truth=simulated.truth)
