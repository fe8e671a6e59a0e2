"""Event header values of real IDEX events, used as defaults by the simulator.

The numbers below were read (with our own layout table) from the first science
event of the flight-model test file ``imap_idex_l0_raw_20231218_v001.pkts``;
fields that vary from event to event in that file are drawn per event by
:mod:`idexdask.simulate.model` instead (times, event numbers, trigger offsets,
sample delays, min/max words).
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["EVENT_HEADER_DEFAULTS", "REAL_SAMPDELAYS", "SCIENCE_HEADER_DEFAULTS"]

SCIENCE_HEADER_DEFAULTS = MappingProxyType(
    {
        "idx__sci0cont": 127,  # all six channels present
        "idx__sci0pack": 1,
        "idx__sci0cat": 32,
        "idx__sci0qual": 5,
        "idx__sci0ver": 9,
        "aid": 0x8FF35218,
    }
)
"""Science header values common to every packet of the real files."""

EVENT_HEADER_DEFAULTS = MappingProxyType(
    {
        "idx__txhdrscievtlen": 0x2080,
        "idx__txhdrtrigoffset": 6,
        "idx__txhdrtrigid": 1,  # high-gain TOF trigger
        "idx__txhdrblocks": 0x3B7DF,  # 3 high-rate and 31 low-rate pre-trigger blocks
        "idx__txhdrhgtrigctrl1": 0x91000000,
        "idx__txhdrlgtrigctrl1": 0xFFFFF800,
        "idx__txhdrlgtrigctrl2": 0xFF00FF00,
        "idx__txhdrmgtrigctrl1": 0xFFFFF800,
        "idx__txhdrmgtrigctrl2": 0xFF00FF00,
        "idx__txhdrlsadc": 0xFFF00,
        "idx__txhdrpolstat": 1,
        "idx__txhdrhgtrigmode": 1,
        "idx__txhdrsp07": 0x7E2,
        "idx__txhdrls0maxmin": 0xFFF000,
        "idx__txhdrls1maxmin": 0x80F7E8,
        "idx__txhdrls2maxmin": 0x894761,
        "idx__txhdrfifodelay": 0x10,
        "idx__txhdrsampdelay": 0x2F0BC4F,
        "idx__txhdrtranscnt": 4,
        "idx__txhdrprochkch01": 0x4FA030E,
        "idx__txhdrprochkch23": 0x76A05C8,
        "idx__txhdrprochkch45": 0xA4A04DB,
        "idx__txhdrprochkch67": 0x7F90919,
        "idx__txhdrhvpshkch01": 0x7DB06AD,
        "idx__txhdrhvpshkch23": 0x8706AD,
        "idx__txhdrhvpshkch45": 0x98407DB,
        "idx__txhdrhvpshkch67": 0x1310A8E,
        "idx__txhdrlvhk0ch01": 0x8000800,
        "idx__txhdrlvhk0ch23": 0xA3E0BBA,
        "idx__txhdrlvhk0ch45": 0x8080C67,
        "idx__txhdrlvhk0ch67": 0xC430C53,
        "idx__txhdrlvhk1ch01": 0x2120672,
        "idx__txhdrlvhk1ch23": 0x49605ED,
        "idx__txhdrlvhk1ch45": 0xD760793,
        "idx__txhdrlvhk1ch67": 0xB7A01C7,
        "idx__txhdrlvhk2ch01": 0x4C104C4,
        "idx__txhdrlvhk2ch23": 0xC2B0A3F,
        "idx__txhdrlvhk2ch45": 0x6060CF2,
        "idx__txhdrlvhk2ch67": 0x10D99,
        "idx__txhdrfswmajor": 2,
        "idx__txhdrfswhvstat": 3,
        "idx__txhdrfpgaver": 0x20230328,
    }
)
"""Event header block values of a real event (fields not listed default to 0)."""

REAL_SAMPDELAYS = (
    0x2F0BC4F,
    0x0F03C2F,
    0x2709C46,
    0x2F0BC53,
    0x2F0BC4C,
    0x1705C35,
    0x0701C29,
    0x2709C49,
    0x2F0BC4D,
    0x1705C39,
    0x370DC59,
    0x1F07C3F,
)
"""SAMPDELAY words seen in the real file (high/mid/low gain delays, 10 bits each)."""
