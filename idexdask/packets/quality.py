"""Quality flags of decoded events.

Damaged input never stops decoding: the damaged event is kept, flagged, and the
reason logged.  Two variables carry the flags:

``channel_status`` (epoch, channel)
    What went wrong with each waveform channel (bits ``MISSING`` ... ``DUPLICATE_FRAGMENT``).
``quality_flags`` (epoch)
    The OR of the event's channel flags plus the event-level bits
    (``HEADER_CRC_MISMATCH``, ``DUPLICATE_HEADER``).

A value of 0 means clean.  Missing samples hold the fill value 65535.
"""

from __future__ import annotations

from enum import IntFlag

__all__ = ["QualityFlag"]


class QualityFlag(IntFlag):
    """Bits of ``channel_status`` and ``quality_flags``.

    Attributes
    ----------
    MISSING, INCOMPLETE, DECODE_ERROR, CRC_MISMATCH, SYNC_MISMATCH : QualityFlag
        Channel bits, each described where it is defined.
    CONFLICTING_FRAGMENT, DUPLICATE_FRAGMENT, SOURCE_TRUNCATED : QualityFlag
        Channel bits (informational or kept-data notes).
    HEADER_CRC_MISMATCH, DUPLICATE_HEADER : QualityFlag
        Event bits (``quality_flags`` only).
    """

    MISSING = 1
    """No packet of this channel arrived: all samples are fill."""
    INCOMPLETE = 2
    """Fragments are missing or short: the missing samples are fill."""
    DECODE_ERROR = 4
    """The compressed stream is corrupt: samples from the error on are fill."""
    CRC_MISMATCH = 8
    """A packet of this channel failed its CRC; its samples are kept but suspect."""
    SYNC_MISMATCH = 16
    """A packet of this channel lacks its 0x3333 sync word."""
    CONFLICTING_FRAGMENT = 32
    """Two different packets claim the same fragment; the one passing its CRC (else
    the longer, else the first) was kept."""
    DUPLICATE_FRAGMENT = 64
    """An identical fragment arrived twice; one copy was used (informational)."""
    HEADER_CRC_MISMATCH = 128
    """The event header packet failed its CRC: header fields and time are suspect."""
    DUPLICATE_HEADER = 256
    """The event header arrived more than once; the first copy was used (informational)."""
    SOURCE_TRUNCATED = 512
    """The source product holds fewer samples than the instrument records (the
    official L1a CDF keeps 8189 of the 8192 TOF samples): the rest are fill
    (informational; :func:`idexdask.read_cdf`)."""

    @classmethod
    def describe(cls, value: int) -> str:
        """Names of the bits set in ``value``, ``"ok"`` for 0."""
        names = [flag.name for flag in cls if value & flag]
        return "|".join(n for n in names if n) or "ok"


SEVERE = (
    QualityFlag.MISSING
    | QualityFlag.INCOMPLETE
    | QualityFlag.DECODE_ERROR
    | QualityFlag.CRC_MISMATCH
    | QualityFlag.SYNC_MISMATCH
    | QualityFlag.CONFLICTING_FRAGMENT
    | QualityFlag.HEADER_CRC_MISMATCH
)
"""Bits that mean the data are damaged (the others are informational)."""
