"""Time-of-flight to mass calibration.

* :class:`TOFMassCal` -- ``t = t0 + sum_k a_k sqrt(m)**k`` fitted from assigned
  lines, with an exact safeguarded-Newton inversion (:meth:`TOFMassCal.mass`)
  and :func:`mass_axis` for many events at once.
* :func:`comb_calibration` (one spectrum) and :func:`comb_calibrations`
  (many at once, same results) -- calibrate spectra without known lines by
  aligning a comb of common impact ions with its peaks.
* :mod:`~idexdask.calibration.ions` -- ion masses from formulas (periodictable).

Settings live in ``configs/calibration.yaml`` (:func:`load_calibration_settings`).
"""

from idexdask.calibration.comb import (
    Assignment,
    CombBatch,
    CombResult,
    CombStatus,
    UncalibratedReason,
    comb_calibration,
    comb_calibrations,
    stack_coefficients,
)
from idexdask.calibration.ions import (
    ELECTRON_MASS_U,
    Ion,
    build_ion_table,
    ion_label,
    ion_mass,
    parse_formula,
)
from idexdask.calibration.mass_axes import MassFlag, mass_axis, time_axis
from idexdask.calibration.settings import (
    BootstrapSettings,
    CalibrationSettings,
    FitSettings,
    load_calibration_settings,
)
from idexdask.calibration.synthetic import synthetic_peaks
from idexdask.calibration.tofmass import (
    CalibrationStatus,
    TOFMassCal,
    adaptive_order,
    min_slope,
)

__all__ = [
    "Assignment",
    "CombBatch",
    "CombResult",
    "BootstrapSettings",
    "CombStatus",
    "CalibrationSettings",
    "CalibrationStatus",
    "ELECTRON_MASS_U",
    "FitSettings",
    "Ion",
    "MassFlag",
    "TOFMassCal",
    "UncalibratedReason",
    "adaptive_order",
    "comb_calibration",
    "comb_calibrations",
    "build_ion_table",
    "ion_label",
    "ion_mass",
    "load_calibration_settings",
    "mass_axis",
    "min_slope",
    "parse_formula",
    "stack_coefficients",
    "synthetic_peaks",
    "time_axis",
]
