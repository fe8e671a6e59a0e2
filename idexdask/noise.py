"""Noise diagnostics, at the top level as ``idexdask.noise``.

See :mod:`idexdask.analysis.noise`: histogram with a fitted Gaussian, Welch power
spectral density and FFT autocorrelation, per channel and event.
"""

from idexdask.analysis.noise import (
    GaussianFit,
    autocorrelation,
    fit_gaussian_histogram,
    noise_diagnostics,
    welch_psd,
)

__all__ = [
    "GaussianFit",
    "autocorrelation",
    "fit_gaussian_histogram",
    "noise_diagnostics",
    "welch_psd",
]
