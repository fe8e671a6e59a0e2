"""Mass calibration from lines a person assigned (override rows ``species`` + ``calibrate``).

What ``idexdask time2mass --lines "t1:Na,t2:K"`` does for one event, for every
event whose override table asks for it: the centres of the event's lines with a
hand-assigned species and the ion masses of those species
(:func:`~idexdask.calibration.ions.ion_mass`) are fitted by
:meth:`~idexdask.calibration.tofmass.TOFMassCal.fit`, weighted by the
preset's timing uncertainty, with its order and mass range, instead of the
automatic comb alignment (:mod:`idexdask.calibration.comb`).  A fit that is not
usable (fewer than two distinct masses, not monotonic) leaves the event
uncalibrated with the reason
``manual_<status>``: a hand calibration is never silently replaced by another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from idexdask._logging import get_logger
from idexdask.calibration.ions import ion_mass
from idexdask.calibration.settings import CalibrationSettings
from idexdask.calibration.tofmass import TOFMassCal
from idexdask.errors import CalibrationError, IdexDaskError

__all__ = ["ManualCalibrations", "manual_calibrations"]

_log = get_logger(__name__)

#: ``peak_species_manual`` value of a line assigned to no species.
_NO_SPECIES = "none"


@dataclass
class ManualCalibrations:
    """Calibrations of the requested events from their hand-assigned lines.

    Attributes
    ----------
    events : numpy.ndarray
        Event indices (int64), in request order.
    coefficients : numpy.ndarray
        ``(len(events), order + 1)``: ``t = c0 + sum_k c_k sqrt(m)**k`` (µs),
        NaN where not calibrated, zero-padded above the fitted order.
    calibrated : numpy.ndarray
        Usable calibration (bool).
    reason : numpy.ndarray
        ``"none"`` if calibrated, else ``manual_<status>`` or ``manual_bad_lines`` (str).
    n_lines : numpy.ndarray
        Hand-assigned lines used (int).
    calibrations : list of TOFMassCal or None
        Each event's fit (its lines, residuals in µs, u and ppm: what a
        calibration panel shows); None where the lines were unusable.
    lines : list of numpy.ndarray
        Each event's lines used (indices into the peak arrays, in fit order).
    """

    events: np.ndarray
    coefficients: np.ndarray
    calibrated: np.ndarray
    reason: np.ndarray
    n_lines: np.ndarray
    calibrations: list[TOFMassCal | None]
    lines: list[np.ndarray]


def manual_calibrations(
    peak_event: np.ndarray,
    peak_center: np.ndarray,
    peak_species: np.ndarray,
    events: Sequence[int],
    settings: CalibrationSettings,
    *,
    order: int,
) -> ManualCalibrations:
    """Fit each event of ``events`` to its lines with a hand-assigned species.

    Parameters
    ----------
    peak_event : numpy.ndarray
        Event index of each line.
    peak_center : numpy.ndarray
        Fitted line centres, µs.
    peak_species : numpy.ndarray
        Hand-assigned species per line (``""``: none given, ``"none"``: not a species).
    events : sequence of int
        Events to calibrate.
    settings : CalibrationSettings
        The preset (its ``fit`` section: order cap, mass range, timing sigma).
    order : int
        Highest polynomial order stored (columns of ``coefficients`` less one).

    Returns
    -------
    ManualCalibrations
    """
    fit = settings.fit
    ev = np.asarray(events, dtype=np.int64)
    coeffs = np.full((ev.size, order + 1), np.nan)
    calibrated = np.zeros(ev.size, bool)
    reason = np.full(ev.size, "manual_too_few_lines", dtype=object)
    n_lines = np.zeros(ev.size, np.int64)
    fitted: list[TOFMassCal | None] = [None] * ev.size
    used: list[np.ndarray] = []
    species = np.asarray(peak_species).astype(str)
    assigned = (species != "") & (species != _NO_SPECIES) & np.isfinite(peak_center)
    for i, e in enumerate(ev):
        lines = np.nonzero(assigned & (peak_event == e))[0]
        n_lines[i] = lines.size
        used.append(lines)
        try:
            masses = np.array([ion_mass(str(s)) for s in species[lines]], dtype=float)
            cal = TOFMassCal.fit(
                peak_center[lines], masses, np.full(lines.size, 1.0 / fit.timing_sigma_us**2),
                mass_range=fit.mass_range_u, max_order=min(fit.max_order, order),
                min_lines_for_order=fit.min_lines_for_order,
            )
        except (CalibrationError, IdexDaskError) as exc:
            _log.info("event %d: manual calibration from %d lines failed: %s", e, lines.size, exc)
            reason[i] = "manual_bad_lines"
            continue
        fitted[i] = cal
        if not cal.usable:
            reason[i] = f"manual_{cal.status.value}"
            _log.info("event %d: manual calibration from %d lines: %s", e, lines.size,
                      cal.status.value)
            continue
        coeffs[i] = 0.0
        coeffs[i, : cal.coefficients.size] = cal.coefficients
        calibrated[i] = True
        reason[i] = "none"
    return ManualCalibrations(ev, coeffs, calibrated, reason.astype(str), n_lines, fitted, used)
