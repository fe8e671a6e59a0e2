"""Analysis layer: line fits, impact fits, signal quality and ``analyze``."""

from idexdask.analysis.analyze import analyze, load_analysis_settings

__all__ = ["analyze", "load_analysis_settings"]
