"""Analysis layer: signal quality, line fits, impact fits and their product steps.

The steps that add the analysis products to an event dataset are in
:mod:`idexdask.analysis.products`; :func:`idexdask.analyze` (in
:mod:`idexdask.workflow`) runs them with the calibration and composition above.
"""

from idexdask.analysis.products import load_analysis_settings

__all__ = ["load_analysis_settings"]
