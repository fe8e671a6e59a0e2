"""Input sources: one class per input kind, a registry, a factory that refuses ambiguity.

Every input a run takes is read by exactly one source
(:class:`~idexdask.sources.base.Source`): it recognises its inputs, cuts them
into units of work whose event counts are exact, reads a unit into the event
dataset, and names its default calibration preset and channel map.  Sources are
registered as their classes are defined; :data:`sources`
(:class:`~idexdask.sources.factory.SourceFactory`) finds the one source of an
input and refuses an input that none or several claim.

==========  ====================================================  =================
kind        inputs                                                 read by
==========  ====================================================  =================
``l0``      IDEX L0 packet files (``.pkts``, ``.bin``, no suffix,  ``read_l0``
            or starting with an IDEX packet)
``cdf``     official IMAP SDC IDEX L1a science CDFs (``.cdf``)     ``read_cdf``
``trc``     directories of LeCroy captures (``.trc``)              ``read_trc``
==========  ====================================================  =================

``l0`` and ``cdf`` inputs decode to the same event dataset and may share a
store (family ``events``); lab captures (family ``lab``) have other products
and may not.

A new input kind is a module here with one :class:`Source` subclass (its
``kind``, detection, planning, reading and defaults), imported below.
"""

from idexdask.sources.base import Source, SourceDefaults, next_cut
from idexdask.sources.factory import SourceFactory, SourceInput, sources
from idexdask.sources.l0 import L0Packets, plan_l0_file
from idexdask.sources.l1a_cdf import L1aCdf, plan_cdf_file
from idexdask.sources.lecroy import LecroyCaptures
from idexdask.sources.unit import Unit, digest_bytes

__all__ = [
    "L0Packets",
    "L1aCdf",
    "LecroyCaptures",
    "Source",
    "SourceDefaults",
    "SourceFactory",
    "SourceInput",
    "Unit",
    "digest_bytes",
    "next_cut",
    "plan_cdf_file",
    "plan_l0_file",
    "sources",
]
