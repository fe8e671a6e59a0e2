"""The project's error hierarchy.

Every exception raised on purpose by idexdask derives from :class:`IdexDaskError`,
so callers can catch the whole family with one ``except`` clause and never see a
bare ``ValueError`` or ``IndexError`` escape from malformed input.
"""

from __future__ import annotations


class IdexDaskError(Exception):
    """Base class of every error idexdask raises on purpose."""


class ConfigError(IdexDaskError, ValueError):
    """A configuration file or mapping has an unknown key or an invalid value."""


class PacketError(IdexDaskError):
    """Telemetry bytes cannot be decoded (not CCSDS, truncated beyond recovery, ...)."""


class DecompressionError(PacketError):
    """A Rice/Golomb compressed waveform stream is malformed."""


class XtceError(IdexDaskError):
    """An XTCE definition is missing, unreadable or does not describe the packets."""


class InputError(IdexDaskError):
    """An input no source reads, that several sources claim, or that is missing."""


class TraceFileError(IdexDaskError):
    """An oscilloscope capture (LeCroy .trc) is truncated or not a LeCroy file."""


class CdfInputError(IdexDaskError):
    """An input CDF is unreadable, truncated, or not an IDEX L1a science product."""


class AnalysisError(IdexDaskError):
    """Waveform analysis cannot run on the given dataset (missing variables, ...)."""


class CalibrationError(IdexDaskError):
    """A time-of-flight to mass calibration cannot be built or inverted."""


class StoreError(IdexDaskError):
    """The output store is unwritable, corrupt, or belongs to another run."""


class StoreLockedError(StoreError):
    """Another run holds the store's lock (``<store>/_pipeline/lock.json``)."""
