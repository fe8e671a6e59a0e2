"""Logger factory: every module logs under the ``idexdask`` namespace."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """Return the logger for an idexdask module (``idexdask.<...>``)."""
    return logging.getLogger(name if name.startswith("idexdask") else f"idexdask.{name}")
