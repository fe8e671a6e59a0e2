"""LeCroy ``.trc`` oscilloscope captures -> IDEX event datasets.

Lab captures of dust impacts (a LeCroy WaveRunner/WavePro recording the detector's
charge pickup, TOF and target channels) are read into the same kind of event
dataset as the telemetry decoder produces, so that the downstream waveform
analysis runs unchanged on them.

File format
-----------
A ``.trc`` file is an optional SCPI block header ``#<n><n digits>`` (present when
the waveform was saved over the remote interface; ``#9001000350`` announces 1000350
bytes), then the 346-byte ``WAVEDESC`` descriptor (template ``LECROY_2_3``), an
optional user text, optional trigger-time / RIS-time arrays, and the data array
``WAVE_ARRAY_1`` of signed bytes (``COMM_TYPE`` 0) or signed 16-bit words
(``COMM_TYPE`` 1) in the byte order given by ``COMM_ORDER`` (0 big-, 1
little-endian).  Sample ``i`` is ``VERTICAL_GAIN * raw[i] - VERTICAL_OFFSET`` volts
at ``HORIZ_OFFSET + i * HORIZ_INTERVAL`` seconds from the trigger.  Offsets below
are relative to the first byte of ``WAVEDESC``.

Impacts and channels
--------------------
Files of one impact share a trailing number and differ in channel: the channel
number follows a capital ``C`` that does not continue a word, the impact number is
the last run of digits before ``.trc``:

* ``C1--Trace--00003.trc`` (LeCroy default),
* ``C1Fe00003.trc`` (LeCroy auto-save with a title),
* ``peridot_C1_00003.trc`` (renamed),

are all channel 1 of impact 3.  Channel names come from a settings file whose line
*n* names channel C\\ *n* (``peridot_settings.txt``: ``QD 1``, ``TOF Low``, ``TOF High``,
``QD 2``) and are mapped to dataset variables by :func:`channel_variable_name`.

Output layout
-------------
One row per impact along ``epoch`` (TT2000 ns of the scope's trigger time stamp;
the scope clock is taken as UTC, which it is only if the lab set it so).  Waveform
variables are float32 volts at the native sampling; where a channel has one gain
and offset over the impacts read, its ``encoding`` holds them as CF
``scale_factor``/``add_offset`` of int16 codes (:mod:`idexdask.adccodes`), so that
stores keep the recorded codes.  Time axes are given by formula
(:mod:`idexdask.timeaxis`): ``(HORIZ_OFFSET + i * HORIZ_INTERVAL) * 1e6`` µs of the
axis's reference channel, from the per-event terms ``<axis>_start`` (s),
``<axis>_step`` (s) and ``<axis>_count``, computed when read.  Channels that share the
sampling interval and record length of the reference channel (``TOF_High``,
else ``TOF_Mid``, ``TOF_Low``, else the first channel) share the high-rate axis
``time_high_sample_rate`` (epoch, ``time_high_sample_rate_index``), float64 µs;
channels sampled differently go on ``time_low_sample_rate`` if they all agree with
each other, else each on its own ``time_<var>`` axis.  Every waveform variable
names its time variable in its ``time_variable`` attribute.

The scope interpolates the trigger per channel, so channels sharing an axis can
start a fraction of a sample apart (up to ~1 ns in the peridot captures).  The axis
holds the reference channel's exact times; ``channel_time_offset`` (epoch,
channel), µs, holds each channel's first-sample time minus the axis's, so that the
exact time of ``ds[var][e, i]`` is ``time[e, i] + channel_time_offset[e, var]``.

Examples
--------
>>> ds = read_trc("/work/shared/data/scope-trc")          # doctest: +SKIP
>>> ds.TOF_High.attrs["time_variable"]                     # doctest: +SKIP
'time_high_sample_rate'

Modules
-------
:mod:`.format` (the header and the codes of one file), :mod:`.channels` (file
names, settings files, polarities), :mod:`.reader` (a read into a dataset),
:mod:`.writer` (writing captures).
"""

from __future__ import annotations

from idexdask.io.trc.channels import (
    TRC_NAME_PATTERN,
    channel_variable_name,
    parse_trc_filename,
    read_settings,
)
from idexdask.io.trc.format import (
    WAVEDESC_LENGTH,
    TrcHeader,
    TrcWaveform,
    parse_header,
    read_trc_file,
)
from idexdask.io.trc.reader import read_trc
from idexdask.io.trc.writer import write_trc

__all__ = [
    "TRC_NAME_PATTERN",
    "WAVEDESC_LENGTH",
    "TrcHeader",
    "TrcWaveform",
    "channel_variable_name",
    "parse_header",
    "parse_trc_filename",
    "read_settings",
    "read_trc",
    "read_trc_file",
    "write_trc",
]
