"""Build the event dataset (the layout :func:`idexdask.read_l0` returns) from arrays."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from idexdask.packets.layout import (
    CHANNELS,
    EVENT_HEADER_FIELDS,
    HIGH_RATE_MSPS,
    HIGH_RATE_SAMPLES,
    LOW_RATE_MSPS,
    LOW_RATE_SAMPLES,
    RENAMED_FIELDS,
    SCIENCE_HEADER_FIELDS,
    SYNC_WORD,
)
from idexdask.packets.timing import epoch_from_header, pretrigger_times, sample_times

__all__ = ["HIGH_DIM", "LOW_DIM", "events_dataset", "time_axes"]

HIGH_DIM = "time_high_sample_rate_index"
LOW_DIM = "time_low_sample_rate_index"


def time_axes(values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sample times relative to the trigger, µs, from BLOCKS, TRIGID and SAMPDELAY.

    Returns
    -------
    time_high, time_low : numpy.ndarray of float64
        Shapes (events, 8192) and (events, 512).
    """
    t_high, t_low = pretrigger_times(
        values["idx__txhdrblocks"].astype(np.int64),
        values["idx__txhdrtrigid"].astype(np.int64),
        values["idx__txhdrsampdelay"].astype(np.int64),
    )
    return (
        sample_times(t_high, HIGH_RATE_SAMPLES, HIGH_RATE_MSPS),
        sample_times(t_low, LOW_RATE_SAMPLES, LOW_RATE_MSPS),
    )


def events_dataset(
    waveforms: Mapping[str, np.ndarray],
    values: Mapping[str, np.ndarray],
    header_crc: np.ndarray,
) -> xr.Dataset:
    """Assemble the event dataset a decoder returns for these events.

    Parameters
    ----------
    waveforms : mapping
        Channel name -> (events, samples) integer array, DN.
    values : mapping
        Header field name (layout name) -> one value per event.
    header_crc : numpy.ndarray
        CRC of each event's header packet.

    Returns
    -------
    xarray.Dataset
        Dimension ``epoch`` (TT2000 ns, int64); the six waveforms (uint16); the
        time axes ``time_high_sample_rate`` and ``time_low_sample_rate`` (µs);
        every header field under its dataset name with the field's dtype
        (``aid`` for the FSW AID copy), ``idx__syncsci0pkt`` and ``idx__crcsci0pkt``.
    """
    epoch = epoch_from_header(
        values["idx__txhdrtimesec1"], values["idx__txhdrtimesec2"], values["idx__txhdrtimesubs"]
    ).astype(np.int64)
    time_high, time_low = time_axes(values)
    data_vars: dict[str, tuple] = {}
    for spec in CHANNELS:
        dim = HIGH_DIM if spec.high_rate else LOW_DIM
        data_vars[spec.name] = (
            ("epoch", dim),
            np.asarray(waveforms[spec.name]).astype(np.uint16),
            {"units": "DN"},
        )
    data_vars["time_high_sample_rate"] = (("epoch", HIGH_DIM), time_high, {"units": "us"})
    data_vars["time_low_sample_rate"] = (("epoch", LOW_DIM), time_low, {"units": "us"})
    for field in (*SCIENCE_HEADER_FIELDS, *EVENT_HEADER_FIELDS):
        name = RENAMED_FIELDS.get(field.name, field.name)
        data_vars[name] = ("epoch", np.asarray(values[field.name]).astype(field.dtype))
    n = epoch.size
    data_vars["idx__syncsci0pkt"] = ("epoch", np.full(n, SYNC_WORD, dtype=np.uint16))
    data_vars["idx__crcsci0pkt"] = ("epoch", np.asarray(header_crc).astype(np.uint16))
    return xr.Dataset(data_vars, coords={"epoch": ("epoch", epoch, {"units": "ns TT2000"})})
