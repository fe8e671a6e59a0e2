"""The codes of a TOF line fit: its status and its line shape.

``peak_status`` and ``peak_shape`` of the products hold these codes; their CF
``flag_meanings`` come from :func:`fit_status_meanings` and
:data:`idexdask.analysis.overrides.LINE_SHAPES`.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "SIGMA_MIN_SAMPLES",
    "TAU_MIN_SAMPLES",
    "LineShape",
    "LineStatus",
    "fit_status_meanings",
]

# Narrowest line width the sampling resolves, in samples: the rms width of one
# sample's box (1/sqrt(12) = 0.29), rounded up.  A fit that ends at this bound
# has found a line narrower than a sample (a spike), not an ion line.
SIGMA_MIN_SAMPLES = 0.3
# A tail shorter than this (samples) is not resolved: the line is a Gaussian.
TAU_MIN_SAMPLES = 0.1


class LineStatus(IntEnum):
    """Outcome of one TOF line fit; 0-4 are the fitter's :class:`FitStatus`."""

    CONVERGED = 0
    MAX_ITERATIONS = 1
    HIT_BOUND = 2
    FAILED_NONFINITE = 3
    INVALID_INPUT = 4
    SPIKE = 5
    """Fitted width at the sampling limit (``SIGMA_MIN_SAMPLES``): narrower than
    a sample resolves, a spike rather than an ion line.  Kept, not calibrated on."""
    NOT_SIGNIFICANT = 6
    """Fitted height below ``min_line_snr`` noise sigmas.  Kept, not calibrated on."""
    RINGING = 7
    """One lobe of an electrical oscillation: a negative excursion of at least
    ``ringing_sigma`` noise sigmas and half the detection's height beside it
    (ion current is unipolar; :func:`idexdask.analysis.tof.classify_ringing`).
    Kept, not calibrated on."""


class LineShape(IntEnum):
    """Line shape of an automatic TOF line fit (its index in
    :data:`idexdask.analysis.overrides.LINE_SHAPES`, the ``peak_shape`` codes)."""

    EMG = 0
    """Exponentially modified Gaussian (``peak_gamma`` its tail rate)."""
    GAUSSIAN = 1
    """Gaussian (``peak_gamma`` NaN: no tail): the EMG's tail collapsed below
    ``TAU_MIN_SAMPLES`` samples (centre as an EMG's), or the EMG did not
    converge on a line with a tail and the Gaussian did (``mode_centred``: the
    centre is then the line's mode, later than an EMG centre by up to the tail
    time, and the mass calibration does not use it)."""


def fit_status_meanings() -> str:
    """CF ``flag_meanings`` string of the :class:`LineStatus` codes."""
    return " ".join(s.name.lower() for s in LineStatus)
