"""Analysis layer: line fits, impact fits, signal quality and ``analyze``."""

from idexdask.analysis.analyze import (
    AnalysisProducts,
    analysis_products,
    analyze,
    load_analysis_settings,
)

__all__ = ["AnalysisProducts", "analysis_products", "analyze", "load_analysis_settings"]
