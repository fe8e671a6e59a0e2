"""Grain speed and charge from the dust accelerator's charge pickup detectors.

A charge pickup detector (QD) is a conducting tube on the beam line read by a
charge-sensitive amplifier.  While a grain of charge *q* is inside, the tube carries
the induced charge *q*: the amplifier output is a near-rectangular pulse (edges as
long as the fringing field takes to cross, about one tube radius) of height
``q * volts_per_coulomb`` above the pre-signal baseline, lasting ``L / v`` for a tube
of length *L*.  Two tubes a distance *D* apart see the grain ``D / v`` apart.

Method (vectorised over events; one function per step)
------------------------------------------------------
1. Polarity: the signal is multiplied (in step 2's pass) by ``polarity`` (±1; the
   lab amplifiers give negative-going QD pulses, so the default is -1) so that the
   pulse is positive.
2. Edges: a smoothed derivative, the difference of the means of ``w`` samples after
   and before each sample (``w`` = ``smooth_us``; from cumulative sums, O(n): exact
   integer sums of the ADC codes where the records are exactly on known codes,
   ``adc_gain``/``adc_offset``, taken as recorded where the reader kept them,
   ``adc_codes``; else float64 sums of the values).  Its
   noise is the MAD-scaled spread over the whole record.  The entry edge is its
   maximum, which must exceed ``threshold_sigma`` noise sigmas; the exit edge is its
   minimum between ``min_transit_us`` and ``max_transit_us`` after the entry, with
   the same threshold.  Each edge time is the centroid of the derivative peak above
   half its height (inside ``edge_window_us``): the 50 % point of the edge, with
   sub-sample resolution.
3. Transit time = exit - entry; speed = ``tube_length_m`` / transit.
4. Pulse height = median over the central part of the plateau (``plateau_guard``
   of the transit trimmed at each end) minus the median of the baseline window of
   ``baseline_us`` before the entry edge (guarded likewise).  Charge = height /
   ``volts_per_coulomb``.
5. Uncertainties (approximate 1 sigma): height from the scatter of ``w``-sample
   means in the plateau and baseline windows; edge times from the derivative noise
   over the peak height times the peak half-width; propagated to speed and charge
   (the calibration factor and tube length are taken as exact).

Calibration
-----------
``volts_per_coulomb`` MUST come from the lab's amplifier calibration (a known test
charge injected through a capacitor into each QD input).  The default
:data:`PLACEHOLDER_VOLTS_PER_COULOMB` = 1e12 V/C (1 mV/fC) is a round-number
placeholder of the right order for accelerator charge amplifiers, not a
measurement; charges computed with it are labelled ``calibration="placeholder"``.
Likewise the default tube length (0.20 m) is a placeholder, see ``configs/scope.yaml``.

Modules
-------
:mod:`~idexdask.analysis.pickup.settings`
    Placeholders, status codes, ``configs/scope.yaml`` and the settings in samples.
:mod:`~idexdask.analysis.pickup.kernels`
    The compiled pass over each record (running sums, derivative noise, edge peaks).
:mod:`~idexdask.analysis.pickup.code_kernels`
    The same pass from a record's ADC codes, in integers.
:mod:`~idexdask.analysis.pickup.order_stats`
    Exact median and MAD of a record's derivative from the bins of its values.
:mod:`~idexdask.analysis.pickup.edges`
    Steps 1 and 2: the records, the smoothed derivative and the edges.
:mod:`~idexdask.analysis.pickup.levels`
    Step 4: baseline, plateau and pulse height.
:mod:`~idexdask.analysis.pickup.charge_speed`
    Steps 3 and 5 and the single-tube functions.
:mod:`~idexdask.analysis.pickup.detectors`
    Two tubes, and the analysis of an event dataset's QD channels.
"""


from idexdask.analysis.pickup.charge_speed import pickup_charge_speed, pickup_uniform
from idexdask.analysis.pickup.detectors import (
    combine_detectors,
    pickup_from_dataset,
    pickup_two_detectors,
)
from idexdask.analysis.pickup.settings import (
    DEFAULT_TUBE_LENGTH_M,
    PLACEHOLDER_VOLTS_PER_COULOMB,
    STATUS_MEANINGS,
    load_scope_config,
)

__all__ = [
    "DEFAULT_TUBE_LENGTH_M",
    "PLACEHOLDER_VOLTS_PER_COULOMB",
    "STATUS_MEANINGS",
    "combine_detectors",
    "load_scope_config",
    "pickup_charge_speed",
    "pickup_from_dataset",
    "pickup_two_detectors",
    "pickup_uniform",
]
