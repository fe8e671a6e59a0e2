"""Per-event, per-channel signal quality: baseline, noise, SNR and saturation.

All quantities are computed for every event at once (arrays of shape
``(n_events, n_samples)``, no per-event Python loop) through the array namespace of
:mod:`idexdask.analysis.xp`, so the same code runs on NumPy or CuPy arrays.

Definitions
-----------
Missing samples
    NaN, or equal to the waveform's ``FILLVAL`` attribute (65535 in the decoded
    telemetry).  They are ignored by every statistic below.
Baseline window
    ``[t0, t1)`` µs relative to the trigger, default ``[-7, -5)``: IDEX high-rate
    records start near -7.5 µs and low-rate ones near -31.5 µs, so the window
    exists for both.  A record "covers" the window when its time axis spans it and
    at least ``min_baseline_samples`` valid samples fall in it; otherwise the
    baseline is taken over the first ``baseline_fallback_fraction`` of the trace
    (status :attr:`QualityStatus.BASELINE_FALLBACK`).  The time axis is the one
    named by the waveform's ``time_variable`` attribute, else the one implied by
    its sample dimension (``time_high_sample_rate_index`` ->
    ``time_high_sample_rate``, ``time_low_sample_rate_index`` ->
    ``time_low_sample_rate``).
Baseline level and noise
    ``baseline`` = median over the window; ``noise`` = 1.4826 x the median absolute
    deviation (MAD) from it, a robust estimate of the Gaussian sigma.  A quiet,
    coarsely quantised baseline can have MAD = 0; the sample standard deviation of
    the window is used then.  The reported noise is floored at the quantisation
    noise ``q / sqrt(12)`` (``q`` below): a perfectly constant quantised baseline
    has noise 1/sqrt(12) DN, never 0, so nothing downstream divides by zero.
SNR
    ``snr = excursion / max(noise, q / sqrt(12))`` where ``excursion`` is the
    largest value of ``polarity * (x - baseline)`` over the whole trace and ``q``
    the quantisation step (1 DN for integer data; the ``vertical_gain`` attribute,
    V, for scope data; else 0).  The floor keeps a perfectly quiet quantised
    baseline from giving an infinite SNR.  ``polarity`` is +1 (positive-going),
    -1 (negative-going) or 0 (either direction, the larger excursion wins); it
    comes from the configuration, else the waveform's ``signal_polarity``
    attribute, else +1.
Saturation
    A sample is saturated if it belongs to

    (a) a run of at least ``saturation_min_run`` (3) consecutive samples at an ADC
        rail: ``>= VALIDMAX`` or ``<= VALIDMIN`` (attributes; else
        ``2**adc_bits - 1`` and 0 from ``adc_bits``; none for scope data in
        volts), or
    (b) a clipped flat top: a run of at least ``flat_top_min_run`` (3) consecutive
        samples all equal to the waveform's extreme value in the signal's
        polarity, when that extreme lies more than ``flat_top_sigma`` (10) noise
        sigmas (with the quantisation floor above) from the baseline.

    Repeated values near the baseline therefore never count: a quiet 10-bit
    baseline repeats the same DN value all the time.  For scope captures the
    ``channel_clipped`` flag (epoch, channel), when present, also marks the
    channel saturated; its saturated samples are then the run(s) at the trace's
    extreme in the direction of the larger excursion.

Quality status
    One :class:`QualityStatus` per event and channel; the highest-valued condition
    that applies is reported.  Bad input never raises.

Examples
--------
>>> import idexdask
>>> from idexdask.analysis.signal_quality import signal_quality
>>> ds = idexdask.read_l0("events.pkts")                         # doctest: +SKIP
>>> q = signal_quality(ds)                                        # doctest: +SKIP
>>> q.tof_high_snr, q.tof_high_saturated                          # doctest: +SKIP

Modules
-------
:mod:`.settings` (the configuration section), :mod:`.dataset` (waveforms, time
axes and ADC attributes of an event dataset), :mod:`.statistics` (robust
baseline statistics, runs, quantum), :mod:`.status` (status codes and the
per-event products), :mod:`.array_path` (the NumPy/CuPy array code),
:mod:`.host_path` and :mod:`.kernels` (the compiled passes for NumPy samples),
:mod:`.products` (per channel, then as dataset variables).
"""

from __future__ import annotations

from idexdask.analysis.signal_quality.dataset import (
    channel_arrays,
    fill_value,
    find_time_variable,
    quantisation_step,
    waveform_variables,
)
from idexdask.analysis.signal_quality.products import quality_variables, signal_quality
from idexdask.analysis.signal_quality.settings import load_quality_config
from idexdask.analysis.signal_quality.statistics import (
    detect_quantum,
    interpolated_mad,
    long_runs,
)
from idexdask.analysis.signal_quality.status import QualityStatus

__all__ = [
    "QualityStatus",
    "channel_arrays",
    "detect_quantum",
    "fill_value",
    "find_time_variable",
    "interpolated_mad",
    "load_quality_config",
    "long_runs",
    "quantisation_step",
    "quality_variables",
    "signal_quality",
    "waveform_variables",
]
