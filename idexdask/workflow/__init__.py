"""Workflow layer: the science layers run in order on a batch of events.

:func:`analyze` (also ``idexdask.analyze``) runs analysis -> calibration ->
composition on an event dataset; the campaign pipeline (:mod:`idexdask.pipeline`)
runs it on each unit of work.  It sits above composition so that analysis,
calibration and composition each import only the layers below them.
"""

from idexdask.workflow.analyze import AnalysisProducts, analysis_products, analyze

__all__ = ["AnalysisProducts", "analysis_products", "analyze"]
