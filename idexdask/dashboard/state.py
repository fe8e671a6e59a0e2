"""Per-session state of the review app and the context shared by a server.

Every page is a function of one :class:`ReviewState` (Panel's pattern: a
``param.Parameterized`` object, views as functions of it).  The event and
channel are synchronised with the URL query (``?event=N&channel=TOF_High``), so
every view is a shareable link; URL values are validated against the store and
can only select a row or a channel name, never a path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import param

from idexdask.dashboard.data import StoreData

__all__ = ["LIVE_PERIOD_MS", "ReviewState", "ServerContext"]

logger = logging.getLogger(__name__)

#: How often open pages look at the manifest for new units, ms (the issue asks
#: for new events within 5 s; a stat() of one file every 2 s costs nothing).
LIVE_PERIOD_MS = 2000


@dataclass
class ServerContext:
    """What every session of one server shares.

    Attributes
    ----------
    data : StoreData
        The store being reviewed.
    read_only : bool
        Disables every write (the studio's save).
    docs_dir : pathlib.Path or None
        The Markdown documentation served by ``/docs``.
    config : dict
        Configuration of the studio's refits (the default configuration unless
        the server was given one).
    """

    data: StoreData
    read_only: bool = False
    docs_dir: Path | None = None
    config: dict = field(default_factory=dict)


class ReviewState(param.Parameterized):
    """The selection shared by the views of one page.

    ``refresh`` is bumped whenever the store's manifest changes, so that views
    depending on it re-read the store.
    """

    event = param.Integer(default=0, bounds=(0, None), doc="row along epoch")
    channel = param.String(default="TOF_High", doc="waveform variable of the noise page")
    refresh = param.Integer(default=0, doc="manifest changes seen by this session")

    def __init__(self, context: ServerContext, **params) -> None:
        super().__init__(**params)
        self.context = context
        self._version = context.data.version()

    def poll(self) -> bool:
        """Bump ``refresh`` if the store's manifest changed since the last call."""
        version = self.context.data.version()
        if version != self._version:
            self._version = version
            self.refresh += 1
            return True
        return False
