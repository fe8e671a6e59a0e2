"""Byte-exact simulator of IDEX L0 science packets.

* :func:`simulate_events` draws dust impacts (TOF mass spectra, charge signals,
  header words) and returns the event dataset a decoder must produce, with the
  physical truth;
* :func:`write_packets` encodes any event dataset into science packets
  (uncompressed or Rice-compressed);
* :func:`write_campaign` does both and writes a ``.pkts`` file;
* :func:`idexdask.simulate.rice.encode_channel` is the Rice/Golomb encoder.
"""

from __future__ import annotations

from idexdask.simulate.campaign import write_campaign
from idexdask.simulate.model import ModelParameters, SimulatedEvents, simulate_events
from idexdask.simulate.rice import encode_channel
from idexdask.simulate.writer import write_packets

__all__ = [
    "ModelParameters",
    "SimulatedEvents",
    "encode_channel",
    "simulate_events",
    "write_campaign",
    "write_packets",
]
