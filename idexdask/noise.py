"""Noise diagnostics, at the top level as ``idexdask.noise``.

See :mod:`idexdask.analysis.noise`: histogram with a fitted Gaussian, Welch power
spectral density and FFT autocorrelation, per channel and event.
"""

from idexdask.analysis.histogram_fit import GaussianFit, fit_gaussian_histogram
from idexdask.analysis.noise import noise_diagnostics
from idexdask.analysis.spectra import autocorrelation, welch_psd

__all__ = [
    "GaussianFit",
    "autocorrelation",
    "fit_gaussian_histogram",
    "noise_diagnostics",
    "welch_psd",
]
