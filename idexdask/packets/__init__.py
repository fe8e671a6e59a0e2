"""IDEX L0 telemetry: CCSDS packets -> events (the bytes end of the sources layer).

The modules follow the XTCE concepts of the packet definitions: :mod:`.framing`
finds the packets in a byte stream, :mod:`.fields` extracts header fields,
:mod:`.assemble` groups packets into events, :mod:`.rice` decompresses the
waveforms, :mod:`.crc` checks them, :mod:`.timing` gives epoch and sample times,
:mod:`.xtce` decodes the other APIDs with space-packet-parser, and
:mod:`.reader` puts it together as :func:`read_l0`.  :mod:`.layout` holds the
packet layout's constants and :mod:`.quality` the per-event quality flags.
"""

from idexdask.packets.assemble import AssembledEvents, assemble_events
from idexdask.packets.crc import crc16_ccitt_false, crc16_of_packets
from idexdask.packets.fields import extract_fields
from idexdask.packets.framing import PacketIndex, index_packets
from idexdask.packets.quality import QualityFlag
from idexdask.packets.reader import decode_l0_bytes, load_l0_buffer, read_l0
from idexdask.packets.rice import decode_channel
from idexdask.packets.timing import (
    epoch_from_header,
    met_seconds,
    pretrigger_times,
    sample_times,
    sample_times_variable,
)
from idexdask.packets.xtce import decode_other_apids, load_definitions

__all__ = [
    "AssembledEvents",
    "PacketIndex",
    "QualityFlag",
    "assemble_events",
    "crc16_ccitt_false",
    "crc16_of_packets",
    "decode_channel",
    "decode_l0_bytes",
    "decode_other_apids",
    "epoch_from_header",
    "extract_fields",
    "index_packets",
    "load_definitions",
    "load_l0_buffer",
    "met_seconds",
    "pretrigger_times",
    "read_l0",
    "sample_times",
    "sample_times_variable",
]
