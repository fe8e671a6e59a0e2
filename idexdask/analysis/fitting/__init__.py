"""Batched Levenberg–Marquardt: many small line fits at once, on NumPy or CuPy.

A campaign has millions of mass lines, each fitted in its own short window.
Fitting them one by one with lmfit costs milliseconds of Python overhead per
fit; here all windows advance together, with every operation vectorised across
fits, or (for the models with a compiled kernel) each fit runs compiled with its
model, Jacobian and normal equations fused.

Bounds are handled as lmfit does (the MINUIT transforms: ``sin`` for a
two-sided bound, ``sqrt`` for a one-sided one), so a batch fit lands on the same
minimum as ``lmfit.Model.fit`` with the same bounds, and ``stderr`` is scaled by
the reduced chi-square as lmfit's default ``scale_covar=True``.

The fitter never returns a silent NaN: each fit carries a :class:`FitStatus`,
and windows that cannot be fitted get NaN parameters *and* a status saying why.

Modules, each one concern:

* :mod:`.models`: :class:`BatchModel`, the line shapes and baselines with their
  analytic Jacobians (:func:`batch_model`), the ``KERNEL_*`` ids;
* :mod:`.bounds`: the bound transforms;
* :mod:`.linalg`: batched normal equations, damped solves, covariance;
* :mod:`.iteration`: what the engines share (working set, outputs, stop criteria);
* :mod:`.engine_xp` and :mod:`.engine_compiled`: the two Levenberg–Marquardt loops;
* :mod:`.compiled`, :mod:`.emg_kernels` and :mod:`.line_kernels`: the compiled model kernels (the
  impact model's live next to it, in :mod:`idexdask.analysis.impact_kernels`);
* :mod:`.batch`: :func:`fit_batch` and :func:`fit_batch_on`;
* :mod:`.result`: :class:`FitStatus` and :class:`BatchFitResult`.
"""

from idexdask.analysis.fitting.batch import FIT_DEVICES, fit_batch, fit_batch_on
from idexdask.analysis.fitting.models import (
    KERNEL_EMG_CONSTANT,
    KERNEL_IMPACT,
    KERNEL_LINES,
    KERNEL_NONE,
    LINE_EMG,
    LINE_GAUSSIAN,
    BatchModel,
    batch_model,
)
from idexdask.analysis.fitting.result import BatchFitResult, FitStatus

__all__ = [
    "FIT_DEVICES",
    "KERNEL_EMG_CONSTANT",
    "KERNEL_IMPACT",
    "KERNEL_LINES",
    "KERNEL_NONE",
    "LINE_EMG",
    "LINE_GAUSSIAN",
    "BatchFitResult",
    "BatchModel",
    "FitStatus",
    "batch_model",
    "fit_batch",
    "fit_batch_on",
]
