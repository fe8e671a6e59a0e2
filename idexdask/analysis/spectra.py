"""Spectra of sampled noise: one-sided Welch power spectral density and FFT autocorrelation.

Row-wise on arrays of equal-length segments (no NaN), as
:func:`idexdask.analysis.noise.noise_diagnostics` computes them per event.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal

__all__ = ["autocorrelation", "welch_psd"]


def welch_psd(
    x: np.ndarray, sample_rate_mhz: float, nperseg: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Welch power spectral density of each row.

    Parameters
    ----------
    x : numpy.ndarray, (..., L)
        Samples (DN or V), no NaN.
    sample_rate_mhz : float
        Sampling rate, MHz (samples per µs).
    nperseg : int
        Segment length, samples (clipped to ``L``).

    Returns
    -------
    frequency : numpy.ndarray, (L_f,)
        MHz.
    psd : numpy.ndarray, (..., L_f)
        ``unit**2 / MHz``; ``psd.sum(-1) * (frequency[1] - frequency[0])`` is the
        variance of the rows.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    seg = int(max(1, min(nperseg, n)))
    return scipy.signal.welch(
        x,
        fs=sample_rate_mhz,
        window="hann",
        nperseg=seg,
        detrend="constant",
        scaling="density",
        axis=-1,
    )


def autocorrelation(x: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Normalised, unbiased autocorrelation of each row by FFT.

    Parameters
    ----------
    x : numpy.ndarray, (..., L)
        Samples, no NaN.
    max_lag : int, optional
        Largest lag, samples (default and at most ``L - 1``).

    Returns
    -------
    numpy.ndarray, (..., max_lag + 1)
        ``acf[k] = (sum_i y_i y_{i+k} / (L - k)) / (sum_i y_i**2 / L)`` with
        ``y = x - mean(x)``; ``acf[0] = 1``, NaN for constant rows.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    if n == 0:
        return np.full((*x.shape[:-1], 0), np.nan)
    k = n - 1 if max_lag is None else int(min(max_lag, n - 1))
    y = x - x.mean(axis=-1, keepdims=True)
    nfft = 1 << int(math.ceil(math.log2(max(2 * n - 1, 1))))
    spec = np.fft.rfft(y, n=nfft, axis=-1)
    r = np.fft.irfft(spec.real**2 + spec.imag**2, n=nfft, axis=-1)[..., : k + 1]
    r = r / (n - np.arange(k + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        acf = r / r[..., :1]
    return np.where(r[..., :1] > 0, acf, np.nan)
